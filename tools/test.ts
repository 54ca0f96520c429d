/**
 * The project's test entry point, on each kind of host: `deno test -A
 * --parallel tests/` on hardware KVM; without /dev/kvm, the tests that boot
 * the helper VM on the host and the rest inside the nested-KVM helper VM
 * (tools/nested/); on PVM, everything PVM runs here and the tests needing
 * guest userspace in the helper VM. Ends with one line adding up every
 * part. Extra arguments go to `deno test`; a path among them replaces the
 * default `tests/`. VOLT_NESTED_TIMINGS=1 prints the helper VM's boot and
 * run times at the end.
 *
 * Usage: `deno run -A tools/test.ts [deno test args...]`
 *
 * @module
 */

import { VoltError } from "../src/errors.ts";
import { exists } from "../src/guest/cache.ts";
import { buildDefaultRootfs, ensureDefaultGuest } from "../src/guest/default_guest.ts";
import { fetchDebianKernel } from "../src/guest/kernels.ts";
import { resolveGuest } from "../src/cli/guest_cmd.ts";
import { hostKind, hostKindLabel } from "../src/vmm/host.ts";
import { runNested, STALL_STATUS } from "./nested/run.ts";

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
  // The root image and Debian's initramfs (with its modules) too: the
  // helper VM reads the cache and cannot write it.
  await buildDefaultRootfs(say);
  await resolveGuest("debian", undefined);
}

/**
 * Test files holding tests that need guest userspace (`needsUserspace` in
 * tests/helpers.ts): on a PVM host these files run a second time, in the
 * helper VM, with only those tests.
 */
export const USERSPACE_TEST_FILES = [
  "tests/guest_e2e_test.ts",
  "tests/linux_test.ts",
  "tests/cpuid_guest_test.ts",
  "tests/disk_e2e_test.ts",
  "tests/net_e2e_test.ts",
  "tests/exec_e2e_test.ts",
];

/** Tests that boot the helper VM themselves: on a host without /dev/kvm they run on the host. */
export const HOST_TEST_FILES = ["tests/nested_test.ts"];

/** Counts from `deno test`'s summary lines. */
export interface TestCounts {
  passed: number;
  failed: number;
  ignored: number;
}

/**
 * Adds up every `deno test` summary line in `output` (colours allowed).
 *
 * @example
 * ```ts
 * import { testCounts } from "./test.ts";
 * console.log(testCounts("ok | 3 passed | 0 failed | 1 ignored (2s)\n"));
 * // { passed: 3, failed: 0, ignored: 1 }
 * ```
 */
