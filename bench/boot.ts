/**
 * The end-to-end boot benchmark: Volt against QEMU's `microvm` machine on
 * the same kernel, initramfs, memory, vCPUs and command line, run pair by
 * pair (alternating which goes first), reported as the predecessor's
 * tables with both medians and their ratio.
 *
 * Figures: program size; cold boot to userspace (VOLT VM READY); cold boot
 * to kernel panic; VMM init, traced (Volt's phases) and wall-clock (spawn
 * to first KVM_RUN; QEMU's from its kvm_vcpu_ioctl trace); memory overhead
 * at 128/256/512 MiB (RSS minus touched guest RAM, from smaps); security
 * overhead (all layers vs --no-seccomp --no-landlock); PIO exit rate
 * against a C loop. Results go to bench/results/ as Markdown and an SVG
 * timeline of one boot.
 *
 * Usage: deno task bench:boot [--runs N] [--memory-runs N] [--pio-exits N]
 *
 * Without /dev/kvm it builds the guest and bundle on this host, then runs
 * itself inside the nested-KVM helper VM (tools/nested/).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DEFAULT_CMDLINE } from "../src/boot/cmdline.ts";
import { ensureDefaultGuest } from "../src/guest/default_guest.ts";
import type { BootMetrics } from "../src/vmm/metrics.ts";
import type { Mark } from "../src/vmm/trace.ts";
import { hostHasKvm, runNested } from "../tools/nested/run.ts";
import { runUntil, type TimedRun } from "./boot/process.ts";
import { firstKvmRunEpoch, QEMU, qemuArgs } from "./boot/qemu.ts";
import { cPioRate, voltPioRate } from "./boot/pio.ts";
import { compareTable, phaseTable, type Row, timelineSvg } from "./boot/report.ts";
import { memoryUse } from "./boot/smaps.ts";
import { ms, summarize } from "./boot/stats.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const VOLT = `${ROOT}/dist/volt`;
const READY = "VOLT VM READY";
const PANIC = "Kernel panic";
const say = (s: string) => console.error(`bench: ${s}`);

const { values: opt } = parseArgs({
  options: {
    runs: { type: "string", default: "10" },
    "memory-runs": { type: "string", default: "3" },
    "pio-exits": { type: "string", default: "100000" },
    nested: { type: "boolean", default: false },
    host: { type: "string" },
  },
});
const runs = Number(opt.runs);
const memoryRuns = Number(opt["memory-runs"]);
const pioExits = Number(opt["pio-exits"]);

function bundle(): void {
  const out = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/tools/bundle.ts`],
    stdout: "null",
    stderr: "piped",
  }).outputSync();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
}

function hostLine(): string {
  const cpu = /model name\s*:\s*(.*)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "?";
  const cores = navigator.hardwareConcurrency;
  return `${cpu}, ${cores} cores, Linux ${Deno.osRelease()}`;
}

if (!hostHasKvm()) {
  if (opt.nested) throw new Error("No usable /dev/kvm inside the helper VM");
  say("no /dev/kvm here: building the guest and bundle, then running inside the helper VM");
  await ensureDefaultGuest(say);
  bundle();
  const code = await runNested(
    [
      Deno.execPath(),
      "run",
      "-A",
      `${ROOT}/bench/boot.ts`,
      "--nested",
      `--host=${hostLine()}`,
      ...Deno.args,
    ],
    { cwd: ROOT, memory: "4G", cpus: 2, timeoutMs: 4 * 3600_000, timings: true },
  );
  Deno.exit(code);
}

const guest = await ensureDefaultGuest(say);
if (!opt.nested) bundle();
/** Runs `a` and `b`, `a` first on even pairs and `b` first on odd ones. */
async function pair<A, B>(i: number, a: () => Promise<A>, b: () => Promise<B>): Promise<[A, B]> {
  if (i % 2) {
    const rb = await b();
    return [await a(), rb];
  }
  const ra = await a();
  return [ra, await b()];
}

