/**
 * Shared test helpers: KVM detection with a reason, the CLI as a
 * subprocess, and small guest programs assembled with binutils.
 */

import { isPvmHost, isTcgHost } from "../src/vmm/host.ts";

export { assembleElf, tmpDir } from "./asm.ts";

export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Why KVM tests cannot run here, or undefined when they can. */
export function kvmUnavailable(): string | undefined {
  try {
    const f = Deno.openSync("/dev/kvm", { read: true, write: true });
    f.close();
    return undefined;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "/dev/kvm is absent on this host";
    return `/dev/kvm cannot be opened: ${(e as Error).message}`;
  }
}

const reason = kvmUnavailable();
if (reason) {
  // Once per test process, so a skipped KVM test says why.
  console.error(`KVM tests skipped: ${reason}`);
}

/**
 * Which tests this process runs, set by tools/test.ts on a PVM host, where
 * guest userspace cannot run: `native` on the host (every test but those
 * needing guest userspace), `userspace` in the helper VM (only those).
 * Unset: every test this host can run.
 */
export const TEST_SCOPE = Deno.env.get("VOLT_TEST_SCOPE") as "native" | "userspace" | undefined;

/** This host is PVM (inside the helper VM it is not). */
export const pvmHost = isPvmHost();

/** Test options that skip (with the reason printed above) without KVM. */
export const needsKvm = { ignore: reason !== undefined || TEST_SCOPE === "userspace" };

/**
 * Test options for a test that needs what PVM cannot run: guest userspace
 * (volt-init's READY, a shell, a command's status), Linux SMP, XSETBV. On
 * a PVM host it is ignored here and runs in the helper VM instead
 * (`./volt test` does both; its file must be in tools/test.ts's
 * USERSPACE_TEST_FILES); everywhere else it runs where KVM does.
 */
export const needsFullKvm = {
  ignore: reason !== undefined || TEST_SCOPE === "native" || (pvmHost && !TEST_SCOPE),
};
if (pvmHost && !reason && TEST_SCOPE !== "userspace") {
  console.error(
    "Tests needing more than PVM runs skipped here: this host is PVM (./volt test runs them in the helper VM)",
  );
}

/** A test's output must show no kernel warning: on PVM a WARN() ends the VM, elsewhere it hides a bug. */
export function assertNoKernelWarning(console: string): void {
  const at = console.search(/WARNING:|------------\[ cut here \]/);
  if (at < 0) return;
  throw new Error(`The guest kernel warned:\n${console.slice(Math.max(0, at - 200), at + 1500)}`);
}