export function testCounts(output: string): TestCounts {
  // deno-lint-ignore no-control-regex
  let plain = output.replace(/\x1b\[[0-9;]*m/g, "");
  const reset = plain.lastIndexOf(RESET_COUNTS);
  if (reset >= 0) plain = plain.slice(reset);
  const c: TestCounts = { passed: 0, failed: 0, ignored: 0 };
  const re = /^(?:ok|FAILED) \| (\d+) passed[^|]*\| (\d+) failed[^|\n]*(?:\| (\d+) ignored)?/gm;
  for (const m of plain.matchAll(re)) {
    c.passed += Number(m[1]);
    c.failed += Number(m[2]);
    c.ignored += Number(m[3] ?? 0);
  }
  return c;
}

/**
 * `args` narrowed to those of `files` it covers (it names them, or
 * `tests/`), or undefined when it covers none: the helper-VM part on a PVM
 * host (the userspace test files), the host part on a host without
 * /dev/kvm (the tests that boot the helper VM themselves).
 *
 * @example
 * ```ts
 * import { subsetArgs } from "./test.ts";
 * console.log(subsetArgs(["test", "-A", "--parallel", "tests/"], ["tests/linux_test.ts"]));
 * // ["test", "-A", "--parallel", "tests/linux_test.ts"]
 * console.log(subsetArgs(["test", "-A", "tests/cpio_test.ts"], ["tests/linux_test.ts"])); // undefined
 * ```
 */
export function subsetArgs(args: string[], files: string[]): string[] | undefined {
  const isPath = (a: string) =>
    !a.startsWith("-") && a !== "test" && /(^|\/)tests(\/|$)|\.ts$/.test(a);
  const paths = args.filter(isPath);
  const wanted = files.filter((f) =>
    paths.some((p) => {
      const rel = p.startsWith(`${ROOT}/`) ? p.slice(ROOT.length + 1) : p;
      return rel.replace(/\/$/, "") === "tests" || rel === f;
    })
  );
  if (wanted.length === 0) return undefined;
  return [...args.filter((a) => !isPath(a)), ...wanted];
}

/**
 * `args` (a `deno test` command) without `files`: named files dropped, a
 * `tests/` directory kept with an `--ignore`; undefined when no path is
 * left.
 *
 * @example
 * ```ts
 * import { exceptArgs } from "./test.ts";
 * console.log(exceptArgs(["test", "-A", "tests/"], ["tests/a_test.ts"]));
 * // ["test", "--ignore=tests/a_test.ts", "-A", "tests/"]
 * console.log(exceptArgs(["test", "tests/a_test.ts"], ["tests/a_test.ts"])); // undefined
 * ```
 */
export function exceptArgs(args: string[], files: string[]): string[] | undefined {
  const rel = (p: string) => (p.startsWith(`${ROOT}/`) ? p.slice(ROOT.length + 1) : p);
  const isPath = (a: string) =>
    !a.startsWith("-") && a !== "test" && /(^|\/)tests(\/|$)|\.ts$/.test(a);
  const kept = args.filter((a) => !isPath(a) || !files.includes(rel(a)));
  const paths = kept.filter(isPath);
  if (paths.length === 0) return undefined;
  const dir = paths.some((p) => rel(p).replace(/\/$/, "") === "tests");
  return dir && files.length ? ["test", `--ignore=${files.join(",")}`, ...kept.slice(1)] : kept;
}

/** Runs `deno` with `args` on this host; its output passes through and is also returned. */
async function denoHere(args: string[], env: Record<string, string>): Promise<[number, string]> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env,
    stdin: "inherit",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const dec = new TextDecoder();
  let out = "";
  for await (const chunk of child.stdout) {
    await Deno.stdout.write(chunk);
    out += dec.decode(chunk, { stream: true });
  }
  return [(await child.status).code, out];
}

