// SPDX-License-Identifier: Apache-2.0
/** A Gateway's listeners: which are valid, which route kinds they take, which conflict. */
import { referenceGranted } from "./backends.js";
import type { Verdict } from "./conditions.js";
import { bad, ok } from "./conditions.js";
import type { RouteGroupKind, RouteKind } from "./types.js";
import { GATEWAY_GROUP } from "./types.js";
import { firstFew, isDns1123Label, isDns1123Subdomain } from "./util.js";
import type { CertificateRefView, CompileInput, GatewayView, ListenerView } from "./views.js";

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

/** A listener as the compile step judges it: its conditions, and what routes it takes. */
export interface ListenerContext {
  name: string;
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
  const listeners = gateway.listeners.map((listener, i) =>
    processListener(gateway, listener, i, input),
  );
  markConflicts(listeners);
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
  return listeners;
}

function processListener(
  gateway: GatewayView,
  l: ListenerView,
  i: number,
  input: Pick<CompileInput, "secrets" | "referenceGrants">,
): ListenerContext {
  const name = l.name ?? `listeners[${i}]`;
  const { protocol, port } = l;
  const listener: ListenerContext = {
    name,
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
    const certs = checkCertificateRefs(gateway, l.certificateRefs, input);
    listener.certificateRefs = certs.refs;
    if (certs.problem && listener.resolvedRefs.status === "True")
      listener.resolvedRefs = certs.problem;
  }
  return listener;
}

function checkCertificateRefs(
  gateway: GatewayView,
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
      namespace !== gateway.meta.namespace &&
      !referenceGranted(
        input,
        { group: GATEWAY_GROUP, kind: "Gateway", namespace: gateway.meta.namespace },
        namespace,
        { group: "", kind: "Secret", name },
      )
    ) {
      return fail(
        "RefNotPermitted",
        `Secret ${namespace}/${name} is in another namespace and no ReferenceGrant in "${namespace}" allows Gateways from "${gateway.meta.namespace}"`,
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
    const clash = seen.find(q => q.port === p.port && q.transport === p.transport);
    if (!clash) {
      seen.push(p);
      continue;
    }
    const same = seen.filter(q => q.port === p.port && q.transport === p.transport);
    const sharable =
      (p.protocol === "HTTP" || p.protocol === "HTTPS") &&
      same.every(q => q.protocol === p.protocol);
    if (!sharable) {
      p.conflicted = {
        type: "Conflicted",
        status: "True",
        reason: "ProtocolConflict",
        message: `port ${p.port}/${p.transport} is already used by listener "${clash.name}" (${clash.protocol})`,
      };
    } else if (same.some(q => q.hostname === p.hostname)) {
      p.conflicted = {
        type: "Conflicted",
        status: "True",
        reason: "HostnameConflict",
        message: `listener "${same.find(q => q.hostname === p.hostname)?.name}" already serves hostname ${JSON.stringify(p.hostname)} on port ${p.port}`,
      };
    } else {
      seen.push(p);
    }
  }
}
