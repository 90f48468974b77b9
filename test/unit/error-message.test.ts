// SPDX-License-Identifier: Apache-2.0
// errorMessage: every thrown value becomes one readable line, never "[object Object]".
import t from "tap";
import { errorMessage } from "../../capabilities/error-message.js";

t.test("an Error gives its message", async t => {
  t.equal(errorMessage(new Error("boom")), "boom");
});

t.test("kubernetes-fluent-client's thrown response gives status, text and message", async t => {
  t.equal(
    errorMessage({ status: 403, statusText: "Forbidden", data: { message: "no list" } }),
    "403 Forbidden: no list",
  );
  t.equal(errorMessage({ status: 500, data: "raw body" }), "500: raw body");
});

t.test("any other object is shown as JSON, a cycle or a primitive as String()", async t => {
  t.equal(errorMessage({ code: "ECONNRESET" }), '{"code":"ECONNRESET"}');
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  t.equal(errorMessage(cycle), "[object Object]", "a cycle cannot be JSON");
  t.equal(errorMessage("plain"), "plain");
  t.equal(errorMessage(undefined), "undefined");
});
