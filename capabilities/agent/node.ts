// SPDX-License-Identifier: Apache-2.0
// The node the agent runs on: bpffs, the ingress interface, and what kind of link it is (the
// attach mode follows from that, ../dataplane/mode.ts). The choices are pure functions of what
// `ip -j` prints; the I/O around them is a few commands.
import { execa } from "execa";
import { mkdir, statfs } from "node:fs/promises";
import { netnsPrefix } from "../dataplane/bpftool.js";
import { REQUESTED_MODES, type RequestedMode } from "../dataplane/mode.js";

/** `ip ARGS`, inside network namespace `netns` when given. */
async function ip(args: string[], netns?: string): Promise<string> {
  const argv = [...netnsPrefix(netns), "ip", ...args];
  return (await execa(argv[0], argv.slice(1))).stdout;
}

interface Route {
  dst?: string;
  dev?: string;
  metric?: number;
}

/** The interface of the default route with the lowest metric, from `ip -j route show default`. */
export function defaultRouteInterface(routes: Route[]): string | undefined {
  return routes
    .filter(r => r.dst === "default" && r.dev)
    .sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0]?.dev;
}

export function parseRequestedMode(value: string | undefined): RequestedMode {
  const mode = (value ?? "auto").trim() || "auto";
  if (!(REQUESTED_MODES as readonly string[]).includes(mode)) {
    throw new Error(
      `BLIXT_ATTACH_MODE="${value}" is not an attach mode; set it to one of ${REQUESTED_MODES.join(", ")} (auto: TC on a veth, native XDP elsewhere)`,
    );
  }
  return mode as RequestedMode;
}

/** statfs(2)'s f_type of a bpffs mount (BPF_FS_MAGIC in linux/magic.h). */
export const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * Mounts bpffs where the pins live, unless it is mounted already. Another filesystem mounted
 * there (a node whose /sys/fs/bpf is a plain directory of sysfs or tmpfs, shared into the pod)
 * is refused: pins in it would not outlive the agent, so every restart would drop the flows.
 */
export async function ensureBpffs(mountPoint = "/sys/fs/bpf"): Promise<void> {
  const mounted = await execa("mountpoint", ["-q", mountPoint], { reject: false });
  if (mounted.exitCode !== 0) {
    await mkdir(mountPoint, { recursive: true });
    const r = await execa("mount", ["-t", "bpf", "bpf", mountPoint], { reject: false });
    if (r.exitCode !== 0) {
      throw new Error(
        `mounting bpffs on ${mountPoint} failed: ${r.stderr.trim()}; the agent needs a privileged container with ${mountPoint} mounted from the host`,
      );
    }
  }
  const { type } = await statfs(mountPoint);
  if (type !== BPF_FS_MAGIC) {
    throw new Error(
      `${mountPoint} is a mount of another filesystem (f_type 0x${type.toString(16)}), not bpffs, so pinned maps would not outlive the agent; mount bpffs there on the node ("mount -t bpf bpf ${mountPoint}") and restart the agent`,
    );
  }
}

/** The configured interface, or the default route's. */
export async function ingressInterface(
  configured: string | undefined,
  netns?: string,
): Promise<string> {
  if (configured?.trim()) return configured.trim();
  const stdout = await ip(["-j", "route", "show", "default"], netns);
  const iface = defaultRouteInterface(JSON.parse(stdout || "[]") as Route[]);
  if (!iface)
    throw new Error(
      "no default route on this node, so no ingress interface to attach to; set BLIXT_INTERFACE to the interface Gateway traffic arrives on",
    );
  return iface;
}

/** The link's kind ("veth", "vxlan", …) from `ip -j -d link show`, undefined for a plain device. */
export async function linkKind(iface: string, netns?: string): Promise<string | undefined> {
  const stdout = await ip(["-j", "-d", "link", "show", "dev", iface], netns);
  const [link] = JSON.parse(stdout) as { linkinfo?: { info_kind?: string } }[];
  return link?.linkinfo?.info_kind;
}

interface AddressInfo {
  family?: string;
  local?: string;
  scope?: string;
}

/** The first global IPv4 address in `ip -j addr show dev IFACE` output, if any. */
export function firstIPv4(links: { addr_info?: AddressInfo[] }[]): string | undefined {
  return links
    .flatMap(l => l.addr_info ?? [])
    .find(a => a.family === "inet" && a.scope === "global" && a.local)?.local;
}

/** The node's own IPv4 address on the ingress interface: where HTTPS listeners' TLS terminators listen. */
export async function interfaceAddress(iface: string, netns?: string): Promise<string | undefined> {
  return firstIPv4(
    JSON.parse((await ip(["-j", "-4", "addr", "show", "dev", iface], netns)) || "[]"),
  );
}
