// SPDX-License-Identifier: Apache-2.0
// The agent's node-side choices and settings: ingress interface, attach mode, environment,
// and the status write it sends (one node's entry, its own field manager).
import t from "tap";
import { defaultRouteInterface, parseRequestedMode } from "../../capabilities/agent/node.js";
import { modeReason, pickMode } from "../../capabilities/dataplane/mode.js";
import { ackRequest, fieldManager } from "../../capabilities/agent/kube.js";
import { agentSettings } from "../../capabilities/agent/index.js";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";

t.test("the ingress interface is the default route's with the lowest metric", async t => {
  t.equal(
    defaultRouteInterface([
      { dst: "198.19.0.0/16", dev: "cni0" },
      { dst: "default", dev: "wlan0", metric: 600 },
      { dst: "default", dev: "eth0", metric: 100 },
    ]),
    "eth0",
  );
  t.equal(
    defaultRouteInterface([{ dst: "default", dev: "eth1" }]),
    "eth1",
    "no metric is metric 0",
  );
  t.equal(defaultRouteInterface([{ dst: "198.19.0.0/16", dev: "eth0" }]), undefined);
});

t.test("auto picks TC on a veth and native XDP elsewhere; an explicit mode is kept", async t => {
  t.equal(pickMode("auto", "veth"), "tc");
  t.equal(pickMode("auto", undefined), "xdp");
  t.equal(pickMode("auto", "vxlan"), "xdp");
  t.equal(pickMode("xdpgeneric", "veth"), "xdpgeneric");
  t.match(
    modeReason("auto", "veth"),
    /^auto: a veth, .*XDP_TX.*so TC ingress$/,
    "the reason says why TC",
  );
  t.equal(modeReason("auto", undefined), "auto: not a veth, so native XDP");
  t.equal(modeReason("tc", "veth"), "tc as asked");
  t.equal(parseRequestedMode(undefined), "auto");
  t.equal(parseRequestedMode(" tc "), "tc");
  t.throws(
    () => parseRequestedMode("dpdk"),
    /BLIXT_ATTACH_MODE="dpdk" is not an attach mode; set it to one of auto, xdp, xdpgeneric, tc/,
  );
});