/** Type checks and fetches on the host: tsc under TCG costs minutes, and the helper VM has no network. */
async function prepareForNested(args: string[]): Promise<number> {
  // The vCPU worker is checked too: `deno test` would check it at spawn.
  for (
    const check of [["test", "--no-run", ...args.slice(1)], [
      "check",
      `${ROOT}/src/vmm/vcpu_worker.ts`,
    ]]
  ) {
    const prep = await new Deno.Command(Deno.execPath(), {
      args: check,
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).output();
    if (!prep.success) return prep.code;
  }
  return 0;
}

/** Runs `args` in the helper VM; returns its status and output. */
async function denoNested(
  args: string[],
  extraEnv: Record<string, string>,
): Promise<[number, string]> {
  const env: Record<string, string> = { DENO_NO_UPDATE_CHECK: "1", ...extraEnv };
  for (const k of PASS_ENV) {
    const v = Deno.env.get(k);
    if (v !== undefined) env[k] = v;
  }
  const timings = Deno.env.get("VOLT_NESTED_TIMINGS") === "1";
  // One test file at a time in the helper VM: its 2 emulated CPUs are slow,
  // and two nested guests booting at once starved each other into timeouts.
  const serial = ["test", "--no-check", ...args.slice(1).filter((a) => a !== "--parallel")];
  const once = async (cmd: string[] = serial): Promise<[number, string]> => {
    const dec = new TextDecoder();
    let out = "";
    const rc = await runNested([Deno.execPath(), ...cmd], {
      cwd: ROOT,
      env,
      timings,
      memory: "3G",
      tap: (b) => (out += dec.decode(b, { stream: true })),
      // Deno reports a test running past a minute, and no test may take
      // more than five: this long without a line, the helper VM is wedged.
      stallMs: { command: NESTED_TEST_STALL_MS },
    }).catch((e) => {
      if (!(e instanceof VoltError)) throw e;
      // The helper VM itself went away mid-run (its kernel rebooted or QEMU
      // quit; seen 2026-12-02 and 2026-12-03): what the helper's console said
      // last is the only trace of why.
      console.error(`volt test: ${e.message}; its console's last lines:`);
      console.error(out.split("\n").slice(-15).join("\n"));
      return HELPER_LOST;
    });
    return [rc, out];
  };
  const first = await once();
  if (first[0] !== STALL_STATUS && first[0] !== HELPER_LOST) {
    return await retryTripleFaults(first, serial, once);
  }
  // Seen twice on 2026-12-01: the helper VM's two emulated CPUs stayed busy
  // and no test went on, in runs that otherwise pass; and the helper VM
  // itself dying. One more try, which counts instead.
  console.error(
    `volt test: the helper VM ${
      first[0] === STALL_STATUS ? "stalled" : "was lost"
    }; running its part once more`,
  );
  return await retryTripleFaults(await once(), serial, once);
}

/**
 * When every test that failed in the helper VM failed on a guest triple
 * fault (TCG's emulated SVM, about once a run, QEMU's own guests too), runs
 * those tests once more by name and counts their second result instead.
 * Any other failure stands as it is.
 *
 * @example
 * ```ts ignore
 * import { retryTripleFaults } from "./test.ts";
 * const [code, out] = await retryTripleFaults([1, "..."], ["test", "tests/"], run);
 * ```
 */
export async function retryTripleFaults(
  first: [number, string],
  args: string[],
  run: (args?: string[]) => Promise<[number, string]>,
): Promise<[number, string]> {
  const [code, out] = first;
  const counts = testCounts(out);
  if (code === 0 || code === STALL_STATUS) return first;
  const faulted = tripleFaultedTests(out);
  if (!faulted || faulted.length !== counts.failed) return first;
  const names = faulted.map((t) => t.name);
  console.error(
    `volt test: ${names.length} test(s) failed on a guest triple fault in the helper VM (TCG's emulated SVM); running them once more: ${
      names.join("; ")
    }`,
  );
  const again = await run(retryArgs(args, faulted));
  const re = testCounts(again[1]);
  const merged: TestCounts = {
    passed: counts.passed + re.passed,
    failed: re.failed,
    ignored: counts.ignored,
  };
  return [again[0], `${out}\n${summaryLine(merged)}`];
}

/** A `deno test` summary line for `c`, as testCounts reads it (it replaces the lines before it). */
function summaryLine(c: TestCounts): string {
  return `${RESET_COUNTS}\n${
    c.failed ? "FAILED" : "ok"
  } | ${c.passed} passed | ${c.failed} failed | ${c.ignored} ignored`;
}

/** Marks where a merged summary starts: testCounts counts only the lines after it. */
const RESET_COUNTS = "volt test: counts so far replaced by the retry's";

/** A failed test: its top-level name and its file, as `deno test` reports them. */
export interface FailedTest {
  name: string;
  file: string;
}

/**
 * The tests that failed in `output` (a `deno test` run), if every one of
 * them failed with a guest triple fault; undefined otherwise, or when there
 * was no failure.
 *
 * @example
 * ```ts
 * import { tripleFaultedTests } from "./test.ts";
 * const out = " ERRORS \n\nboots => ./tests/a_test.ts:2:6\n" +
 *   "error: volt: Guest triple fault (KVM_EXIT_SHUTDOWN) at rip 0xfff0\n\n FAILURES \n";
 * console.log(tripleFaultedTests(out)); // [{ name: "boots", file: "./tests/a_test.ts" }]
 * ```
 */
export function tripleFaultedTests(output: string): FailedTest[] | undefined {
  // deno-lint-ignore no-control-regex
  const plain = output.replace(/\x1b\[[0-9;]*m/g, "");
  const start = plain.lastIndexOf("\n ERRORS \n");
  if (start < 0) return undefined;
  const end = plain.indexOf("\n FAILURES \n", start);
  const section = plain.slice(start, end < 0 ? undefined : end);
  const header = /^(.+) => (\.?\/?\S+?):\d+:\d+$/gm;
  const heads = [...section.matchAll(header)];
  if (heads.length === 0) return undefined;
  const tests: FailedTest[] = [];
  for (const [i, h] of heads.entries()) {
    const body = section.slice(h.index, heads[i + 1]?.index ?? section.length);
    if (!/triple fault/i.test(body)) return undefined;
    const name = h[1].split(" ... ")[0];
    if (!tests.some((t) => t.name === name)) tests.push({ name, file: h[2] });
  }
  return tests;
}

/**
 * `args` (a `deno test` command) narrowed to `tests`: their files only,
 * and a filter matching exactly their names.
 *
 * @example
 * ```ts
 * import { retryArgs } from "./test.ts";
 * console.log(retryArgs(["test", "--no-check", "tests/"], [{ name: "a (b)", file: "./tests/x_test.ts" }]));
 * // ["test", "--no-check", "--filter", "/^(?:a \\(b\\))$/", "./tests/x_test.ts"]
 * ```
 */
export function retryArgs(args: string[], tests: FailedTest[]): string[] {
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  const own = args.filter((a, i) =>
    i === 0 || (a.startsWith("-") && a !== "--filter" && !a.startsWith("--filter=") &&
      args[i - 1] !== "--filter")
  );
  const files = [...new Set(tests.map((t) => t.file))];
  return [...own, "--filter", `/^(?:${tests.map((t) => escape(t.name)).join("|")})$/`, ...files];
}

/** The helper-VM part's status when the helper VM went away without reporting one. */
const HELPER_LOST = 123;

/** How long the tests in the helper VM may go without printing a line. */
export const NESTED_TEST_STALL_MS = 6 * 60_000;

/**
 * Runs the tests and returns their exit status: directly on hardware KVM;
 * in the helper VM without /dev/kvm; on PVM, everything PVM runs directly
 * and the tests needing guest userspace in the helper VM. Ends with one
 * line adding up every part.
 *
 * @example
 * ```ts ignore
 * import { main } from "./test.ts";
 * Deno.exit(await main(["tests/ffi_test.ts"]));
 * ```
 */
export async function main(extra: string[]): Promise<number> {
  const args = testArgs(extra);
  await prepareGuests();
  const kind = hostKind();
  const parts: Array<[number, string]> = [];
  const env = { DENO_NO_UPDATE_CHECK: "1" };
  if (kind === "hardware") {
    parts.push(await denoHere(args, env));
  } else if (kind === "none") {
    const why = exists("/dev/kvm") ? "is not usable" : "is absent";
    console.error(
      `volt test: /dev/kvm ${why} here: the tests run inside a nested-KVM helper VM (QEMU TCG with SVM)`,
    );
    const host = subsetArgs(args, HOST_TEST_FILES);
    if (host) parts.push(await denoHere(host, env));
    const prep = await prepareForNested(args);
    if (prep !== 0) return prep;
    parts.push(await denoNested(args, {}));
  } else {
    const nested = subsetArgs(args, USERSPACE_TEST_FILES);
    console.error(
      "volt test: this host is PVM: guest kernels run here, guest userspace cannot" +
        (nested ? "; the tests that need it run afterwards in the nested-KVM helper VM" : ""),
    );
    // Two kinds of test run on their own afterwards. The files booting Linux
    // here, one at a time: a PVM guest slows far beyond its share of the CPU
    // when other threads compete (27 s of guest boot in 5 min beside two
    // busy threads). And the tests that boot the helper VM: QEMU's TCG
    // threads beside the parallel KVM tests left both cores overloaded.
    const native = { ...env, VOLT_TEST_SCOPE: "native" };
    const linux = subsetArgs(args, USERSPACE_TEST_FILES);
    const host = subsetArgs(args, HOST_TEST_FILES);
    const alone = [...(linux ? USERSPACE_TEST_FILES : []), ...(host ? HOST_TEST_FILES : [])];
    const rest = exceptArgs(args, alone);
    if (rest) parts.push(await denoHere(rest, native));
    if (linux) parts.push(await denoHere(linux.filter((a) => a !== "--parallel"), native));
    if (host) parts.push(await denoHere(host, native));
    if (nested) {
      const prep = await prepareForNested(nested);
      if (prep !== 0) return prep;
      console.error("volt test: the guest userspace tests, in the helper VM");
      parts.push(await denoNested(nested, { VOLT_TEST_SCOPE: "userspace" }));
    }
  }
  const total = parts.map(([, out]) => testCounts(out)).reduce((a, b) => ({
    passed: a.passed + b.passed,
    failed: a.failed + b.failed,
    ignored: a.ignored + b.ignored,
  }), { passed: 0, failed: 0, ignored: 0 });
  const rc = parts.find(([code]) => code !== 0)?.[0] ?? 0;
  const where = kind === "hardware"
    ? ""
    : " (host and helper VM; a test skipped in one ran in the other)";
  console.log(`volt test on ${hostKindLabel(kind)}${where}:`);
  console.log(`total: ${total.passed} passed, ${total.failed} failed, ${total.ignored} skipped`);
  return rc;
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