/** True when `cmd --version` runs. */
function has(cmd: string): boolean {
  try {
    return new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** A C compiler is on PATH. */
export function ccAvailable(): boolean {
  return has("cc");
}

/** Result of running the CLI. */
export interface CliResult {
  code: number;
  stdout: string;
  /** stdout as it came, for guests that print binary. */
  stdoutBytes?: Uint8Array;
  stderr: string;
}

/** How a CLI child is started. */
export interface CliSpawn {
  /** A command that executes its trailing arguments (`bash -c ...`, `setpriv ...`). */
  wrap?: string[];
  /** More environment for the child. */
  env?: Record<string, string>;
}

/** `deno run -A mod.ts ...args`, perhaps behind `opts.wrap`. */
function cliCommand(args: string[], opts: CliSpawn, stdin: "null" | "piped"): Deno.Command {
  const argv = [Deno.execPath(), "run", "-A", `${ROOT}/mod.ts`, ...args];
  const [cmd, ...rest] = [...(opts.wrap ?? []), ...argv];
  return new Deno.Command(cmd, {
    args: rest,
    stdin,
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...opts.env },
  });
}

/** Starts `deno run -A mod.ts ...args` with stdout (unless "null") and stderr piped. */
export function spawnVolt(
  args: string[],
  opts: { stdout?: "piped" | "null" } = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/mod.ts`, ...args],
    stdin: "null",
    stdout: opts.stdout ?? "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).spawn();
}

/** Runs `deno run -A mod.ts ...args` with a timeout (ms). */
export async function runCli(
  args: string[],
  opts: {
    stdin?: string;
    timeout?: number;
    /** Kills the child as soon as its stdout matches: a guest seen to be wedged. */
    killOn?: RegExp;
  } & CliSpawn = {},
): Promise<CliResult> {
  const child = cliCommand(args, opts, opts.stdin === undefined ? "null" : "piped").spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  };
  const timer = setTimeout(kill, opts.timeout ?? 60_000);
  const err = new Response(child.stderr).bytes();
  const chunks: Uint8Array[] = [];
  const dec = new TextDecoder();
  let seen = "";
  for await (const chunk of child.stdout) {
    chunks.push(chunk);
    if (opts.killOn) {
      seen = (seen + dec.decode(chunk, { stream: true })).slice(-4096);
      // A moment more for the rest of the kernel's report.
      if (opts.killOn.test(seen)) setTimeout(kill, 2_000);
    }
  }
  const status = await child.status;
  clearTimeout(timer);
  const stdout = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) stdout.set(c, (at += c.length) - c.length);
  return {
    code: status.code,
    stdout: new TextDecoder().decode(stdout),
    stdoutBytes: stdout,
    stderr: new TextDecoder().decode(await err),
  };
}

/** A CLI run in progress, stopped at a marker on its stdout. */
export interface CliChild {
  child: Deno.ChildProcess;
  /** stdout up to and including the marker. */
  seen: string;
  /** Sends `signal` (if given) and collects the rest, killing after `timeout` ms. */
  finish(signal?: Deno.Signal, timeout?: number): Promise<CliResult>;
}

/**
 * Starts `deno run -A mod.ts ...args` and resolves once `marker` appears on
 * its stdout (or the output ends).
 */
export async function startCliUntil(
  args: string[],
  marker: string,
  opts: CliSpawn = {},
): Promise<CliChild> {
  const child = cliCommand(args, opts, "null").spawn();
  const reader = child.stdout.getReader();
  const dec = new TextDecoder();
  let seen = "";
  while (!seen.includes(marker)) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += dec.decode(value, { stream: true });
  }
  reader.releaseLock();
  return {
    child,
    seen,
    async finish(signal?: Deno.Signal, timeout = 30_000) {
      if (signal) child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), timeout);
      const out = await child.output();
      clearTimeout(timer);
      return {
        code: out.code,
        stdout: seen + dec.decode(out.stdout),
        stderr: dec.decode(out.stderr),
      };
    },
  };
}

/** The jail fixture: runs sandboxing steps in a child process. */
export const JAIL_CHILD = `${ROOT}/tests/fixtures/sandbox_jail_child.ts`;

/**
 * Runs the jail fixture with `args`, requires exit 0, and parses the JSON of
 * its last stdout line.
 */
export async function jailChild(args: string[]): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", JAIL_CHILD, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.code !== 0) throw new Error(`${args[0]} exited ${out.code}: ${stderr}`);
  return JSON.parse(stdout.split("\n").at(-1)!);
}

/**
 * Runs `deno run -A script args...` and types `input` once the guest's
 * shell prompts, as a person would: bytes sent while init still sets up
 * the console would be flushed by the guest's tty layer.
 */
export async function typeAtShellPrompt(
  script: string,
  args: string[],
  input: string,
): Promise<{ out: string; status: Deno.CommandStatus; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
  const reader = child.stdout.getReader();
  const writer = child.stdin.getWriter();
  const dec = new TextDecoder();
  let out = "";
  let typed = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += dec.decode(value, { stream: true });
    // ash follows its prompt with a cursor-position query (ESC [6n).
    if (!typed && /[#$] $/.test(out.replaceAll("\x1b[6n", ""))) {
      typed = true;
      await writer.write(new TextEncoder().encode(input));
    }
  }
  await writer.close().catch(() => {});
  const status = await child.status;
  clearTimeout(timer);
  return { out, status, stderr: await new Response(child.stderr).text() };
}

/** This process runs inside the helper VM (QEMU's TCG with SVM). */
export const inHelperVm = isTcgHost();

/**
 * Runs a Linux boot, and inside the helper VM once more if it ended in a
 * triple fault: TCG's emulated SVM now and then triple-faults a guest in
 * early boot (seen in about 3% of boots under load, QEMU's guests as well
 * as ours; README, "Three kinds of host"). Anywhere else, and for a second
 * failure, the result stands.
 */
export async function retryHelperVmTripleFault<T>(
  run: () => Promise<T>,
  tripleFault: (r: T) => boolean,
): Promise<T> {
  const first = await run();
  if (!inHelperVm || !tripleFault(first)) return first;
  console.error(
    "helper VM: the guest triple-faulted or crashed (TCG's emulated SVM); trying once more",
  );
  return await run();
}

/**
 * What a guest kernel prints when TCG's emulated SVM has wedged it: a panic
 * with no reboot after it, a double fault, or one CPU waiting for ever on
 * another (a soft lockup or an RCU stall, seen once in the helper VM with
 * Debian's kernel on 2 vCPUs, 2026-12-04: CPU 0 in `text_poke_bp_batch`
 * waiting on CPU 1's answer to its IPI, 200 s into a 20 s boot).
 */
export const HELPER_VM_WEDGED: RegExp =
  /Kernel panic - not syncing|double fault|BUG: soft lockup|rcu: INFO: \S+ (self-)?detected stall/;

/** `script` (util-linux) runs a command on a pseudo-terminal: volt's stdio is then a terminal. */
export const hasScript: boolean = (() => {
  try {
    return new Deno.Command("script", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

/** A tool Debian keeps in /sbin (mkfs.ext4, debugfs), which a user's PATH may lack. */
export function sbin(name: string): string {
  for (const dir of ["/usr/sbin", "/sbin"]) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch { /* next */ }
  }
  return name;
}
