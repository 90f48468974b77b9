// SPDX-License-Identifier: Apache-2.0
// Admission: the Validate bindings answer AdmissionRequests built as the API server sends them.
// The cluster reads the webhook makes (Gateways, GatewayClasses, Services, ReferenceGrants, Namespaces)
// are served from an in-memory list here; test/apiserver covers the real reads.
import t from "tap";
import { PeprValidateRequest } from "pepr";
import type { KubernetesObject } from "kubernetes-fluent-client";
import { gatewayAdmission, type AdmissionLookup } from "../../capabilities/gateway/admission";
import { dataplaneConfigProblems } from "../../capabilities/dataplaneconfig-check";
import { DEFAULT_CONTROLLER_USERNAME } from "../../capabilities/gateway/config";

const CONTROLLER = DEFAULT_CONTROLLER_USERNAME;
const ADMIN = { username: "kubernetes-admin", groups: ["system:masters", "system:authenticated"] };

interface Cluster {
  gateways?: KubernetesObject[];
  gatewayClasses?: KubernetesObject[];
  services?: KubernetesObject[];
  referenceGrants?: KubernetesObject[];
  namespaces?: KubernetesObject[];
}

/** Serves the webhook's reads from a fixed list of objects. */
function lookupOf(cluster: Cluster): AdmissionLookup {
  const find = (list: KubernetesObject[] = [], namespace: string | undefined, name: string) =>
    list.find(
      o =>
        o.metadata?.name === name &&
        (namespace === undefined || o.metadata?.namespace === namespace),
    ) as never;
  return {
    gateway: async (namespace, name) => find(cluster.gateways, namespace, name),
    gatewayClass: async name => find(cluster.gatewayClasses, undefined, name),
    service: async (namespace, name) => find(cluster.services, namespace, name),
    referenceGrants: async namespace =>
      (cluster.referenceGrants ?? []).filter(g => g.metadata?.namespace === namespace) as never,
    namespace: async name => find(cluster.namespaces, undefined, name),
  };
}

const GVR: Record<string, { group: string; version: string; resource: string }> = {
  Gateway: { group: "gateway.networking.k8s.io", version: "v1", resource: "gateways" },
  TCPRoute: { group: "gateway.networking.k8s.io", version: "v1", resource: "tcproutes" },
  UDPRoute: { group: "gateway.networking.k8s.io", version: "v1", resource: "udproutes" },
  HTTPRoute: { group: "gateway.networking.k8s.io", version: "v1", resource: "httproutes" },
  DataplaneConfig: { group: "blixt.dev", version: "v1alpha1", resource: "dataplaneconfigs" },
};

/** An admission.k8s.io/v1 AdmissionReview request, as kube-apiserver fills it in. */
function admissionRequest(
  operation: "CREATE" | "UPDATE" | "DELETE",
  object: KubernetesObject | null,
  options: { oldObject?: KubernetesObject; userInfo?: { username: string; groups: string[] } } = {},
) {
  const subject = (object ?? options.oldObject)!;
  const kind = subject.kind!;
  const { group, version, resource } = GVR[kind];
  return {
    uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
    kind: { group, version, kind },
    resource: { group, version, resource },
    requestKind: { group, version, kind },
    requestResource: { group, version, resource },
    name: subject.metadata!.name!,
    namespace: subject.metadata!.namespace,
    operation,
    userInfo: options.userInfo ?? ADMIN,
    object,
    oldObject: options.oldObject ?? null,
    dryRun: false,
    options: {
      apiVersion: "meta.k8s.io/v1",
      kind: operation === "CREATE" ? "CreateOptions" : "UpdateOptions",
      fieldManager: "kubectl-client-side-apply",
    },
  };
}

/** Runs the capability's Validate binding for the request's kind, as Pepr's webhook does. */
async function admit(cluster: Cluster, request: ReturnType<typeof admissionRequest>) {
  const capability = gatewayAdmission({ env: {}, lookup: lookupOf(cluster) });
  const bindings = capability.bindings.filter(
    b => b.isValidate && b.kind.kind === request.kind.kind,
  );
  if (bindings.length !== 1)
    throw new Error(
      `expected one Validate binding for ${request.kind.kind}, found ${bindings.length}`,
    );
  return bindings[0].validateCallback!(new PeprValidateRequest(request as never));
}

