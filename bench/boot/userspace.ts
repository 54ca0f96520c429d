/**
 * The preamble of every benchmark whose guest needs userspace: it runs
 * here on hardware KVM, and inside the nested-KVM helper VM on PVM and
 * without /dev/kvm (re-running the same script there with `--nested`).
 *
 * @module
 */

import { hostKind, hostKindLabel } from "../../src/vmm/host.ts";
import { runNested } from "../../tools/nested/run.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * Returns where the benchmark runs (for its report) if that is here;
 * otherwise runs `bench/<script>` with `args` and `--nested` in the helper
 * VM and exits with its status.
 *
 * @example
 * ```ts ignore
 * const where = await userspaceHere("bench:net", "net.ts", [`--runs=3`], values.nested);
 * ```
 */
export async function userspaceHere(
  name: string,
  script: string,
  args: string[],
  nested = false,
): Promise<string> {
  const kind = hostKind();
  if (nested) return "inside the nested-KVM helper VM (QEMU TCG)";
  if (kind === "hardware") return "natively (hardware KVM)";
  console.error(
    `${name}: ${
      hostKindLabel(kind)
    }: guest userspace needs the nested-KVM helper VM; running there`,
  );
  Deno.exit(
    await runNested(
      [Deno.execPath(), "run", "-A", `${ROOT}/bench/${script}`, "--nested", ...args],
      {
        cwd: ROOT,
        memory: "4G",
        cpus: 2,
        timeoutMs: 2 * 3600_000,
      },
    ),
  );
}

/** `--runs`, checked: a positive whole number, or one line and exit 64. */
export function parseRuns(name: string, value: string | undefined): number {
  const runs = Number(value);
  if (!Number.isSafeInteger(runs) || runs < 1) {
    console.error(`${name}: --runs must be a positive whole number, not ${value}`);
    Deno.exit(64);
  }
  return runs;
}

/**
 * Where a monitor-side bench runs: here on any host with /dev/kvm (PVM
 * too: only the monitors' own work is timed); without it, it runs itself
 * in the helper VM and exits with that run's status. Returns the place,
 * for the report.
 *
 * @example
 * ```ts ignore
 * const where = await monitorSideHere("bench:pool", "pool.ts", Deno.args, values.nested);
 * ```
 */
export async function monitorSideHere(
  name: string,
  script: string,
  args: string[],
  nested = false,
  memory = "2G",
): Promise<string> {
  const kind = hostKind();
  if (nested) return "inside the nested-KVM helper VM (QEMU TCG)";
  if (kind !== "none") return `natively (${hostKindLabel(kind)})`;
  console.error(`${name}: no /dev/kvm here: running in the nested-KVM helper VM`);
  Deno.exit(
    await runNested(
      [Deno.execPath(), "run", "-A", `${ROOT}/bench/${script}`, "--nested", ...args],
      { cwd: ROOT, memory, cpus: 2, timeoutMs: 3600_000 },
    ),
  );
}

/** Builds `dist/volt` (tools/bundle.ts), the program the benches run as users do. */
export function buildBundle(): void {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/tools/bundle.ts`],
    stdout: "null",
  }).outputSync();
  if (!r.success) throw new Error("tools/bundle.ts failed");
}

/** A running `volt pool` (see {@linkcode startPool}). */
export interface RunningPool {
  child: Deno.ChildProcess;
  /** Its stderr so far (it keeps being read, so the pool never blocks on it). */
  log(): string;
}

/**
 * Starts `program pool ...args` (`program` is `deno run -A mod.ts` unless
 * given) and resolves once it says "Pool ready"; rejects if it ends first
 * or takes longer than `timeoutMs`.
 *
 * @example
 * ```ts ignore
 * const pool = await startPool(["--socket", "/tmp/p.sock", "--kernel", "vmlinux"]);
 * pool.child.kill("SIGTERM");
 * ```
 */
export async function startPool(
  args: string[],
  opts: { program?: string[]; timeoutMs?: number } = {},
): Promise<RunningPool> {
  const [cmd, ...pre] = opts.program ?? [Deno.execPath(), "run", "-A", `${ROOT}/mod.ts`];
  const child = new Deno.Command(cmd, {
    args: [...pre, "pool", ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).spawn();
  let log = "";
  const isReady = Promise.withResolvers<void>();
  const reading = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) {
      log += dec.decode(chunk, { stream: true });
      if (log.includes("Pool ready")) isReady.resolve();
    }
  })();
  const timeoutMs = opts.timeoutMs ?? 300_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    isReady.promise.then(() => "ready"),
    reading.then(() => "ended"),
    new Promise<string>((r) => (timer = setTimeout(() => r("timeout"), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    throw new Error(`volt pool ${outcome} before it was ready: ${log.slice(-500)}`);
  }
  return { child, log: () => log };
}
