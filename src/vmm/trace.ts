/**
 * Boot phases with their time since process start, for `--log-level trace`
 * and `--metrics-json`.
 *
 * @module
 */

/** One phase boundary. */
export interface Mark {
  phase: string;
  /** Milliseconds since the runtime started. */
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

  constructor(listener?: (m: Mark) => void) {
    this.listener = listener;
  }

  /** Records `phase` now. */
  mark(phase: string, ms: number = performance.now()): void {
    const m = { phase, ms };
    this.marks.push(m);
    this.listener?.(m);
  }
}
