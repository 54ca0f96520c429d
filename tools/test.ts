/**
 * The project's test entry point: `deno test -A --parallel tests/` where
 * /dev/kvm works, else the same command inside the nested-KVM helper VM
 * (tools/nested/). Extra arguments go to `deno test`; a path among them
 * replaces the default `tests/`. VOLT_NESTED_TIMINGS=1 prints the helper
 * VM's boot and run times at the end.
 *
 * Usage: `deno run -A tools/test.ts [deno test args...]`
 *
 * @module
 */

import { VoltError } from "../src/errors.ts";
import { exists } from "../src/guest/cache.ts";
import { ensureDefaultGuest } from "../src/guest/default_guest.ts";
import { fetchDebianKernel } from "../src/guest/kernels.ts";
import { hostHasKvm, runNested } from "./nested/run.ts";

/** The repository root. */
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Environment variables the tests read, passed into the helper VM when set. */
const PASS_ENV = ["CI", "NO_COLOR", "XDG_CACHE_HOME"];

/**
 * The `deno test` arguments for `extra` (given in `cwd`): paths are made
 * absolute when `cwd` is not the repository root, and `tests/` is added
 * when no path is given.
 *
 * @example
 * ```ts
 * import { testArgs } from "./test.ts";
 * console.log(testArgs(["--filter", "cpio"])); // ["test", "-A", "--parallel", "--filter", "cpio", "tests/"]
 * ```
 */
export function testArgs(extra: string[], cwd: string = Deno.cwd()): string[] {
  const dash = extra.indexOf("--");
  const own = dash < 0 ? extra : extra.slice(0, dash);
  const script = dash < 0 ? [] : extra.slice(dash);
  let paths = 0;
  const args = own.map((a) => {
    if (a.startsWith("-")) return a;
    const abs = a.startsWith("/") ? a : `${cwd}/${a}`;
    if (!exists(abs)) return a;
    paths++;
    return a.startsWith("/") || cwd === ROOT ? a : abs;
  });
  return ["test", "-A", "--parallel", ...args, ...(paths ? [] : ["tests/"]), ...script];
}

/**
 * Fetches Debian's kernel and builds the default guest on the host, where
 * it is fast; the tests (perhaps inside the helper VM) only read the cache.
 * The first build of the microVM kernel takes minutes.
 */
export async function prepareGuests(): Promise<void> {
  const say = (s: string) => console.error(`volt test: ${s}`);
  await fetchDebianKernel(say);
  await ensureDefaultGuest(say);
}

/**
 * Runs the tests and returns `deno test`'s exit status.
 *
 * @example
 * ```ts ignore
 * import { main } from "./test.ts";
 * Deno.exit(await main(["tests/ffi_test.ts"]));
 * ```
 */
export async function main(extra: string[]): Promise<number> {
  const deno = Deno.execPath();
  const args = testArgs(extra);
  await prepareGuests();
  if (hostHasKvm()) {
    const child = new Deno.Command(deno, { args, cwd: ROOT, stdin: "inherit" }).spawn();
    return (await child.status).code;
  }
  const why = exists("/dev/kvm") ? "is not usable" : "is absent";
  console.error(
    `/dev/kvm ${why} here: the tests run inside a nested-KVM helper VM (QEMU TCG with SVM)`,
  );
  // Type checking and fetching happen on the host (tsc under TCG costs
  // minutes, and the VM has no network); the VM then runs with --no-check.
  // The vCPU worker is checked too: `deno test` would check it at spawn.
  for (
    const check of [
      ["test", "--no-run", ...args.slice(1)],
      ["check", `${ROOT}/src/vmm/vcpu_worker.ts`],
    ]
  ) {
    const prep = await new Deno.Command(deno, {
      args: check,
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).output();
    if (!prep.success) return prep.code;
  }
  const env: Record<string, string> = { DENO_NO_UPDATE_CHECK: "1" };
  for (const k of PASS_ENV) {
    const v = Deno.env.get(k);
    if (v !== undefined) env[k] = v;
  }
  const timings = Deno.env.get("VOLT_NESTED_TIMINGS") === "1";
  // One test file at a time in the helper VM: its 2 emulated CPUs are slow,
  // and two nested guests booting at once starved each other into timeouts.
  const serial = ["test", "--no-check", ...args.slice(1).filter((a) => a !== "--parallel")];
  return await runNested([deno, ...serial], { cwd: ROOT, env, timings, memory: "3G" });
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (!(e instanceof VoltError)) throw e;
    console.error(`volt test: ${e.message}`);
    Deno.exit(e.exitCode);
  }
}