t.test("settings come from the environment, with errors naming the variable", async t => {
  t.same(agentSettings({ NODE_NAME: "n1" }), {
    nodeName: "n1",
    nodeAddress: undefined,
    iface: undefined,
    requestedMode: "auto",
    pinDir: "/sys/fs/bpf/blixt",
    objDir: undefined,
    netns: undefined,
    metricsPort: 9090,
    resyncMs: 30_000,
    relistMs: 300_000,
    conntrack: {
      tcpNewSeconds: 60,
      tcpEstablishedSeconds: 21600,
      tcpClosingSeconds: 10,
      udpSeconds: 60,
    },
    metricsAddress: "127.0.0.1",
    tlsLimits: { handshakeTimeoutMs: 10_000, idleTimeoutMs: 300_000, maxConnections: 1024 },
    namespace: undefined,
    lease: { durationSeconds: 2, renewMs: 500 },
    mapSizes: {},
    podInterfacePrefixes: ["veth"],
    podInterfaceScanMs: 10_000,
  });
  t.same(
    agentSettings({ NODE_NAME: "n1", BLIXT_POD_INTERFACE_PREFIXES: "veth, cali lxc" })
      .podInterfacePrefixes,
    ["veth", "cali", "lxc"],
    "pod interface prefixes: comma- or space-separated",
  );
  t.same(
    agentSettings({ NODE_NAME: "n1", BLIXT_POD_INTERFACE_PREFIXES: "" }).podInterfacePrefixes,
    [],
    "an empty value turns in-cluster clients off",
  );
  t.throws(
    () => agentSettings({ NODE_NAME: "n1", BLIXT_POD_INTERFACE_PREFIXES: "veth,a/b" }),
    /BLIXT_POD_INTERFACE_PREFIXES: "a\/b" .*agent\.podInterfacePrefixes/,
    "a prefix no interface name can start with is refused, naming the variable and the chart value",
  );
  t.same(
    agentSettings({ NODE_NAME: "n1", BLIXT_MAP_TABLE_CHUNKS: "4096", BLIXT_MAP_CONNTRACK: " " })
      .mapSizes,
    { tableChunks: 4096 },
    "a map size set is read; one unset (or blank) keeps bpf/maps.h's",
  );
  t.throws(
    () => agentSettings({ NODE_NAME: "n1", BLIXT_MAP_SERVICES: "20000" }),
    /BLIXT_MAP_SERVICES/,
    "more services than the service ids allow is refused, naming the variable",
  );
  t.match(
    agentSettings({
      NODE_NAME: "n1",
      POD_NAMESPACE: "blixt-system",
      POD_NAME: "blixt-agent-x1",
      POD_UID: "u-1",
      BLIXT_LEASE_DURATION_SECONDS: "10",
      BLIXT_LEASE_RENEW_MILLISECONDS: "2000",
    }),
    {
      namespace: "blixt-system",
      pod: { name: "blixt-agent-x1", uid: "u-1" },
      lease: { durationSeconds: 10, renewMs: 2000 },
    },
    "the node Lease: where, whose, and how long",
  );
  t.match(
    agentSettings({
      NODE_NAME: "n1",
      BLIXT_INTERFACE: "eth1",
      BLIXT_METRICS_PORT: "9100",
      BLIXT_RESYNC_SECONDS: "0",
      BLIXT_RELIST_SECONDS: "60",
    }),
    { iface: "eth1", metricsPort: 9100, resyncMs: 0, relistMs: 60_000 },
  );
  t.throws(
    () => agentSettings({ NODE_NAME: "n1", BLIXT_RELIST_SECONDS: "-5" }),
    /BLIXT_RELIST_SECONDS="-5" must be an integer in 0\.\.86400/,
  );
  t.throws(() => agentSettings({}), /NODE_NAME is not set/);
  t.equal(
    agentSettings({ NODE_NAME: "n1", HOST_IP: " 192.0.2.7 " }).nodeAddress,
    "192.0.2.7",
    "HOST_IP is the node's own address",
  );
  t.equal(agentSettings({ NODE_NAME: "n1", HOST_IP: "" }).nodeAddress, undefined);
  for (const bad of ["fd00::7", "node-1", "192.0.2.256"])
    t.throws(
      () => agentSettings({ NODE_NAME: "n1", HOST_IP: bad }),
      new RegExp(`HOST_IP="${bad.replace(/\./g, "\\.")}" is not an IPv4 address`),
      `HOST_IP=${bad} is refused, naming the variable`,
    );
  t.throws(
    () => agentSettings({ NODE_NAME: "n1", BLIXT_METRICS_PORT: "http" }),
    /BLIXT_METRICS_PORT="http" must be an integer in 0\.\.65535/,
  );
});

t.test(
  "an acknowledgement is a server-side apply of this node's entry alone, under its own field manager",
  async t => {
    const config = {
      metadata: { namespace: "team a", name: "gw", generation: 3 },
      spec: {},
      status: { nodes: [{ name: "other", observedGeneration: 1 }] },
    } as unknown as DataplaneConfig;
    const ack = {
      name: "node-1",
      observedGeneration: 3,
      mode: "tc" as const,
      lastTransitionTime: "2026-01-01T00:00:00.000Z",
    };
    const req = ackRequest(config, ack);
    t.equal(req.fieldManager, "blixt-agent/node-1");
    t.same(
      req.body,
      {
        apiVersion: "blixt.dev/v1alpha1",
        kind: "DataplaneConfig",
        metadata: { namespace: "team a", name: "gw" },
        status: { nodes: [ack] },
      },
      "other nodes' entries are not sent, so not touched",
    );
    t.equal(
      fieldManager("x".repeat(300)).length,
      128,
      "field manager names fit the API server's limit",
    );
    t.throws(
      () => ackRequest({ metadata: {} } as DataplaneConfig, ack),
      /without metadata\.namespace\/name/,
    );
  },
);
