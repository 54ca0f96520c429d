/**
 * The boot benchmark on the three kinds of host: which figure runs where,
 * QEMU's CPU model and the guests' command line per host kind, the merged
 * report's "ran on" labels, and the process runner's timed stop.
 */
import assert from "node:assert/strict";
import { hostKind, hostKindLabel } from "../src/vmm/host.ts";
import { TEMPLATES } from "../src/arch/x86_64/cpuid.ts";
import { buildCmdline, DEFAULT_CMDLINE } from "../src/boot/cmdline.ts";
import { selectTemplate } from "../src/vmm/builder.ts";
import {
  benchPlan,
  FIGURES,
  guestCmdline,
  parseFigures,
  placeLabel,
  placeOf,
  splitPlan,
} from "../bench/boot/plan.ts";
import { qemuArgs, qemuCpu } from "../bench/boot/qemu.ts";
import {
  goalLines,
  mergeResults,
  type PartResults,
  reportMarkdown,
} from "../bench/boot/results.ts";
import { runUntil } from "../bench/boot/process.ts";

Deno.test("bench plan: the host kind from /dev/kvm and the PVM module", () => {
  assert.equal(hostKind("/dev/null", "/nonexistent"), "hardware");
  assert.equal(hostKind("/dev/null", "/"), "pvm");
  assert.equal(hostKind("/nonexistent", "/"), "none", "PVM without a usable /dev/kvm is none");
});

Deno.test("bench plan: hardware KVM measures everything natively", () => {
  const plan = benchPlan("hardware");
  for (const f of FIGURES) assert.equal(plan[f], "native", f);
  assert.deepEqual(splitPlan(plan, FIGURES), { here: [...FIGURES], helper: [] });
  assert.equal(placeOf("hardware", false), "native");
});

Deno.test("bench plan: without /dev/kvm everything runs in the helper VM", () => {
  const plan = benchPlan("none");
  for (const f of FIGURES) assert.equal(plan[f], "helper-vm", f);
  assert.deepEqual(splitPlan(plan, FIGURES), { here: [], helper: [...FIGURES] });
});

Deno.test("bench plan: on PVM the boots run in the helper VM, the monitor's figures natively", () => {
  const plan = benchPlan("pvm");
  assert.equal(plan.boot, "helper-vm");
  for (const f of ["vmm-init", "security", "memory", "pio", "size"] as const) {
    assert.equal(plan[f], "pvm-host", f);
  }
  assert.deepEqual(splitPlan(plan, FIGURES), {
    here: ["vmm-init", "security", "memory", "pio", "size"],
    helper: ["boot"],
  });
  assert.deepEqual(splitPlan(plan, ["memory", "boot"]), { here: ["memory"], helper: ["boot"] });
  assert.equal(placeOf("pvm", false), "pvm-host");
  // The helper VM's part runs on its own (SVM) KVM, whatever the outer host.
  assert.equal(placeOf("hardware", true), "helper-vm");
});

