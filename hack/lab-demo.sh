#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# blixt end to end on this machine: a client, a gateway node and three backends as network
# namespaces (test/lib/lab.ts), blixt's eBPF dataplane attached on the gateway, a weighted TCP
# service and a UDP service programmed with the `blixt` command, real traffic from the client.
# Everything it creates is removed when it ends, also on failure or Ctrl-C. Run as root.
#
#   hack/lab-demo.sh [xdp|tc]     ingress mode (default xdp)
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-xdp}"
case "$mode" in
  xdp | tc) ;;
  *) echo "demo: mode must be xdp or tc, got \"$mode\"" >&2; exit 2 ;;
esac

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# The node program below removes what it made; this is the net for when it is killed outright.
cleanup() {
  for ns in $(ip netns list 2>/dev/null | awk '/^blixt-demo-/ {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf /sys/fs/bpf/blixt-lab-demo
}
trap cleanup EXIT

step "installing dependencies (hack/deps.sh)"
hack/deps.sh
step "building the BPF objects (make -C bpf)"
make -s -C bpf

export BLIXT_DEMO_MODE="$mode"
node --import tsx --input-type=module --eval "$(cat <<'EOF'
import { execa } from "execa";
import { Lab, countByBackend } from "./test/lib/lab.ts";

const mode = process.env.BLIXT_DEMO_MODE;
const step = (s) => console.log(`\n\x1b[1m==> ${s}\x1b[0m`);
const lab = new Lab({ name: "demo", backends: 3 });
let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    if (stopping) return;
    stopping = true;
    console.log(`\ndemo: ${signal}, tearing the lab down`);
    await lab.down();
    process.exit(130);
  });
}

const pin = ["--pin-dir", lab.pinDir];
async function blixt(...args) {
  console.log(`$ blixt ${args.join(" ")}`);
  const r = await execa("node", ["bin/blixt.js", ...args], { reject: false });
  if (r.stdout) console.log(r.stdout);
  if (r.exitCode !== 0) throw new Error(`blixt ${args[1]} failed (exit ${r.exitCode}): ${r.stderr}`);
}
const pct = (n, total) => `${((100 * n) / total).toFixed(1)} %`;

let failed = false;
try {
  step(`bringing the lab up: ${lab.clientNs} → ${lab.gatewayNs} → ${lab.backendNs.join(", ")}`);
  await lab.up();
  await lab.startServers({ tcp: [8080], udp: [5353] });
  console.log(`client ${lab.clientIp}; backends ${lab.backendIps.join(", ")}`);

  step(`attaching blixt (${mode}) to ${lab.gatewayIface} in ${lab.gatewayNs}`);
  await blixt("dataplane", "attach", "--iface", lab.gatewayIface, "--mode", mode, "--netns", lab.gatewayNs, ...pin);

  const vip = lab.vip(0);
  const weights = [1, 2, 3];
  step(`programming ${vip}:80/tcp with weights ${weights.join(":")} and ${vip}:53/udp`);
  await blixt("dataplane", "set", "--vip", vip, "--port", "80", "--proto", "tcp", ...lab.backendIps.flatMap((ip, i) => ["--backend", `${ip}:8080@${weights[i]}`]), ...pin);
  await blixt("dataplane", "set", "--vip", vip, "--port", "53", "--proto", "udp", ...lab.backendIps.flatMap((ip) => ["--backend", `${ip}:5353`]), ...pin);

  const report = (what, outcomes, expected) => {
    const counts = countByBackend(outcomes);
    const answered = outcomes.filter((o) => o.ok);
    console.log(`${what}: ${answered.length}/${outcomes.length} answered`);
    const total = expected.reduce((a, b) => a + b, 0);
    for (const [i, w] of expected.entries()) {
      const name = lab.backendName(i);
      console.log(`  ${name} ${lab.backendIps[i].padEnd(15)} weight ${w}: ${String(counts[name] ?? 0).padStart(4)} (${pct(counts[name] ?? 0, outcomes.length)}, expected ${pct(w, total)})`);
    }
    const peers = [...new Set(answered.map((o) => o.peer.split(":")[0]))];
    console.log(`  backends saw the client as: ${peers.join(", ") || "(nothing answered)"}${peers.length === 1 && peers[0] === lab.clientIp ? "  ✓ the client's own IP" : ""}`);
    const errors = [...new Set(outcomes.filter((o) => !o.ok).map((o) => o.code))];
    if (errors.length) console.log(`  errors: ${errors.join(", ")}`);
    return answered.length === outcomes.length && peers.length === 1 && peers[0] === lab.clientIp;
  };

  step(`600 TCP connections from the client to ${vip}:80`);
  failed = !report("TCP", await lab.tcp(vip, 80, 600, { concurrency: 32 }), weights) || failed;

  step(`200 UDP requests from the client to ${vip}:53`);
  const udp = await lab.udp(vip, 53, 200);
  failed = !report("UDP", udp, [1, 1, 1]) || failed;
  const from = [...new Set(udp.filter((o) => o.ok).map((o) => o.from))];
  console.log(`  replies came from: ${from.join(", ")}${from.length === 1 && from[0] === `${vip}:53` ? "  ✓ the VIP" : ""}`);

  step("what the dataplane holds");
  await blixt("dataplane", "list", ...pin);
  await blixt("dataplane", "stats", ...pin);
} catch (err) {
  failed = true;
  // After Ctrl-C the signal handler owns the exit; the errors it causes here are no news.
  if (!stopping) console.error(`demo: ${err instanceof Error ? err.message : err}`);
} finally {
  if (!stopping) {
    step("tearing the lab down");
    await lab.down();
  }
}
if (!stopping) {
  console.log(failed ? "\ndemo: FAILED (see above)" : "\ndemo: done");
  process.exit(failed ? 1 : 0);
}
EOF
)"
