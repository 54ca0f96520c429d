/**
 * `deno task fuzz`: runs every fuzz target of tests/fuzz/ for 100,000 cases
 * (`--runs N`), one after another in one worker, and prints cases per second
 * per target. `--target NAME` (repeatable) picks targets; `VOLT_FUZZ_SEED`
 * replays a failure, whose seed and counterexample are printed. Exits 1 if
 * any target fails or hangs.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type FuzzResult, FuzzRunner, fuzzSeed } from "../tests/fuzz/runner.ts";
import { TARGETS } from "../tests/fuzz/targets.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "100000" },
    target: { type: "string", multiple: true },
  },
  strict: true,
});
const runs = Number(values.runs);
if (!Number.isSafeInteger(runs) || runs < 1) {
  console.error(`fuzz: --runs must be a positive whole number, not ${values.runs}`);
  Deno.exit(64);
}
const unknown = (values.target ?? []).filter((n) => !TARGETS.some((t) => t.name === n));
if (unknown.length) {
  console.error(
    `fuzz: unknown target ${unknown.join(", ")} (${TARGETS.map((t) => t.name).join(", ")})`,
  );
  Deno.exit(64);
}
const chosen = TARGETS.filter((t) => !values.target || values.target.includes(t.name));

const seed = fuzzSeed();
console.log(`fuzz: ${chosen.length} targets × ${runs} cases, seed ${seed}`);
const runner = new FuzzRunner();
const done: FuzzResult[] = [];
let failed = 0;
for (const t of chosen) {
  try {
    // A case that makes no progress for 30 s is a hang, whatever the machine's load.
    const r = await runner.run(t.name, runs, seed, 30_000);
    done.push(r);
    console.log(row(r));
  } catch (e) {
    failed++;
    console.log(`${t.name.padEnd(18)} FAILED`);
    console.error((e as Error).message);
  }
}
runner.close();
console.log(`\n| target | cases | seconds | cases/s |\n| --- | ---: | ---: | ---: |`);
for (const r of done) {
  console.log(`| ${r.target} | ${r.runs} | ${(r.ms / 1000).toFixed(1)} | ${rate(r)} |`);
}
Deno.exit(failed ? 1 : 0);

function rate(r: FuzzResult): string {
  return Math.round(r.runs / (r.ms / 1000)).toLocaleString("en-US");
}

function row(r: FuzzResult): string {
  return `${r.target.padEnd(18)} ${String(r.runs).padStart(7)} cases ${
    (r.ms / 1000).toFixed(1).padStart(6)
  } s ${rate(r).padStart(8)} cases/s`;
}