/** A summary, or none for an empty sample. */
const some = (xs: number[]) => xs.length ? summarize(xs) : undefined;

/** Runs that never reached their marker: kept out of the figures, listed in the report. */
const failures: string[] = [];

function failed(who: string, marker: string, run: TimedRun): undefined {
  const tail = run.stdout.trim().split("\n").slice(-2).join(" / ").slice(-200);
  const line = `${who} never printed "${marker}" (exit ${run.code}); console ended: ${tail}`;
  say(`    FAILED: ${line}`);
  failures.push(line);
  if (failures.length > Math.max(3, runs)) throw new Error(`Too many failed runs: ${line}`);
  return undefined;
}

/** A Volt run; its metrics come back through --metrics-json. */
async function volt(
  args: string[],
  marker: string,
  o: { kill?: boolean; atMarker?: (pid: number) => void | Promise<void> } = {},
): Promise<{ run: TimedRun; metrics?: BootMetrics } | undefined> {
  const file = Deno.makeTempFileSync({ suffix: ".json" });
  say(`    volt run ${args.join(" ")}`);
  const run = await runUntil(VOLT, ["run", ...args, "--metrics-json", file], marker, {
    timeoutMs: 120_000,
    killAtMarker: o.kill,
    atMarker: o.atMarker,
  });
  const text = Deno.readTextFileSync(file);
  Deno.removeSync(file);
  if (run.markerMs === undefined) return failed(`Volt ${args.join(" ")}`, marker, run);
  return { run, metrics: text ? JSON.parse(text) : undefined };
}

async function qemu(
  g: Parameters<typeof qemuArgs>[0],
  marker: string,
  o: { atMarker?: (pid: number) => void | Promise<void>; stderrMarker?: string } = {},
): Promise<TimedRun | undefined> {
  say(
    `    qemu ${g.initrd ? "with" : "without"} initrd, ${g.memoryMiB} MiB${
      g.traceVcpuIoctls ? ", traced" : ""
    }`,
  );
  const run = await runUntil(QEMU, qemuArgs(g), marker, {
    timeoutMs: 120_000,
    killAtMarker: true,
    atMarker: o.atMarker,
    stderrMarker: o.stderrMarker,
  });
  if (run.markerMs === undefined) return failed("QEMU", marker || o.stderrMarker!, run);
  return run;
}

const base = { kernel: guest.kernel, memoryMiB: 128, cpus: 1 };
const vmmWall = (r: { run: TimedRun; metrics?: BootMetrics } | undefined) =>
  r?.metrics?.vmmInitMs === undefined
    ? NaN
    : r.metrics.origin + r.metrics.vmmInitMs - r.run.spawnEpoch;

// Cold boot to userspace.
say(`cold boot to ${READY}: ${runs} pairs`);
const bootVolt: number[] = [], bootQemu: number[] = [], guestBoot: number[] = [];
let sample: BootMetrics | undefined;
const phaseRuns: Mark[][] = [];
for (let i = 0; i < runs; i++) {
  const [v, q] = await pair(
    i,
    () =>
      volt(["--kernel", guest.kernel, "--initrd", guest.initrd, "--append", "volt.exit"], READY),
    () => qemu({ ...base, initrd: guest.initrd, cmdline: `${DEFAULT_CMDLINE} volt.exit` }, READY),
  );
  if (v) bootVolt.push(v.run.markerMs!);
  if (q) bootQemu.push(q.markerMs!);
  if (v?.metrics?.guestBootMs !== undefined) guestBoot.push(v.metrics.guestBootMs);
  if (v?.metrics) phaseRuns.push(v.metrics.phases);
  sample ??= v?.metrics;
  say(`  ${i + 1}: Volt ${ms(v?.run.markerMs)}, QEMU ${ms(q?.markerMs)}`);
}

