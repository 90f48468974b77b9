// SPDX-License-Identifier: Apache-2.0
// The node agent's queue of acknowledgements (capabilities/agent/acks.ts): per config one write
// at a time, the newest waiting one sent and older waiting ones dropped, a few configs at a time.
import t from "tap";
import { AckQueue } from "../../capabilities/agent/acks.js";

/** A `send` whose writes wait until the test lets them go, recording each as it starts. */
function gatedSend() {
  const started: string[] = [];
  const gates = new Map<string, () => void>();
  let inFlight = 0;
  let most = 0;
  const send = (key: string, ack: number) =>
    new Promise<void>(resolve => {
      started.push(`${key}=${ack}`);
      inFlight++;
      most = Math.max(most, inFlight);
      gates.set(`${key}=${ack}`, () => {
        inFlight--;
        resolve();
      });
    });
  const release = async (write: string) => {
    const gate = gates.get(write);
    if (!gate) throw new Error(`${write} was never sent (sent: ${started.join(", ")})`);
    gates.delete(write);
    gate();
    await new Promise(r => setImmediate(r));
  };
  return { send, started, release, most: () => most };
}

t.test("per key, one write at a time, and only the newest waiting one is sent", async t => {
  const g = gatedSend();
  const q = new AckQueue<string, number>(8, g.send);
  const first = q.submit("a", 1);
  const second = q.submit("a", 2);
  const third = q.submit("a", 3);
  let secondSettled = false;
  void second.then(() => (secondSettled = true));
  await new Promise(r => setImmediate(r));
  t.same(g.started, ["a=1"], "the second write of a key waits for the first");
  t.ok(secondSettled, "a waiting write replaced by a newer one settles at once");
  t.equal(q.newest("a"), 3, "the newest queued write is what a pass compares with");
  await g.release("a=1");
  await first;
  t.same(g.started, ["a=1", "a=3"], "then the newest is sent, the replaced one never");
  await g.release("a=3");
  await third;
  t.equal(q.size, 0);
  t.equal(q.newest("a"), undefined);
});

t.test("across keys, at most `concurrency` writes at once, in the order queued", async t => {
  const g = gatedSend();
  const q = new AckQueue<string, number>(2, g.send);
  const all = ["a", "b", "c", "d"].map(k => q.submit(k, 1));
  await new Promise(r => setImmediate(r));
  t.same(g.started, ["a=1", "b=1"]);
  await g.release("b=1");
  t.same(g.started, ["a=1", "b=1", "c=1"], "a slot freed goes to the next key");
  await g.release("a=1");
  await g.release("c=1");
  await g.release("d=1");
  await Promise.all(all);
  t.equal(g.most(), 2, "never more than two in flight");
  await q.idle();
});

t.test("a failing or throwing send settles its write and frees its slot", async t => {
  const sent: number[] = [];
  const q = new AckQueue<string, number>(1, (_key, ack) => {
    sent.push(ack);
    if (ack === 1) throw new Error("refused");
    if (ack === 2) return Promise.reject(new Error("refused later"));
    return Promise.resolve();
  });
  await Promise.all([q.submit("a", 1), q.submit("b", 2), q.submit("c", 3)]);
  t.same(sent, [1, 2, 3]);
  await q.idle();
  t.equal(q.size, 0);
});

t.test("idle waits for writes queued while it waits", async t => {
  const g = gatedSend();
  const q = new AckQueue<string, number>(4, g.send);
  void q.submit("a", 1);
  let idle = false;
  const waiting = q.idle().then(() => (idle = true));
  await new Promise(r => setImmediate(r));
  void q.submit("a", 2);
  await g.release("a=1");
  t.notOk(idle, "a=2 is still waiting");
  await g.release("a=2");
  await waiting;
  t.ok(idle);
});

t.test("a concurrency that is not a positive integer is refused", async t => {
  t.throws(() => new AckQueue(0, async () => {}), /concurrency must be a positive integer, got 0/);
});
