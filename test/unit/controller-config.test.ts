// SPDX-License-Identifier: Apache-2.0
// Controller and admission settings from the environment the chart sets.
import t from "tap";
import {
  admissionSettings,
  controllerSettings,
  DEFAULT_ADDRESS_POOLS_FILE,
  DEFAULT_AGENT_POD_SELECTOR,
  parseAddressPools,
  parseLabelSelector,
} from "../../capabilities/gateway/config";

t.test(
  "address pools: the chart's file format, prefixes and ranges, optional namespaces",
  async t => {
    const pools = parseAddressPools(
      `addressPools:
  - name: default
    cidrs: ["198.18.100.0/24", "198.18.101.10-198.18.101.20"]
  - name: team-a
    cidrs: ["fd00::/120"]
    namespaces: [team-a]
`,
      "pools.yaml",
    );
    t.same(pools, [
      { name: "default", cidrs: ["198.18.100.0/24", "198.18.101.10-198.18.101.20"] },
      { name: "team-a", cidrs: ["fd00::/120"], namespaces: ["team-a"] },
    ]);
    t.same(
      parseAddressPools('[{"name":"json","cidrs":["198.19.0.0/16"]}]', "env"),
      [{ name: "json", cidrs: ["198.19.0.0/16"] }],
      "a bare JSON list works too",
    );
    t.same(parseAddressPools("addressPools: []\n", "f"), []);
    t.same(parseAddressPools("", "f"), [], "an empty file is no pools");
  },
);

t.test("address pool errors name the file, the pool and the field", async t => {
  t.throws(
    () =>
      parseAddressPools(
        "addressPools:\n  - name: a\n    cidrs: [198.18.100.0/33]\n",
        "/etc/blixt/address-pools.yaml",
      ),
    {
      message:
        '/etc/blixt/address-pools.yaml: addressPools[0].cidrs[0] (pool "a"): "198.18.100.0/33" is neither a prefix like 198.18.100.0/24 nor a range like 198.18.100.10-198.18.100.20',
    },
  );
  t.throws(
    () => parseAddressPools("addressPools:\n  - name: a\n    cidrs: [198.18.100.1-fd00::1]\n", "f"),
    /cidrs\[0\].*is neither/,
    "a range mixing families",
  );
  t.throws(() => parseAddressPools("addressPools:\n  - cidrs: [198.19.0.0/16]\n", "f"), {
    message: "f: addressPools[0].name: must be a non-empty string",
  });
  t.throws(
    () =>
      parseAddressPools(
        "addressPools:\n  - {name: a, cidrs: [198.19.0.0/16]}\n  - {name: a, cidrs: [198.19.1.0/24]}\n",
        "f",
      ),
    /addressPools\[1\]\.name: "a" is used by an earlier pool/,
  );
  t.throws(
    () => parseAddressPools("addressPools:\n  - {name: a, cidrs: []}\n", "f"),
    /cidrs \(pool "a"\): must list at least one/,
  );
  t.throws(
    () =>
      parseAddressPools(
        "addressPools:\n  - {name: a, cidrs: [198.19.0.0/16], namespaces: team-a}\n",
        "f",
      ),
    /namespaces \(pool "a"\): must be a list/,
  );
  t.throws(() => parseAddressPools("pools: []\n", "f"), /expected "addressPools:"/);
  t.throws(
    () => parseAddressPools("addressPools: [\n", "f"),
    /f: address pools are not valid YAML/,
  );
});

t.test(
  "controller settings: inline pools win over the file; defaults; bad numbers are named",
  async t => {
    const reads: string[] = [];
    const readFile = (path: string) => {
      reads.push(path);
      return path === DEFAULT_ADDRESS_POOLS_FILE
        ? "addressPools: [{name: file, cidrs: [198.18.100.0/24]}]"
        : undefined;
    };
    const fromFile = controllerSettings({}, readFile);
    t.same(
      fromFile.addressPools.map(p => p.name),
      ["file"],
    );
    t.same(reads, [DEFAULT_ADDRESS_POOLS_FILE]);
    t.same(fromFile.agentPodSelector, DEFAULT_AGENT_POD_SELECTOR);
    t.equal(fromFile.resyncSeconds, 300);

    const inline = controllerSettings(
      {
        BLIXT_ADDRESS_POOLS: "[{name: inline, cidrs: [198.18.0.0/16]}]",
        BLIXT_RESYNC_SECONDS: "60",
      },
      readFile,
    );
    t.same(
      inline.addressPools.map(p => p.name),
      ["inline"],
    );
    t.equal(inline.resyncSeconds, 60);

    t.same(
      controllerSettings({ BLIXT_ADDRESS_POOLS_FILE: "/nowhere.yaml" }, readFile).addressPools,
      [],
      "no file: no pools (Gateways report AddressNotAssigned)",
    );
    t.throws(() => controllerSettings({ BLIXT_DEBOUNCE_MS: "soon" }, readFile), {
      message: 'BLIXT_DEBOUNCE_MS="soon": must be a positive number',
    });
    t.equal(controllerSettings({}, readFile).maxDebounceMs, 5000);
    t.equal(controllerSettings({ BLIXT_MAX_DEBOUNCE_MS: "800" }, readFile).maxDebounceMs, 800);
    t.throws(() => controllerSettings({ BLIXT_MAX_DEBOUNCE_MS: "-1" }, readFile), {
      message: 'BLIXT_MAX_DEBOUNCE_MS="-1": must be a positive number',
    });
    t.equal(controllerSettings({}, readFile).writeConcurrency, 8);
    t.equal(controllerSettings({ BLIXT_WRITE_CONCURRENCY: "1" }, readFile).writeConcurrency, 1);
    t.throws(() => controllerSettings({ BLIXT_WRITE_CONCURRENCY: "2.5" }, readFile), {
      message: 'BLIXT_WRITE_CONCURRENCY="2.5": must be a whole number, 1 or more',
    });
    t.same(
      controllerSettings(
        {
          BLIXT_AGENT_POD_SELECTOR:
            "app.kubernetes.io/component=agent,app.kubernetes.io/name=blixt",
        },
        readFile,
      ).agentPodSelector,
      { "app.kubernetes.io/component": "agent", "app.kubernetes.io/name": "blixt" },
    );
    t.equal(
      controllerSettings({ BLIXT_AGENT_NAMESPACE: "blixt-system" }, readFile).agentNamespace,
      "blixt-system",
      "agent Pods (and certificate copies) in this namespace",
    );
    t.equal(
      controllerSettings({}, readFile).agentNamespace,
      undefined,
      "unset: every namespace, and no copies",
    );
    t.throws(() => parseLabelSelector("app", "BLIXT_AGENT_POD_SELECTOR"), {
      message: 'BLIXT_AGENT_POD_SELECTOR: "app" is not key=value',
    });
  },
);

t.test("admission settings: the controller's service account", async t => {
  t.equal(
    admissionSettings({ BLIXT_CONTROLLER_USERNAME: "system:serviceaccount:ns:blixt" })
      .controllerUsername,
    "system:serviceaccount:ns:blixt",
  );
  t.match(admissionSettings({}).controllerUsername, /^system:serviceaccount:/);
});
