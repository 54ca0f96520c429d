/**
 * Memory per VM when many run at once, side by side with QEMU microvm:
 * `--vms` VMs of one monitor booting together (same kernel, initramfs,
 * memory and vCPUs), measured `--at` ms after the last spawn, then the
 * same with the other monitor; rounds alternate which goes first. For each
 * process: RSS, private memory (Private_Clean + Private_Dirty) and PSS,
 * each less the guest RAM's own pages. Also what one Deno isolate holds:
 * an idle worker of the vCPU module, measured in a scratch process.
 *
 * Monitor-side memory, so it runs here on every host with /dev/kvm (PVM
 * included; the guests are still in their kernel's boot when measured);
 * without /dev/kvm, in the helper VM.
 *
 * Usage: deno task bench:density [--vms N] [--cpus LIST] [--rounds N] [--at MS]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ensureDefaultGuest } from "../src/guest/default_guest.ts";
import { hostKind } from "../src/vmm/host.ts";
import { QEMU, qemuArgs, qemuCpu } from "./boot/qemu.ts";
import { guestCmdline } from "./boot/plan.ts";
import { type MemoryUse, memoryUse } from "./boot/smaps.ts";
import { publish, summarize } from "./boot/stats.ts";
import { buildBundle, monitorSideHere, parseRuns } from "./boot/userspace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const VOLT = `${ROOT}/dist/volt`;
const say = (s: string) => console.error(`bench:density: ${s}`);
const { values } = parseArgs({
  args: Deno.args,
  options: {
    vms: { type: "string", default: "10" },
    cpus: { type: "string", default: "1,4" },
    rounds: { type: "string", default: "2" },
    at: { type: "string", default: "4000" },
    nested: { type: "boolean" },
  },
  strict: true,
});
const vms = parseRuns("bench:density", values.vms);
const rounds = parseRuns("bench:density", values.rounds);
const at = parseRuns("bench:density", values.at);
const cpuCounts = values.cpus.split(",").map((c) => parseRuns("bench:density", c));
const kind = hostKind();
const where = await monitorSideHere("bench:density", "density.ts", Deno.args, values.nested, "8G");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MIB = 128;

buildBundle();
const guest = await ensureDefaultGuest(say);

/** The jailed monitor of a `volt run` (the process that holds the VM), once it exists. */
async function monitorPid(launcher: number): Promise<number | undefined> {
  // The launcher shell execs deno, whose outer step execs the jailed monitor: the same pid.
  for (let i = 0; i < 200; i++) {
    try {
      if (Deno.readTextFileSync(`/proc/${launcher}/cmdline`).includes("--monitor-plan=")) {
        return launcher;
      }
    } catch {
      return undefined;
    }
    await sleep(20);
  }
  return undefined;
}

async function fleet(who: "volt" | "qemu", cpus: number): Promise<MemoryUse[]> {
  const children: Deno.ChildProcess[] = [];
  try {
    for (let i = 0; i < vms; i++) {
      const cmd = who === "volt"
        ? new Deno.Command(VOLT, {
          args: [
            "run",
            "--native",
            "--kernel",
            guest.kernel,
            "--initrd",
            guest.initrd,
            "--memory",
            `${MIB}M`,
            "--cpus",
            String(cpus),
          ],
          stdin: "null",
          stdout: "null",
          stderr: "null",
        })
        : new Deno.Command(QEMU, {
          args: qemuArgs({
            kernel: guest.kernel,
            initrd: guest.initrd,
            memoryMiB: MIB,
            cpus,
            cmdline: guestCmdline(kind),
            cpu: qemuCpu(kind),
          }),
          stdin: "null",
          stdout: "null",
          stderr: "null",
        });
      children.push(cmd.spawn());
    }
    const pids = who === "volt"
      ? await Promise.all(children.map((c) => monitorPid(c.pid)))
      : children.map((c) => c.pid);
    await sleep(at);
    const out: MemoryUse[] = [];
    for (const pid of pids) {
      if (pid === undefined) continue;
      try {
        out.push(memoryUse(pid, MIB << 20));
      } catch { /* it ended: left out */ }
    }
    return out;
  } finally {
    for (const c of children) {
      try {
        c.kill("SIGKILL");
      } catch { /* gone */ }
    }
    await Promise.allSettled(children.map((c) => c.status));
  }
}

/** Anonymous memory an idle vCPU-module worker adds to a scratch Deno process, MiB. */
function isolateCost(): number {
  const script = `
    const anon = () => Number(Deno.readTextFileSync("/proc/self/smaps_rollup").match(/Anonymous:\\s+(\\d+)/)[1]) / 1024;
    const before = anon();
    const w = [1, 2, 3, 4].map(() => new Worker(${
    JSON.stringify(new URL("../src/vmm/vcpu_worker.ts", import.meta.url).href)
  }, { type: "module" }));
    await new Promise((r) => setTimeout(r, 2000));
    console.log(((anon() - before) / 4).toFixed(2));
    Deno.exit(0);`;
  const file = Deno.makeTempFileSync({ suffix: ".ts" });
  Deno.writeTextFileSync(file, script);
  const out = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `--config=${ROOT}/deno.json`, file],
  }).outputSync();
  Deno.removeSync(file);
  return Number(new TextDecoder().decode(out.stdout).trim());
}

const lines = [
  `# Memory per VM, ${vms} VMs running at once (MiB, median over the VMs of ${rounds} rounds; ${where}, ${
    new Date().toISOString().slice(0, 10)
  })`,
  "",
  `Each VM: ${MIB} MiB, the default guest, measured ${at} ms after the last spawn; every figure less the guest RAM's resident pages.`,
  "",
  "| vCPUs | figure | Volt | QEMU microvm | Volt / QEMU |",
  "| ---: | --- | ---: | ---: | ---: |",
];
const goals: string[] = [];
for (const cpus of cpuCounts) {
  const v: MemoryUse[] = [], q: MemoryUse[] = [];
  for (let r = 1; r <= rounds; r++) {
    say(`${cpus} vCPU, round ${r}/${rounds}`);
    for (const who of r % 2 ? ["volt", "qemu"] as const : ["qemu", "volt"] as const) {
      (who === "volt" ? v : q).push(...await fleet(who, cpus));
    }
  }
  for (
    const [label, f] of [
      ["RSS overhead", (m: MemoryUse) => m.overheadMiB],
      ["private", (m: MemoryUse) => m.privateMiB],
      ["PSS", (m: MemoryUse) => m.pssMiB],
    ] as const
  ) {
    const a = summarize(v.map(f)).median, b = summarize(q.map(f)).median;
    lines.push(
      `| ${cpus} | ${label} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(a / b).toFixed(2)} |`,
    );
    if (label === "private") {
      goals.push(`${cpus} vCPU: private memory per VM ${a <= b ? "below" : "above"} QEMU's`);
    }
  }
  lines.push(`| ${cpus} | VMs measured | ${v.length} | ${q.length} | |`);
}
const iso = isolateCost();
lines.push(
  "",
  `One idle Deno worker running the vCPU module holds ${
    iso.toFixed(1)
  } MiB of anonymous memory (a scratch process, 4 workers, the mean): every vCPU thread of Volt is one.`,
  `Goal (private memory per VM with ${vms} running below QEMU's): ${goals.join("; ")}.`,
  "",
  `Command: \`deno task bench:density --vms ${vms} --cpus ${values.cpus} --rounds ${rounds} --at ${at}\``,
);
publish("density", lines);
