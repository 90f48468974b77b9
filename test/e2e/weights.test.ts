// SPDX-License-Identifier: Apache-2.0
// Weighted backendRefs (1:3) on the local cluster: over 1,000 new TCP connections and 1,000 new
// UDP flows from the root namespace, each backend's share of them is its weight's share
// within ±5 percentage points, the tolerance of the conformance suite's weighted tests.
import t, { type Test } from "tap";
import {
  apply,
  clusterSkipReason,
  echoBackend,
  freshNamespace,
  gatewayAddress,
  tcpEchoOnce,
  UdpFlow,
  waitFor,
  waitForCondition,
  waitForDeployment,
} from "../lib/cluster.js";

const skip = clusterSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(5 * 60 * 1000);
  t.test("weighted backendRefs share new connections by weight", run);
}

// 1,000 samples: at 500 a fair 1:3 split leaves the ±5 band in about 1 run in 100 (σ ≈ 1.9 points).
const samples = 1000;
const tolerance = 0.05;
// In flight at once: enough to be quick, few enough that no SYN queue or socket limit interferes.
const concurrency = 10;

async function run(t: Test) {
  const namespace = await freshNamespace(t, "blixt-e2e-weights");
  const port = 7100;
  await apply(`
${echoBackend({ namespace, name: "tcp-light", protocol: "TCP", port: 3000 })}
---
${echoBackend({ namespace, name: "tcp-heavy", protocol: "TCP", port: 3000 })}
---
${echoBackend({ namespace, name: "udp-light", protocol: "UDP", port: 8080 })}
---
${echoBackend({ namespace, name: "udp-heavy", protocol: "UDP", port: 8080 })}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: weighted, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port}}
  - {name: udp, protocol: UDP, port: ${port}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: ${namespace}}
spec:
  parentRefs: [{name: weighted, sectionName: tcp}]
  rules: [{backendRefs: [{name: tcp-light, port: 3000, weight: 1}, {name: tcp-heavy, port: 3000, weight: 3}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: udp, namespace: ${namespace}}
spec:
  parentRefs: [{name: weighted, sectionName: udp}]
  rules: [{backendRefs: [{name: udp-light, port: 8080, weight: 1}, {name: udp-heavy, port: 8080, weight: 3}]}]
`);
  for (const name of ["tcp-light", "tcp-heavy", "udp-light", "udp-heavy"])
    await waitForDeployment(namespace, name);
  await waitForCondition("gateway", "weighted", namespace, "Programmed", { status: "True" });
  const address = await gatewayAddress(namespace, "weighted");
  // Both backends must be in the dataplane before counting: wait until each has answered once.
  await waitFor(
    "both TCP backends to answer",
    async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 40 && seen.size < 2; i++)
        seen.add((await tcpEchoOnce(address, port)).service);
      return seen.size === 2 ? true : undefined;
    },
    { timeoutMs: 60_000 },
  );

  await t.test(`TCP: ${samples} connections`, async t => {
    const counts = await sample(async () => (await tcpEchoOnce(address, port)).service);
    checkShares(t, counts, { "tcp-light": 0.25, "tcp-heavy": 0.75 });
  });

  await t.test(`UDP: ${samples} flows (a new source port each)`, async t => {
    const counts = await sample(async () => {
      const flow = await UdpFlow.open(address, port);
      try {
        const reply = await flow.echo("which", 10);
        if (!reply)
          throw new Error(
            `no UDP reply from ${address}:${port} after 10 tries from port ${flow.localPort}`,
          );
        return reply.service;
      } finally {
        flow.close();
      }
    });
    checkShares(t, counts, { "udp-light": 0.25, "udp-heavy": 0.75 });
  });
}

/** Runs `probe` `samples` times, `concurrency` at a time; counts the backends it names. */
async function sample(probe: () => Promise<string>): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  let started = 0;
  const worker = async () => {
    while (started < samples) {
      started++;
      const backend = await probe();
      counts[backend] = (counts[backend] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return counts;
}

function checkShares(t: Test, counts: Record<string, number>, expected: Record<string, number>) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  t.equal(total, samples, `${samples} answers`);
  t.same(
    Object.keys(counts).sort(),
    Object.keys(expected).sort(),
    "only the route's backends answered",
    { counts },
  );
  for (const [backend, share] of Object.entries(expected)) {
    const seen = (counts[backend] ?? 0) / total;
    // The epsilon keeps 80.0 % against 75 % ± 5 inside, as the band reads (floats make it 5.000…04).
    t.ok(
      Math.abs(seen - share) <= tolerance + 1e-9,
      `${backend}: ${(seen * 100).toFixed(1)} % of new flows, expected ${share * 100} % ± ${tolerance * 100}`,
      { counts },
    );
  }
}
