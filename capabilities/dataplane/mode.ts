// SPDX-License-Identifier: Apache-2.0
// How blixt's ingress program runs on a device, and how "auto" picks it: one rule for the node
// agent (BLIXT_ATTACH_MODE) and `blixt dataplane attach --mode`. Pure.

/** How the ingress program runs on a device: native XDP, generic (skb) XDP, or TC ingress. */
export type AttachMode = "xdp" | "xdpgeneric" | "tc";
export type RequestedMode = AttachMode | "auto";
export const REQUESTED_MODES: readonly RequestedMode[] = ["auto", "xdp", "xdpgeneric", "tc"];

/**
 * How to attach to an interface. On a veth (minikube, kind, the local cluster), native XDP
 * cannot transmit the RST back (XDP_TX reaches the peer only if the peer runs XDP too, and the
 * peer sits in the host), so "auto" picks TC there and native XDP elsewhere.
 */
export function pickMode(requested: RequestedMode, linkKind: string | undefined): AttachMode {
  if (requested !== "auto") return requested;
  return linkKind === "veth" ? "tc" : "xdp";
}

/** Why pickMode chose what it did, in a phrase for a log line or the CLI's output. */
export function modeReason(requested: RequestedMode, linkKind: string | undefined): string {
  if (requested !== "auto") return `${requested} as asked`;
  if (linkKind === "veth")
    return "auto: a veth, where a reply sent by XDP (XDP_TX, e.g. a TCP RST) reaches the peer only if the peer runs XDP too, so TC ingress";
  return `auto: ${linkKind ? `a ${linkKind} device` : "not a veth"}, so native XDP`;
}
