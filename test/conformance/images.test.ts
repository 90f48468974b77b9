// SPDX-License-Identifier: Apache-2.0
// The images hack/conformance.sh builds for the upstream suite: each archive is a valid OCI
// layout that containerd will name as the suite's manifests do, and the program inside it
// answers the way the suite's tests ask (echo-basic's TCP and UDP echo modes, coredns's
// whoami) when run from the image's own layer in a network namespace of this test's own.
// The first run builds the images (coredns takes 2-3 minutes cold); later runs use the cache.
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import t, { type Test } from "tap";

const NETNS = `blixt-cimg-${process.pid}`;
const repo = join(import.meta.dirname, "..", "..");

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

const inNetns = (cmd: string, args: string[], opts: Record<string, unknown> = {}) =>
  execa("nsenter", [`--net=/var/run/netns/${NETNS}`, "--", cmd, ...args], opts);

function blob(layout: string, digest: string): Buffer {
  const [algorithm, hex] = digest.split(":");
  return readFileSync(join(layout, "blobs", algorithm, hex));
}

/** Checks every blob the index reaches against its digest and size; returns the image. */
function readLayout(t: Test, layout: string) {
  t.same(JSON.parse(readFileSync(join(layout, "oci-layout"), "utf8")), {
    imageLayoutVersion: "1.0.0",
  });
  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as {
    manifests: Descriptor[];
  };
  t.equal(index.manifests.length, 1, "one image per archive");
  const verified = (d: Descriptor) => {
    const data = blob(layout, d.digest);
    t.equal(
      `sha256:${createHash("sha256").update(data).digest("hex")}`,
      d.digest,
      `${d.mediaType} matches its digest`,
    );
    t.equal(data.length, d.size, `${d.mediaType} has its recorded size`);
    return data;
  };
  const manifestDesc = index.manifests[0];
  const manifest = JSON.parse(verified(manifestDesc).toString()) as {
    config: Descriptor;
    layers: Descriptor[];
  };
  const config = JSON.parse(verified(manifest.config).toString()) as {
    os: string;
    architecture: string;
    config: { Entrypoint?: string[] };
  };
  manifest.layers.forEach(verified);
  return { name: manifestDesc.annotations?.["io.containerd.image.name"], manifest, config };
}

let archives: string[] = [];
// Unpacked images live until the whole file is done: later tests run their binaries.
const work = mkdtempSync(join(tmpdir(), "blixt-cimg-"));

t.before(async () => {
  const built = await execa("hack/conformance.sh", ["build-images"], {
    cwd: repo,
    stderr: "inherit",
  });
  archives = built.stdout.split("\n").filter(l => l !== "");
  await execa("ip", ["netns", "add", NETNS]);
  await inNetns("ip", ["link", "set", "lo", "up"]);
});
t.teardown(async () => {
  await execa("ip", ["netns", "del", NETNS], { reject: false });
  rmSync(work, { recursive: true, force: true });
});

// The images the suite's manifests name, as the suite's module at v1.6.3 has them.
const expected = [
  "registry.k8s.io/coredns/coredns:v1.12.2",
  "registry.k8s.io/gateway-api/echo-basic:v1.5.1",
  "registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2",
  "registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3",
];

const images = new Map<string, { rootfs: string; entrypoint: string[] }>();

t.test("every image the suite names is a valid OCI archive named for containerd", async t => {
  const names: string[] = [];
  for (const archive of archives) {
    const dir = mkdtempSync(join(work, "image-"));
    const layout = join(dir, "layout");
    const rootfs = join(dir, "rootfs");
    await execa("mkdir", ["-p", layout, rootfs]);
    await execa("tar", ["-xf", archive, "-C", layout]);
    await t.test(archive, async t => {
      const { name, manifest, config } = readLayout(t, layout);
      t.ok(name, "index names the image (io.containerd.image.name)");
      t.equal(config.os, "linux");
      t.equal(config.architecture, "amd64");
      t.equal(manifest.layers.length, 1, "one layer: the static binary");
      // umoci reads it the way an OCI tool does (by the index's ref.name).
      const tag = (name ?? "").split(":").pop() as string;
      await execa("umoci", ["stat", "--image", `${layout}:${tag}`]);
      for (const layer of manifest.layers) {
        await execa("tar", [
          "-xzf",
          join(layout, "blobs", ...layer.digest.split(":")),
          "-C",
          rootfs,
        ]);
      }
      const entrypoint = config.config.Entrypoint ?? [];
      t.ok(
        statSync(join(rootfs, entrypoint[0] ?? "missing")).mode & 0o100,
        `entrypoint ${entrypoint[0]} is executable`,
      );
      names.push(name as string);
      images.set(name as string, { rootfs, entrypoint });
    });
  }
  t.same(names.sort(), expected);
});

