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
 * timeline of one boot; every row says where it ran.
 *
 * Usage: deno task bench:boot [--runs N] [--memory-runs N] [--pio-exits N]
 *   [--figures boot,vmm-init,security,memory,pio,size]
 *
 * Where each figure runs depends on the host (bench/boot/plan.ts): all
 * natively with hardware KVM; all inside the nested-KVM helper VM
 * (tools/nested/) without /dev/kvm; on PVM, the boots in the helper VM and
 * the rest natively. The helper VM's part runs this script with
 * `--nested --results-json FILE` and the figures it is to measure, and the
 * report merges both parts.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DefaultGuest, ensureDefaultGuest } from "../src/guest/default_guest.ts";
import { selectTemplate } from "../src/vmm/builder.ts";
import { hostKind, hostKindLabel } from "../src/vmm/host.ts";
import type { BootMetrics } from "../src/vmm/metrics.ts";
import { FIRST_RUN_PHASE, type Mark } from "../src/vmm/trace.ts";
import { runNested } from "../tools/nested/run.ts";
import {
  benchPlan,
  type Figure,
  FIGURES,
  guestCmdline,
  type HostKind,
  parseFigures,
  type Place,
  placeLabel,
  placeOf,
  splitPlan,
} from "./boot/plan.ts";
import { runUntil, type RunUntilOptions, type TimedRun } from "./boot/process.ts";
import { firstKvmRunEpoch, QEMU, qemuArgs, qemuCpu, type QemuGuest } from "./boot/qemu.ts";
import { cPioRate, voltPioRate } from "./boot/pio.ts";
import { timelineSvg } from "./boot/report.ts";
import {
  type FigureResults,
  medianPhases,
  mergeResults,
  type PartResults,
  reportMarkdown,
} from "./boot/results.ts";
import { memoryUse } from "./boot/smaps.ts";
import { ms } from "./boot/stats.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const VOLT = `${ROOT}/dist/volt`;
const READY = "VOLT VM READY";
const PANIC = "Kernel panic";
/**
 * Where guest userspace cannot run (PVM), memory is read this long after
 * the spawn: well past guest memory set-up and the first KVM_RUN (about
 * 0.1 s there), long before the guest could do anything else of note.
 */
const MEMORY_AT_MS = 4000;
const say = (s: string) => console.error(`bench: ${s}`);

const USAGE =
  `Usage: deno task bench:boot [--runs N] [--memory-runs N] [--pio-exits N] [--figures LIST]

Boots the default guest with Volt and with QEMU microvm, pair by pair, and
writes bench/results/latest.md. --figures takes a comma-separated subset of
${FIGURES.join(", ")}.`;

/** A bad flag or value: one line and exit 64, as `volt` does. */
function usage(message: string): never {
  console.error(`bench: ${message} (deno task bench:boot --help)`);
  Deno.exit(64);
}

const OPTIONS = {
  runs: { type: "string", default: "10" },
  "memory-runs": { type: "string", default: "3" },
  "pio-exits": { type: "string", default: "100000" },
  figures: { type: "string" },
  help: { type: "boolean", short: "h", default: false },
  // Internal: this is the helper VM's part, which writes its raw results
  // to --results-json for the part outside to merge.
  nested: { type: "boolean", default: false },
  "results-json": { type: "string" },
} as const;

function parseOptions() {
  try {
    return parseArgs({ options: OPTIONS }).values;
  } catch (e) {
    usage((e as Error).message.split("\n")[0]);
  }
}
const opt = parseOptions();
if (opt.help) {
  console.log(USAGE);
  Deno.exit(0);
}

function count(name: "runs" | "memory-runs" | "pio-exits"): number {
  const n = Number(opt[name]);
  if (!Number.isInteger(n) || n < 1) usage(`--${name} must be a positive integer`);
  return n;
}
const runs = count("runs");
const memoryRuns = count("memory-runs");
const pioExits = count("pio-exits");
let wanted: Figure[] = [...FIGURES];
try {
  if (opt.figures !== undefined) wanted = parseFigures(opt.figures);
} catch (e) {
  usage((e as Error).message);
}

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

