/**
 * Boot phases with their time since process start, for `--log-level trace`
 * and `--metrics-json`.
 *
 * @module
 */

/** The phase a vCPU thread marks right before its first KVM_RUN. */
export const FIRST_RUN_PHASE = "first KVM_RUN";
/** The phase of volt-init's write to the boot-timer port: the guest boot time. */
export const GUEST_READY_PHASE = "guest ready";

/** One phase boundary. */
export interface Mark {
  /** The phase that ended here, e.g. "kvm opened". */
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
  /** Every phase so far, in order. */
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