const blixtClass = {
  apiVersion: "gateway.networking.k8s.io/v1",
  kind: "GatewayClass",
  metadata: { name: "blixt" },
  spec: { controllerName: "blixt.dev/gateway-controller" },
};
const otherClass = {
  apiVersion: "gateway.networking.k8s.io/v1",
  kind: "GatewayClass",
  metadata: { name: "other" },
  spec: { controllerName: "example.com/other" },
};

function gateway(name: string, className: string, listeners: unknown[]) {
  return {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "Gateway",
    metadata: { namespace: "default", name, generation: 1 },
    spec: { gatewayClassName: className, listeners },
  };
}
const l4Gateway = gateway("l4", "blixt", [
  { name: "tcp", port: 5432, protocol: "TCP" },
  { name: "udp", port: 53, protocol: "UDP" },
]);

function tcpRoute(name: string, spec: unknown, namespace = "default") {
  return {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "TCPRoute",
    metadata: { namespace, name, generation: 1 },
    spec,
  };
}
const service = (namespace: string, name: string) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { namespace, name },
  spec: { ports: [{ port: 5432 }] },
});

t.test("TCPRoute to a missing Service: approved, with the BackendNotFound it will see", async t => {
  const route = tcpRoute("db", {
    parentRefs: [{ name: "l4", sectionName: "tcp" }],
    rules: [{ backendRefs: [{ name: "pg", port: 5432 }] }],
  });
  const response = await admit(
    { gateways: [l4Gateway], gatewayClasses: [blixtClass] },
    admissionRequest("CREATE", route),
  );
  t.equal(response.allowed, true);
  t.same(response.warnings, [
    'TCPRoute default/db: ResolvedRefs will be False (BackendNotFound): backendRefs[0] "pg": Service "pg" not found in namespace "default"',
  ]);
});

t.test("TCPRoute whose refs all resolve: approved without warnings", async t => {
  const route = tcpRoute("db", {
    parentRefs: [{ name: "l4", sectionName: "tcp" }],
    rules: [{ backendRefs: [{ name: "pg", port: 5432 }] }],
  });
  const response = await admit(
    { gateways: [l4Gateway], gatewayClasses: [blixtClass], services: [service("default", "pg")] },
    admissionRequest("CREATE", route),
  );
  t.equal(response.allowed, true);
  t.equal(response.warnings, undefined);
});

t.test(
  "cross-namespace backendRef: RefNotPermitted without a ReferenceGrant, nothing with one",
  async t => {
    const route = tcpRoute("db", {
      parentRefs: [{ name: "l4" }],
      rules: [{ backendRefs: [{ name: "pg", namespace: "data", port: 5432 }] }],
    });
    const cluster: Cluster = {
      gateways: [l4Gateway],
      gatewayClasses: [blixtClass],
      services: [service("data", "pg")],
    };
    const denied = await admit(cluster, admissionRequest("CREATE", route));
    t.equal(denied.allowed, true, "never denied: the spec wants RefNotPermitted in status");
    t.match(denied.warnings, [
      /ResolvedRefs will be False \(RefNotPermitted\): backendRefs\[0\] "pg": Service data\/pg is in another namespace and no ReferenceGrant in "data" allows TCPRoutes from "default"/,
    ]);

    const grant = {
      apiVersion: "gateway.networking.k8s.io/v1beta1",
      kind: "ReferenceGrant",
      metadata: { namespace: "data", name: "allow-routes" },
      spec: {
        from: [{ group: "gateway.networking.k8s.io", kind: "TCPRoute", namespace: "default" }],
        to: [{ group: "", kind: "Service" }],
      },
    };
    const granted = await admit(
      { ...cluster, referenceGrants: [grant] },
      admissionRequest("CREATE", route),
    );
    t.equal(granted.warnings, undefined);

    const grantForUDP = {
      ...grant,
      spec: {
        ...grant.spec,
        from: [{ group: "gateway.networking.k8s.io", kind: "UDPRoute", namespace: "default" }],
      },
    };
    const wrongKind = await admit(
      { ...cluster, referenceGrants: [grantForUDP] },
      admissionRequest("CREATE", route),
    );
    t.match(
      wrongKind.warnings,
      [/RefNotPermitted/],
      "a grant for UDPRoutes does not cover a TCPRoute",
    );
  },
);

