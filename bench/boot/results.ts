/**
 * The boot benchmark's raw results, one part per place it measured in
 * (this host, the helper VM), merged into one report whose every row says
 * where it ran.
 *
 * @module
 */

import type { Mark } from "../../src/vmm/trace.ts";
import type { PioRate } from "./pio.ts";
import { hostKindLabel } from "../../src/vmm/host.ts";
import { type Figure, FIGURES, type HostKind, type Place, placeLabel } from "./plan.ts";
import { compareTable, phaseTable, type Row } from "./report.ts";
import { ms, summarize } from "./stats.ts";

/**
 * Each compared figure against issue 15's goal for it: boot to READY and
 * VMM init at most QEMU's, memory overhead below QEMU's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { goalLines } from "./results.ts";
 * const s = (median: number) => ({ median, min: median, max: median, n: 1, spread: 0 });
 * assert.deepEqual(
 *   goalLines([{ what: "VMM init, wall clock (spawn → first KVM_RUN)", volt: s(150), qemu: s(50) }]),
 *   ["- VMM init, wall clock (spawn → first KVM_RUN): 3.00× QEMU's; goal at most QEMU's: not met"],
 * );
 * ```
 */
export function goalLines(rows: readonly Row[]): string[] {
  return rows.flatMap((r) => {
    if (!r.volt || !r.qemu || r.what.includes("kernel panic")) return [];
    const ratio = r.volt.median / r.qemu.median;
    const memory = r.unit === "MiB";
    const met = memory ? ratio < 1 : ratio <= 1;
    return [
      `- ${r.what}: ${ratio.toFixed(2)}× QEMU's; goal ${memory ? "below" : "at most"} QEMU's: ${
        met ? "met" : "not met"
      }`,
    ];
  });
}

/** Volt's and QEMU's samples of one compared figure. */
export interface Samples {
  volt: number[];
  qemu: number[];
}

/** The samples of each figure group; a group is absent when it was not measured. */
export interface FigureResults {
  boot?: {
    /** Spawn → "VOLT VM READY". */
    ready: Samples;
    /** Spawn → "Kernel panic". */
    panic: Samples;
    /** Volt's runtime start → volt-init's boot-timer write. */
    guestBoot: number[];
    /** Volt's phases, one list per boot to userspace. */
    phaseRuns: Mark[][];
  };
  "vmm-init"?: {
    /** Volt's runtime start → first KVM_RUN, from its trace. */
    voltTraced: number[];
    /** Spawn → first KVM_RUN. */
    wall: Samples;
  };
  security?: {
    /** VMM init wall with every layer, and with `--no-seccomp --no-landlock`. */
    on: number[];
    off: number[];
  };
  memory?: {
    /** When in the boot it was measured. */
    at: string;
    sizes: { mib: number; volt: number[]; qemu: number[] }[];
  };
  pio?: { volt: PioRate; c: PioRate };
  size?: { bundleMiB: number; denoMiB: number; qemuMiB: number };
}

/** What one process measured, and how. */
export interface PartResults {
  place: Place;
  /** The guest command line (QEMU's; Volt builds the same one itself). */
  cmdline: string;
  /** QEMU's `-cpu` model. */
  qemuCpu: string;
  figures: FigureResults;
  /** Runs that never reached their marker. */
  failures: string[];
}

/** The parts combined: every group with the place it ran in. */
export interface MergedResults {
  figures: FigureResults;
  where: Partial<Record<Figure, Place>>;
  parts: PartResults[];
  /** Every part's failures, each tagged with its place. */
  failures: string[];
}

/**
 * Combines the parts; a group measured by two parts is an error.
 *
 * @example
 * ```ts
 * import { mergeResults } from "./results.ts";
 * const part = { cmdline: "console=ttyS0", qemuCpu: "host", failures: [] };
 * const m = mergeResults([
 *   { ...part, place: "pvm-host", figures: { size: { bundleMiB: 1, denoMiB: 2, qemuMiB: 3 } } },
 *   { ...part, place: "helper-vm", figures: { pio: { volt: { exits: 1, seconds: 1, rate: 1 }, c: { exits: 1, seconds: 1, rate: 1 } } } },
 * ]);
 * m.where.pio; // "helper-vm"
 * ```
 */
