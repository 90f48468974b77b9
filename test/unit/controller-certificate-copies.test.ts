// SPDX-License-Identifier: Apache-2.0
// The certificate copies: which the compile step asks for (only refs it resolved), how the
// DataplaneConfig names them, and which writes the plan makes of them.
import t from "tap";
import {
  certificateCopyName,
  copyMetadata,
  COPY_LABEL,
  type CertificateCopy,
} from "../../capabilities/gateway/certificate-copies";
import { compile } from "../../capabilities/gateway/compile/index";
import { isDns1123Subdomain } from "../../capabilities/gateway/compile/util";
import type { Gateway, SecretInfo, Snapshot } from "../../capabilities/gateway/compile/types";
import { planWrites, type Write } from "../../capabilities/gateway/plan";

const ME = "blixt.dev/gateway-controller";
const RELEASE = "blixt-system";
const LONG = `gw-${"a".repeat(240)}.example`; // 252 characters: a valid Gateway name

function gateway(name: string): Gateway {
  return {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "Gateway",
    metadata: {
      namespace: "infra",
      name,
      uid: `uid-${name}`,
      generation: 1,
      creationTimestamp: "2026-01-01T00:00:00Z" as never,
    },
    spec: {
      gatewayClassName: "blixt",
      listeners: [
        {
          name: "same",
          port: 443,
          protocol: "HTTPS",
          tls: { certificateRefs: [{ name: "cert" }] },
        },
        {
          name: "granted",
          port: 8443,
          protocol: "HTTPS",
          tls: { certificateRefs: [{ name: "shared", namespace: "certs" }] },
        },
        {
          name: "refused",
          port: 9443,
          protocol: "HTTPS",
          tls: { certificateRefs: [{ name: "private", namespace: "other" }] },
        },
      ],
    },
  } as Gateway;
}

const secret = (namespace: string, name: string, digest: string): SecretInfo => ({
  namespace,
  name,
  type: "kubernetes.io/tls",
  validTLS: true,
  digest,
});

function snapshot(extra: Partial<Snapshot> = {}): Snapshot {
  return {
    controllerName: ME,
    now: "2026-01-01T00:10:00Z",
    gatewayClasses: [
      {
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "GatewayClass",
        metadata: { name: "blixt", generation: 1 },
        spec: { controllerName: ME },
      },
    ] as never,
    gateways: [gateway("web"), gateway(LONG)],
    tcpRoutes: [],
    udpRoutes: [],
    httpRoutes: [],
    referenceGrants: [
      {
        apiVersion: "gateway.networking.k8s.io/v1beta1",
        kind: "ReferenceGrant",
        metadata: { namespace: "certs", name: "infra-gateways" },
        spec: {
          from: [{ group: "gateway.networking.k8s.io", kind: "Gateway", namespace: "infra" }],
          to: [{ group: "", kind: "Secret" }],
        },
      },
    ] as never,
    services: [],
    endpointSlices: [],
    namespaces: [],
    secrets: [
      secret("infra", "cert", "d1"),
      secret("certs", "shared", "d2"),
      secret("other", "private", "d3"),
    ],
    nodes: [{ name: "node-1", ready: true, agentReady: true }] as never,
    dataplaneConfigs: [],
    addressPools: [{ name: "lab", cidrs: ["198.18.100.1-198.18.100.9"] }],
    allocations: {},
    certificateCopyNamespace: RELEASE,
    ...extra,
  };
}

const copyWrites = (writes: Write[]) =>
  writes.filter(w => w.op === "applyCertificateCopy" || w.op === "deleteCertificateCopy");

/** A copy as the cluster would hold it after `apply`: its metadata as the plan asked. */
function existingCopy(copy: CertificateCopy, digest: string) {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { namespace: copy.namespace, name: copy.name, ...copyMetadata(copy, digest) },
  };
}

t.test(
  "copy names are DNS-1123 subdomains, short, deterministic and distinct, even for 253-character Gateway names",
  async t => {
    const a = certificateCopyName(
      { namespace: "infra", name: LONG },
      { namespace: "certs", name: "shared" },
    );
    t.equal(
      a,
      certificateCopyName(
        { namespace: "infra", name: LONG },
        { namespace: "certs", name: "shared" },
      ),
    );
    t.ok(isDns1123Subdomain(a), a);
    t.ok(a.length <= 65, `${a.length} characters`);
    const b = certificateCopyName(
      { namespace: "infra", name: `${LONG.slice(0, -1)}x` },
      { namespace: "certs", name: "shared" },
    );
    t.not(a, b, "Gateways sharing a long prefix get different copies");
    t.not(
      certificateCopyName({ namespace: "a", name: "b-c" }, { namespace: "d", name: "e" }),
      certificateCopyName({ namespace: "a-b", name: "c" }, { namespace: "d", name: "e" }),
    );
    t.ok(
      isDns1123Subdomain(
        certificateCopyName(
          { namespace: "x", name: `${"b".repeat(39)}.c` },
          { namespace: "x", name: "y" },
        ),
      ),
      "a prefix cut at a dot still ends in a letter or digit",
    );
  },
);

