/**
 * Property-based fuzzing of the parsers, the loader, the cpio codec, the
 * UART and i8042 models and the seccomp filter, a bounded number of cases
 * per target (`deno task fuzz` runs 100,000 each). A failure names the seed:
 * `VOLT_FUZZ_SEED=<seed> deno test -A tests/fuzz_test.ts` replays it, and
 * `VOLT_FUZZ_RUNS=<n>` sets the cases per target.
 */
import assert from "node:assert/strict";
import { FuzzRunner, fuzzSeed, HANG_PROBE } from "./fuzz/runner.ts";
import { TARGETS } from "./fuzz/targets.ts";

/** Cases per target: half a second or less each once warm, so the file stays under ~10 s. */
const RUNS: Record<string, number> = {
  "elf-random": 4000,
  "elf-mutated": 10000,
  "bzimage-random": 2000,
  "bzimage-mutated": 10000,
  "loader": 5000,
  "cpio-roundtrip": 4000,
  "cpio-read": 6000,
  "uart": 2000,
  "i8042": 3000,
  "virtio-driver": 3000,
  "seccomp-monitor": 5000,
  "seccomp-vcpu": 3000,
  "seccomp-policies": 800,
  "console-safe": 3000,
};

const override = Number(Deno.env.get("VOLT_FUZZ_RUNS") ?? "");

Deno.test("fuzz: every target holds for its cases, and a hang is reported", async (t) => {
  const runner = new FuzzRunner();
  const seed = fuzzSeed();
  try {
    for (const target of TARGETS) {
      const runs = override > 0 ? override : RUNS[target.name];
      assert.ok(runs > 0, `no case count for ${target.name}`);
      await t.step(`${target.name} (${runs} cases): ${target.about}`, async () => {
        const r = await runner.run(target.name, runs, seed);
        assert.equal(r.runs, runs);
      });
    }
    await t.step("a target that never returns is stopped and named with its seed", async () => {
      await assert.rejects(
        runner.run(HANG_PROBE, 1, 1234, 300),
        /^Error: Fuzz target hang-probe hung: case 1 ran for over 300 ms \(seed 1234; replay: VOLT_FUZZ_SEED=1234\)$/,
      );
    });
  } finally {
    runner.close();
  }
});
