/**
 * The network benchmark: Volt's virtio-net against QEMU microvm's
 * `virtio-net-device` (a TAP, no vhost) on the same kernel, initramfs,
 * memory and TAP, in a namespace of its own, run pair by pair (alternating
 * which goes first), medians and ratios.
 *
 * In the guest (eth0 from the kernel's `ip=`): 50 adaptive pings to the
 * host side (round-trip time), then 32 MiB over HTTP each way with
 * busybox wget against bench/net_peer.ts, which times each transfer from
 * its first byte to its last as the host sees them.
 *
 * Guest userspace must run: natively with hardware KVM; inside the
 * nested-KVM helper VM on PVM and without /dev/kvm (the numbers are then
 * TCG's and only the ratios mean much).
 *
 * Usage: deno task bench:net [--runs N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ensureDefaultGuest } from "../src/guest/default_guest.ts";
import { hostKind } from "../src/vmm/host.ts";
import { makeNetns, netnsIgnore } from "../tools/netns.ts";
import { guestCmdline, type HostKind } from "./boot/plan.ts";
import { runUntil } from "./boot/process.ts";
import { QEMU, qemuArgs, qemuCpu } from "./boot/qemu.ts";
import { publish, sideBySide } from "./boot/stats.ts";
import { parseRuns, userspaceHere } from "./boot/userspace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const MEMORY_MIB = 256;
const BYTES = 32 << 20;
const HOST_IP = "10.99.0.1", GUEST_IP = "10.99.0.2", MAC = "06:00:ac:10:00:02";
/** What only the guest's shell prints: the kernel echoes its command line, `$((6*7))` and all. */
const DONE = "net-bench-done-42";
const say = (s: string) => console.error(`bench:net: ${s}`);

const { values } = parseArgs({
  args: Deno.args,
  options: { runs: { type: "string", default: "3" }, nested: { type: "boolean" } },
  strict: true,
});
const runs = parseRuns("bench:net", values.runs);
const where = await userspaceHere("bench:net", "net.ts", [`--runs=${runs}`], values.nested);
const kind: HostKind = hostKind();
if (netnsIgnore) {
  console.error("bench:net: needs root, ip(8) and /dev/net/tun (a TAP in a namespace of its own)");
  Deno.exit(69);
}

const guest = await ensureDefaultGuest((s) => say(s));
const ns = makeNetns(HOST_IP);
const peer = ns.deno(`${ROOT}/bench/net_peer.ts`, [HOST_IP, "8080", String(BYTES)], {
  stdin: "piped",
  stdout: "piped",
  stderr: "inherit",
}).spawn();

/** The peer's lines, as they come. */
const peerLines: string[] = [];
const peerDone = (async () => {
  let rest = "";
  for await (const chunk of peer.stdout.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    const lines = rest.split("\n");
    rest = lines.pop()!;
    peerLines.push(...lines);
  }
})();
while (!peerLines.includes("listening")) await new Promise((r) => setTimeout(r, 20));

const cmd = [
  `ping -A -c 50 ${HOST_IP} | tail -1`,
  // Not zeros: busybox wget sends a POST body as a C string.
  `yes | head -c ${BYTES} > /tmp/up`,
  `wget -q -O /dev/null --post-file=/tmp/up http://${HOST_IP}:8080/sink || echo wget-up-failed $?`,
  `wget -q -O /dev/null http://${HOST_IP}:8080/blob || echo wget-down-failed $?`,
  "echo net-bench-done-$((6*7))",
].join("; ");
const ipArg = `ip=${GUEST_IP}::${HOST_IP}:255.255.255.0::eth0:off`;

type Vmm = "volt" | "qemu";
function command(vmm: Vmm): string[] {
  if (vmm === "volt") {
    return [
      Deno.execPath(),
      "run",
      "-A",
      `${ROOT}/mod.ts`,
      "run",
      "--kernel",
      guest.kernel,
      "--initrd",
      guest.initrd!,
      "--memory",
      `${MEMORY_MIB}M`,
      "--net",
      `tap=${ns.tap},mac=${MAC}`,
      "--append",
      `${ipArg} volt.cmd="${cmd}"`,
    ];
  }
  const args = qemuArgs({
    kernel: guest.kernel,
    initrd: guest.initrd,
    memoryMiB: MEMORY_MIB,
    cpus: 1,
    cmdline: guestCmdline(kind, `${ipArg} volt.cmd="${cmd}"`),
    cpu: qemuCpu(kind),
  });
  // Without ACPI, microvm names its virtio-mmio devices on the command line, as Volt does.
  args[args.indexOf("microvm")] = "microvm,acpi=off";
  args.push(
    "-netdev",
    `tap,id=n0,ifname=${ns.tap},script=no,downscript=no,vhost=off`,
    "-device",
    `virtio-net-device,netdev=n0,mac=${MAC}`,
  );
  return [QEMU, ...args];
}

const FIGURES = ["guest-to-host-mibs", "host-to-guest-mibs", "rtt-ms"] as const;
const got: Record<Vmm, Record<string, number[]>> = { volt: {}, qemu: {} };
const failures: string[] = [];

try {
  for (let i = 0; i < runs; i++) {
    const order: Vmm[] = i % 2 ? ["qemu", "volt"] : ["volt", "qemu"];
    for (const vmm of order) {
      say(`run ${i + 1}/${runs}: ${vmm}`);
      const from = peerLines.length;
      const [bin, ...args] = [...ns.wrap, ...command(vmm)];
      // QEMU microvm does not end on volt-init's reset: the marker ends both.
      const r = await runUntil(bin, args, DONE, { timeoutMs: 300_000, killAtMarker: true });
      const rtt = /round-trip min\/avg\/max = [\d.]+\/([\d.]+)\//.exec(r.stdout);
      const transfers = peerLines.slice(from).map((l) => JSON.parse(l));
      const rate = (dir: string) => {
        const t = transfers.find((x) => x.dir === dir && x.bytes === BYTES);
        return t ? BYTES / (1 << 20) / (t.ms / 1000) : undefined;
      };
      const up = rate("guest-to-host"), down = rate("host-to-guest");
      if (r.markerMs === undefined || !rtt || up === undefined || down === undefined) {
        const line = r.stderr.trim().split("\n").pop() ?? "";
        say(`failed run: ${vmm} (${line}; console ends ${JSON.stringify(r.stdout.slice(-200))})`);
        failures.push(`${vmm} (${line})`);
        continue;
      }
      const values = [up, down, Number(rtt[1])];
      FIGURES.forEach((f, k) => (got[vmm][f] ??= []).push(values[k]));
    }
  }
} finally {
  await peer.stdin.close();
  await peer.status;
  await peerDone;
  ns.close();
}

publish("net", [
  `# Network benchmark (${new Date().toISOString().slice(0, 10)})`,
  "",
  `Where: ${where}. ${runs} runs each, alternating; medians. Command: \`deno task bench:net --runs ${runs}\`.`,
  `Guest: the default kernel, ${MEMORY_MIB} MiB, 1 vCPU, eth0 on a TAP in a namespace; QEMU with ` +
  "`virtio-net-device` on the same TAP, no vhost. Throughput: 32 MiB over HTTP (busybox wget), " +
  "timed by the host side; RTT: 50 adaptive pings from the guest.",
  "",
  ...sideBySide(FIGURES, got.volt, got.qemu),
  "",
  failures.length ? `Failed runs, left out: ${failures.join("; ")}.` : "No failed runs.",
  "",
]);
