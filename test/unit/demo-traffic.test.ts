// SPDX-License-Identifier: Apache-2.0
// The demo client's verdicts: what counts as an identity line, a weight list, and when a
// spread, a client address or a reply address fails the demo.
import t from "tap";
import { type Answer, parseIdentity, parseWeights, summarize } from "../../hack/demo/traffic";

const answer = (backend: string, peerIp = "198.18.0.1", from = "198.18.0.100:80"): Answer => ({
  ok: true,
  backend,
  peerIp,
  from,
});
const repeat = (n: number, a: Answer) => Array.from({ length: n }, () => a);
const weights = new Map([
  ["echo-a", 1],
  ["echo-b", 3],
]);

t.test("parseIdentity reads the echo server's first line", async t => {
  t.same(parseIdentity("echo-a 198.18.0.1:40412\nprobe 1\n"), {
    backend: "echo-a",
    peerIp: "198.18.0.1",
  });
  t.equal(parseIdentity("probe 1\n"), undefined, "an echo without identity (ECHO_NAME unset)");
  t.equal(parseIdentity("echo-a [::1]:40412\n"), undefined, "IPv6 peers are not parsed");
});

t.test("parseWeights", async t => {
  t.same(
    [...parseWeights("echo-a=1,echo-b=2")],
    [
      ["echo-a", 1],
      ["echo-b", 2],
    ],
  );
  t.throws(() => parseWeights("echo-a"), /NAME=WEIGHT/);
  t.throws(() => parseWeights("echo-a=-1"), /NAME=WEIGHT/);
  t.throws(() => parseWeights(""), /no NAME=WEIGHT/);
});

t.test(
  "a spread within tolerance, the client's address and the Gateway's replies pass",
  async t => {
    const answers = [...repeat(27, answer("echo-a")), ...repeat(73, answer("echo-b"))];
    const { failures, lines } = summarize(
      "tcp",
      answers,
      weights,
      "198.18.0.1",
      "198.18.0.100:80",
      0.1,
    );
    t.same(failures, []);
    t.match(lines[0], "TCP: 100/100 answered");
  },
);

t.test("each check fails on its own and says which", async t => {
  const skewed = [...repeat(50, answer("echo-a")), ...repeat(50, answer("echo-b"))];
  t.match(summarize("tcp", skewed, weights, "198.18.0.1", "198.18.0.100:80", 0.1).failures, [
    /backend echo-a \(weight 1\) answered 50.0 % of flows, expected 25.0 % ± 10 points/,
    /backend echo-b/,
  ]);
  const snat = [...repeat(25, answer("echo-a", "198.19.224.1")), ...repeat(75, answer("echo-b"))];
  t.match(summarize("udp", snat, weights, "198.18.0.1", "198.18.0.100:80", 0.1).failures, [
    /UDP: backends saw 198.19.224.1, 198.18.0.1, not the client's address 198.18.0.1/,
  ]);
  const noReverseNat = [
    ...repeat(25, answer("echo-a", "198.18.0.1", "198.19.224.7:8080")),
    ...repeat(75, answer("echo-b")),
  ];
  t.match(summarize("tcp", noReverseNat, weights, "198.18.0.1", "198.18.0.100:80", 0.1).failures, [
    /replies came from 198.19.224.7:8080, 198.18.0.100:80, not the Gateway's 198.18.0.100:80/,
  ]);
  const stranger = [
    ...repeat(25, answer("echo-a")),
    ...repeat(74, answer("echo-b")),
    answer("echo-z"),
  ];
  t.match(summarize("tcp", stranger, weights, "198.18.0.1", "198.18.0.100:80", 0.1).failures, [
    /echo-z, which the route does not name/,
  ]);
  const lost: Answer[] = [
    ...repeat(25, answer("echo-a")),
    ...repeat(74, answer("echo-b")),
    { ok: false, error: "ECONNREFUSED" },
  ];
  t.match(summarize("tcp", lost, weights, "198.18.0.1", "198.18.0.100:80", 0.1).failures, [
    /1 of 100 got no answer \(ECONNREFUSED\)/,
  ]);
});

t.test("a backend with weight 1 that got nothing fails even inside the tolerance", async t => {
  const few = new Map([
    ["echo-a", 1],
    ["echo-b", 19],
  ]);
  const answers = repeat(100, answer("echo-b"));
  t.match(summarize("tcp", answers, few, "198.18.0.1", "198.18.0.100:80", 0.1).failures, [
    /echo-a \(weight 1\) answered 0.0 %/,
  ]);
});
