// SPDX-License-Identifier: Apache-2.0
// TLS termination's pure decisions: which certificate answers a server name, which backend
// takes a connection, what a kubernetes.io/tls Secret yields, and how an HTTPS listener is
// programmed (steered to the node's terminator, or refused with the reason in status).
import t from "tap";
import { execa } from "execa";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import {
  certificateNames,
  nameMatches,
  parseTlsSecret,
  pickBackend,
  pickCertificate,
  tlsListenerSpecs,
} from "../../capabilities/agent/tls/certificates.js";
import {
  desiredState,
  terminatedService,
  type TlsOutcome,
} from "../../capabilities/agent/desired.js";
import { X509Certificate } from "node:crypto";
import { firstIPv4 } from "../../capabilities/agent/node.js";

t.test(
  "nameMatches: exact names ignore case; a wildcard stands for one whole left-most label",
  async t => {
    const cases: [string, string, boolean][] = [
      ["a.example", "a.example", true],
      ["A.Example", "a.EXAMPLE", true],
      ["a.example", "a.example.", true],
      ["a.example", "b.example", false],
      ["a.example", "x.a.example", false],
      ["*.example", "a.example", true],
      ["*.example", "A.EXAMPLE", true],
      ["*.example", "example", false],
      ["*.example", "a.b.example", false],
      ["*.example", ".example", false],
      ["*.b.example", "a.b.example", true],
      ["*.b.example", "b.example", false],
      ["a.example", "", false],
      ["", "a.example", false],
    ];
    for (const [name, host, want] of cases)
      t.equal(nameMatches(name, host), want, `${name} vs ${host}`);
  },
);

t.test(
  "pickCertificate: exact over wildcard, listener order breaks ties, first without SNI or match",
  async t => {
    const a = { id: "a", names: ["a.example"] };
    const wild = { id: "wild", names: ["*.example"] };
    const b = { id: "b", names: ["b.example", "www.b.example"] };
    const certs = [wild, a, b];
    t.equal(
      pickCertificate("a.example", certs)?.id,
      "a",
      "an exact match wins over an earlier wildcard",
    );
    t.equal(
      pickCertificate("c.example", certs)?.id,
      "wild",
      "the wildcard takes what no exact name has",
    );
    t.equal(pickCertificate("www.b.example", certs)?.id, "b", "any of a certificate's names");
    t.equal(pickCertificate("B.EXAMPLE", certs)?.id, "b", "without case");
    t.equal(pickCertificate("other.test", certs)?.id, "wild", "no match: the first certificate");
    t.equal(pickCertificate(undefined, certs)?.id, "wild", "no SNI: the first certificate");
    t.equal(pickCertificate("", [a, b])?.id, "a", "empty SNI: the first certificate");
    t.equal(
      pickCertificate("b.example", [a, { id: "b2", names: ["b.example"] }, b])?.id,
      "b2",
      "two exact matches: the first in listener order",
    );
    t.equal(pickCertificate("a.example", []), undefined, "no certificates: none");
  },
);

t.test("pickBackend: weighted, weight 0 never chosen", async t => {
  const backends = [
    { id: "zero", weight: 0 },
    { id: "one", weight: 1 },
    { id: "three", weight: 3 },
    { id: "zero2", weight: 0 },
  ];
  // An even sweep of the random draw: each backend's share is exactly its weight's share.
  const steps = 4000;
  const counts: Record<string, number> = {};
  for (let i = 0; i < steps; i++) {
    const b = pickBackend(backends, i / steps)!;
    counts[b.id] = (counts[b.id] ?? 0) + 1;
  }
  t.same(counts, { one: 1000, three: 3000 }, "1:3, and the weight-0 backends never");
  t.equal(pickBackend(backends, 0)?.id, "one", "the bottom of the range");
  t.equal(pickBackend(backends, 0.9999999999999999)?.id, "three", "the top of the range");
  t.equal(
    pickBackend(backends, 1)?.id,
    "three",
    "a draw of 1 (out of range) stays on a weighted backend",
  );
  t.equal(pickBackend([{ weight: 0 }, { weight: 0 }], 0.5), undefined, "no weight: none");
  t.equal(pickBackend([], 0.5), undefined, "no backends: none");
});

async function pem(
  dir: string,
  name: string,
  extra: string[] = [],
): Promise<{ cert: string; key: string }> {
  await execa("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-subj",
    `/CN=${name}`,
    "-days",
    "1",
    ...extra,
    "-keyout",
    join(dir, `${name}.key`),
    "-out",
    join(dir, `${name}.crt`),
  ]);
  return {
    cert: await readFile(join(dir, `${name}.crt`), "utf8"),
    key: await readFile(join(dir, `${name}.key`), "utf8"),
  };
}
const b64 = (s: string) => Buffer.from(s).toString("base64");
const secret = (p: { cert: string; key: string }, type = "kubernetes.io/tls") => ({
  type,
  data: { "tls.crt": b64(p.cert), "tls.key": b64(p.key) },
});