async function started(t: Test, proc: ResultPromise, ready: () => Promise<boolean>) {
  t.teardown(() => {
    proc.kill("SIGKILL");
  });
  proc.catch(() => {});
  for (let i = 0; i < 100; i++) {
    if (await ready()) return;
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error(`${proc.spawnargs.join(" ")} did not start listening in 10 s`);
}

const listening = (proto: "t" | "u", port: number) => async () =>
  (await inNetns("ss", [`-${proto}ln`, `sport = :${port}`])).stdout.includes(`:${port}`);

t.test("echo-basic answers the suite's TCP and UDP probes", async t => {
  const image = images.get("registry.k8s.io/gateway-api/echo-basic:v1.5.1");
  if (!image) return t.fail("no echo-basic image");
  const binary = join(image.rootfs, image.entrypoint[0]);
  const env = { NAMESPACE: "gateway-conformance-infra", POD_NAME: "tcp-backend-0" };

  const tcp = inNetns(binary, [], { env: { ...env, TCP_ECHO_SERVER: "1", TCP_PORT: "3000" } });
  await started(t, tcp, listening("t", 3000));
  const tcpReply = await inNetns("socat", ["-t", "2", "-", "TCP:127.0.0.1:3000"], {
    input: "TEST\n",
  });
  t.match(tcpReply.stdout, /^Gateway API Test TCP Server\n/, "welcome line");
  t.match(tcpReply.stdout, /"pod":\s*"tcp-backend-0"/i, "TEST returns the pod context");

  const udp = inNetns(binary, [], {
    env: { ...env, POD_NAME: "udp-backend-0", UDP_ECHO_SERVER: "1", UDP_PORT: "8080" },
  });
  await started(t, udp, listening("u", 8080));
  const udpReply = await inNetns("socat", ["-t", "2", "-", "UDP:127.0.0.1:8080"], {
    input: "hello",
  });
  // The pod context is embedded in the reply object, beside the echoed request.
  const echoed = JSON.parse(udpReply.stdout) as { request: string; pod: string };
  t.equal(echoed.request, "hello");
  t.equal(echoed.pod, "udp-backend-0");
});

t.test("coredns answers the UDPRoute test's whoami zone", async t => {
  const image = images.get("registry.k8s.io/coredns/coredns:v1.12.2");
  if (!image) return t.fail("no coredns image");
  const dir = mkdtempSync(join(work, "dns-"));
  // The zone the suite's Corefile serves for the test (its forward zone needs the internet).
  writeFileSync(join(dir, "Corefile"), "foo.bar.com:53 {\n  whoami\n}\n");
  const dns = inNetns(join(image.rootfs, image.entrypoint[0]), ["-conf", join(dir, "Corefile")], {
    cwd: dir,
  });
  await started(t, dns, listening("u", 53));

  const id = 0x4242;
  const qname = Buffer.concat([
    ...["foo", "bar", "com"].map(l => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
    Buffer.from([0]),
  ]);
  const header = Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  const query = Buffer.concat([header, qname, Buffer.from([0, 1, 0, 1])]); // A, IN
  const reply = await execa(
    "nsenter",
    [`--net=/var/run/netns/${NETNS}`, "--", "socat", "-t", "2", "-", "UDP:127.0.0.1:53"],
    {
      input: query,
      encoding: "buffer",
    },
  );
  const answer = Buffer.from(reply.stdout);
  t.equal(answer.readUInt16BE(0), id, "reply to our query");
  t.ok(answer[2] & 0x80, "QR: a response");
  t.equal(answer[3] & 0x0f, 0, "RCODE NOERROR");
  t.ok(answer.readUInt16BE(10) >= 1, "whoami adds the client's address as an additional record");
});
