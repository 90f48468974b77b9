// SPDX-License-Identifier: Apache-2.0
// The agent's conntrack timeouts against real pinned maps (blixt.o loaded by bpftool, no
// cluster): the settings come from the environment (a bad value is refused naming the
// variable), a pass writes them to blixt_ct_config, and a resync pass puts them back after a
// change behind the agent's back. Acknowledgements go to a no-op: nothing here asks for any.
import t from "tap";
import * as bpftool from "../../capabilities/dataplane/bpftool.js";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import {
  CONNTRACK_TIMEOUT_DEFAULTS,
  CT_CONFIG_KEY,
  decodeConntrackConfig,
  encodeConntrackConfig,
  encodeIndexKey,
  hex,
} from "../../capabilities/dataplane/maps.js";
import { Agent } from "../../capabilities/agent/loop.js";
import { CONNTRACK_ENV, agentSettings } from "../../capabilities/agent/start.js";

const pinDir = `/sys/fs/bpf/blixt-test-agent-ct-config-${process.pid}`;
t.before(() => new Dataplane({ pinDir }).unpin());
t.teardown(() => new Dataplane({ pinDir }).unpin());

/** blixt_ct_config[0] as the programs read it: raw, then decoded. */
async function ctConfig(dp: Dataplane) {
  const entry = await bpftool.mapLookup(
    dp.mapPin("blixt_ct_config"),
    hex(encodeIndexKey(CT_CONFIG_KEY)),
  );
  return decodeConntrackConfig(entry!.value!);
}

t.test(
  "settings: defaults are Cilium's, each variable sets its field, a bad value names the variable",
  async t => {
    t.same(agentSettings({ NODE_NAME: "n" }).conntrack, CONNTRACK_TIMEOUT_DEFAULTS);
    const set = agentSettings({
      NODE_NAME: "n",
      [CONNTRACK_ENV.tcpNewSeconds]: "30",
      [CONNTRACK_ENV.tcpEstablishedSeconds]: "7200",
      [CONNTRACK_ENV.tcpClosingSeconds]: "5",
      [CONNTRACK_ENV.udpSeconds]: "120",
    });
    t.same(set.conntrack, {
      tcpNewSeconds: 30,
      tcpEstablishedSeconds: 7200,
      tcpClosingSeconds: 5,
      udpSeconds: 120,
    });
    for (const [field, name] of Object.entries(CONNTRACK_ENV)) {
      for (const bad of ["0", "-1", "1.5", "ten", "4294967296"]) {
        t.throws(
          () => agentSettings({ NODE_NAME: "n", [name]: bad }),
          { message: new RegExp(`^${name}="${bad}" must be an integer in 1\\.\\.4294967295`) },
          `${field}: "${bad}" refused`,
        );
      }
    }
  },
);

t.test(
  "a pass writes the timeouts; a resync pass rewrites them after a change behind the agent's back",
  async t => {
    const dp = new Dataplane({ pinDir });
    await dp.load();
    const conntrack = {
      tcpNewSeconds: 30,
      tcpEstablishedSeconds: 7200,
      tcpClosingSeconds: 5,
      udpSeconds: 120,
    };
    const agent = new Agent({
      nodeName: "n",
      dataplane: dp,
      mode: "tc",
      acknowledge: async () => {},
      resyncMs: 0,
      conntrack,
    });
    t.teardown(() => agent.stop());
    agent.start();
    t.ok((await agent.converge()).ok);
    t.same(await ctConfig(dp), conntrack, "the map holds the agent's settings");

    await bpftool.batch(
      [
        bpftool.mapUpdateLine(
          dp.mapPin("blixt_ct_config"),
          hex(encodeIndexKey(CT_CONFIG_KEY)),
          hex(encodeConntrackConfig({ udpSeconds: 1 })),
        ),
      ],
      "changing the timeouts by hand",
    );
    t.equal((await ctConfig(dp)).udpSeconds, 1, "changed behind the agent's back");
    t.ok((await agent.converge()).ok);
    t.same(await ctConfig(dp), conntrack, "the resync put them back");
    t.equal(
      await dp.setConntrackTimeouts(conntrack),
      false,
      "and writes nothing when the map already holds them",
    );
  },
);