t.test("backendRef to something other than a Service: InvalidKind", async t => {
  const route = tcpRoute("db", {
    parentRefs: [{ name: "l4" }],
    rules: [{ backendRefs: [{ group: "example.com", kind: "Bucket", name: "b", port: 1 }] }],
  });
  const response = await admit(
    { gateways: [l4Gateway], gatewayClasses: [blixtClass] },
    admissionRequest("CREATE", route),
  );
  t.equal(response.allowed, true);
  t.match(response.warnings, [
    /ResolvedRefs will be False \(InvalidKind\): backendRefs\[0\] "b": kind example.com\/Bucket is not supported/,
  ]);
});

t.test("parentRef to a listener that does not exist: NoMatchingParent", async t => {
  const route = tcpRoute("db", {
    parentRefs: [{ name: "l4", sectionName: "nope" }],
    rules: [{ backendRefs: [{ name: "pg", port: 5432 }] }],
  });
  const response = await admit(
    { gateways: [l4Gateway], gatewayClasses: [blixtClass], services: [service("default", "pg")] },
    admissionRequest("UPDATE", route, { oldObject: route }),
  );
  t.equal(response.allowed, true);
  t.same(response.warnings, [
    'TCPRoute default/db: parentRef default/l4 sectionName "nope": Accepted will be False (NoMatchingParent): Gateway default/l4 has no listener named "nope"',
  ]);
});

t.test(
  "routes of other controllers' Gateways, or of Gateways not created yet, get no advice from blixt",
  async t => {
    const theirs = gateway("theirs", "other", [{ name: "tcp", port: 1, protocol: "TCP" }]);
    const route = tcpRoute("db", {
      parentRefs: [{ name: "theirs" }, { name: "not-yet" }],
      rules: [{ backendRefs: [{ name: "missing", port: 1 }] }],
    });
    const response = await admit(
      { gateways: [theirs], gatewayClasses: [otherClass] },
      admissionRequest("CREATE", route),
    );
    t.equal(response.allowed, true);
    t.equal(response.warnings, undefined);
  },
);

t.test("HTTPRoute that L4 cannot carry exactly: UnsupportedValue predicted", async t => {
  const web = gateway("web", "blixt", [{ name: "http", port: 80, protocol: "HTTP" }]);
  const route = {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "HTTPRoute",
    metadata: { namespace: "default", name: "app" },
    spec: {
      parentRefs: [{ name: "web" }],
      rules: [
        {
          filters: [
            {
              type: "RequestHeaderModifier",
              requestHeaderModifier: { set: [{ name: "x", value: "y" }] },
            },
          ],
          backendRefs: [{ name: "app", port: 5432 }],
        },
      ],
    },
  };
  const response = await admit(
    { gateways: [web], gatewayClasses: [blixtClass], services: [service("default", "app")] },
    admissionRequest("CREATE", route),
  );
  t.equal(response.allowed, true);
  t.same(response.warnings, [
    "HTTPRoute default/app: parentRef default/web: Accepted will be False (UnsupportedValue): spec.rules[0].filters is set; blixt forwards HTTP per connection at L4, so it carries only HTTPRoutes with one rule, no matches beyond PathPrefix /, no filters, timeouts, retries or session persistence",
  ]);
});

t.test("Gateway with an unsupported protocol and a port conflict: approved, warned", async t => {
  const gw = gateway("mixed", "blixt", [
    { name: "tls", port: 443, protocol: "TLS", tls: { mode: "Passthrough" } },
    { name: "a", port: 80, protocol: "TCP" },
    { name: "b", port: 80, protocol: "TCP" },
    { name: "dns-tcp", port: 53, protocol: "TCP" },
    { name: "dns-udp", port: 53, protocol: "UDP" },
  ]);
  const response = await admit({ gatewayClasses: [blixtClass] }, admissionRequest("CREATE", gw));
  t.equal(
    response.allowed,
    true,
    "the conformance suite applies such Gateways and expects conditions",
  );
  t.same(response.warnings, [
    'Gateway default/mixed: listener "tls": Accepted will be False (UnsupportedProtocol): protocol "TLS" is not supported; blixt serves TCP, UDP, HTTP and HTTPS listeners',
    'Gateway default/mixed: listener "b": Conflicted will be True (ProtocolConflict): port 80/TCP is already used by listener "a" (TCP)',
  ]);
});