const which = (cmd: string) =>
  new TextDecoder().decode(
    new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`] }).outputSync().stdout,
  ).trim();

/** Runs `a` and `b`, `a` first on even pairs and `b` first on odd ones. */
async function pair<A, B>(i: number, a: () => Promise<A>, b: () => Promise<B>): Promise<[A, B]> {
  if (i % 2) {
    const rb = await b();
    return [await a(), rb];
  }
  const ra = await a();
  return [ra, await b()];
}

/** Runs that never reached their marker: kept out of the figures, listed in the report. */
const failures: string[] = [];

function failed(who: string, marker: string, run: TimedRun): undefined {
  const tail = run.stdout.trim().split("\n").slice(-2).join(" / ").slice(-200);
  const line = `${who} never reached ${marker} (exit ${run.code}); console ended: ${tail}`;
  say(`    FAILED: ${line}`);
  failures.push(line);
  if (failures.length > Math.max(3, runs)) throw new Error(`Too many failed runs: ${line}`);
  return undefined;
}

/** How a run ends: at a console line, a line on stderr, or a time after the spawn. */
type Until = Pick<RunUntilOptions, "atMarker" | "stderrMarker" | "afterMs" | "stopSignal"> & {
  kill?: boolean;
};

const untilText = (marker: string, o: Until) =>
  o.afterMs !== undefined
    ? `${o.afterMs} ms`
    : `"${o.stderrMarker ?? marker}"${o.stderrMarker ? " on stderr" : ""}`;

/** A Volt run; its metrics come back through --metrics-json. */
async function volt(
  args: string[],
  marker: string,
  o: Until = {},
): Promise<{ run: TimedRun; metrics?: BootMetrics } | undefined> {
  const file = Deno.makeTempFileSync({ suffix: ".json" });
  say(`    volt run ${args.join(" ")}`);
  const run = await runUntil(VOLT, ["run", ...args, "--metrics-json", file], marker, {
    timeoutMs: 120_000,
    killAtMarker: o.kill,
    atMarker: o.atMarker,
    stderrMarker: o.stderrMarker,
    afterMs: o.afterMs,
    stopSignal: o.stopSignal,
  });
  const text = Deno.readTextFileSync(file);
  Deno.removeSync(file);
  if (run.markerMs === undefined) {
    return failed(`Volt ${args.join(" ")}`, untilText(marker, o), run);
  }
  return { run, metrics: text ? JSON.parse(text) : undefined };
}

async function qemu(g: QemuGuest, marker: string, o: Until = {}): Promise<TimedRun | undefined> {
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
    afterMs: o.afterMs,
  });
  if (run.markerMs === undefined) return failed("QEMU", untilText(marker, o), run);
  return run;
}

type VoltRun = Awaited<ReturnType<typeof volt>>;

const vmmWall = (r: VoltRun) =>
  r?.metrics?.vmmInitMs === undefined
    ? NaN
    : r.metrics.origin + r.metrics.vmmInitMs - r.run.spawnEpoch;

/**
 * Measures `figs` here, on a host of `kind` (inside the helper VM, its own
 * KVM's kind), for the report's `place`.
 */
async function measure(
  figs: readonly Figure[],
  place: Place,
  kind: HostKind,
  guest: DefaultGuest,
): Promise<PartResults> {
  const cmdline = guestCmdline(kind);
  const cpu = qemuCpu(kind);
  // QEMU's guest gets the masks because Volt's auto template adds them
  // here; should Volt pick another template, the two guests would differ.
  if (kind === "pvm" && selectTemplate("auto").name !== "pvm") {
    throw new Error("Volt does not pick its pvm CPU template on this PVM host");
  }
  const base = { kernel: guest.kernel, memoryMiB: 128, cpus: 1, cpu };
  // Guest userspace cannot run on PVM, and a boot to panic there takes
  // minutes if a WARN does not end it first: runs that only need the VMM
  // up stop at the first KVM_RUN instead (SIGTERM, so the metrics are
  // still written; the trace log line tells when).
  const userspace = kind !== "pvm";
  const toFirstRun = (args: string[]) =>
    userspace ? volt(args, PANIC) : volt([...args, "--log-level", "trace"], "", {
      stderrMarker: ` ms ${FIRST_RUN_PHASE}`,
      kill: true,
      stopSignal: "SIGTERM",
    });
  say(
    `measuring ${figs.join(", ")} (${
      placeLabel(place)
    }): QEMU -cpu ${cpu}, command line ${cmdline}`,
  );
  const out: FigureResults = {};

  // Volt runs that reached their first KVM_RUN and then stopped, for VMM init.
  const firstRuns: VoltRun[] = [];
  if (figs.includes("boot")) {
    if (!userspace) throw new Error("Guest userspace cannot run on a PVM host");
    say(`cold boot to ${READY}: ${runs} pairs`);
    const ready = { volt: [] as number[], qemu: [] as number[] };
    const guestBoot: number[] = [];
    const phaseRuns: Mark[][] = [];
    for (let i = 0; i < runs; i++) {
      const [v, q] = await pair(
        i,
        () =>
          volt(
            ["--kernel", guest.kernel, "--initrd", guest.initrd, "--append", "volt.exit"],
            READY,
          ),
        () =>
          qemu(
            { ...base, initrd: guest.initrd, cmdline: guestCmdline(kind, "volt.exit") },
            READY,
          ),
      );
      if (v) ready.volt.push(v.run.markerMs!);
      if (q) ready.qemu.push(q.markerMs!);
      if (v?.metrics?.guestBootMs !== undefined) guestBoot.push(v.metrics.guestBootMs);
      if (v?.metrics) phaseRuns.push(v.metrics.phases);
      say(`  ${i + 1}: Volt ${ms(v?.run.markerMs)}, QEMU ${ms(q?.markerMs)}`);
    }

    // Cold boot to kernel panic (no initramfs, no root device).
    say(`cold boot to "${PANIC}": ${runs} pairs`);
    const panic = { volt: [] as number[], qemu: [] as number[] };
    for (let i = 0; i < runs; i++) {
      const [v, q] = await pair(
        i,
        () => volt(["--kernel", guest.kernel], PANIC),
        () => qemu({ ...base, cmdline }, PANIC),
      );
      if (v) panic.volt.push(v.run.markerMs!);
      if (q) panic.qemu.push(q.markerMs!);
      firstRuns.push(v);
      say(`  ${i + 1}: Volt ${ms(v?.run.markerMs)}, QEMU ${ms(q?.markerMs)}`);
    }
    out.boot = { ready, panic, guestBoot, phaseRuns };
  }

  if (figs.includes("vmm-init")) {
    // The boots to panic above already timed Volt's VMM init; without
    // them, runs of its own.
    if (!firstRuns.length) {
      say(`Volt spawn → first KVM_RUN: ${runs} runs`);
      for (let i = 0; i < runs; i++) firstRuns.push(await toFirstRun(["--kernel", guest.kernel]));
    }
    // QEMU's exec → first KVM_RUN, from its own trace (a separate run: the
    // trace slows every later exit).
    say(`QEMU exec → first KVM_RUN: ${runs} runs`);
    const wallQemu: number[] = [];
    for (let i = 0; i < runs; i++) {
      const q = await qemu({ ...base, cmdline, traceVcpuIoctls: true }, "", {
        stderrMarker: "type 0xae80",
      });
      const first = q && firstKvmRunEpoch(q.stderr);
      if (q && first !== undefined) wallQemu.push(first - q.spawnEpoch);
    }
    const ok = firstRuns.filter((r) => r?.metrics?.vmmInitMs !== undefined);
    out["vmm-init"] = {
      voltTraced: ok.map((r) => r!.metrics!.vmmInitMs!),
      wall: { volt: ok.map(vmmWall), qemu: wallQemu },
    };
  }

  if (figs.includes("security")) {
    say(`security overhead: ${runs} pairs`);
    const on: number[] = [], off: number[] = [];
    for (let i = 0; i < runs; i++) {
      const [a, b] = await pair(
        i,
        () => toFirstRun(["--kernel", guest.kernel]),
        () =>
          toFirstRun([
            "--kernel",
            guest.kernel,
            "--no-seccomp",
            "--no-landlock",
            "--allow-root-without-landlock",
          ]),
      );
      if (a && b) {
        on.push(vmmWall(a));
        off.push(vmmWall(b));
      }
    }
    out.security = { on, off };
  }

  if (figs.includes("memory")) {
    // With userspace, at READY with the guest idling in a command; on PVM
    // a fixed time into the boot, the same for both monitors.
    const at = userspace ? `1 s after "${READY}"` : `${MEMORY_AT_MS / 1000} s into the boot`;
    const sizes = [];
    for (const mib of [128, 256, 512]) {
      say(`memory overhead at ${mib} MiB, ${at}: ${memoryRuns} pairs`);
      const mv: number[] = [], mq: number[] = [];
      const read = (into: number[]) => async (pid: number) => {
        if (userspace) await new Promise((r) => setTimeout(r, 1000));
        into.push(memoryUse(pid, mib << 20).overheadMiB);
      };
      const until = (into: number[]): Until =>
        userspace ? { atMarker: read(into) } : { atMarker: read(into), afterMs: MEMORY_AT_MS };
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
              { kill: true, ...until(mv) },
            ),
          () =>
            qemu(
              { ...base, memoryMiB: mib, initrd: guest.initrd, cmdline: guestCmdline(kind, cmd) },
              READY,
              until(mq),
            ),
        );
      }
      sizes.push({ mib, volt: mv, qemu: mq });
    }
    out.memory = { at, sizes };
  }

  if (figs.includes("pio")) {
    say(`PIO exits: ${pioExits} each, Volt and a C loop`);
    const c = cPioRate(pioExits);
    out.pio = { volt: await voltPioRate(pioExits), c };
  }

  if (figs.includes("size")) {
    const size = (p: string) => Deno.statSync(Deno.realPathSync(p)).size / 2 ** 20;
    out.size = {
      bundleMiB: size(`${ROOT}/dist/volt.js`),
      denoMiB: size(Deno.execPath()),
      qemuMiB: size(which(QEMU)),
    };
  }
  return { place, cmdline, qemuCpu: cpu, figures: out, failures: [...failures] };
}

/** Runs this benchmark for `figs` inside the helper VM and returns its parts. */
async function inHelperVm(
  figs: readonly Figure[],
): Promise<{ status: number; parts: PartResults[] }> {
  const dir = Deno.makeTempDirSync({ prefix: "volt-bench-" });
  const file = `${dir}/results.json`;
  try {
    say(`running ${figs.join(", ")} inside the helper VM`);
    const status = await runNested(
      [
        Deno.execPath(),
        "run",
        "-A",
        `${ROOT}/bench/boot.ts`,
        "--nested",
        `--figures=${figs.join(",")}`,
        `--results-json=${file}`,
        `--runs=${runs}`,
        `--memory-runs=${memoryRuns}`,
        `--pio-exits=${pioExits}`,
      ],
      { cwd: ROOT, writable: [dir], memory: "4G", cpus: 2, timeoutMs: 4 * 3600_000, timings: true },
    );
    let parts: PartResults[] = [];
    if (status === 0) parts = JSON.parse(Deno.readTextFileSync(file));
    return { status, parts };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

const kind = hostKind();
if (opt.nested && kind === "none") throw new Error("No usable /dev/kvm inside the helper VM");
if (opt.nested && kind === "pvm") throw new Error("--nested is for inside the helper VM only");
const plan = splitPlan(benchPlan(kind), wanted);
const here = opt.nested ? wanted : plan.here;
const helper = opt.nested ? [] : plan.helper;
const place = placeOf(kind, opt.nested);
if (!opt.nested) {
  say(
    `host: ${hostKindLabel(kind)}; ${placeLabel(place)}: ${here.join(", ") || "nothing"}; ` +
      `helper VM: ${helper.join(", ") || "nothing"}`,
  );
}

const guest = await ensureDefaultGuest(say);
if (!opt.nested) bundle();
const parts: PartResults[] = [];
if (here.length) parts.push(await measure(here, place, kind, guest));
if (opt["results-json"]) {
  Deno.writeTextFileSync(opt["results-json"], JSON.stringify(parts));
  Deno.exit(0);
}
let helperStatus = 0;
if (helper.length) {
  const h = await inHelperVm(helper);
  helperStatus = h.status;
  parts.push(...h.parts);
}
if (!parts.length) {
  say(`the helper VM's part failed (exit ${helperStatus}); nothing was measured`);
  Deno.exit(helperStatus || 1);
}