// Cold boot to kernel panic (no initramfs, no root device).
say(`cold boot to "${PANIC}": ${runs} pairs`);
const panicVolt: number[] = [], panicQemu: number[] = [], wallVolt: number[] = [];
const tracedVolt: number[] = [];
for (let i = 0; i < runs; i++) {
  const [v, q] = await pair(
    i,
    () => volt(["--kernel", guest.kernel], PANIC),
    () => qemu({ ...base, cmdline: DEFAULT_CMDLINE }, PANIC),
  );
  if (v) panicVolt.push(v.run.markerMs!);
  if (q) panicQemu.push(q.markerMs!);
  if (v) wallVolt.push(vmmWall(v));
  if (v?.metrics?.vmmInitMs !== undefined) tracedVolt.push(v.metrics.vmmInitMs);
  say(`  ${i + 1}: Volt ${ms(v?.run.markerMs)}, QEMU ${ms(q?.markerMs)}`);
}

// QEMU's exec → first KVM_RUN, from its own trace (a separate run: the
// trace slows every later exit).
say(`QEMU exec → first KVM_RUN: ${runs} runs`);
const wallQemu: number[] = [];
for (let i = 0; i < runs; i++) {
  const q = await qemu({ ...base, cmdline: DEFAULT_CMDLINE, traceVcpuIoctls: true }, "", {
    stderrMarker: "type 0xae80",
  });
  const first = q && firstKvmRunEpoch(q.stderr);
  if (q && first !== undefined) wallQemu.push(first - q.spawnEpoch);
}

// Security overhead: all layers against --no-seccomp --no-landlock.
say(`security overhead: ${runs} pairs`);
const secureOn: number[] = [], secureOff: number[] = [];
for (let i = 0; i < runs; i++) {
  const [on, off] = await pair(
    i,
    () => volt(["--kernel", guest.kernel], PANIC),
    () => volt(["--kernel", guest.kernel, "--no-seccomp", "--no-landlock"], PANIC),
  );
  if (on && off) {
    secureOn.push(vmmWall(on));
    secureOff.push(vmmWall(off));
  }
}

// Memory overhead at READY, the guest idling in a command.
const memoryRows: Row[] = [];
for (const mib of [128, 256, 512]) {
  say(`memory overhead at ${mib} MiB: ${memoryRuns} pairs`);
  const mv: number[] = [], mq: number[] = [];
  const settle = (into: number[]) => async (pid: number) => {
    await new Promise((r) => setTimeout(r, 1000));
    into.push(memoryUse(pid, mib << 20).overheadMiB);
  };
  const cmd = 'volt.cmd="sleep 600"';
  for (let i = 0; i < memoryRuns; i++) {
    await pair(
      i,
      () =>
        volt(
          [
            "--kernel",
            guest.kernel,
            "--initrd",
            guest.initrd,
            "--memory",
            `${mib}M`,
            "--append",
            cmd,
          ],
          READY,
          { kill: true, atMarker: settle(mv) },
        ),
      () =>
        qemu(
          { ...base, memoryMiB: mib, initrd: guest.initrd, cmdline: `${DEFAULT_CMDLINE} ${cmd}` },
          READY,
          { atMarker: settle(mq) },
        ),
    );
  }
  memoryRows.push({
    what: `memory overhead, ${mib} MiB guest`,
    volt: some(mv),
    qemu: some(mq),
    unit: "MiB",
  });
}

// PIO exit handling against a C loop.
say(`PIO exits: ${pioExits} each, Volt and a C loop`);
const pioC = cPioRate(pioExits);
const pioV = await voltPioRate(pioExits);