t.test(
  "parseTlsSecret: a usable certificate and key, or an error naming the Secret and what to do",
  async t => {
    const dir = await mkdtemp(join(tmpdir(), "blixt-tls-unit-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const a = await pem(dir, "a.example", [
      "-addext",
      "subjectAltName=DNS:a.example,DNS:*.a.example,IP:198.18.1.1",
    ]);
    const cnOnly = await pem(dir, "cn.example");
    const other = await pem(dir, "other.example");

    const ok = parseTlsSecret("default/a", secret(a));
    t.ok(ok.ok, "a kubernetes.io/tls Secret with a matching pair parses");
    if (ok.ok) {
      t.same(
        ok.certificate.names,
        ["a.example", "*.a.example"],
        "the DNS subjectAltNames, not the IP one",
      );
      t.equal(ok.certificate.secret, "default/a");
      t.equal(ok.certificate.fingerprint, new X509Certificate(a.cert).fingerprint256);
    }
    const cn = parseTlsSecret("default/cn", secret(cnOnly));
    t.same(cn.ok && cn.certificate.names, ["cn.example"], "no DNS subjectAltName: the subject CN");
    t.same(certificateNames(new X509Certificate(a.cert)), ["a.example", "*.a.example"]);

    const errors: [string, ReturnType<typeof parseTlsSecret>, RegExp][] = [
      [
        "missing",
        parseTlsSecret("default/none", undefined),
        /^Secret default\/none not found; create it, with a PEM certificate/,
      ],
      [
        "wrong type",
        parseTlsSecret("default/opaque", secret(a, "Opaque")),
        /Secret default\/opaque has type "Opaque", not "kubernetes.io\/tls"; put a PEM/,
      ],
      [
        "no tls.crt",
        parseTlsSecret("default/x", { type: "kubernetes.io/tls", data: { "tls.key": b64(a.key) } }),
        /Secret default\/x has no tls\.crt/,
      ],
      [
        "no tls.key",
        parseTlsSecret("default/x", {
          type: "kubernetes.io/tls",
          data: { "tls.crt": b64(a.cert) },
        }),
        /Secret default\/x has no tls\.key/,
      ],
      ["no data", parseTlsSecret("default/x", { type: "kubernetes.io/tls" }), /has no tls\.crt/],
      [
        "garbage certificate",
        parseTlsSecret("default/x", secret({ cert: "not a cert", key: a.key })),
        /tls\.crt does not parse as a PEM certificate/,
      ],
      [
        "garbage key",
        parseTlsSecret("default/x", secret({ cert: a.cert, key: "not a key" })),
        /tls\.key does not parse as a PEM private key/,
      ],
      [
        "another certificate's key",
        parseTlsSecret("default/x", secret({ cert: a.cert, key: other.key })),
        /tls\.key is not the private key of the certificate in tls\.crt/,
      ],
    ];
    for (const [what, parsed, message] of errors) {
      t.equal(parsed.ok, false, `${what}: refused`);
      if (!parsed.ok)
        t.match(parsed.error, message, `${what}: says which Secret and what is wrong`);
    }
  },
);

function config(
  listeners: unknown[],
  extra: { address?: string; name?: string } = {},
): DataplaneConfig {
  const name = extra.name ?? "web";
  return {
    apiVersion: "blixt.dev/v1alpha1",
    kind: "DataplaneConfig",
    metadata: { namespace: "default", name, generation: 3 },
    spec: {
      gatewayName: name,
      gatewayGeneration: 3,
      address: "address" in extra ? extra.address : "198.18.50.1",
      announcingNode: "n1",
      listeners,
    },
  } as DataplaneConfig;
}
const ep = (address: string, port = 8080) => ({ address, port });
const https = (name: string, port: number, backends: unknown[], rejectWeight = 0) => ({
  name,
  port,
  protocol: "TCP",
  rejectWeight,
  backends,
  tls: { certificateRefs: [{ namespace: "default", name: `${name}-cert` }] },
});

t.test(
  "tlsListenerSpecs: the listeners with tls, their certificateRefs and per-endpoint weights",
  async t => {
    const web = config([
      {
        name: "tcp",
        port: 80,
        protocol: "TCP",
        rejectWeight: 0,
        backends: [{ weight: 1, endpoints: [ep("198.18.1.1")] }],
      },
      https(
        "secure",
        443,
        [
          { weight: 2, endpoints: [ep("198.18.1.1"), ep("198.18.1.2")] },
          { weight: 0, endpoints: [ep("198.18.1.3")] },
        ],
        1,
      ),
    ]);
    const specs = tlsListenerSpecs([
      web,
      config([https("x", 443, [])], { name: "pending", address: undefined }),
    ]);
    t.same(
      specs,
      [
        {
          key: "default/web#secure",
          ref: {
            config: "default/web",
            namespace: "default",
            gateway: "web",
            listener: "secure",
            port: 443,
            protocol: "TCP",
          },
          address: "198.18.50.1",
          certificateRefs: [{ namespace: "default", name: "secure-cert" }],
          backends: [
            { ip: "198.18.1.1", port: 8080, weight: 1 },
            { ip: "198.18.1.2", port: 8080, weight: 1 },
          ],
          rejectWeight: 1,
        },
      ],
      "one spec for the HTTPS listener; none for plain TCP or a config without an address",
    );
  },
);

