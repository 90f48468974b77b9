// SPDX-License-Identifier: Apache-2.0
// What the kind tests (test/kind/) share: their backends are socat in the netcheck image
// (`hack/kind.sh test-images` builds and loads it), each answering a connection or a datagram
// with one line, "<pod name> <peer address>", the peer being what the backend's own socket saw.
import net from "node:net";
import { kubectl } from "./cluster.js";

export const NETCHECK_IMAGE = "blixt.local/netcheck:v1";

/**
 * The socat command of a backend that answers every TCP connection on `port` with its line.
 * backlog=128: socat's default of 5 overflows under a burst of new connections, and the pod's
 * kernel then loses handshakes whatever sits in front of it.
 */
export const whoAmITcp = (port: number): string[] => [
  "socat",
  `TCP-LISTEN:${port},fork,reuseaddr,backlog=128`,
  "SYSTEM:echo $(hostname) $SOCAT_PEERADDR",
];

/** The same for every UDP datagram on `port`, answered from the socket it arrived on. */
export const whoAmIUdp = (port: number): string[] => [
  "socat",
  `UDP-RECVFROM:${port},fork`,
  "SYSTEM:echo $(hostname) $SOCAT_PEERADDR",
];

/** One container of the netcheck image: its command, and the TCP port it is ready on, if any. */
export interface NetcheckContainer {
  name: string;
  command: string[];
  readyPort?: number;
}

/** A Pod spec's `containers`, as YAML flow (JSON), all of the netcheck image. */
export function netcheckContainers(containers: NetcheckContainer[]): string {
  return JSON.stringify(
    containers.map(c => ({
      name: c.name,
      image: NETCHECK_IMAGE,
      imagePullPolicy: "Never",
      command: c.command,
      ...(c.readyPort
        ? { readinessProbe: { tcpSocket: { port: c.readyPort }, periodSeconds: 1 } }
        : {}),
    })),
  );
}

/**
 * A Pod of netcheck containers on one node, gone at once when deleted; `tolerateAll` lets it on
 * a tainted node (kind's control plane).
 */
export function netcheckPod(pod: {
  name: string;
  namespace: string;
  node: string;
  labels: Record<string, string>;
  tolerateAll?: boolean;
  containers: NetcheckContainer[];
}): string {
  return `
apiVersion: v1
kind: Pod
metadata: {name: ${pod.name}, namespace: ${pod.namespace}, labels: ${JSON.stringify(pod.labels)}}
spec:
  nodeName: ${pod.node}
${pod.tolerateAll ? "  tolerations: [{operator: Exists}]\n" : ""}  terminationGracePeriodSeconds: 0
  containers: ${netcheckContainers(pod.containers)}
`;
}

export type Answer = { pod: string; peer: string };

/** A backend's line "<pod> <peer>"; throws naming where it came from when it is not one. */
export function parseAnswer(line: string, from: string): Answer {
  const [pod, peer] = line.trim().split(/\s+/);
  if (!pod || !peer) throw new Error(`unexpected answer from ${from}: ${JSON.stringify(line)}`);
  return { pod, peer };
}

/**
 * One TCP connection: the backend's line, then closed by the backend (10 s at most). A failure
 * says what got through: whether the handshake completed (and when), and what arrived, so a
 * lost SYN (the dataplane) reads differently from a slow answer (a loaded backend).
 */
export async function tcpAnswer(host: string, port: number): Promise<Answer> {
  const started = Date.now();
  const socket = net.connect({ host, port });
  socket.setTimeout(10_000);
  let data = "";
  let connectedAfter: number | undefined;
  socket.once("connect", () => (connectedAfter = Date.now() - started));
  socket.on("data", chunk => (data += chunk.toString("utf8")));
  const what = () =>
    `from port ${socket.localPort ?? "?"}: ${
      connectedAfter === undefined
        ? "the handshake never completed"
        : `connected after ${connectedAfter} ms, ${data ? `got ${JSON.stringify(data)}` : "then nothing"}`
    }`;
  await new Promise<void>((resolve, reject) => {
    socket.once("end", resolve);
    socket.once("error", error =>
      reject(new Error(`TCP ${host}:${port} ${what()}: ${error.message}`)),
    );
    socket.once("timeout", () =>
      reject(new Error(`TCP ${host}:${port}: no answer in 10 s, ${what()}`)),
    );
  }).finally(() => socket.destroy());
  return parseAnswer(data, `TCP ${host}:${port}`);
}

/** The cluster's node names. */
export async function nodeNames(): Promise<string[]> {
  return (await kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"))
    .split(/\s+/)
    .filter(Boolean);
}
