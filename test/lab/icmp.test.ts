// SPDX-License-Identifier: Apache-2.0
// ICMP echo in the netns lab, in both ingress modes: an echo request (ping) to a Gateway address this node
// announces is answered by blixt's program (no interface holds the address), and one the node
// knows but does not announce gets no answer.
import t from "tap";
import { execa } from "execa";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { Lab } from "../lib/lab.js";

const lab = new Lab({ name: "icmp", backends: 1 });
t.teardown(() => lab.down());

t.before(async () => {
  await lab.up();
});

/** Echo requests from the client over a raw socket (no ping binary needed): prints "<from> <seq>" per reply. */
const PING_PY = String.raw`
import os, socket, struct, sys, time
dst, count = sys.argv[1], int(sys.argv[2])
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.settimeout(1.0)
ident = os.getpid() & 0xffff
for seq in range(1, count + 1):
    body = struct.pack("!HH", ident, seq) + b"blixt-echo-data!"
    msg = struct.pack("!BBH", 8, 0, 0) + body
    sock.sendto(struct.pack("!BBH", 8, 0, csum(msg)) + body, (dst, 0))
    deadline = time.time() + 1.0
    while time.time() < deadline:
        try:
            pkt, (src, _) = sock.recvfrom(2048)
        except socket.timeout:
            break
        ihl = (pkt[0] & 0x0f) * 4
        t, _, _, rid, rseq = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
        if t == 0 and rid == ident and rseq == seq and csum(pkt[ihl:]) == 0:
            print(src, rseq, flush=True)
            break
`;
const ping = async (ip: string, count: number): Promise<string[]> => {
  const r = await execa(
    "ip",
    ["netns", "exec", lab.clientNs, "python3", "-c", PING_PY, ip, String(count)],
    { reject: false },
  );
  if (r.exitCode !== 0) throw new Error(`echo from ${lab.clientNs} failed: ${r.stderr}`);
  return r.stdout.split("\n").filter(Boolean);
};

for (const mode of ["xdp", "tc"] as const) {
  t.test(`${mode}: ping a Gateway address`, async t => {
    const dp = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs });
    await dp.load();
    await dp.attach(lab.gatewayIface, mode);
    t.teardown(() => dp.detach(lab.gatewayIface));
    const [announced, quiet] = [lab.vip(0), lab.vip(1)];
    await dp.setAddresses([announced, quiet]);
    await dp.setAnnounced([announced]);
    const before = (await dp.stats()).reasons.icmp_echo_reply;

    t.same(
      await ping(announced, 3),
      [1, 2, 3].map(seq => `${announced} ${seq}`),
      "three echo replies, from the Gateway address, checksums valid",
    );
    t.equal((await dp.stats()).reasons.icmp_echo_reply - before, 3, "answered by the program");
    t.same(await ping(quiet, 1), [], "an address another node announces gets no answer here");
  });
}
