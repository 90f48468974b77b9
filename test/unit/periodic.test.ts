// SPDX-License-Identifier: Apache-2.0
// The loop under the Lease renewals, the announce deadline and the yield checks: one step at a
// time, the next one interval after the last ended, a failing step not the end of it, stop()
// waiting for the step under way.
import t from "tap";
import { Periodic } from "../../capabilities/agent/periodic";

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

t.test("steps never overlap, and the interval counts from the end of the last", async t => {
  let running = 0;
  let most = 0;
  const ends: number[] = [];
  const starts: number[] = [];
  const loop = new Periodic(async () => {
    starts.push(Date.now());
    running++;
    most = Math.max(most, running);
    await sleep(60);
    running--;
    ends.push(Date.now());
  }, 20);
  loop.start(true);
  t.equal(starts.length, 1, "start(true): the first step at once");
  await sleep(300);
  await loop.stop();
  t.equal(most, 1, "one step at a time, though each outlasts the interval");
  t.ok(starts.length >= 3, `${starts.length} steps in 300 ms`);
  for (let i = 1; i < starts.length; i++)
    t.ok(starts[i] - ends[i - 1] >= 15, `step ${i + 1} began an interval after step ${i} ended`);
  t.equal(ends.length, starts.length, "stop() waited for the step under way");
  const after = starts.length;
  await sleep(100);
  t.equal(starts.length, after, "nothing after stop()");
});

t.test("start(false) waits one interval; a failing step does not end the loop", async t => {
  let calls = 0;
  const loop = new Periodic(async () => {
    calls++;
    throw new Error("a step that fails");
  }, 30);
  loop.start(false);
  t.equal(calls, 0, "nothing at once");
  await sleep(150);
  await loop.stop();
  t.ok(calls >= 2, `it went on after failures (${calls} steps)`);
});
