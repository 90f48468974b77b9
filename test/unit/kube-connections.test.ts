// SPDX-License-Identifier: Apache-2.0
// KeepAliveAuthentication (capabilities/kube-connections.ts) without an API server: the library
// authenticates each request, and the agent it makes is replaced by one kept while the TLS
// options stay the same. test/apiserver/kube-connections.test.ts counts real connections.
import t from "tap";
import https from "node:https";
import { createServer, type AddressInfo, type Socket } from "node:net";
import { CoreV1Api, HttpMethod, KubeConfig, RequestContext } from "@kubernetes/client-node";
import {
  asResponse,
  KeepAliveAuthentication,
  keepAliveClient,
} from "../../capabilities/kube-connections";

function config(ca: string, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      { name: "c", server: "https://198.18.0.2:6443", caData: Buffer.from(ca).toString("base64") },
    ],
    users: [{ name: "u", token }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return kc;
}

async function applied(auth: KeepAliveAuthentication) {
  const context = new RequestContext("https://198.18.0.2:6443/api", HttpMethod.GET);
  await auth.applySecurityAuthentication(context);
  return context;
}

t.test("one kept-alive agent while the TLS options stay; a new one when they change", async t => {
  const kc = config("first CA", "token-1");
  const auth = new KeepAliveAuthentication(kc);
  const a = await applied(auth);
  const b = await applied(auth);
  const agent = a.getAgent() as https.Agent;
  t.ok(agent instanceof https.Agent, "an HTTPS agent");
  t.equal(b.getAgent(), agent, "the second request gets the same agent");
  t.equal((agent as unknown as { keepAlive: boolean }).keepAlive, true, "it keeps connections");
  t.equal(a.getHeaders().Authorization, "Bearer token-1", "the library's authentication stands");

  // A new user token changes no TLS option: the same agent, the new header.
  kc.users[0] = { ...kc.users[0], token: "token-2" } as never;
  const c = await applied(auth);
  t.equal(c.getAgent(), agent);
  t.equal(c.getHeaders().Authorization, "Bearer token-2");

  // A new CA (a rotated cluster certificate): a new agent.
  kc.clusters[0] = {
    ...kc.clusters[0],
    caData: Buffer.from("second CA").toString("base64"),
  } as never;
  const d = await applied(auth);
  t.not(d.getAgent(), agent, "another agent for another CA");
  t.equal(auth.agentsMade, 2);
});

t.test(
  "a request that gets no answer fails after the timeout, with an error that says so",
  async t => {
    // A server that accepts connections and never says a word (not even its TLS handshake): a
    // kept-alive connection to an API server that went away without closing it looks the same.
    const held: Socket[] = [];
    const server = createServer(socket => held.push(socket));
    await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
    t.teardown(() => {
      for (const socket of held) socket.destroy();
      server.close();
    });
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [
        {
          name: "c",
          server: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
          skipTLSVerify: true,
        },
      ],
      users: [{ name: "u", token: "t" }],
      contexts: [{ name: "x", cluster: "c", user: "u" }],
      currentContext: "x",
    });
    const { client } = keepAliveClient(kc, CoreV1Api, 300);
    const started = Date.now();
    const error = await client.readNamespace({ name: "default" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    const waited = Date.now() - started;
    t.ok(error, "the request fails");
    t.ok(waited >= 250 && waited < 5_000, `after the timeout (${waited} ms)`);
    t.match(
      (asResponse(error) as Error).message,
      /did not answer within the request timeout; the request was abandoned/,
      "the error says what happened",
    );
    t.equal(held.length, 1, "the server got the connection");
  },
);