t.test(
  "terminatedService: the node's terminator carries the served share; the kernel refuses the rest",
  async t => {
    const up: TlsOutcome = { ok: true, address: "10.9.0.1", port: 40000 };
    const backends = [
      { ip: "198.18.1.1", port: 8080, weight: 2 },
      { ip: "198.18.1.2", port: 8080, weight: 4 },
    ];
    t.same(terminatedService({ backends, rejectWeight: 0 }, up), {
      backends: [{ ip: "10.9.0.1", port: 40000, weight: 1 }],
      rejectWeight: 0,
    });
    t.same(
      terminatedService({ backends, rejectWeight: 3 }, up),
      { backends: [{ ip: "10.9.0.1", port: 40000, weight: 2 }], rejectWeight: 1 },
      "6:3 reduces to 2:1",
    );
    t.same(
      terminatedService({ backends: [], rejectWeight: 1 }, up),
      { backends: [], rejectWeight: 0 },
      "no backend: refused",
    );
    t.same(
      terminatedService({ backends, rejectWeight: 0 }, { ok: false, error: "x" }),
      { backends: [], rejectWeight: 0 },
      "no terminator: refused",
    );
    t.same(
      terminatedService({ backends, rejectWeight: 0 }, undefined),
      { backends: [], rejectWeight: 0 },
      "unknown: refused",
    );
    const huge = terminatedService(
      {
        backends: [
          { ip: "198.18.1.1", port: 1, weight: 0x7fffffff },
          { ip: "198.18.1.2", port: 1, weight: 0x7fffffff },
        ],
        rejectWeight: 1,
      },
      up,
    );
    t.ok(
      huge.backends[0].weight <= 0xffffffff && huge.rejectWeight >= 1,
      "weights that do not fit a u32 are rounded, the reject share kept",
    );
  },
);

t.test(
  "desiredState: HTTPS listeners go to the node's terminator or are refused, with the reason in status",
  async t => {
    const web = config([
      {
        name: "tcp",
        port: 80,
        protocol: "TCP",
        rejectWeight: 0,
        backends: [{ weight: 1, endpoints: [ep("198.18.1.1")] }],
      },
      https("good", 443, [{ weight: 1, endpoints: [ep("198.18.1.1")] }]),
      https("bad", 8443, [{ weight: 1, endpoints: [ep("198.18.1.1")] }]),
    ]);
    const tls = new Map<string, TlsOutcome>([
      ["default/web#good", { ok: true, address: "10.9.0.1", port: 40000 }],
      ["default/web#bad", { ok: false, error: "Secret default/bad-cert not found; create it" }],
    ]);
    const desired = desiredState([web], "n1", tls);
    t.same(
      desired.services.map(s => [s.port, s.backends, s.rejectWeight]),
      [
        [443, [{ ip: "10.9.0.1", port: 40000, weight: 1 }], 0],
        [80, [{ ip: "198.18.1.1", port: 8080, weight: 1 }], 0],
        [8443, [], 0],
      ],
      "443 steered to the terminator, 80 as before, 8443 refused",
    );
    t.match(
      desired.problems.get("default/web"),
      /HTTPS listener "bad" \(198\.18\.50\.1:8443\/tcp\) refuses connections on node n1: Secret default\/bad-cert not found; create it/,
    );
    t.same(desired.addresses, ["198.18.50.1"], "the config still applies");

    const none = desiredState([web], "n1");
    t.same(
      none.services.filter(s => s.port !== 80).map(s => s.backends),
      [[], []],
      "no terminators at all: both HTTPS listeners refused",
    );
    t.match(none.problems.get("default/web"), /no TLS terminator runs for it on this node/);

    const warned = desiredState(
      [web],
      "n1",
      new Map([
        ...tls,
        [
          "default/web#bad",
          {
            ok: true,
            address: "10.9.0.1",
            port: 40001,
            warning:
              "reading Secret default/bad-cert failed: 503; serving the certificates loaded before",
          },
        ],
      ]),
    );
    t.equal(
      warned.services.find(s => s.port === 8443)?.backends[0]?.port,
      40001,
      "a listener serving on old certificates keeps serving",
    );
    t.match(
      warned.problems.get("default/web"),
      /serving the certificates loaded before/,
      "and says why the status is not clean",
    );
  },
);

t.test(
  "firstIPv4: the ingress interface's global IPv4 address is where terminators listen",
  async t => {
    const links = [
      {
        addr_info: [
          { family: "inet6", local: "fe80::1", scope: "link" },
          { family: "inet", local: "127.0.0.5", scope: "host" },
          { family: "inet", local: "198.18.1.7", scope: "global" },
          { family: "inet", local: "198.18.1.8", scope: "global" },
        ],
      },
    ];
    t.equal(firstIPv4(links), "198.18.1.7");
    t.equal(
      firstIPv4([{ addr_info: [{ family: "inet6", local: "2001:db8::1", scope: "global" }] }]),
      undefined,
      "IPv6 only: none",
    );
    t.equal(firstIPv4([]), undefined, "no such interface output: none");
  },
);