Deno.test("bench plan: --figures takes known groups only", () => {
  assert.deepEqual(parseFigures("boot, memory,boot"), ["boot", "memory"]);
  assert.throws(() => parseFigures("boot,warp"), /^Error: Unknown figure group: warp \(one of /);
  assert.throws(() => parseFigures(" , "), /No figure group given/);
});

Deno.test("bench qemu: a CPU model that starts on each kind of host", () => {
  assert.equal(qemuCpu("hardware", false), "host");
  assert.equal(
    qemuCpu("hardware", true),
    "host,-xsave",
    "the helper VM: XSAVE hidden as Volt hides it",
  );
  // `-cpu host` fails on PVM with "failed to set MSR 0x10a".
  assert.equal(qemuCpu("pvm"), "host,-arch-capabilities");
  const base = { kernel: "k", memoryMiB: 128, cpus: 1, cmdline: "c" };
  const cpuOf = (args: string[]) => args[args.indexOf("-cpu") + 1];
  assert.equal(cpuOf(qemuArgs(base)), "host");
  assert.equal(cpuOf(qemuArgs({ ...base, cpu: qemuCpu("pvm") })), "host,-arch-capabilities");
});

Deno.test("bench cmdline: QEMU's guest gets the PVM masks Volt adds on PVM", () => {
  const masks = TEMPLATES.pvm.cmdline;
  assert.ok(masks.length > 0);
  const line = guestCmdline("pvm", "volt.exit");
  const words = line.split(" ");
  for (const m of masks) assert.ok(words.includes(m), `${m} in ${line}`);
  assert.equal(words.at(-1), "volt.exit", "the masks come before the appended words");
  // The same line Volt's builder makes under the template it picks on PVM.
  const volt = buildCmdline({ append: "volt.exit", extra: selectTemplate("auto", true).cmdline });
  assert.equal(line, volt);
  assert.equal(guestCmdline("hardware", "volt.exit"), `${DEFAULT_CMDLINE} volt.exit`);
  assert.equal(guestCmdline("hardware"), DEFAULT_CMDLINE);
  for (const m of masks) assert.ok(!guestCmdline("hardware").split(" ").includes(m));
});

const s = (x: number) => [x, x + 1, x + 2];
const rate = { exits: 10, seconds: 1, rate: 10 };
const pvmPart: PartResults = {
  place: "pvm-host",
  cmdline: guestCmdline("pvm"),
  qemuCpu: qemuCpu("pvm"),
  failures: ["QEMU never reached 4000 ms (exit 1); console ended: "],
  figures: {
    "vmm-init": { voltTraced: s(90), wall: { volt: s(120), qemu: s(40) } },
    security: { on: s(120), off: s(110) },
    memory: { at: "4 s into the boot", sizes: [{ mib: 128, volt: s(60), qemu: s(45) }] },
    pio: { volt: rate, c: rate },
    size: { bundleMiB: 1, denoMiB: 100, qemuMiB: 20 },
  },
};
const helperPart: PartResults = {
  place: "helper-vm",
  cmdline: guestCmdline("hardware"),
  qemuCpu: qemuCpu("hardware", false),
  failures: [],
  figures: {
    boot: {
      ready: { volt: s(14000), qemu: s(5000) },
      panic: { volt: s(13000), qemu: s(6000) },
      guestBoot: s(9000),
      phaseRuns: [[{ phase: "runtime up", ms: 0 }, { phase: "guest ready", ms: 9000 }]],
    },
  },
};
const context = {
  date: "2026-12-01",
  command: "deno task bench:boot --runs 3",
  host: "AMD EPYC, 2 cores, Linux 6.18",
  guestName: "microvm-0",
  qemuPath: "/usr/bin/qemu-system-x86_64",
};

/** The body rows of every Markdown table (no header, no separator), as cells. */
function tableRows(md: string): string[][] {
  const lines = md.split("\n");
  return lines
    .filter((l, i) =>
      l.startsWith("| ") && !l.startsWith("| ---") && !lines[i + 1]?.startsWith("| ---")
    )
    .map((l) => l.slice(2, -2).split(" | "));
}

Deno.test("bench report: on PVM every row says where it ran, the header the host kind", () => {
  const merged = mergeResults([pvmPart, helperPart]);
  assert.equal(merged.where.boot, "helper-vm");
  assert.equal(merged.where.memory, "pvm-host");
  const md = reportMarkdown(merged, { ...context, kind: "pvm" });
  assert.match(md, /^# Boot benchmark, 2026-12-01\n\nHost: PVM;/);
  assert.match(md, /- \*\*PVM host\*\*: .*QEMU `-cpu host,-arch-capabilities`/);
  assert.ok(md.includes(`guest command line \`${guestCmdline("pvm")}\``));
  assert.match(md, /- \*\*helper VM \(TCG\)\*\*: .*QEMU `-cpu host`/);
  assert.match(md, /## Volt against QEMU microvm\n\n\| figure \| .* \| ran on \|/);
  assert.match(md, /## Volt alone\n\n\| figure \| value \| ran on \|/);

  const rows = tableRows(md);
  const ranOn = (what: RegExp) => {
    const r = rows.find((cells) => what.test(cells[0]));
    assert.ok(r, `a row for ${what}`);
    return r.at(-1);
  };
  assert.equal(ranOn(/^cold boot to userspace/), "helper VM (TCG)");
  assert.equal(ranOn(/^cold boot to kernel panic/), "helper VM (TCG)");
  assert.equal(ranOn(/^VMM init, wall clock/), "PVM host");
  assert.equal(ranOn(/^memory overhead, 128 MiB guest \(4 s into the boot\)/), "PVM host");
  assert.equal(ranOn(/^VMM init, traced/), "PVM host");
  assert.equal(ranOn(/^guest boot time/), "helper VM (TCG)");
  assert.equal(ranOn(/^security overhead/), "PVM host");
  assert.equal(ranOn(/^PIO exits/), "PVM host");
  assert.equal(ranOn(/^program size/), "PVM host");
  // Phase rows aside, no table row lacks its place.
  const labels = ["native", "PVM host", "helper VM (TCG)"];
  const unlabelled = rows.filter((r) => !labels.includes(r.at(-1)!) && !/ ms$/.test(r.at(-1)!));
  assert.deepEqual(unlabelled, []);
  assert.match(md, /boot phases \(median of 1 boots to userspace, helper VM \(TCG\)\)/);
  assert.match(md, /- PVM host: QEMU never reached 4000 ms/);
});

Deno.test("bench report: one place only on hardware KVM and without /dev/kvm", () => {
  for (const [kind, place] of [["hardware", "native"], ["none", "helper-vm"]] as const) {
    const part = (p: PartResults) => ({ ...p, place, failures: [] });
    const merged = mergeResults([
      part({ ...pvmPart, cmdline: guestCmdline("hardware"), qemuCpu: "host" }),
      part(helperPart),
    ]);
    const md = reportMarkdown(merged, { ...context, kind });
    assert.ok(md.includes(`Host: ${hostKindLabel(kind)};`), kind);
    for (const cells of tableRows(md).filter((r) => !/ ms$/.test(r.at(-1)!))) {
      assert.equal(cells.at(-1), placeLabel(place), cells[0]);
    }
    assert.ok(!md.includes("arch-capabilities"), "no PVM CPU model off PVM");
    assert.ok(!md.includes("## Failed runs"));
  }
});

Deno.test("bench report: a group measured in two places is an error", () => {
  assert.throws(
    () => mergeResults([pvmPart, { ...helperPart, figures: pvmPart.figures }]),
    /^Error: Figure group vmm-init measured twice \(pvm-host and helper-vm\)$/,
  );
});

Deno.test("bench process: a timed marker, and a gentler stop than SIGKILL", async () => {
  const script = 'trap "echo stopped; exit 3" TERM; echo up; while :; do sleep 0.05; done';
  let seen = 0;
  const r = await runUntil("sh", ["-c", script], "never printed", {
    timeoutMs: 10_000,
    afterMs: 300,
    killAtMarker: true,
    stopSignal: "SIGTERM",
    atMarker: (pid) => {
      seen = pid;
    },
  });
  assert.ok(r.markerMs !== undefined && r.markerMs >= 300, `marker at ${r.markerMs}`);
  assert.equal(seen, r.pid);
  assert.equal(r.code, 3, "the TERM trap ran");
  assert.match(r.stdout, /up\nstopped/);
  // A process gone before its time never reaches the marker.
  const early = await runUntil("true", [], "", { timeoutMs: 10_000, afterMs: 2000 });
  assert.equal(early.markerMs, undefined);
});

Deno.test("boot report: each compared figure against its goal (time at most QEMU's, memory below)", () => {
  const s = (median: number) => ({ median, min: median, max: median, n: 1, spread: 0 });
  assert.deepEqual(
    goalLines([
      { what: "cold boot to userspace", volt: s(90), qemu: s(100) },
      { what: "cold boot to kernel panic", volt: s(300), qemu: s(100) },
      { what: "VMM init", volt: s(150), qemu: s(50) },
      { what: "memory overhead", volt: s(45), qemu: s(45), unit: "MiB" },
      { what: "no peer", volt: s(1) },
    ]),
    [
      "- cold boot to userspace: 0.90× QEMU's; goal at most QEMU's: met",
      "- VMM init: 3.00× QEMU's; goal at most QEMU's: not met",
      "- memory overhead: 1.00× QEMU's; goal below QEMU's: not met",
    ],
  );
});