t.test(
  "what the compile step decides beyond the old admission copy: a Service port, HTTP hostnames sharing a port, a label selector",
  async t => {
    const route = tcpRoute("db", {
      parentRefs: [{ name: "l4", sectionName: "tcp" }],
      rules: [{ backendRefs: [{ name: "pg", port: 6432 }] }],
    });
    const noPort = await admit(
      { gateways: [l4Gateway], gatewayClasses: [blixtClass], services: [service("default", "pg")] },
      admissionRequest("CREATE", route),
    );
    t.same(noPort.warnings, [
      'TCPRoute default/db: ResolvedRefs will be False (BackendNotFound): backendRefs[0] "pg": Service default/pg has no port 6432',
    ]);

    const web = gateway("web", "blixt", [
      { name: "a", port: 80, protocol: "HTTP", hostname: "a.example.com" },
      { name: "b", port: 80, protocol: "HTTP", hostname: "b.example.com" },
      { name: "a-again", port: 80, protocol: "HTTP", hostname: "a.example.com" },
    ]);
    const hostnames = await admit(
      { gatewayClasses: [blixtClass] },
      admissionRequest("CREATE", web),
    );
    t.same(hostnames.warnings, [
      'Gateway default/web: listener "a-again": Conflicted will be True (HostnameConflict): listener "a" already serves hostname "a.example.com" on port 80',
    ]);

    const selective = gateway("selective", "blixt", [
      {
        name: "tcp",
        port: 5432,
        protocol: "TCP",
        allowedRoutes: {
          namespaces: { from: "Selector", selector: { matchLabels: { team: "db" } } },
        },
      },
    ]);
    const fromApps = tcpRoute(
      "db",
      {
        parentRefs: [{ name: "selective", namespace: "default" }],
        rules: [{ backendRefs: [{ name: "pg", namespace: "apps", port: 5432 }] }],
      },
      "apps",
    );
    const apps = (labels: Record<string, string>) => ({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: "apps", labels },
    });
    const cluster: Cluster = {
      gateways: [selective],
      gatewayClasses: [blixtClass],
      services: [service("apps", "pg")],
    };
    const refused = await admit(
      { ...cluster, namespaces: [apps({ team: "web" })] },
      admissionRequest("CREATE", fromApps),
    );
    t.same(refused.warnings, [
      'TCPRoute apps/db: parentRef default/selective: Accepted will be False (NotAllowedByListeners): listener "tcp" does not allow routes from namespace "apps" (allowedRoutes.namespaces.from: Selector)',
    ]);
    const allowed = await admit(
      { ...cluster, namespaces: [apps({ team: "db" })] },
      admissionRequest("CREATE", fromApps),
    );
    t.equal(allowed.warnings, undefined);
  },
);

t.test("Gateway of another controller's class: no warnings", async t => {
  const gw = gateway("theirs", "other", [{ name: "tls", port: 443, protocol: "TLS" }]);
  const response = await admit(
    { gatewayClasses: [otherClass, blixtClass] },
    admissionRequest("CREATE", gw),
  );
  t.equal(response.allowed, true);
  t.equal(response.warnings, undefined);
});

t.test("lookups failing never block a Gateway API object", async t => {
  const failing: AdmissionLookup = {
    gateway: async () => Promise.reject({ status: 503, statusText: "Service Unavailable" }),
    gatewayClass: async () => Promise.reject(new Error("connection refused")),
    service: async () => undefined,
    referenceGrants: async () => [],
    namespace: async () => undefined,
  };
  const capability = gatewayAdmission({ env: {}, lookup: failing });
  const binding = capability.bindings.find(b => b.isValidate && b.kind.kind === "TCPRoute")!;
  const route = tcpRoute("db", { parentRefs: [{ name: "l4" }], rules: [] });
  const response = await binding.validateCallback!(
    new PeprValidateRequest(admissionRequest("CREATE", route) as never),
  );
  t.equal(response.allowed, true);
});