// Report.
const merged = mergeResults(parts);
const date = new Date().toISOString().slice(0, 10);
const figuresOpt = opt.figures === undefined ? "" : ` --figures ${wanted.join(",")}`;
const notes = helperStatus
  ? [
    `The helper VM's part (${helper.join(", ")}) failed with exit status ${helperStatus}: ` +
    "its figures are missing.",
  ]
  : [];
const md = reportMarkdown(merged, {
  date,
  command:
    `deno task bench:boot --runs ${runs} --memory-runs ${memoryRuns} --pio-exits ${pioExits}${figuresOpt}`,
  kind,
  host: hostLine(),
  guestName: guest.kernel.split("/").at(-2) ?? "?",
  qemuPath: which(QEMU),
  notes,
});
if (helperStatus) {
  console.log(md);
  say("the report above is partial and was not saved");
  Deno.exit(helperStatus);
}
const dir = `${ROOT}/bench/results`;
Deno.mkdirSync(dir, { recursive: true });
const reports = [`${dir}/boot-${date}.md`, `${dir}/latest.md`];
for (const f of reports) Deno.writeTextFileSync(f, md);
const svg = `${dir}/boot-timeline.svg`;
if (merged.figures.boot) {
  Deno.writeTextFileSync(
    svg,
    timelineSvg(
      medianPhases(merged.figures.boot.phaseRuns),
      "guest ready",
      `Volt boot to userspace, median phases (${date}, ${placeLabel(merged.where.boot!)})`,
    ),
  );
}
// Formatted as `deno fmt` would, so the saved files leave the repository's fmt check clean.
const written = merged.figures.boot ? [...reports, svg] : reports;
new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", ...written], cwd: ROOT }).outputSync();
console.log(Deno.readTextFileSync(reports[1]));
