// SPDX-License-Identifier: Apache-2.0
/**
 * The admission role's capability: Validate bindings only. The decisions are in
 * admission-rules.ts; this file looks up what they need and answers Pepr.
 */
import { Capability, Log, type PeprValidateRequest } from "pepr";
import { K8s, kind, type KubernetesObject } from "kubernetes-fluent-client";
import { KINDS } from "./kinds";
import type { V1Namespace, V1Service } from "@kubernetes/client-node";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1";
import { Gateway } from "../generated/gateway-v1";
import { GatewayClass } from "../generated/gatewayclass-v1";
import { ReferenceGrant } from "../generated/referencegrant-v1beta1";
import {
  admitDataplaneConfig,
  gatewayWarnings,
  routeLookups,
  routeWarnings,
  type AdmissionDecision,
  type AdmissionView,
  type RouteLike,
} from "./admission-rules";
import { CONTROLLER_NAME, type RouteKind } from "./compile/types";
import { gatewayView as readGateway } from "./compile/views";
import { admissionSettings } from "./config";
import { errorMessage } from "./reconciler";

/** Reads the webhook needs; `undefined` when the object does not exist. */
export interface AdmissionLookup {
  gateway(namespace: string, name: string): Promise<Gateway | undefined>;
  gatewayClass(name: string): Promise<GatewayClass | undefined>;
  service(namespace: string, name: string): Promise<V1Service | undefined>;
  referenceGrants(namespace: string): Promise<ReferenceGrant[]>;
  namespace(name: string): Promise<V1Namespace | undefined>;
}

const orUndefinedOn404 = async <T>(get: () => Promise<T>): Promise<T | undefined> => {
  try {
    return await get();
  } catch (error) {
    if ((error as { status?: number }).status === 404) return undefined;
    throw error;
  }
};

export const kubeAdmissionLookup: AdmissionLookup = {
  gateway: (namespace, name) =>
    orUndefinedOn404(() => K8s(Gateway).InNamespace(namespace).Get(name)),
  gatewayClass: name => orUndefinedOn404(() => K8s(GatewayClass).Get(name)),
  service: (namespace, name) =>
    orUndefinedOn404(() => K8s(kind.Service).InNamespace(namespace).Get(name)),
  referenceGrants: async namespace =>
    (await K8s(ReferenceGrant).InNamespace(namespace).Get()).items,
  namespace: name => orUndefinedOn404(() => K8s(kind.Namespace).Get(name)),
};

const present = <T>(list: (T | undefined)[]): T[] => list.filter((x): x is T => x !== undefined);

async function classesOf(gateways: Gateway[], lookup: AdmissionLookup): Promise<GatewayClass[]> {
  const names = [...new Set(present(gateways.map(g => g.spec?.gatewayClassName)))];
  return present(await Promise.all(names.map(n => lookup.gatewayClass(n))));
}

export async function gatewayAdmissionView(
  gateway: Gateway,
  lookup: AdmissionLookup,
): Promise<AdmissionView> {
  // ReferenceGrants where certificateRefs reach into other namespaces.
  const own = gateway.metadata?.namespace ?? "default";
  const namespaces = [
    ...new Set(
      readGateway(gateway).listeners.flatMap(l => l.certificateRefs.map(r => r.namespace)),
    ),
  ]
    .filter(n => n !== own)
    .sort();
  const [gatewayClasses, grants] = await Promise.all([
    classesOf([gateway], lookup),
    Promise.all(namespaces.map(n => lookup.referenceGrants(n))),
  ]);
  return {
    controllerName: CONTROLLER_NAME,
    gateways: [gateway],
    gatewayClasses,
    services: [],
    referenceGrants: grants.flat(),
    namespaces: [],
  };
}

export async function routeAdmissionView(
  routeKind: RouteKind,
  route: RouteLike,
  lookup: AdmissionLookup,
): Promise<AdmissionView> {
  const needs = routeLookups(routeKind, route);
  const gateways = present(
    await Promise.all(needs.gateways.map(g => lookup.gateway(g.namespace, g.name))),
  );
  // The route's Namespace labels matter only to a listener that selects namespaces by label.
  const selects = gateways.some(g =>
    readGateway(g).listeners.some(l => l.allowedFrom === "Selector"),
  );
  const [gatewayClasses, services, grants, namespace] = await Promise.all([
    classesOf(gateways, lookup),
    Promise.all(needs.services.map(s => lookup.service(s.namespace, s.name))),
    Promise.all(needs.grantNamespaces.map(n => lookup.referenceGrants(n))),
    selects ? lookup.namespace(needs.namespace) : undefined,
  ]);
  return {
    controllerName: CONTROLLER_NAME,
    gateways,
    gatewayClasses,
    services: present(services),
    referenceGrants: grants.flat(),
    namespaces: present([namespace]),
  };
}

function answer<T extends KubernetesObject>(
  request: PeprValidateRequest<T>,
  decision: AdmissionDecision,
) {
  return decision.allowed
    ? request.Approve(decision.warnings.length ? decision.warnings : undefined)
    : request.Deny(decision.message, decision.code);
}

/**
 * Warnings are advice: when a lookup fails the object is approved without them, since the
 * controller's status will say the same thing once the API server answers again.
 */
async function warnOrApprove<T extends KubernetesObject>(
  request: PeprValidateRequest<T>,
  warnings: () => Promise<string[]>,
) {
  try {
    return answer(request, { allowed: true, warnings: await warnings() });
  } catch (error) {
    Log.warn(
      `admission of ${request.Request.kind.kind} ${request.Request.namespace}/${request.Request.name}: lookups failed (${errorMessage(error)}); approved without warnings`,
    );
    return request.Approve();
  }
}

export function gatewayAdmission({
  env,
  lookup = kubeAdmissionLookup,
}: {
  env: NodeJS.ProcessEnv;
  lookup?: AdmissionLookup;
}): Capability {
  const settings = admissionSettings(env);
  const capability = new Capability({
    name: "gateway-admission",
    description:
      "Denies DataplaneConfigs not written by blixt's controller; warns about Gateway API objects that will not work",
  });
  const { When } = capability;

  When(DataplaneConfig, KINDS.DataplaneConfig.gvk)
    .IsCreatedOrUpdated()
    .Validate(request =>
      answer(
        request,
        admitDataplaneConfig(
          {
            operation: request.Request.operation,
            userInfo: request.Request.userInfo,
            object: request.Raw,
            oldObject: request.OldResource as DataplaneConfig | undefined,
          },
          settings.controllerUsername,
        ),
      ),
    );

  When(Gateway, KINDS.Gateway.gvk)
    .IsCreatedOrUpdated()
    .Validate(request =>
      warnOrApprove(request, async () =>
        gatewayWarnings(request.Raw, await gatewayAdmissionView(request.Raw, lookup)),
      ),
    );

  for (const routeKind of ["TCPRoute", "UDPRoute", "HTTPRoute"] as const) {
    When(KINDS[routeKind].model, KINDS[routeKind].gvk)
      .IsCreatedOrUpdated()
      .Validate(request =>
        warnOrApprove(request, async () => {
          const route = request.Raw as RouteLike;
          return routeWarnings(
            routeKind,
            route,
            await routeAdmissionView(routeKind, route, lookup),
          );
        }),
      );
  }
  return capability;
}
