/**
 * The preamble of every benchmark whose guest needs userspace: it runs
 * here on hardware KVM, and inside the nested-KVM helper VM on PVM and
 * without /dev/kvm (re-running the same script there with `--nested`).
 *
 * @module
 */

import { hostKind, hostKindLabel } from "../../src/vmm/host.ts";
import { runNested } from "../../tools/nested/run.ts";
import { requestStart } from "../../src/control/pool.ts";
import { libc } from "../../ffi/libc.ts";
import { AF_UNIX, MSG_DONTWAIT, SOCK_CLOEXEC, SOCK_STREAM } from "../../ffi/socket.ts";

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

/**
 * A VM taken from a `volt pool`, as a platform would take it: this process
 * connects to the pool's socket itself and hands over one end of a
 * socketpair as the VM's console.
 */
export class PoolConsole {
  out = "";
  readonly t0 = performance.now();
  readonly #local: number;
  readonly #conn: number;
  readonly #timeoutMs: number;
  constructor(sock: string, timeoutMs = 300_000) {
    this.#timeoutMs = timeoutMs;
    const pair = new Int32Array(2);
    if (libc().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, new Uint8Array(pair.buffer))) {
      throw new Error("socketpair failed");
    }
    this.#local = pair[0];
    this.#conn = requestStart(sock, [pair[1], pair[1], pair[1]]);
    libc().close(pair[1]);
  }
  /** ms from the request until `marker` is on the console; with `ping`, a line every 20 ms meanwhile. */
  async until(marker: string, ping = false): Promise<number> {
    const end = this.t0 + this.#timeoutMs;
    const buf = new Uint8Array(4096);
    const dec = new TextDecoder();
    const ping1 = new TextEncoder().encode("ping\n");
    let next = 0;
    while (!this.out.includes(marker)) {
      const now = performance.now();
      if (now > end) throw new Error(`No "${marker}" from the pool's VM in ${this.#timeoutMs} ms`);
      if (ping && now >= next) {
        next = now + 20;
        libc().send(this.#local, ping1, BigInt(ping1.length), MSG_DONTWAIT);
      }
      const n = Number(libc().recv(this.#local, buf, BigInt(buf.length), MSG_DONTWAIT));
      if (n > 0) this.out += dec.decode(buf.subarray(0, n), { stream: true });
      else await new Promise((r) => setTimeout(r, 1));
    }
    return performance.now() - this.t0;
  }
  /** Hangs up: the pool's monitor stops the VM. */
  kill(): Promise<void> {
    libc().close(this.#local);
    libc().close(this.#conn);
    return Promise.resolve();
  }
}