// Sizes.
const size = (p: string) => Deno.statSync(Deno.realPathSync(p)).size / 2 ** 20;
const which = (cmd: string) =>
  new TextDecoder().decode(
    new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`] }).outputSync().stdout,
  ).trim();
const bundleMiB = size(`${ROOT}/dist/volt.js`);
const denoMiB = size(Deno.execPath());
const qemuMiB = size(which(QEMU));

// Report.
const date = new Date().toISOString().slice(0, 10);
const host = opt.host ?? hostLine();
const where = opt.nested
  ? `inside the nested-KVM helper VM (QEMU TCG with emulated AMD SVM, 2 vCPUs, 4 GiB) on ${host}: every guest exit is emulated, so absolute times are far above a hardware-KVM host's; the ratios compare both monitors under the same conditions`
  : `on ${host} with hardware KVM`;
const medianPhases: Mark[] = (sample?.phases ?? []).map((p) => {
  const xs = phaseRuns.map((r) => r.find((m) => m.phase === p.phase)?.ms).filter((x) =>
    x !== undefined
  ) as number[];
  return { phase: p.phase, ms: summarize(xs).median };
});
const onS = some(secureOn.filter((x) => !Number.isNaN(x)));
const offS = some(secureOff.filter((x) => !Number.isNaN(x)));
const md = `# Boot benchmark, ${date}

Command: \`deno task bench:boot --runs ${runs} --memory-runs ${memoryRuns} --pio-exits ${pioExits}\`

Measured ${where}. Guest: the default microVM kernel (${guest.kernel.split("/").at(-2)}) and
initramfs, 1 vCPU, 128 MiB unless stated, command line \`${DEFAULT_CMDLINE}\`. Volt runs from the
bundle (\`dist/volt\`) with every sandbox layer on; QEMU ${which(QEMU)} \`-M microvm -enable-kvm
-cpu host -nodefaults\`. Runs alternate pair by pair.

## Volt against QEMU microvm

${
  compareTable([
    {
      what: `cold boot to userspace (spawn → "${READY}" on the console)`,
      volt: some(bootVolt),
      qemu: some(bootQemu),
    },
    {
      what: `cold boot to kernel panic (spawn → "${PANIC}")`,
      volt: some(panicVolt),
      qemu: some(panicQemu),
    },
    {
      what: "VMM init, wall clock (spawn → first KVM_RUN)",
      volt: some(wallVolt.filter((x) => !Number.isNaN(x))),
      qemu: some(wallQemu),
    },
    ...memoryRows,
  ])
}

## Volt alone

| figure | value |
| ------ | ----- |
| VMM init, traced (runtime start → first KVM_RUN), median | ${ms(some(tracedVolt)?.median)} |
| guest boot time (runtime start → volt-init's boot-timer write), median | ${
  guestBoot.length ? ms(summarize(guestBoot).median) : "n/a"
} |
| security overhead: VMM init wall, all layers − \`--no-seccomp --no-landlock\` (medians) | ${
  onS && offS
    ? `${ms(onS.median - offS.median)} (${ms(onS.median)} vs ${ms(offS.median)}, n=${onS.n})`
    : "n/a"
} |
| PIO exits: Volt vCPU loop / C loop | ${Math.round(pioV.rate).toLocaleString("en")} /s / ${
  Math.round(pioC.rate).toLocaleString("en")
} /s = ${(pioV.rate / pioC.rate * 100).toFixed(0)}% |
| program size | bundle \`dist/volt.js\` ${(bundleMiB * 1024).toFixed(0)} KiB + Deno runtime ${
  denoMiB.toFixed(1)
} MiB; QEMU binary ${qemuMiB.toFixed(1)} MiB (without its shared libraries and firmware) |

## Volt's boot phases (median of ${phaseRuns.length} boots to userspace)

${phaseTable(medianPhases)}

![timeline](boot-timeline.svg)
${
  failures.length
    ? `\n## Failed runs (left out of the figures)\n\n${failures.map((f) => `- ${f}`).join("\n")}\n`
    : ""
}`;
const dir = `${ROOT}/bench/results`;
Deno.mkdirSync(dir, { recursive: true });
Deno.writeTextFileSync(`${dir}/boot-${date}.md`, md);
Deno.writeTextFileSync(`${dir}/latest.md`, md);
Deno.writeTextFileSync(
  `${dir}/boot-timeline.svg`,
  timelineSvg(medianPhases, "guest ready", `Volt boot to userspace, median phases (${date})`),
);
console.log(md);
