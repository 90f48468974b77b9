// SPDX-License-Identifier: Apache-2.0
/** A Gateway's listeners: which are valid, which route kinds they take, which conflict. */
import { referenceGranted } from "./backends.js";
import type { Verdict } from "./conditions.js";
import { bad, mergeConditions, ok } from "./conditions.js";
import type { ListenerStatus, RouteGroupKind, RouteKind } from "./types.js";
import { GATEWAY_GROUP } from "./types.js";
import { firstFew, isDns1123Label, isDns1123Subdomain } from "./util.js";
import type {
  CertificateRefView,
  CompileInput,
  GatewayView,
  ListenerSetView,
  ListenerView,
} from "./views.js";

/** The route kinds each protocol carries at L4 (HTTP and HTTPS per connection, see ARCHITECTURE). */
const KINDS_BY_PROTOCOL: Record<string, RouteKind[]> = {
  TCP: ["TCPRoute"],
  UDP: ["UDPRoute"],
  HTTP: ["HTTPRoute"],
  HTTPS: ["HTTPRoute"],
};

export interface CertificateRef {
  namespace: string;
  name: string;
}

/** Whose listener it is, for ReferenceGrants (their "from") and allowedRoutes "Same". */
export interface ListenerOwner {
  kind: "Gateway" | "ListenerSet";
  namespace: string;
}

/** A listener as the compile step judges it: its conditions, and what routes it takes. */
export interface ListenerContext {
  name: string;
  /** "namespace/name" of the ListenerSet it comes from; absent for the Gateway's own. */
  listenerSet?: string;
  owner: ListenerOwner;
  port: number;
  protocol: string;
  hostname: string;
  transport?: "TCP" | "UDP";
  supportedKinds: RouteGroupKind[];
  allowedFrom: string; // Same | All | Selector | None
  selector?: unknown;
  certificateRefs: CertificateRef[];
  accepted: Verdict;
  conflicted: Verdict;
  resolvedRefs: Verdict;
  /** Routes may attach (Accepted and not Conflicted). */
  attachable: boolean;
  /** Carries traffic: attachable, its certificates resolved, and it takes some route kind. */
  valid: boolean;
  /** Every condition is as it should be. */
  healthy: boolean;
}

/** ProcessListeners: every listener of one Gateway, judged alone and then against each other. */
export function processListeners(
  gateway: GatewayView,
  input: Pick<CompileInput, "secrets" | "referenceGrants">,
): ListenerContext[] {
  const owner: ListenerOwner = { kind: "Gateway", namespace: gateway.meta.namespace };
  const listeners = gateway.listeners.map((listener, i) =>
    processListener(owner, listener, i, input),
  );
  markConflicts(listeners);
  judge(listeners);
  return listeners;
}

/**
 * The listeners of a ListenerSet the Gateway allows, judged against the listeners that take
 * precedence (`kept`: the Gateway's own and those of older ListenerSets, GEP-1713): the first
 * listener on the list keeps a port and hostname, a later one that clashes is Conflicted and
 * not Accepted, with the reason HostnameConflict or ProtocolConflict. Those it keeps are
 * appended to `kept`.
 */
export function processListenerSetListeners(
  listenerSet: ListenerSetView,
  kept: ListenerContext[],
  input: Pick<CompileInput, "secrets" | "referenceGrants">,
): ListenerContext[] {
  const owner: ListenerOwner = { kind: "ListenerSet", namespace: listenerSet.meta.namespace };
  const listeners = listenerSet.listeners.map((listener, i) => {
    const context = processListener(owner, listener, i, input);
    context.listenerSet = listenerSet.key;
    return context;
  });
  for (const p of listeners) {
    if (p.accepted.status !== "True" || !p.transport) continue;
    const conflict = conflictWith(kept, p);
    if (conflict) {
      p.conflicted = conflict;
      p.accepted = bad("Accepted", conflict.reason, conflict.message);
      continue;
    }
    // The Gateway's table holds one entry per port and transport, at most MAX_PORTS of them.
    const ports = new Set(kept.map(q => `${q.port}/${q.transport}`));
    if (!ports.has(`${p.port}/${p.transport}`) && ports.size >= MAX_PORTS) {
      p.accepted = bad(
        "Accepted",
        "TooManyListeners",
        `the Gateway and its ListenerSets already use ${MAX_PORTS} ports (port and transport), as many as its DataplaneConfig holds; port ${p.port}/${p.transport} would be one more`,
      );
      continue;
    }
    kept.push(p);
  }
  judge(listeners);
  return listeners;
}

/** Ports (port and transport) a Gateway's DataplaneConfig holds: its CRD's maxItems. */
export const MAX_PORTS = 64;

function judge(listeners: ListenerContext[]): void {
  for (const p of listeners) {
    p.attachable = p.accepted.status === "True" && p.conflicted.status === "False";
    p.healthy = p.attachable && p.resolvedRefs.status === "True";
    // Unknown kinds in allowedRoutes do not stop the listener serving the kinds it does take.
    p.valid =
      p.healthy ||
      (p.attachable &&
        p.resolvedRefs.reason === "InvalidRouteKinds" &&
        p.supportedKinds.length > 0);
  }
}

