/**
 * The block benchmark: Volt's virtio-blk against QEMU microvm's
 * `virtio-blk-device` on the same kernel, initramfs, memory and raw image,
 * run pair by pair (alternating which goes first), medians and ratios.
 *
 * In the guest, `volt-blkbench` (guest/bench/blkbench.c) measures with
 * O_DIRECT at queue depth 1: 256 MiB sequential writes and reads in 1 MiB
 * requests, 4 KiB random reads for 10 s, and one sync() after 64 MiB of
 * buffered writes. Then: boot to VOLT VM READY from the ext4 root image
 * against from the initramfs, for both; and Volt's memory overhead at
 * READY with one disk against none.
 *
 * Guest userspace must run: natively with hardware KVM; inside the
 * nested-KVM helper VM on PVM and without /dev/kvm (the numbers are then
 * TCG's and only the ratios mean much).
 *
 * Usage: deno task bench:blk [--runs N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  buildVoltInit,
  busyboxApplets,
  defaultGuestEntries,
  ensureDefaultGuest,
  fetchBusybox,
} from "../src/guest/default_guest.ts";
import { buildDefaultRootfs } from "../src/guest/default_guest.ts";
import { gzip, writeCpio } from "../src/guest/cpio.ts";
import { runTool } from "../src/guest/host_tools.ts";
import { hostKind } from "../src/vmm/host.ts";
import { guestCmdline, type HostKind } from "./boot/plan.ts";
import { runUntil } from "./boot/process.ts";
import { QEMU, qemuArgs, qemuCpu } from "./boot/qemu.ts";
import { memoryUse } from "./boot/smaps.ts";
import { publish, sideBySide, summarize } from "./boot/stats.ts";
import { parseRuns, userspaceHere } from "./boot/userspace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const READY = "VOLT VM READY";
const MEMORY_MIB = 256;
const say = (s: string) => console.error(`bench:blk: ${s}`);

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "3" },
    nested: { type: "boolean" },
    // Only the in-guest I/O figures (no boots, no memory).
    "io-only": { type: "boolean" },
  },
  strict: true,
});
const runs = parseRuns("bench:blk", values.runs);
// Built here, where the cache is writable: the helper VM only reads it.
if (!values.nested) {
  await ensureDefaultGuest((s) => say(s));
  await buildDefaultRootfs((s) => say(s));
}
const where = await userspaceHere(
  "bench:blk",
  "blk.ts",
  [`--runs=${runs}`, ...(values["io-only"] ? ["--io-only"] : [])],
  values.nested,
);
const kind: HostKind = hostKind();

/** The default guest's initramfs plus volt-blkbench. */
async function benchInitrd(dir: string): Promise<string> {
  const bin = `${dir}/volt-blkbench`;
  runTool("musl-gcc", ["-static", "-O2", "-s", "-o", bin, `${ROOT}/guest/bench/blkbench.c`], {
    pkg: "musl-tools",
  });
  const bb = fetchBusybox();
  const entries = defaultGuestEntries(
    Deno.readFileSync(await buildVoltInit()),
    Deno.readFileSync(bb),
    busyboxApplets(bb),
  );
  entries.push({
    type: "file",
    path: "bin/volt-blkbench",
    data: Deno.readFileSync(bin),
    mode: 0o755,
  });
  const out = `${dir}/bench.cpio.gz`;
  Deno.writeFileSync(out, await gzip(writeCpio(entries)));
  return out;
}

const dir = Deno.makeTempDirSync({ prefix: "volt-bench-blk-" });
const guest = await ensureDefaultGuest((s) => say(s));
const rootfs = await buildDefaultRootfs((s) => say(s));
const initrd = await benchInitrd(dir);
const data = `${dir}/data.img`;
Deno.writeFileSync(data, new Uint8Array());
Deno.truncateSync(data, 320 << 20);
const cpuArg = qemuCpu(kind);

type Vmm = "volt" | "qemu";
interface Boot {
  initrd?: string;
  rootfs?: string;
  disk?: string;
  cmd?: string;
  /** Where Volt writes its --metrics-json. */
  metrics?: string;
}

function voltArgs(b: Boot): string[] {
  const args = [
    "run",
    "-A",
    `${ROOT}/mod.ts`,
    "run",
    "--kernel",
    guest.kernel,
    "--memory",
    `${MEMORY_MIB}M`,
  ];
  if (b.initrd) args.push("--initrd", b.initrd);
  if (b.rootfs) args.push("--rootfs", b.rootfs);
  if (b.disk) args.push("--disk", `${b.disk},rw`);
  if (b.cmd) args.push("--append", `volt.cmd="${b.cmd}"`);
  if (b.metrics) args.push("--metrics-json", b.metrics);
  return args;
}

function qemuBootArgs(b: Boot): string[] {
  const cmdline = [
    guestCmdline(kind),
    ...(b.rootfs ? ["root=/dev/vda", "ro"] : []),
    ...(b.cmd ? [`volt.cmd="${b.cmd}"`] : []),
  ]
    .join(" ");
  const args = qemuArgs({
    kernel: guest.kernel,
    initrd: b.initrd,
    memoryMiB: MEMORY_MIB,
    cpus: 1,
    cmdline,
    cpu: cpuArg,
  });
  // Without ACPI, microvm names its virtio-mmio devices on the command line, as Volt does.
  args[args.indexOf("microvm")] = "microvm,acpi=off";
  const drives = [b.rootfs && `${b.rootfs},readonly=on`, b.disk].filter((d): d is string => !!d);
  drives.forEach((d, i) => {
    args.push(
      "-drive",
      `id=d${i},file=${d},format=raw,if=none`,
      "-device",
      `virtio-blk-device,drive=d${i}`,
    );
  });
  return args;
}

