// SPDX-License-Identifier: Apache-2.0
/**
 * Clients inside the cluster ("hairpin"): a pod's packets never cross the node's uplink, so the
 * programs that serve it run on the node's end of each pod's interface: blixt_tc_pod_ingress
 * (a pod's packet to a Gateway address is DNATed to its backend, wherever that runs) and
 * blixt_tc_egress (the backend's replies get the Gateway address back). Pods come and go: the
 * agent follows the kernel's link events (`ip monitor link`, one long-lived process) and lists
 * the node's links on each, and every interval besides, attaching to those it has not attached
 * to yet (a name whose ifindex changed is a new pod's). A CNI creates a pod's interface before
 * the pod's containers start, so the programs are on it by the time the pod sends anything.
 * Which links are pods' is told by name prefix, as CNIs name them (`veth` for the bridge, ptp
 * and kindnet plugins, `cali` for Calico); the uplink is never one of them.
 */
import { createInterface } from "node:readline";
import { execa, type ResultPromise } from "execa";
import { errorMessage } from "../error-message.js";
import type { AgentLog } from "./log.js";

/** Prefixes of the node's ends of pod interfaces when BLIXT_POD_INTERFACE_PREFIXES is unset. */
export const DEFAULT_POD_INTERFACE_PREFIXES = ["veth"] as const;

/**
 * BLIXT_POD_INTERFACE_PREFIXES: comma- or space-separated name prefixes; unset means the default,
 * an empty value turns in-cluster clients off. Throws naming the variable for a prefix that no
 * interface name could start with.
 */
export function podInterfacePrefixes(value: string | undefined): string[] {
  if (value === undefined) return [...DEFAULT_POD_INTERFACE_PREFIXES];
  const prefixes = value.split(/[\s,]+/).filter(Boolean);
  for (const prefix of prefixes) {
    // IFNAMSIZ is 16 with the NUL; '/', ':' and whitespace are never in an interface name.
    if (prefix.length > 15 || /[/:]/.test(prefix))
      throw new Error(
        `BLIXT_POD_INTERFACE_PREFIXES: "${prefix}" is not the start of an interface name (at most 15 characters, no "/" or ":"); set the chart's agent.podInterfacePrefixes to the prefixes your CNI gives the node's ends of pod interfaces (veth, cali, …)`,
      );
  }
  return prefixes;
}

export interface Link {
  ifname: string;
  ifindex: number;
}

/** The links that are pods' interfaces: a prefix matches, and it is neither the uplink nor lo. Pure. */
export function podLinks(links: Link[], prefixes: readonly string[], uplink: string): Link[] {
  return links.filter(
    l =>
      l.ifname !== uplink &&
      l.ifname !== "lo" &&
      prefixes.some(prefix => l.ifname.startsWith(prefix)),
  );
}

export interface PodInterfacesOptions {
  prefixes: readonly string[];
  /** the interface blixt's ingress program runs on: never a pod's */
  uplink: string;
  /** the node's links (`ip -j link show`) */
  list: () => Promise<Link[]>;
  /** attaches both programs to one link; re-attaching replaces in place */
  attach: (ifname: string) => Promise<void>;
  log: AgentLog;
}

export interface PodInterfacesSync {
  attached: string[];
  failed: string[];
  gone: number;
}

/** What the agent has attached to, kept in step with the node's links by `sync`. */
export class PodInterfaces {
  readonly #o: PodInterfacesOptions;
  /** name → ifindex of each pod interface both programs are attached to */
  readonly #attached = new Map<string, number>();
  #failures = 0;
  #running: Promise<unknown> | undefined;
  #again = false;

  constructor(options: PodInterfacesOptions) {
    this.#o = options;
  }