t.test(
  "compile asks for a copy of each ref it resolved, none for a refused one, and the DataplaneConfig names the copies",
  async t => {
    const output = compile(snapshot());
    const copies = output.certificateCopies ?? [];
    t.same(
      copies
        .map(
          c =>
            `${c.gateway.name === LONG ? "LONG" : c.gateway.name} ${c.source.namespace}/${c.source.name} [${c.listeners.join(",")}]`,
        )
        .sort(),
      [
        "LONG certs/shared [granted]",
        "LONG infra/cert [same]",
        "web certs/shared [granted]",
        "web infra/cert [same]",
      ],
    );
    t.ok(copies.every(c => c.namespace === RELEASE && isDns1123Subdomain(c.name)));
    const web = output.dataplaneConfigs.find(c => c.metadata?.name === "web")!;
    const refs = Object.fromEntries(
      (web.spec?.listeners ?? []).map(l => [l.name, l.tls?.certificateRefs]),
    );
    t.same(refs.same, [
      {
        namespace: RELEASE,
        name: certificateCopyName(
          { namespace: "infra", name: "web" },
          { namespace: "infra", name: "cert" },
        ),
      },
    ]);
    t.same(refs.granted, [
      {
        namespace: RELEASE,
        name: certificateCopyName(
          { namespace: "infra", name: "web" },
          { namespace: "certs", name: "shared" },
        ),
      },
    ]);
    t.notOk(
      "refused" in refs,
      "the listener whose ref no ReferenceGrant permits is not in the table",
    );
    const status = output.gateways.find(g => g.name === "web")!.status;
    const refused = status.listeners?.find(l => l.name === "refused");
    t.equal(refused?.conditions.find(c => c.type === "ResolvedRefs")?.reason, "RefNotPermitted");

    const without = compile(snapshot({ certificateCopyNamespace: undefined }));
    t.equal(
      without.certificateCopies,
      undefined,
      "no copy namespace: no copies (the golden files and admission)",
    );
    const plain = without.dataplaneConfigs.find(c => c.metadata?.name === "web")!;
    t.same(plain.spec?.listeners?.find(l => l.name === "same")?.tls?.certificateRefs, [
      { namespace: "infra", name: "cert" },
    ]);
  },
);

t.test("the plan makes each copy before the DataplaneConfigs that name it", async t => {
  const state = snapshot();
  const output = compile(state);
  const writes = planWrites(state, output);
  const copies = copyWrites(writes);
  t.equal(copies.length, 4);
  t.ok(copies.every(w => w.op === "applyCertificateCopy"));
  const lastCopy = Math.max(...copies.map(w => writes.indexOf(w)));
  const firstConfig = writes.findIndex(w => w.op === "applyDataplaneConfig");
  t.ok(firstConfig > lastCopy, "copies come first");
  const w = copies.find(
    w =>
      w.op === "applyCertificateCopy" &&
      w.copy.gateway.name === "web" &&
      w.copy.source.name === "shared",
  );
  t.ok(w);
  if (w?.op === "applyCertificateCopy") {
    t.equal(w.namespace, RELEASE);
    t.equal(w.digest, "d2");
    t.equal(w.labels[COPY_LABEL], "true");
    t.equal(w.labels["blixt.dev/gateway-namespace"], "infra");
    t.equal(w.annotations["blixt.dev/gateway"], "infra/web");
    t.equal(w.annotations["blixt.dev/source"], "certs/shared");
    t.equal(w.annotations["blixt.dev/listeners"], "granted");
    t.ok(
      Object.values(w.labels).every(v => v.length <= 63),
      "label values fit",
    );
  }
  t.notOk(
    copies.some(w => w.op === "applyCertificateCopy" && w.copy.source.namespace === "other"),
    "no copy of a refused ref",
  );
});

t.test(
  "copies in place are left alone, rewritten when their source changed, deleted when nothing names them",
  async t => {
    const state = snapshot();
    const output = compile(state);
    const copies = output.certificateCopies ?? [];
    const digests: Record<string, string> = { "infra/cert": "d1", "certs/shared": "d2" };
    const current = copies.map(c =>
      existingCopy(c, digests[`${c.source.namespace}/${c.source.name}`]),
    );
    t.same(
      copyWrites(planWrites({ ...state, certificateCopies: current }, output)),
      [],
      "nothing to do",
    );

    // The source in certs/shared was renewed: both copies of it are rewritten, the others not.
    const renewed = {
      ...state,
      secrets: [
        secret("infra", "cert", "d1"),
        secret("certs", "shared", "d2-renewed"),
        secret("other", "private", "d3"),
      ],
    };
    const rewrites = copyWrites(
      planWrites({ ...renewed, certificateCopies: current }, compile(renewed)),
    );
    t.same(
      rewrites.map(w => w.op === "applyCertificateCopy" && `${w.copy.source.name} ${w.digest}`),
      ["shared d2-renewed", "shared d2-renewed"],
    );

    // A source this pass could not read keeps its copy, as it was.
    const unread = {
      ...state,
      secrets: state.secrets.map(s => (s.name === "shared" ? { ...s, digest: undefined } : s)),
    };
    t.same(copyWrites(planWrites({ ...unread, certificateCopies: current }, compile(unread))), []);

    // The long Gateway is gone: its copies go, after the DataplaneConfig writes; others' labels are not blixt's and stay.
    const fewer = { ...state, gateways: [gateway("web")] };
    const foreign = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { namespace: RELEASE, name: "someone-elses", labels: { app: "x" } },
    };
    const writes = planWrites(
      { ...fewer, certificateCopies: [...current, foreign] },
      compile(fewer),
    );
    const deletes = copyWrites(writes);
    t.same(
      deletes.map(w => `${w.op} ${w.name}`).sort(),
      copies
        .filter(c => c.gateway.name === LONG)
        .map(c => `deleteCertificateCopy ${c.name}`)
        .sort(),
    );
    const lastConfig = Math.max(
      ...writes.map((w, i) => (w.op === "applyDataplaneConfig" ? i : -1)),
    );
    t.ok(
      deletes.every(w => writes.indexOf(w) > lastConfig),
      "deleted after the DataplaneConfigs stop naming them",
    );
  },
);
