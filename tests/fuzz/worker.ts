/**
 * Runs fuzz targets off the main thread, so a target that never returns can
 * be stopped: the runner terminates this worker when the case counter stops
 * moving.
 */

import fc from "fast-check";
import { TARGETS } from "./targets.ts";
import { type FuzzReply, type FuzzRequest, HANG_PROBE } from "./runner.ts";

declare const self: Worker & { postMessage(m: FuzzReply): void };

self.onmessage = (ev: MessageEvent<FuzzRequest>) => {
  const { target, runs, seed, progress } = ev.data;
  const counter = new Int32Array(progress);
  // The runner's own check that a stuck target is stopped and reported. It
  // blocks rather than spins: terminate() does not interrupt a tight loop,
  // which then held a core for the rest of the test run and starved the
  // PVM Linux boots beside it into timeouts.
  if (target === HANG_PROBE) {
    Atomics.add(counter, 0, 1);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  }
  const t = TARGETS.find((x) => x.name === target);
  if (!t) {
    self.postMessage({ ok: false, message: `No fuzz target ${target}` });
    return;
  }
  const start = performance.now();
  try {
    fc.assert(
      fc.property(t.arbitrary, (v) => {
        Atomics.add(counter, 0, 1);
        t.check(v);
      }),
      // The failing check's own message, under the seed and counterexample.
      { numRuns: runs, seed, includeErrorInReport: true },
    );
    self.postMessage({ ok: true, runs, ms: performance.now() - start });
  } catch (e) {
    self.postMessage({ ok: false, message: (e as Error).message });
  }
};