  /**
   * A sync now, or right after the one running (link events come in bursts: one sync follows
   * them all). Errors are logged, never thrown.
   */
  trigger(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.sync()
      .catch(error =>
        this.#o.log.error(
          { error: errorMessage(error) },
          "listing the node's links for pod interfaces failed; trying again at the next link event or scan",
        ),
      )
      .finally(() => {
        this.#running = undefined;
        if (this.#again) {
          this.#again = false;
          this.trigger();
        }
      });
  }

  /** Resolves once no sync is running or queued. */
  async settled(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /** How many pod interfaces the programs run on now. */
  count(): number {
    return this.#attached.size;
  }

  /** Attach failures since the start (an interface that went away mid-attach counts too). */
  failures(): number {
    return this.#failures;
  }

  /**
   * Lists the links once and attaches to every pod interface not attached yet. A failure is
   * logged and tried again next time; it stops nothing else. A link that is gone is forgotten
   * (the kernel removed its filters with it).
   */
  async sync(): Promise<PodInterfacesSync> {
    if (this.#o.prefixes.length === 0) return { attached: [], failed: [], gone: 0 };
    const pods = podLinks(await this.#o.list(), this.#o.prefixes, this.#o.uplink);
    const present = new Map(pods.map(l => [l.ifname, l.ifindex]));
    let gone = 0;
    for (const [name, ifindex] of this.#attached) {
      if (present.get(name) !== ifindex) {
        this.#attached.delete(name);
        gone += 1;
      }
    }
    const attached: string[] = [];
    const errors = new Map<string, string>();
    for (const link of pods) {
      if (this.#attached.get(link.ifname) === link.ifindex) continue;
      try {
        await this.#o.attach(link.ifname);
        this.#attached.set(link.ifname, link.ifindex);
        attached.push(link.ifname);
      } catch (error) {
        errors.set(link.ifname, errorMessage(error));
      }
    }
    // An interface that went with its pod meanwhile is no failure; one still there is.
    const failed: string[] = [];
    if (errors.size > 0) {
      const still = new Set((await this.#o.list()).map(l => l.ifname));
      for (const [ifname, error] of errors) {
        if (!still.has(ifname)) continue;
        this.#failures += 1;
        failed.push(ifname);
        this.#o.log.error(
          { interface: ifname, error },
          "attaching to a pod's interface failed: pods behind it do not reach Gateway addresses until it works; trying again at the next scan",
        );
      }
    }
    if (attached.length > 0 || gone > 0)
      this.#o.log.info(
        { attached, gone, podInterfaces: this.#attached.size },
        "pod interfaces: pods on this node reach Gateway addresses through them",
      );
    return { attached, failed, gone };
  }
}

export interface LinkEventsOptions {
  /** the command that prints a line per link event, e.g. ["ip", "-o", "monitor", "link"] */
  argv: string[];
  onEvent: () => void;
  log: AgentLog;
  /** wait before starting the command again after it ended (ms) */
  restartMs?: number;
}

/**
 * Runs `argv` for as long as the agent runs and calls `onEvent` for every line it prints; a
 * command that ends is started again (and `onEvent` called, for what it may have missed).
 */
export class LinkEvents {
  readonly #o: LinkEventsOptions;
  #child: ResultPromise | undefined;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: LinkEventsOptions) {
    this.#o = options;
  }

  start(): void {
    if (this.#stopped) return;
    const [file, ...args] = this.#o.argv;
    const child = execa(file, args, {
      stdin: "ignore",
      buffer: { stdout: false, stderr: true },
      reject: false,
    });
    this.#child = child;
    createInterface({ input: child.stdout! }).on("line", () => this.#o.onEvent());
    void child.then(result => {
      if (this.#stopped) return;
      this.#o.log.error(
        { command: this.#o.argv.join(" "), exitCode: result.exitCode, stderr: result.stderr },
        "the link event monitor ended; starting it again (new pods are found by the periodic scan meanwhile)",
      );
      this.#timer = setTimeout(() => {
        this.start();
        this.#o.onEvent();
      }, this.#o.restartMs ?? 1000);
      this.#timer.unref?.();
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#child?.kill();
    await this.#child?.catch(() => undefined);
  }
}