function processListener(
  owner: ListenerOwner,
  l: ListenerView,
  i: number,
  input: Pick<CompileInput, "secrets" | "referenceGrants">,
): ListenerContext {
  const name = l.name ?? `listeners[${i}]`;
  const { protocol, port } = l;
  const listener: ListenerContext = {
    name,
    owner,
    port,
    protocol,
    hostname: l.hostname,
    supportedKinds: [],
    allowedFrom: l.allowedFrom,
    selector: l.selector,
    certificateRefs: [],
    accepted: ok("Accepted", "Accepted", "Listener is accepted"),
    conflicted: bad("Conflicted", "NoConflicts", "No conflicts"),
    resolvedRefs: ok("ResolvedRefs", "ResolvedRefs", "All references resolved"),
    attachable: false,
    valid: false,
    healthy: false,
  };

  const carried = KINDS_BY_PROTOCOL[protocol];
  if (l.name === undefined) {
    listener.accepted = bad(
      "Accepted",
      "UnsupportedValue",
      `listeners[${i}] has no name; every listener needs a unique name`,
    );
    return listener;
  }
  if (!carried) {
    listener.accepted = bad(
      "Accepted",
      "UnsupportedProtocol",
      `protocol ${JSON.stringify(protocol)} is not supported; blixt serves TCP, UDP, HTTP and HTTPS listeners`,
    );
    return listener;
  }
  if (protocol === "HTTPS" && l.tlsMode !== "Terminate") {
    listener.accepted = bad(
      "Accepted",
      "UnsupportedProtocol",
      `tls.mode ${JSON.stringify(l.tlsMode)} is not supported; blixt terminates TLS (mode Terminate)`,
    );
    return listener;
  }
  if (port < 1 || port > 65535) {
    listener.accepted = bad(
      "Accepted",
      "PortUnavailable",
      `port ${l.portText} is not a port number from 1 to 65535`,
    );
    return listener;
  }
  listener.transport = protocol === "UDP" ? "UDP" : "TCP";

  // allowedRoutes.kinds: keep the ones this protocol carries; any other makes ResolvedRefs False.
  const requested = l.allowedKinds;
  if (requested.length === 0) {
    listener.supportedKinds = carried.map(kind => ({ group: GATEWAY_GROUP, kind }));
  } else {
    const invalid: string[] = [];
    for (const { group, kind } of requested) {
      if (group === GATEWAY_GROUP && (carried as string[]).includes(kind)) {
        if (!listener.supportedKinds.some(s => s.kind === kind))
          listener.supportedKinds.push({ group, kind });
      } else invalid.push(`${group}/${kind}`);
    }
    if (invalid.length > 0) {
      listener.resolvedRefs = bad(
        "ResolvedRefs",
        "InvalidRouteKinds",
        `allowedRoutes.kinds: ${firstFew(invalid)} cannot attach to a ${protocol} listener; it takes ${carried.join(", ")}`,
      );
    }
  }
  if (!["Same", "All", "Selector", "None"].includes(listener.allowedFrom)) {
    listener.accepted = bad(
      "Accepted",
      "UnsupportedValue",
      `allowedRoutes.namespaces.from ${JSON.stringify(listener.allowedFrom)} is not Same, All, Selector or None`,
    );
  }

  if (protocol === "HTTPS") {
    const certs = checkCertificateRefs(owner, l.certificateRefs, input);
    listener.certificateRefs = certs.refs;
    if (certs.problem && listener.resolvedRefs.status === "True")
      listener.resolvedRefs = certs.problem;
  }
  return listener;
}

