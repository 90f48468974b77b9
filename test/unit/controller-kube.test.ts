// SPDX-License-Identifier: Apache-2.0
// A route's status write keeps other controllers' status.parents entries: the merge and the
// conflict retry, over an in-memory route (test/apiserver/route-status.test.ts runs the same
// write against a real kube-apiserver, whose 409s this imitates).
import t from "tap";
import {
  routeParents,
  writeRouteParents,
  type RouteObject,
  type RouteStatusIO,
} from "../../capabilities/gateway/kube";

const ME = "blixt.dev/gateway-controller";
const entry = (controllerName: string, gateway: string, status = "True") => ({
  controllerName,
  parentRef: { name: gateway },
  conditions: [{ type: "Accepted", status }],
});

t.test(
  "routeParents: blixt's entries from the plan, everyone else's from the route as read",
  async t => {
    const current = [
      entry("example.com/other", "theirs"),
      entry(ME, "old"),
      entry("example.com/third", "x"),
    ];
    t.same(routeParents(current, [entry(ME, "new"), entry("example.com/other", "stale")], ME), [
      entry(ME, "new"),
      entry("example.com/other", "theirs"),
      entry("example.com/third", "x"),
    ]);
    t.same(
      routeParents(current, [], ME),
      [entry("example.com/other", "theirs"), entry("example.com/third", "x")],
      "blixt's entries go, no one else's",
    );
    t.same(routeParents(undefined, [entry(ME, "new")], ME), [entry(ME, "new")]);
  },
);

/** One route whose resourceVersion moves with every write, as the API server's does. */
function memoryRoute(onRead?: (reads: number) => void) {
  let stored: RouteObject = {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "TCPRoute",
    metadata: { namespace: "default", name: "db", resourceVersion: "1" },
    status: { parents: [] },
  };
  const log: string[] = [];
  let reads = 0;
  const io: RouteStatusIO = {
    async read() {
      log.push("read");
      const copy = structuredClone(stored);
      onRead?.(++reads);
      return copy;
    },
    async replaceStatus(_kind, route) {
      if (route.metadata?.resourceVersion !== stored.metadata?.resourceVersion) {
        log.push("409");
        throw {
          status: 409,
          statusText: "Conflict",
          data: { message: "the object has been modified" },
        };
      }
      log.push("write");
      stored = {
        ...structuredClone(route),
        metadata: {
          ...route.metadata,
          resourceVersion: String(Number(stored.metadata!.resourceVersion) + 1),
        },
      };
      return structuredClone(stored);
    },
  };
  return {
    io,
    log,
    get stored() {
      return stored;
    },
    foreignWrite(parent: ReturnType<typeof entry>) {
      stored = structuredClone(stored);
      stored.status!.parents = [
        ...(stored.status!.parents ?? []).filter(p => p.controllerName !== parent.controllerName),
        parent,
      ];
      stored.metadata!.resourceVersion = String(Number(stored.metadata!.resourceVersion) + 1);
    },
  };
}

t.test(
  "a foreign write between blixt's read and its write: 409, read again, both entries kept",
  async t => {
    const route = memoryRoute(reads => {
      if (reads === 1) route.foreignWrite(entry("example.com/other", "theirs"));
    });
    const written = await writeRouteParents(
      { kind: "TCPRoute", namespace: "default", name: "db" },
      [entry(ME, "gw")],
      ME,
      route.io,
    );
    t.same(route.log, ["read", "409", "read", "write"]);
    t.same(written.status?.parents, [entry(ME, "gw"), entry("example.com/other", "theirs")]);
    t.same(route.stored.status?.parents, written.status?.parents);
  },
);

t.test("the stored copy stands in for the first read: no read when it is current", async t => {
  const route = memoryRoute();
  route.foreignWrite(entry("example.com/other", "theirs"));
  const written = await writeRouteParents(
    { kind: "TCPRoute", namespace: "default", name: "db" },
    [entry(ME, "gw")],
    ME,
    route.io,
    5,
    structuredClone(route.stored),
  );
  t.same(route.log, ["write"]);
  t.same(written.status?.parents, [entry(ME, "gw"), entry("example.com/other", "theirs")]);
});

t.test("a stale stored copy: 409, read, write; the entry written since is kept", async t => {
  const route = memoryRoute();
  const stale = structuredClone(route.stored);
  route.foreignWrite(entry("example.com/other", "theirs"));
  const written = await writeRouteParents(
    { kind: "TCPRoute", namespace: "default", name: "db" },
    [entry(ME, "gw")],
    ME,
    route.io,
    5,
    stale,
  );
  t.same(route.log, ["409", "read", "write"]);
  t.same(written.status?.parents, [entry(ME, "gw"), entry("example.com/other", "theirs")]);
});

t.test("nothing to change: read, no write", async t => {
  const route = memoryRoute();
  route.foreignWrite(entry("example.com/other", "theirs"));
  await writeRouteParents(
    { kind: "TCPRoute", namespace: "default", name: "db" },
    [entry(ME, "gw")],
    ME,
    route.io,
  );
  route.log.length = 0;
  await writeRouteParents(
    { kind: "TCPRoute", namespace: "default", name: "db" },
    [entry(ME, "gw"), entry("example.com/other", "stale copy")],
    ME,
    route.io,
  );
  t.same(route.log, ["read"]);
});

t.test(
  "a route someone writes on every read: gives up after the attempts, with the 409",
  async t => {
    const route = memoryRoute(reads =>
      route.foreignWrite(entry("example.com/other", `theirs-${reads}`)),
    );
    const error = await writeRouteParents(
      { kind: "TCPRoute", namespace: "default", name: "db" },
      [entry(ME, "gw")],
      ME,
      route.io,
      3,
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.match(error, { status: 409 });
    t.same(route.log, ["read", "409", "read", "409", "read", "409"]);
  },
);
