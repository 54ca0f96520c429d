/**
 * Runs a fuzz target a given number of cases in a worker, with a watchdog:
 * a target whose case counter does not move for `stallMs` is a hang, and is
 * reported with its seed and case number instead of blocking the caller.
 */

/** Asks the worker for `runs` cases of `target` from `seed`. */
export interface FuzzRequest {
  target: string;
  runs: number;
  seed: number;
  /** One Int32 the worker counts cases in (shrinking included). */
  progress: SharedArrayBuffer;
}

/** A pseudo-target that loops forever, for testing the watchdog. */
export const HANG_PROBE = "hang-probe";

/** The worker's answer: fast-check's failure message carries the seed and counterexample. */
export type FuzzReply = { ok: true; runs: number; ms: number } | { ok: false; message: string };

/** One target's outcome. */
export interface FuzzResult {
  target: string;
  runs: number;
  ms: number;
  seed: number;
}

/**
 * The seed of a run: `VOLT_FUZZ_SEED` to replay a failure, else a fresh one.
 */
export function fuzzSeed(): number {
  const env = Deno.env.get("VOLT_FUZZ_SEED");
  if (env !== undefined && env !== "") {
    const n = Number(env);
    if (!Number.isSafeInteger(n)) throw new Error(`VOLT_FUZZ_SEED must be an integer, not ${env}`);
    return n | 0;
  }
  return (Math.random() * 2 ** 32) | 0;
}

/** One worker reused across targets; replaced after a hang. */
export class FuzzRunner {
  #worker?: Worker;

  /** Runs `runs` cases of `target`; throws with the seed on a failure or a hang. */
  run(target: string, runs: number, seed: number, stallMs = 10_000): Promise<FuzzResult> {
    this.#worker ??= new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    const worker = this.#worker;
    const progress = new SharedArrayBuffer(4);
    const counter = new Int32Array(progress);
    const replay = `replay: VOLT_FUZZ_SEED=${seed}`;
    return new Promise((resolve, reject) => {
      let seen = -1;
      const watchdog = setInterval(() => {
        const now = Atomics.load(counter, 0);
        if (now !== seen) {
          seen = now;
          return;
        }
        clearInterval(watchdog);
        worker.terminate();
        this.#worker = undefined;
        reject(
          new Error(
            `Fuzz target ${target} hung: case ${now} ran for over ${stallMs} ms (seed ${seed}; ${replay})`,
          ),
        );
      }, stallMs);
      worker.onmessage = (ev: MessageEvent<FuzzReply>) => {
        clearInterval(watchdog);
        const r = ev.data;
        if (r.ok) resolve({ target, runs: r.runs, ms: r.ms, seed });
        else {reject(
            new Error(`Fuzz target ${target} failed (seed ${seed}; ${replay})\n${r.message}`),
          );}
      };
      worker.onerror = (ev) => {
        clearInterval(watchdog);
        ev.preventDefault();
        this.#worker = undefined;
        reject(new Error(`Fuzz worker for ${target} crashed (seed ${seed}): ${ev.message}`));
      };
      worker.postMessage({ target, runs, seed, progress } satisfies FuzzRequest);
    });
  }

  /** Stops the worker. */
  close(): void {
    this.#worker?.terminate();
    this.#worker = undefined;
  }
}