function checkCertificateRefs(
  owner: ListenerOwner,
  refs: CertificateRefView[],
  input: Pick<CompileInput, "secrets" | "referenceGrants">,
): { refs: CertificateRef[]; problem?: Verdict } {
  if (refs.length === 0) {
    return {
      refs: [],
      problem: bad(
        "ResolvedRefs",
        "InvalidCertificateRef",
        "tls.certificateRefs is empty; an HTTPS listener needs a kubernetes.io/tls Secret",
      ),
    };
  }
  const good: CertificateRef[] = [];
  let problem: Verdict | undefined;
  refs.forEach(({ group, kind, name, namespace }, i) => {
    const what = `tls.certificateRefs[${i}] "${name}"`;
    const fail = (reason: string, message: string) => {
      problem ??= bad("ResolvedRefs", reason, `${what}: ${message}`);
    };
    if ((group !== "" && group !== "core") || kind !== "Secret")
      return fail(
        "InvalidCertificateRef",
        `kind ${group ? `${group}/` : ""}${kind} is not supported; use a core Secret`,
      );
    // Checked before anything reads the Secret: the name goes into the URL of a GET.
    if (!isDns1123Subdomain(name)) {
      return fail(
        "InvalidCertificateRef",
        `the name is not a DNS-1123 subdomain (lowercase letters, digits, "-" and ".", at most 253 characters), so no Secret has it; fix tls.certificateRefs[${i}].name`,
      );
    }
    if (!isDns1123Label(namespace)) {
      return fail(
        "InvalidCertificateRef",
        `the namespace ${JSON.stringify(namespace)} is not a DNS-1123 label (lowercase letters, digits and "-", at most 63 characters), so no namespace has it; fix tls.certificateRefs[${i}].namespace`,
      );
    }
    if (
      namespace !== owner.namespace &&
      !referenceGranted(
        input,
        { group: GATEWAY_GROUP, kind: owner.kind, namespace: owner.namespace },
        namespace,
        { group: "", kind: "Secret", name },
      )
    ) {
      return fail(
        "RefNotPermitted",
        `Secret ${namespace}/${name} is in another namespace and no ReferenceGrant in "${namespace}" allows ${owner.kind}s from "${owner.namespace}"`,
      );
    }
    const secret = input.secrets.get(`${namespace}/${name}`);
    if (!secret) return fail("InvalidCertificateRef", `Secret ${namespace}/${name} not found`);
    if (secret.type !== "kubernetes.io/tls")
      return fail(
        "InvalidCertificateRef",
        `Secret ${namespace}/${name} is of type ${JSON.stringify(secret.type)}, not kubernetes.io/tls`,
      );
    if (!secret.validTLS)
      return fail(
        "InvalidCertificateRef",
        `Secret ${namespace}/${name} does not hold a parseable certificate and private key in tls.crt and tls.key`,
      );
    good.push({ namespace, name });
  });
  return { refs: good, problem };
}

/**
 * Listeners sharing a port and transport must be told apart: at L4 only HTTP (or HTTPS)
 * listeners with distinct hostnames can share a port. The first listener in spec order keeps
 * the port; each later one that clashes is Conflicted.
 */
function markConflicts(listeners: ListenerContext[]): void {
  const seen: ListenerContext[] = [];
  for (const p of listeners) {
    if (p.accepted.status !== "True" || !p.transport) continue;
    const conflict = conflictWith(seen, p);
    if (conflict) p.conflicted = conflict;
    else seen.push(p);
  }
}

/** Why `p` cannot share its port with the listeners already `seen`, if it cannot. */
function conflictWith(seen: ListenerContext[], p: ListenerContext): Verdict | undefined {
  const same = seen.filter(q => q.port === p.port && q.transport === p.transport);
  if (same.length === 0) return undefined;
  const where = (q: ListenerContext) =>
    `listener "${q.name}"${q.listenerSet ? ` of ListenerSet ${q.listenerSet}` : ""}`;
  const sharable =
    (p.protocol === "HTTP" || p.protocol === "HTTPS") && same.every(q => q.protocol === p.protocol);
  if (!sharable) {
    return {
      type: "Conflicted",
      status: "True",
      reason: "ProtocolConflict",
      message: `port ${p.port}/${p.transport} is already used by ${where(same[0])} (${same[0].protocol})`,
    };
  }
  const taken = same.find(q => q.hostname === p.hostname);
  if (taken) {
    return {
      type: "Conflicted",
      status: "True",
      reason: "HostnameConflict",
      message: `${where(taken)} already serves hostname ${JSON.stringify(p.hostname)} on port ${p.port}`,
    };
  }
  return undefined;
}

/**
 * One entry of status.listeners (a Gateway's or a ListenerSet's). Programmed follows the
 * parent's; a listener that is not valid says why, with the reason of its conflict when it lost
 * one to a listener of another object (GEP-1713: HostnameConflict or ProtocolConflict).
 */
export function listenerStatus(
  l: ListenerContext,
  attachedRoutes: number,
  parentProgrammed: Verdict | undefined,
  previousConditions: unknown,
  generation: number,
  now: string,
): ListenerStatus {
  const problem =
    l.accepted.status !== "True"
      ? l.accepted
      : l.conflicted.status !== "False"
        ? l.conflicted
        : l.resolvedRefs;
  const lostToAnother =
    l.listenerSet !== undefined && l.conflicted.status === "True" ? l.conflicted.reason : undefined;
  const programmed = !l.valid
    ? bad("Programmed", lostToAnother ?? "Invalid", `listener is not valid: ${problem.message}`)
    : parentProgrammed?.status === "True"
      ? ok("Programmed", "Programmed", "Listener is programmed on every ready node")
      : bad(
          "Programmed",
          parentProgrammed?.reason === "Invalid" ? "Invalid" : "Pending",
          parentProgrammed?.message ?? "not programmed yet",
        );
  return {
    name: l.name,
    supportedKinds: l.supportedKinds,
    attachedRoutes,
    conditions: mergeConditions(
      previousConditions,
      [l.accepted, l.conflicted, l.resolvedRefs, programmed],
      generation,
      now,
    ),
  };
}