export function mergeResults(parts: readonly PartResults[]): MergedResults {
  const figures: FigureResults = {};
  const where: Partial<Record<Figure, Place>> = {};
  for (const part of parts) {
    for (const f of FIGURES) {
      if (part.figures[f] === undefined) continue;
      if (where[f]) {
        throw new Error(`Figure group ${f} measured twice (${where[f]} and ${part.place})`);
      }
      where[f] = part.place;
      // deno-lint-ignore no-explicit-any
      (figures as any)[f] = part.figures[f];
    }
  }
  const failures = parts.flatMap((p) => p.failures.map((f) => `${placeLabel(p.place)}: ${f}`));
  return { figures, where, parts: [...parts], failures };
}

/** What the report says about the run besides the results. */
export interface ReportContext {
  date: string;
  /** The command as typed. */
  command: string;
  /** The kind of host the benchmark started on. */
  kind: HostKind;
  /** CPU, cores, kernel of that host. */
  host: string;
  /** The guest kernel's cache name, e.g. microvm-3fe08837f113c2b2. */
  guestName: string;
  /** Path of the QEMU binary. */
  qemuPath: string;
  /** Extra lines for the end of the report (e.g. a helper VM that failed). */
  notes?: string[];
}

/**
 * What measuring in `place` means for the figures, for the report's key to
 * its "ran on" columns.
 *
 * @example
 * ```ts
 * import { placeConditions } from "./results.ts";
 * placeConditions("native"); // "on this host with hardware KVM"
 * ```
 */
export function placeConditions(place: Place): string {
  switch (place) {
    case "native":
      return "on this host with hardware KVM";
    case "pvm-host":
      return "on this host, whose /dev/kvm is PVM: the monitors run at native speed and only " +
        "guest instructions are emulated; guest userspace cannot run, so Volt's VMM-init runs " +
        "stop at their first KVM_RUN and memory is measured a fixed time into a boot";
    case "helper-vm":
      return "inside the nested-KVM helper VM on this host (QEMU TCG with emulated AMD SVM, " +
        "2 vCPUs, 4 GiB): every guest exit is emulated, so absolute times are far above a " +
        "hardware-KVM host's; the ratios compare both monitors under the same conditions";
  }
}

const some = (xs: number[] | undefined) => xs?.length ? summarize(xs) : undefined;
const finite = (xs: number[]) => xs.filter((x) => Number.isFinite(x));

/**
 * Median phases over the boots, in the order of the first boot's.
 *
 * @example
 * ```ts
 * import { medianPhases } from "./results.ts";
 * medianPhases([[{ phase: "a", ms: 1 }], [{ phase: "a", ms: 3 }]]); // [{ phase: "a", ms: 2 }]
 * ```
 */
export function medianPhases(runs: readonly Mark[][]): Mark[] {
  return (runs[0] ?? []).map((p) => {
    const xs = runs.map((r) => r.find((m) => m.phase === p.phase)?.ms).filter((x) =>
      x !== undefined
    ) as number[];
    return { phase: p.phase, ms: summarize(xs).median };
  });
}

/**
 * The report in Markdown: the host kind in the header, what each place
 * means, then the tables with a "ran on" column.
 *
 * @example
 * ```ts
 * import { mergeResults, reportMarkdown } from "./results.ts";
 * const merged = mergeResults([{
 *   place: "native", cmdline: "console=ttyS0", qemuCpu: "host", failures: [],
 *   figures: { size: { bundleMiB: 1, denoMiB: 2, qemuMiB: 3 } },
 * }]);
 * reportMarkdown(merged, {
 *   date: "2026-12-01", command: "deno task bench:boot", kind: "hardware", host: "a CPU",
 *   guestName: "microvm-0", qemuPath: "/usr/bin/qemu-system-x86_64",
 * });
 * ```
 */
