// SPDX-License-Identifier: Apache-2.0
// `blixt dataplane conntrack`'s table: every entry says which table holds it (confirmed or
// unconfirmed) and how long its flow has been idle, TCP and UDP alike.
import t from "tap";
import { formatConntrack } from "../../cli/dataplane.js";
import type { ConntrackEntry } from "../../capabilities/dataplane/dataplane.js";

const entry = (proto: "tcp" | "udp", confirmed: boolean, lastSeenNs: number): ConntrackEntry =>
  ({
    confirmed,
    direction: "forward",
    proto,
    saddr: "192.0.2.9",
    sport: 40000,
    daddr: "198.18.0.1",
    dport: 80,
    natAddr: "198.18.1.2",
    natPort: 8080,
    svcId: 3,
    epoch: 1,
    lastSeenNs,
  }) as ConntrackEntry;

t.test("TCP and UDP rows show state and idle time", async t => {
  const now = 100_000_000_000n;
  const text = formatConntrack(
    [
      entry("tcp", true, 97_500_000_000),
      entry("tcp", false, 99_000_000_000),
      entry("udp", true, 40_000_000_000),
    ],
    now,
  );
  const lines = text.split("\n");
  t.match(lines[0], /^PROTO\s+STATE\s+DIRECTION\s+SOURCE\s+DESTINATION\s+NAT\s+SVC\s+IDLE$/);
  t.match(
    lines[1],
    /^tcp\s+unconfirmed\s+forward\s.*\s1\.0s$/,
    "the most recent first; an unconfirmed TCP flow, idle 1 s",
  );
  t.match(lines[2], /^tcp\s+confirmed\s+forward\s.*\s2\.5s$/, "a confirmed TCP flow, idle 2.5 s");
  t.match(lines[3], /^udp\s+confirmed\s.*\s60\.0s$/, "UDP likewise");
  t.notMatch(
    text,
    /checked|ago/,
    "no 'checked … ago': TCP entries are stamped by their packets now",
  );
  t.equal(formatConntrack([], now), "no conntrack entries");
});