const dataplaneConfig = (spec: Record<string, unknown>, name = "l4") => ({
  apiVersion: "blixt.dev/v1alpha1",
  kind: "DataplaneConfig",
  metadata: { namespace: "default", name },
  spec: {
    gatewayName: name,
    gatewayGeneration: 1,
    address: "198.18.100.1",
    listeners: [
      {
        name: "tcp",
        port: 5432,
        protocol: "TCP",
        rejectWeight: 0,
        backends: [
          {
            name: "default/pg:5432",
            weight: 1,
            endpoints: [{ address: "198.19.224.5", port: 5432 }],
          },
        ],
      },
    ],
    ...spec,
  },
});

t.test("DataplaneConfig written by the controller: allowed", async t => {
  const response = await admit(
    {},
    admissionRequest("CREATE", dataplaneConfig({}), {
      userInfo: { username: CONTROLLER, groups: ["system:serviceaccounts"] },
    }),
  );
  t.equal(response.allowed, true);
});

t.test(
  "DataplaneConfig spec written by anyone else: denied, saying what to do instead",
  async t => {
    const response = await admit({}, admissionRequest("CREATE", dataplaneConfig({})));
    t.equal(response.allowed, false);
    t.equal(response.statusCode, 403);
    t.match(
      response.statusMessage,
      /DataplaneConfig default\/l4: spec is written only by blixt's controller .* not by "kubernetes-admin"; change the Gateway and its routes instead/,
    );
  },
);

t.test("DataplaneConfig metadata-only update by the garbage collector: allowed", async t => {
  const before = dataplaneConfig({});
  const after = { ...before, metadata: { ...before.metadata, finalizers: ["foregroundDeletion"] } };
  const response = await admit(
    {},
    admissionRequest("UPDATE", after, {
      oldObject: before,
      userInfo: {
        username: "system:serviceaccount:kube-system:generic-garbage-collector",
        groups: [],
      },
    }),
  );
  t.equal(response.allowed, true);
});

t.test("DataplaneConfig with a bad address or port: denied even from the controller", async t => {
  const bad = dataplaneConfig({
    address: "198.18.100.300",
    listeners: [
      {
        name: "tcp",
        port: 70000,
        protocol: "TCP",
        rejectWeight: 0,
        backends: [{ weight: 1, endpoints: [{ address: "pod-a", port: 0 }] }],
      },
    ],
  });
  const response = await admit(
    {},
    admissionRequest("CREATE", bad, { userInfo: { username: CONTROLLER, groups: [] } }),
  );
  t.equal(response.allowed, false);
  t.equal(response.statusCode, 422);
  t.match(
    response.statusMessage,
    /spec\.address: "198\.18\.100\.300" is not an IPv4 or IPv6 address/,
  );
  t.match(response.statusMessage, /spec\.listeners\[0\]\.port: 70000 is not a port/);
  t.match(response.statusMessage, /endpoints\[0\]\.address: "pod-a" is not an IP address/);
});

t.test("DataplaneConfig problems: name, duplicate listeners, weights", async t => {
  const config = dataplaneConfig({
    gatewayName: "other",
    listeners: [
      {
        name: "a",
        port: 80,
        protocol: "TCP",
        rejectWeight: -1,
        backends: [{ weight: 0, endpoints: [] }],
      },
      { name: "b", port: 80, protocol: "TCP", rejectWeight: 0, backends: [] },
    ],
  });
  t.same(dataplaneConfigProblems(config as never), [
    'spec.gatewayName: "other" must equal metadata.name "l4" (one DataplaneConfig per Gateway, named after it)',
    "spec.listeners[0].rejectWeight: -1 must be a non-negative integer",
    "spec.listeners[0].backends[0].weight: 0 must be a positive integer",
    "spec.listeners[0].backends[0].endpoints: a backend needs at least one endpoint",
    "spec.listeners[1]: a second listener on 80/TCP",
  ]);
});

t.test("the admission capability registers Validate bindings only", async t => {
  const capability = gatewayAdmission({ env: {}, lookup: lookupOf({}) });
  t.same(
    capability.bindings
      .map(b => `${b.kind.kind}:${b.isValidate ? "validate" : b.isWatch ? "watch" : "mutate"}`)
      .sort(),
    [
      "DataplaneConfig:validate",
      "Gateway:validate",
      "HTTPRoute:validate",
      "TCPRoute:validate",
      "UDPRoute:validate",
    ],
  );
});