export function reportMarkdown(m: MergedResults, c: ReportContext): string {
  const f = m.figures;
  const ran = (g: Figure) => {
    const p = m.where[g];
    return p ? placeLabel(p) : "n/a";
  };
  const READY = "VOLT VM READY", PANIC = "Kernel panic";

  const compared: Row[] = [];
  if (f.boot) {
    compared.push({
      what: `cold boot to userspace (spawn → "${READY}" on the console)`,
      volt: some(f.boot.ready.volt),
      qemu: some(f.boot.ready.qemu),
      where: ran("boot"),
    }, {
      what: `cold boot to kernel panic (spawn → "${PANIC}")`,
      volt: some(f.boot.panic.volt),
      qemu: some(f.boot.panic.qemu),
      where: ran("boot"),
    });
  }
  if (f["vmm-init"]) {
    compared.push({
      what: "VMM init, wall clock (spawn → first KVM_RUN)",
      volt: some(finite(f["vmm-init"].wall.volt)),
      qemu: some(f["vmm-init"].wall.qemu),
      where: ran("vmm-init"),
    });
  }
  for (const s of f.memory?.sizes ?? []) {
    compared.push({
      what: `memory overhead, ${s.mib} MiB guest (${f.memory!.at})`,
      volt: some(s.volt),
      qemu: some(s.qemu),
      unit: "MiB",
      where: ran("memory"),
    });
  }

  const alone: string[] = [];
  const aloneRow = (what: string, value: string, g: Figure) =>
    alone.push(`| ${what} | ${value} | ${ran(g)} |`);
  if (f["vmm-init"]) {
    aloneRow(
      "VMM init, traced (runtime start → first KVM_RUN), median",
      ms(some(f["vmm-init"].voltTraced)?.median),
      "vmm-init",
    );
  }
  if (f.boot) {
    aloneRow(
      "guest boot time (runtime start → volt-init's boot-timer write), median",
      ms(some(f.boot.guestBoot)?.median),
      "boot",
    );
  }
  if (f.security) {
    const on = some(finite(f.security.on)), off = some(finite(f.security.off));
    aloneRow(
      "security overhead: VMM init wall, all layers − `--no-seccomp --no-landlock` (medians)",
      on && off
        ? `${ms(on.median - off.median)} (${ms(on.median)} vs ${ms(off.median)}, n=${on.n})`
        : "n/a",
      "security",
    );
  }
  if (f.pio) {
    const rate = (r: PioRate) => `${Math.round(r.rate).toLocaleString("en")} /s`;
    aloneRow(
      "PIO exits: Volt vCPU loop / C loop",
      `${rate(f.pio.volt)} / ${rate(f.pio.c)} = ${
        (f.pio.volt.rate / f.pio.c.rate * 100).toFixed(0)
      }%`,
      "pio",
    );
  }
  if (f.size) {
    aloneRow(
      "program size",
      `bundle \`dist/volt.js\` ${(f.size.bundleMiB * 1024).toFixed(0)} KiB + Deno runtime ${
        f.size.denoMiB.toFixed(1)
      } MiB; QEMU binary ${
        f.size.qemuMiB.toFixed(1)
      } MiB (without its shared libraries and firmware)`,
      "size",
    );
  }

  const places = m.parts.map((p) =>
    `- **${placeLabel(p.place)}**: ${placeConditions(p.place)}. QEMU \`-cpu ${p.qemuCpu}\`; ` +
    `guest command line \`${p.cmdline}\`.`
  );
  const phases = f.boot ? medianPhases(f.boot.phaseRuns) : [];
  const sections = [
    `# Boot benchmark, ${c.date}`,
    `Host: ${hostKindLabel(c.kind)}; ${c.host}.`,
    `Command: \`${c.command}\``,
    `Where each figure ran (the "ran on" columns):\n\n${places.join("\n")}`,
    `Guest: the default microVM kernel (${c.guestName}) and initramfs, 1 vCPU, 128 MiB unless ` +
    `stated. Volt runs from the bundle (\`dist/volt\`) with every sandbox layer on and adds the ` +
    `guest command line's host masks itself; QEMU ${c.qemuPath} \`-M microvm -enable-kvm ` +
    `-nodefaults\` with the \`-cpu\` above. Runs alternate pair by pair.`,
  ];
  if (compared.length) {
    sections.push(`## Volt against QEMU microvm\n\n${compareTable(compared)}`);
    const goals = goalLines(compared);
    if (goals.length) sections.push(`## Goals (issue 15)\n\n${goals.join("\n")}`);
  }
  if (alone.length) {
    sections.push(
      `## Volt alone\n\n| figure | value | ran on |\n| ------ | ----- | ------ |\n${
        alone.join("\n")
      }`,
    );
  }
  if (f.boot) {
    sections.push(
      `## Volt's boot phases (median of ${f.boot.phaseRuns.length} boots to userspace, ${
        ran("boot")
      })\n\n${phaseTable(phases)}\n\n![timeline](boot-timeline.svg)`,
    );
  }
  if (m.failures.length) {
    sections.push(
      `## Failed runs (left out of the figures)\n\n${m.failures.map((l) => `- ${l}`).join("\n")}`,
    );
  }
  if (c.notes?.length) sections.push(c.notes.join("\n\n"));
  return sections.join("\n\n") + "\n";
}