/** The devices' counters and queue indices from a stopped run's --metrics-json. */
function stoppedDevices(path: string): string {
  try {
    return JSON.stringify(JSON.parse(Deno.readTextFileSync(path)).vm?.devices ?? "none");
  } catch (e) {
    return `unreadable (${(e as Error).message})`;
  }
}

function spawn(
  vmm: Vmm,
  b: Boot,
  until: string,
  timeoutMs: number,
  atMarker?: (pid: number) => void,
) {
  return vmm === "volt"
    ? runUntil(Deno.execPath(), voltArgs(b), until, {
      timeoutMs,
      atMarker,
      killAtMarker: !!atMarker,
      // A stopped run's --metrics-json tells where each queue stood.
      stopSignal: b.metrics ? "SIGTERM" : undefined,
    })
    : runUntil(QEMU, qemuBootArgs(b), until, { timeoutMs, atMarker, killAtMarker: !!atMarker });
}

const METRICS = ["seq-write-mibs", "seq-read-mibs", "rand-read-iops", "sync-ms"] as const;
const io: Record<Vmm, Record<string, number[]>> = { volt: {}, qemu: {} };
const boots: Record<string, number[]> = {};
const memory: Record<string, number[]> = { "volt, no disk": [], "volt, one disk": [] };
const failures: string[] = [];
function failed(what: string, stderr: string): void {
  const line = stderr.trim().split("\n").pop() ?? "";
  say(`failed run: ${what}: ${line}`);
  failures.push(`${what} (${line})`);
}

for (let i = 0; i < runs; i++) {
  const order: Vmm[] = i % 2 ? ["qemu", "volt"] : ["volt", "qemu"];
  for (const vmm of order) {
    say(`run ${i + 1}/${runs}: ${vmm} I/O`);
    const metrics = vmm === "volt" ? Deno.makeTempFileSync({ suffix: ".json" }) : undefined;
    const r = await spawn(
      vmm,
      { initrd, disk: data, cmd: "/bin/volt-blkbench /dev/vda", metrics },
      "blkbench done",
      240_000,
      // QEMU microvm has no exit port: volt-init's reset does not end it; the marker does.
      () => {},
    );
    const got = METRICS.map((m) => new RegExp(`^${m} ([\\d.]+)\\r?$`, "m").exec(r.stdout));
    // Under TCG a boot now and then ends in a triple fault (either monitor): a failed run, left out.
    if (got.some((v) => !v)) {
      failed(`${vmm} I/O (console ends: ${JSON.stringify(r.stdout.slice(-200))})`, r.stderr);
      if (metrics) say(`the stopped VM's devices: ${stoppedDevices(metrics)}`);
    } else METRICS.forEach((m, k) => (io[vmm][m] ??= []).push(Number(got[k]![1])));
    if (values["io-only"]) continue;
    for (const [label, b] of [["initramfs", { initrd }], ["root disk", { rootfs }]] as const) {
      const t = await spawn(vmm, b, READY, 300_000, () => {});
      if (t.markerMs === undefined) failed(`${vmm} boot from the ${label}`, t.stderr);
      else (boots[`${vmm}, ${label}`] ??= []).push(t.markerMs);
    }
  }
  if (values["io-only"]) continue;
  for (
    const [label, b] of [["volt, no disk", { initrd }], ["volt, one disk", {
      initrd,
      disk: data,
    }]] as const
  ) {
    await spawn(
      "volt",
      b,
      READY,
      300_000,
      (pid) => void memory[label].push(memoryUse(pid, MEMORY_MIB << 20).overheadMiB),
    );
  }
}

const med = (xs: number[] = []) => (xs.length ? summarize(xs).median : NaN);
const lines = [
  `# Block benchmark (${new Date().toISOString().slice(0, 10)})`,
  "",
  `Where: ${where}. ${runs} runs each, alternating; medians. Command: \`deno task bench:blk --runs ${runs}${
    values["io-only"] ? " --io-only" : ""
  }\`.`,
  "Guest: the default kernel, 256 MiB, 1 vCPU; a 320 MiB raw image; O_DIRECT, queue depth 1.",
  "",
  ...sideBySide(METRICS, io.volt, io.qemu),
  "",
  ...(values["io-only"] ? [] : [
    "| boot to READY (ms) | initramfs | root disk | root disk / initramfs |",
    "| --- | ---: | ---: | ---: |",
    ...(["volt", "qemu"] as const).map((v) => {
      const a = med(boots[`${v}, initramfs`]), b = med(boots[`${v}, root disk`]);
      return `| ${v} | ${a.toFixed(0)} | ${b.toFixed(0)} | ${(b / a).toFixed(2)} |`;
    }),
    "",
    `Volt's memory overhead at READY (RSS minus touched guest RAM): no disk ${
      med(memory["volt, no disk"]).toFixed(1)
    } MiB, one disk ${med(memory["volt, one disk"]).toFixed(1)} MiB.`,
    "",
  ]),
  failures.length ? `Failed runs, left out: ${failures.join("; ")}.` : "No failed runs.",
  "",
];
publish("blk", lines);
Deno.removeSync(dir, { recursive: true });
