/**
 * Summaries of repeated measurements.
 *
 * @module
 */

/** Minimum, median, maximum and spread of a sample. */
export interface Summary {
  n: number;
  min: number;
  median: number;
  max: number;
  /** max − min. */
  spread: number;
}

/**
 * Summarizes `xs` (at least one value).
 *
 * @example
 * ```ts
 * import { summarize } from "./stats.ts";
 * summarize([3, 1, 2]).median; // 2
 * ```
 */
export function summarize(xs: readonly number[]): Summary {
  if (!xs.length) throw new Error("No measurements to summarize");
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { n: s.length, min: s[0], median, max: s.at(-1)!, spread: s.at(-1)! - s[0] };
}

/**
 * Milliseconds with a precision that suits their size.
 *
 * @example
 * ```ts
 * import { ms } from "./stats.ts";
 * ms(1234.5); // "1235 ms"
 * ```
 */
export function ms(x: number | undefined): string {
  if (x === undefined || Number.isNaN(x)) return "n/a";
  return `${x >= 100 ? x.toFixed(0) : x.toFixed(1)} ms`;
}

/**
 * A Volt/QEMU ratio as text.
 *
 * @example
 * ```ts
 * import { ratio } from "./stats.ts";
 * ratio(50, 100); // "0.50×"
 * ```
 */
export function ratio(volt: number | undefined, qemu: number | undefined): string {
  if (volt === undefined || qemu === undefined || qemu === 0) return "n/a";
  return `${(volt / qemu).toFixed(2)}×`;
}

/**
 * A Markdown table of `figures`, Volt's and QEMU's medians side by side
 * and their ratio.
 *
 * @example
 * ```ts
 * import { sideBySide } from "./stats.ts";
 * console.log(sideBySide(["mibs"], { mibs: [10] }, { mibs: [20] }).join("\n"));
 * ```
 */
export function sideBySide(
  figures: readonly string[],
  volt: Record<string, number[]>,
  qemu: Record<string, number[]>,
): string[] {
  const med = (xs: number[] = []) => (xs.length ? summarize(xs).median : NaN);
  const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(3));
  return [
    "| figure | Volt | QEMU microvm | Volt / QEMU |",
    "| --- | ---: | ---: | ---: |",
    ...figures.map((f) => {
      const v = med(volt[f]), q = med(qemu[f]);
      return `| ${f} | ${fmt(v)} | ${fmt(q)} | ${(v / q).toFixed(2)} |`;
    }),
  ];
}

/** Writes a benchmark's report to stdout and `bench/results/<name>-latest.md`. */
export function publish(name: string, lines: string[]): void {
  const report = lines.join("\n");
  console.log(report);
  const dir = new URL("../results/", import.meta.url).pathname;
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(`${dir}${name}-latest.md`, report);
}
