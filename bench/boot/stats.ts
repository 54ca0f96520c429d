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
