// SPDX-License-Identifier: Apache-2.0
// The demo's client: opens TCP connections or sends UDP datagrams to a Gateway's address, each
// from a fresh source port (a new flow), and reports how the answers spread over the backends
// against the route's weights, and which client address the backends saw. The backends are
// hack/demo's echo pods (blixt.local/echo:v1 with ECHO_NAME): every answer starts with
// "NAME PEER_IP:PORT". Exits 1 when a check fails, saying which.
//
//   tsx hack/demo/traffic.ts --protocol tcp --address 198.18.0.100 --port 80 \
//     --weights echo-a=1,echo-b=2,echo-c=3 --client-ip 198.18.0.1 [--count 300]
import { Command, InvalidArgumentError, Option } from "commander";
import dgram from "node:dgram";
import net from "node:net";
import { pathToFileURL } from "node:url";

export type Protocol = "tcp" | "udp";
export type Answer =
  | { ok: true; backend: string; peerIp: string; from: string }
  | { ok: false; error: string };

/** What a backend's answer starts with: "NAME PEER_IP:PORT\n" (IPv4 peers only). */
export function parseIdentity(text: string): { backend: string; peerIp: string } | undefined {
  const line = text.split("\n", 1)[0];
  const match = /^(\S+) (\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(line);
  return match ? { backend: match[1], peerIp: match[2] } : undefined;
}

/** "echo-a=1,echo-b=2" → Map; the backend names are the echo pods' ECHO_NAME. */
export function parseWeights(text: string): Map<string, number> {
  const weights = new Map<string, number>();
  for (const term of text.split(",").filter(Boolean)) {
    const [name, weight] = term.split("=");
    const value = Number(weight);
    if (!name || !Number.isInteger(value) || value < 0) {
      throw new InvalidArgumentError(`"${term}" is not NAME=WEIGHT with a whole weight ≥ 0`);
    }
    weights.set(name, value);
  }
  if (weights.size === 0) throw new InvalidArgumentError("no NAME=WEIGHT given");
  return weights;
}

export interface Summary {
  lines: string[];
  failures: string[];
}

/**
 * Compares the answers with the route: every probe answered, each backend's share within
 * `tolerance` (a fraction, e.g. 0.1 = ten percentage points) of its weight's share, no answer
 * from a backend the route does not name, every backend saw `clientIp`, and every reply came
 * from `gateway` (the Gateway's address and port, so the reply was reverse-NATed).
 */
export function summarize(
  protocol: Protocol,
  answers: Answer[],
  weights: Map<string, number>,
  clientIp: string,
  gateway: string,
  tolerance: number,
): Summary {
  const lines: string[] = [];
  const failures: string[] = [];
  const answered = answers.filter((a): a is Extract<Answer, { ok: true }> => a.ok);
  const label = protocol.toUpperCase();
  lines.push(`${label}: ${answered.length}/${answers.length} answered`);
  if (answered.length < answers.length) {
    const errors = [...new Set(answers.flatMap(a => (a.ok ? [] : [a.error])))];
    failures.push(
      `${label}: ${answers.length - answered.length} of ${answers.length} got no answer (${errors.join("; ")})`,
    );
  }
  const counts = new Map<string, number>();
  for (const a of answered) counts.set(a.backend, (counts.get(a.backend) ?? 0) + 1);
  const totalWeight = [...weights.values()].reduce((sum, w) => sum + w, 0);
  const pct = (x: number) => `${(100 * x).toFixed(1).padStart(5)} %`;
  const width = Math.max(...[...weights.keys(), ...counts.keys()].map(n => n.length));
  for (const [backend, weight] of weights) {
    const count = counts.get(backend) ?? 0;
    const share = answered.length ? count / answered.length : 0;
    const expected = totalWeight ? weight / totalWeight : 0;
    const within = Math.abs(share - expected) <= tolerance && (weight === 0) === (count === 0);
    lines.push(
      `  ${backend.padEnd(width)}  weight ${String(weight).padStart(2)}  ${String(count).padStart(4)} answers  ${pct(share)}  (expected ${pct(expected)})  ${within ? "✓" : "✗"}`,
    );
    if (!within) {
      failures.push(
        `${label}: backend ${backend} (weight ${weight}) answered ${pct(share).trim()} of flows, expected ${pct(expected).trim()} ± ${(100 * tolerance).toFixed(0)} points`,
      );
    }
  }
  for (const [backend, count] of counts) {
    if (!weights.has(backend)) {
      lines.push(
        `  ${backend.padEnd(width)}  not in the route  ${String(count).padStart(4)} answers  ✗`,
      );
      failures.push(
        `${label}: ${count} answers came from ${backend}, which the route does not name`,
      );
    }
  }
  const peers = [...new Set(answered.map(a => a.peerIp))];
  const peersOk = peers.length === 1 && peers[0] === clientIp;
  lines.push(
    `  backends saw the client as: ${peers.join(", ") || "(no answer)"}  ${peersOk ? `✓ the client's own address` : `✗ expected ${clientIp}`}`,
  );
  if (!peersOk && answered.length)
    failures.push(
      `${label}: backends saw ${peers.join(", ")}, not the client's address ${clientIp}`,
    );
  const froms = [...new Set(answered.map(a => a.from))];
  const fromOk = froms.length === 1 && froms[0] === gateway;
  lines.push(
    `  replies came from: ${froms.join(", ") || "(no answer)"}  ${fromOk ? "✓ the Gateway's address" : `✗ expected ${gateway}`}`,
  );
  if (!fromOk && answered.length)
    failures.push(`${label}: replies came from ${froms.join(", ")}, not the Gateway's ${gateway}`);
  return { lines, failures };
}

/** One TCP connection: read the identity line, check one echo round trip, close. */
function probeTcp(address: string, port: number, seq: number, timeoutMs: number): Promise<Answer> {
  return new Promise(resolve => {
    const socket = net.connect({ host: address, port });
    const probe = `probe ${seq}\n`;
    let received = "";
    let identity: { backend: string; peerIp: string } | undefined;
    const finish = (answer: Answer) => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(timeoutMs, () =>
      finish({ ok: false, error: `timed out after ${timeoutMs} ms` }),
    );
    socket.on("error", (err: NodeJS.ErrnoException) =>
      finish({ ok: false, error: err.code ?? err.message }),
    );
    socket.on("data", chunk => {
      received += chunk.toString("latin1");
      if (!identity) {
        if (!received.includes("\n")) return;
        identity = parseIdentity(received);
        if (!identity)
          return finish({
            ok: false,
            error: `not an echo identity line: ${JSON.stringify(received.slice(0, 60))}`,
          });
        received = received.slice(received.indexOf("\n") + 1);
        socket.write(probe);
      }
      if (received.length >= probe.length) {
        if (received.startsWith(probe)) {
          finish({ ok: true, ...identity, from: `${socket.remoteAddress}:${socket.remotePort}` });
        } else {
          finish({
            ok: false,
            error: `echo came back wrong: ${JSON.stringify(received.slice(0, 60))}`,
          });
        }
      }
    });
    socket.on("end", () => finish({ ok: false, error: "connection closed before the echo" }));
  });
}

/** One datagram from a fresh socket (a new flow), resent up to `tries` times if unanswered. */
function probeUdp(
  address: string,
  port: number,
  seq: number,
  timeoutMs: number,
  tries = 3,
): Promise<Answer> {
  return new Promise(resolve => {
    const socket = dgram.createSocket("udp4");
    const probe = Buffer.from(`probe ${seq}\n`);
    let attempt = 0;
    let timer: NodeJS.Timeout | undefined;
    const finish = (answer: Answer) => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    const send = () => {
      attempt++;
      socket.send(probe, port, address);
      timer = setTimeout(
        () =>
          attempt < tries ? send() : finish({ ok: false, error: `no reply to ${tries} datagrams` }),
        timeoutMs,
      );
    };
    socket.on("error", (err: NodeJS.ErrnoException) =>
      finish({ ok: false, error: err.code ?? err.message }),
    );
    socket.on("message", (message, rinfo) => {
      const text = message.toString("latin1");
      const identity = parseIdentity(text);
      if (!identity)
        return finish({
          ok: false,
          error: `not an echo identity line: ${JSON.stringify(text.slice(0, 60))}`,
        });
      if (!text.endsWith(probe.toString("latin1")))
        return finish({ ok: false, error: "the datagram did not come back" });
      finish({ ok: true, ...identity, from: `${rinfo.address}:${rinfo.port}` });
    });
    socket.bind(0, send);
  });
}

async function run(
  count: number,
  concurrency: number,
  probe: (seq: number) => Promise<Answer>,
): Promise<Answer[]> {
  const answers: Answer[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const seq = next++;
      answers[seq] = await probe(seq);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return answers;
}

const positive = (flag: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new InvalidArgumentError(`${flag} must be a whole number ≥ 1, got "${value}"`);
  return n;
};

async function main(argv: string[]): Promise<number> {
  const options = new Command("traffic")
    .description(
      "send flows to a Gateway address and report how hack/demo's echo backends shared them",
    )
    .addOption(
      new Option("--protocol <protocol>", "tcp or udp")
        .choices(["tcp", "udp"])
        .makeOptionMandatory(),
    )
    .requiredOption("--address <ip>", "the Gateway's address")
    .requiredOption("--port <port>", "the listener's port", positive("--port"))
    .requiredOption("--weights <list>", "the route's backendRefs as NAME=WEIGHT,...", parseWeights)
    .requiredOption("--client-ip <ip>", "the address the backends must see")
    .option("--count <n>", "flows to send", positive("--count"), 300)
    .option("--concurrency <n>", "flows in flight at once", positive("--concurrency"), 16)
    .option(
      "--tolerance <points>",
      "allowed distance of a share from its weight, in percentage points",
      positive("--tolerance"),
      10,
    )
    .option("--timeout <ms>", "per connection / per datagram", positive("--timeout"), 2000)
    .parse(argv)
    .opts<{
      protocol: Protocol;
      address: string;
      port: number;
      weights: Map<string, number>;
      clientIp: string;
      count: number;
      concurrency: number;
      tolerance: number;
      timeout: number;
    }>();
  const probe =
    options.protocol === "tcp"
      ? (seq: number) => probeTcp(options.address, options.port, seq, options.timeout)
      : (seq: number) => probeUdp(options.address, options.port, seq, options.timeout);
  const answers = await run(options.count, options.concurrency, probe);
  const { lines, failures } = summarize(
    options.protocol,
    answers,
    options.weights,
    options.clientIp,
    `${options.address}:${options.port}`,
    options.tolerance / 100,
  );
  console.log(lines.join("\n"));
  for (const failure of failures) console.error(`traffic: ${failure}`);
  return failures.length ? 1 : 0;
}

// Run as a command, not when a test imports the pure functions above.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv);
}
