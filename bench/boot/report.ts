/**
 * The boot benchmark's report: Markdown tables like the predecessor's,
 * Volt and QEMU microvm side by side, and an SVG timeline of one boot.
 *
 * @module
 */

import type { Mark } from "../../src/vmm/trace.ts";
import { ms, ratio, type Summary } from "./stats.ts";

/** One compared figure. */
export interface Row {
  what: string;
  volt?: Summary;
  qemu?: Summary;
  /** Unit of the summaries (default ms). */
  unit?: "ms" | "MiB" | "exits/s";
  /** Where it was measured, as the "ran on" column shows it. */
  where?: string;
}

function fmt(x: number | undefined, unit: Row["unit"]): string {
  if (x === undefined) return "n/a";
  if (unit === "MiB") return `${x.toFixed(1)} MiB`;
  if (unit === "exits/s") return `${Math.round(x).toLocaleString("en")} /s`;
  return ms(x);
}

/**
 * A Markdown table of compared figures: median (min–max, n) for each side,
 * the Volt/QEMU ratio of the medians, and where each was measured.
 *
 * @example
 * ```ts
 * import { compareTable } from "./report.ts";
 * const s = { n: 1, min: 1, median: 1, max: 1, spread: 0 };
 * compareTable([{ what: "boot", volt: s, qemu: s, where: "native" }]);
 * ```
 */
export function compareTable(rows: readonly Row[]): string {
  const cell = (s: Summary | undefined, unit: Row["unit"]) =>
    s ? `${fmt(s.median, unit)} (${fmt(s.min, unit)} – ${fmt(s.max, unit)}, n=${s.n})` : "n/a";
  const lines = [
    "| figure | Volt median (min – max) | QEMU microvm median (min – max) | Volt/QEMU | ran on |",
    "| ------ | ----------------------- | ------------------------------- | --------- | ------ |",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.what} | ${cell(r.volt, r.unit)} | ${cell(r.qemu, r.unit)} | ${
        ratio(r.volt?.median, r.qemu?.median)
      } | ${r.where ?? "n/a"} |`,
    );
  }
  return lines.join("\n");
}

/**
 * A Markdown table of Volt's boot phases (median ms since process start,
 * and the step from the phase before).
 *
 * @example
 * ```ts
 * import { phaseTable } from "./report.ts";
 * phaseTable([{ phase: "runtime up", ms: 0 }, { phase: "kvm opened", ms: 20 }]);
 * ```
 */
export function phaseTable(phases: readonly Mark[]): string {
  const lines = ["| phase | since start | step |", "| ----- | ----------- | ---- |"];
  let prev = 0;
  for (const p of phases) {
    lines.push(`| ${p.phase} | ${ms(p.ms)} | ${ms(p.ms - prev)} |`);
    prev = p.ms;
  }
  return lines.join("\n");
}

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/**
 * An SVG timeline of one boot: the monitor's phases, then the guest up to
 * its ready mark, one bar per step on a shared time axis.
 *
 * @example
 * ```ts
 * import { timelineSvg } from "./report.ts";
 * const svg = timelineSvg([{ phase: "runtime up", ms: 0 }, { phase: "guest ready", ms: 90 }], "guest ready");
 * svg.startsWith("<svg"); // true
 * ```
 */
export function timelineSvg(
  phases: readonly Mark[],
  guestFrom: string,
  title = "One Volt boot",
): string {
  const total = Math.max(...phases.map((p) => p.ms), 1);
  const left = 190, width = 560, rowH = 18, top = 40;
  const x = (t: number) => left + (t / total) * width;
  const guestAt = phases.findIndex((p) => p.phase === guestFrom);
  const rows: string[] = [];
  let prev = 0;
  phases.forEach((p, i) => {
    const y = top + i * rowH;
    const guest = guestAt >= 0 && i >= guestAt;
    const w = Math.max(x(p.ms) - x(prev), 1);
    rows.push(
      `<text x="${left - 6}" y="${y + 12}" text-anchor="end">${esc(p.phase)}</text>`,
      `<rect x="${x(prev).toFixed(1)}" y="${y + 2}" width="${w.toFixed(1)}" height="${
        rowH - 5
      }" fill="${guest ? "#e07b39" : "#3b7dd8"}"><title>${esc(p.phase)}: ${ms(p.ms - prev)} (at ${
        ms(p.ms)
      })</title></rect>`,
      `<text x="${(x(p.ms) + 4).toFixed(1)}" y="${y + 12}">${esc(ms(p.ms))}</text>`,
    );
    prev = p.ms;
  });
  const h = top + phases.length * rowH + 30;
  const axisY = top + phases.length * rowH + 6;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${
      left + width + 90
    }" height="${h}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="18" font-size="13" font-weight="bold">${esc(title)}</text>`,
    `<text x="10" y="32" fill="#555">blue: monitor phases; orange: guest (kernel to volt-init ready); time since process start</text>`,
    ...rows,
    `<line x1="${left}" y1="${axisY}" x2="${left + width}" y2="${axisY}" stroke="#333"/>`,
    `<text x="${left}" y="${axisY + 14}">0</text>`,
    `<text x="${left + width}" y="${axisY + 14}" text-anchor="end">${esc(ms(total))}</text>`,
    `</svg>`,
    "",
  ].join("\n");
}
