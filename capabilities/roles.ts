// SPDX-License-Identifier: Apache-2.0
/**
 * One Pepr module, three roles. The same image runs as the admission webhook, the controller
 * (one replica) and the node agent (a DaemonSet); the role decides which capabilities the
 * module hands to Pepr, so a process registers only its own bindings and opens only its own
 * connections.
 *
 * How the roles map onto Pepr 1.1.4's own modes: Pepr decides once, when its library is
 * loaded, whether bindings are admission (`Mutate`/`Validate`, served when
 * `PEPR_WATCH_MODE` is not "true") or watches (`Watch`/`Reconcile`, run when
 * `PEPR_WATCH_MODE` is "true"). `pepr build` (`PEPR_MODE=build`) registers both kinds to
 * generate webhook rules and RBAC, and `pepr dev` (`PEPR_MODE=dev`) runs both in one process.
 *
 *   BLIXT_ROLE   PEPR_WATCH_MODE   capabilities
 *   admission    unset / "false"   GatewayAdmission (Validate bindings; its start() runs
 *                                  the watches its lookups read, gateway/admission-cache.ts)
 *   controller   "true"            GatewayController (no bindings: its start() runs one watch
 *                                  per kind and the reconciler, see gateway/controller.ts)
 *   agent        "true"            dataplane-agent (no bindings: its start() runs its own
 *                                  DataplaneConfig watch, see agent/index.ts)
 *
 * With BLIXT_ROLE unset the role follows Pepr's mode (watch → controller, else admission), so
 * Pepr's stock admission and watcher Deployments work unchanged; the agent must be named.
 */
import { Capability, Log } from "pepr";
import { gatewayAdmission, kubeAdmissionLookup } from "./gateway/admission.js";
import { AdmissionWatches } from "./gateway/admission-cache.js";
import { gatewayController } from "./gateway/controller.js";
import { dataplaneAgent } from "./agent/index.js";

export const ROLES = ["admission", "controller", "agent"] as const;
export type Role = (typeof ROLES)[number];

export interface RoleEnv {
  BLIXT_ROLE?: string;
  PEPR_WATCH_MODE?: string;
  PEPR_MODE?: string;
}

/** Which roles this process plays. Pure: reads only the env it is given. */
export function resolveRoles(env: RoleEnv): Role[] {
  const named = env.BLIXT_ROLE?.trim();
  if (named && !(ROLES as readonly string[]).includes(named)) {
    throw new Error(`BLIXT_ROLE="${named}" is not a role; set it to one of ${ROLES.join(", ")}`);
  }
  // The build must see every binding: webhook rules come from Validate bindings, RBAC from
  // watched kinds of all roles.
  if (env.PEPR_MODE === "build") return [...ROLES];
  if (env.PEPR_MODE === "dev") return named ? [named as Role] : ["admission", "controller"];

  const watchMode = env.PEPR_WATCH_MODE === "true";
  if (!named) return [watchMode ? "controller" : "admission"];
  const role = named as Role;
  // Pepr silently drops the bindings of the other mode, so a mismatch would start a process
  // that does nothing; refuse it loudly instead.
  if (role === "admission" && watchMode) {
    throw new Error(
      `BLIXT_ROLE=admission needs PEPR_WATCH_MODE unset or "false" (it is "true"): Pepr serves Validate bindings only outside watch mode`,
    );
  }
  if (role !== "admission" && !watchMode) {
    throw new Error(
      `BLIXT_ROLE=${role} needs PEPR_WATCH_MODE="true": Pepr runs Watch bindings only in watch mode`,
    );
  }
  return [role];
}

export interface RoleModule {
  capabilities: Capability[];
  /**
   * Options for PeprModule. Pepr 1.1.4 starts its HTTPS server (port 3000, the webhook's key)
   * in the PeprModule constructor unless `deferStart` is set; its watches start regardless.
   * The agent serves no admission, so it defers and never starts it: nothing listens on 3000
   * on the node's network, and the agent needs no webhook key.
   */
  peprOptions: { deferStart?: boolean };
  /** Starts the role's own loops (the controller's resync); called once Pepr has the module. */
  start: () => void;
}

/** Builds the capability list for the given roles. Creating them opens no connection. */
export function capabilitiesFor(roles: Role[], env: NodeJS.ProcessEnv = process.env): RoleModule {
  const capabilities: Capability[] = [];
  const starts: (() => void)[] = [];
  for (const role of roles) {
    if (role === "admission") {
      // The webhook's lookups come from watches of the kinds they read (admission-cache.ts).
      const watches = new AdmissionWatches(kubeAdmissionLookup, {
        info: m => Log.info(m),
        warn: m => Log.warn(m),
      });
      capabilities.push(gatewayAdmission({ env, lookup: watches.lookup }));
      starts.push(() => watches.start());
    }
    if (role === "controller") {
      const controller = gatewayController({ env });
      capabilities.push(controller.capability);
      starts.push(controller.start);
    }
    if (role === "agent") {
      const agent = dataplaneAgent({ env });
      capabilities.push(agent.capability);
      starts.push(agent.start);
    }
  }
  const building = env.PEPR_MODE === "build";
  // The admission webhook serves on Pepr's server, the controller's probes use its /healthz.
  const serverless = roles.length > 0 && roles.every(role => role === "agent");
  return {
    capabilities,
    peprOptions: serverless ? { deferStart: true } : {},
    start: () => {
      if (!building) for (const start of starts) start();
    },
  };
}
