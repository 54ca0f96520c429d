/**
 * Boot phases with their time since process start, for `--log-level trace`
 * and `--metrics-json`.
 *
 * @module
 */

/** One phase boundary. */
export interface Mark {
  phase: string;
  /** Milliseconds since the trace's origin (by default, this runtime's start). */
  ms: number;
}

/**
 * Collects marks.
 *
 * @example
 * ```ts
 * import { BootTrace } from "./trace.ts";
 * const t = new BootTrace();
 * t.mark("kvm opened");
 * t.marks[0].phase; // "kvm opened"
 * ```
 */
export class BootTrace {
  readonly marks: Mark[] = [];
  private readonly listener?: (m: Mark) => void;
  private readonly offset: number;

  /**
   * `origin` (epoch ms, default this runtime's start) is time zero: a
   * monitor that re-executed itself counts from the first runtime.
   */
  constructor(listener?: (m: Mark) => void, origin: number = performance.timeOrigin) {
    this.listener = listener;
    this.offset = performance.timeOrigin - origin;
  }

  /** Records `phase` at `ms` since this runtime's start (default now). */
  mark(phase: string, ms: number = performance.now()): Mark {
    const m = { phase, ms: ms + this.offset };
    this.marks.push(m);
    this.listener?.(m);
    return m;
  }
}
