/**
 * Progress of a kbuild `make` run from its output: counts the status lines
 * kbuild writes per step ("  CC      init/main.o") against an expected total
 * and formats them for stderr, as one line rewritten in place on a terminal
 * or as occasional plain lines in a log. Pure: no I/O, the caller passes
 * output chunks and the time, and writes what it gets back.
 *
 * @example
 * ```ts
 * import { BuildProgress } from "./build_progress.ts";
 * const p = new BuildProgress({ total: 4, terminal: false, start: 0 });
 * p.push("  CC      init/main.o\n  CC      init/vers");
 * p.push("ion.o\n");
 * console.log(p.count); // 2
 * console.log(p.finish(61_000, true)); // "done: 2 objects in 1m01s\n"
 * ```
 *
 * @module
 */

/**
 * A kbuild status line: two spaces, an upper-case tag (CC, AS, LD, AR,
 * HOSTCC, ASN.1, ...), optionally "[M]", spaces, then the target. Compiler
 * diagnostics never match: their continuation lines start with three or more
 * spaces, a digit or a "|".
 */
const KBUILD_LINE = /^ {2}[A-Z][A-Z0-9_.]*(?: \[M\])? +\S/;

/**
 * True when `line` (without its newline) is a kbuild status line.
 *
 * @example
 * ```ts
 * import { isKbuildLine } from "./build_progress.ts";
 * console.log(isKbuildLine("  CC      kernel/fork.o")); // true
 * console.log(isKbuildLine("kernel/fork.c:12: warning: unused variable")); // false
 * ```
 */
export function isKbuildLine(line: string): boolean {
  return KBUILD_LINE.test(line);
}

/**
 * Counts kbuild status lines in output that arrives in chunks of any size: a
 * line split across chunks is counted once, when its newline arrives.
 *
 * @example
 * ```ts
 * import { KbuildLineCounter } from "./build_progress.ts";
 * const c = new KbuildLineCounter();
 * c.push("  AR      lib/built-in.a\n  L");
 * console.log(c.push("D      vmlinux.o\n")); // 2
 * ```
 */
export class KbuildLineCounter {
  /** Status lines seen so far. */
  count = 0;
  #rest = "";

  /** Takes the next chunk of output; returns the count so far. */
  push(chunk: string): number {
    const lines = (this.#rest + chunk).split("\n");
    this.#rest = lines.pop()!;
    for (const line of lines) {
      if (isKbuildLine(line.endsWith("\r") ? line.slice(0, -1) : line)) this.count++;
    }
    return this.count;
  }

  /** The output ended: a last line without a newline counts too. */
  end(): number {
    if (isKbuildLine(this.#rest)) this.count++;
    this.#rest = "";
    return this.count;
  }
}

/** Options of {@linkcode BuildProgress}. */
export interface BuildProgressOptions {
  /** Status lines a whole build is expected to write (an estimate). */
  total: number;
  /** Rewrite one line in place (stderr is a terminal), else write occasional lines. */
  terminal: boolean;
  /** When the build started, in milliseconds (the clock of later calls). */
  start: number;
  /** Written before each line, e.g. "volt-kernel:       ". */
  prefix?: string;
  /** Without a terminal: a line each time the percentage passes a multiple of this. */
  stepPercent?: number;
  /** Without a terminal: a line at least this often (ms), so a slow stretch still shows life. */
  everyMs?: number;
}

/** "4m02s". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

/**
 * The percentage shown while make runs: never 100, since the total is only
 * an estimate and only make's exit says the build is complete.
 */
export function runningPercent(count: number, total: number): number {
  return Math.min(99, Math.floor((count * 100) / Math.max(1, total)));
}

/**
 * The progress display of one build. Feed it output with
 * {@linkcode BuildProgress.push}, call {@linkcode BuildProgress.update}
 * periodically and {@linkcode BuildProgress.finish} once make has exited;
 * each returns the text to write to stderr ("" for nothing).
 */
export class BuildProgress {
  readonly #counter = new KbuildLineCounter();
  readonly #total: number;
  readonly #terminal: boolean;
  readonly #start: number;
  readonly #prefix: string;
  readonly #step: number;
  readonly #every: number;
  /** Terminal: the text on screen now, to skip identical rewrites and pad over longer ones. */
  #shown = "";
  /** Plain lines: the last step reached and when the last line was written. */
  #lastStep = 0;
  #lastAt: number;
  #finished = false;

  constructor(opts: BuildProgressOptions) {
    this.#total = opts.total;
    this.#terminal = opts.terminal;
    this.#start = opts.start;
    this.#prefix = opts.prefix ?? "";
    this.#step = opts.stepPercent ?? 10;
    this.#every = opts.everyMs ?? 60_000;
    this.#lastAt = opts.start;
  }

  /** Status lines counted so far. */
  get count(): number {
    return this.#counter.count;
  }

  /** Takes the next chunk of make's output. */
  push(chunk: string): void {
    this.#counter.push(chunk);
  }

  /** The progress text at time `now`, without prefix. */
  line(now: number): string {
    const count = this.count;
    // Past the estimate the count is the best guess of the total.
    const total = Math.max(this.#total, count);
    const pct = runningPercent(count, total);
    return `${count}/~${total} objects (${pct}%), ${formatDuration(now - this.#start)}`;
  }

  /** What to write at time `now`: a rewrite of the terminal line, a plain line when due, or "". */
  update(now: number): string {
    if (this.#finished) return "";
    if (this.#terminal) return this.#rewrite(this.line(now));
    const step = Math.floor(runningPercent(this.count, this.#total) / this.#step);
    if (step <= this.#lastStep && now - this.#lastAt < this.#every) return "";
    this.#lastStep = Math.max(step, this.#lastStep);
    this.#lastAt = now;
    return `${this.#prefix}${this.line(now)}\n`;
  }

  /**
   * Make has exited (`ok`: successfully): the last line, "done" with the
   * count, or where the build stopped. Later calls return "".
   */
  finish(now: number, ok: boolean): string {
    if (this.#finished) return "";
    this.#counter.end();
    const text = ok
      ? `done: ${this.count} objects in ${formatDuration(now - this.#start)}`
      : `stopped at ${this.line(now)}`;
    const out = this.#terminal ? `${this.#rewrite(text)}\n` : `${this.#prefix}${text}\n`;
    this.#finished = true;
    this.#shown = "";
    return out;
  }

  /** Terminal: "\r" and the new text, padded with spaces over what was there (no escape codes, so dumb terminals work). */
  #rewrite(text: string): string {
    const full = `${this.#prefix}${text}`;
    if (full === this.#shown) return "";
    const pad = " ".repeat(Math.max(0, this.#shown.length - full.length));
    this.#shown = full;
    return `\r${full}${pad}`;
  }
}
