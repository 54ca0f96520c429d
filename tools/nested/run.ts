/**
 * Runs a host command where /dev/kvm works: inside a QEMU TCG VM (the L1)
 * whose emulated CPU has AMD SVM, so its kernel's kvm-amd provides a real
 * /dev/kvm. The command sees the host's filesystem (read-only, over 9p),
 * with its working directory and Deno's cache writable.
 *
 * Usage: `deno run -A tools/nested/run.ts [options] -- cmd args...`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { VoltError } from "../../src/errors.ts";
import { hasTool } from "../../src/guest/host_tools.ts";
import { hostKind } from "../../src/vmm/host.ts";
import { CTL, ensureL1, INIT_MARKER, START_MARKER, TAGS } from "./l1.ts";

/**
 * Options of {@linkcode runNested}.
 *
 * @example
 * ```ts
 * import type { NestedOptions } from "./run.ts";
 * const opts: NestedOptions = { cwd: ".", env: { CI: "true" }, timeoutMs: 600_000 };
 * ```
 */
export interface NestedOptions {
  /** Working directory of the command (absolute, or relative to ours); writable inside. */
  cwd: string;
  /**
   * Environment of the command, on top of PATH, HOME, DENO_DIR (and TERM
   * when our stdout is a terminal) taken from ours.
   */
  env?: Record<string, string>;
  /** More host directories the command may write to (cwd and DENO_DIR always are). */
  writable?: string[];
  /** Guest RAM in QEMU's syntax (default "2G"). */
  memory?: string;
  /** vCPUs (default 2). */
  cpus?: number;
  /** Kill the VM after this long (default 30 minutes). */
  timeoutMs?: number;
  /** Show the boot log, and the timings at the end, on stderr. */
  verbose?: boolean;
  /** Print one line of boot and run timings on stderr at the end. */
  timings?: boolean;
  /** Progress of the one-time image build (default: lines on stderr). */
  progress?: (line: string) => void;
  /** Re-resolve the Debian package versions of the image now (else weekly). */
  refresh?: boolean;
  /**
   * Pass our stdin to the command through the VM's console (raw when it is
   * a terminal, restored after), for an interactive guest; else the command
   * reads /dev/null.
   */
  input?: boolean;
  /** Also called with every chunk of the command's output. */
  tap?: (chunk: Uint8Array) => void;
  /** Watchdog bounds, by stage (default {@linkcode STALL_MS}). */
  stallMs?: Partial<Record<Stage, number>>;
  /** What the command stage is called in the watchdog's line (default "command"). */
  commandStage?: string;
  /** How long the VM may take to power off after the command (default {@linkcode SHUTDOWN_GRACE_MS}). */
  shutdownGraceMs?: number;
}

/**
 * The stages of a helper VM run the watchdog names when one stalls.
 *
 * @example
 * ```ts
 * import type { Stage } from "./run.ts";
 * const s: Stage = "helper init";
 * ```
 */
export type Stage = "QEMU start" | "helper init" | "command";

/**
 * How long a stage may go without progress before the watchdog stops the
 * VM: QEMU must print its first byte, the helper's init must reach the
 * command (it takes 4–10 s), and the command must print something at least
 * every 15 minutes (a test file booting Linux under TCG stays silent for a
 * few minutes).
 *
 * @example
 * ```ts
 * import { STALL_MS } from "./run.ts";
 * console.log(STALL_MS["helper init"] / 1000); // 180
 * ```
 */
export const STALL_MS: Record<Stage, number> = {
  "QEMU start": 60_000,
  "helper init": 180_000,
  command: 15 * 60_000,
};

/**
 * Status returned when the watchdog stops a stalled VM.
 *
 * @example
 * ```ts
 * import { STALL_STATUS } from "./run.ts";
 * console.log(STALL_STATUS); // 125
 * ```
 */
export const STALL_STATUS = 125;

/**
 * How long the helper VM may take to power off once the command's status
 * is in: it syncs the writable shares (a second or two), then powers off.
 */
export const SHUTDOWN_GRACE_MS = 30_000;

/**
 * Status returned when the VM is killed for taking too long (as timeout(1)).
 *
 * @example
 * ```ts ignore
 * import { runNested, TIMEOUT_STATUS } from "./run.ts";
 * const rc = await runNested(["sleep", "99"], { cwd: ".", timeoutMs: 1000 });
 * console.log(rc === TIMEOUT_STATUS); // true
 * ```
 */
export const TIMEOUT_STATUS = 124;

const QEMU = "qemu-system-x86_64";

/**
 * The L1's CPU: QEMU's most capable model; it has SVM, so kvm-amd loads.
 * Its XSAVE stays: TCG's SVM runs a nested guest's XSETBV without the
 * intercept, but taking XSAVE away from the L1 (`max,-xsave`) made Deno
 * segfault there on every signal-driven stop of a VM. The monitor's
 * `nested-tcg` CPU template hides XSAVE from the nested guest instead.
 */
const CPU_MODEL = "max";

/**
 * The L1 kernel's command line. TCG's TSC follows the host clock on every
 * vCPU, so trusting it keeps the kernel off the HPET, whose every read is
 * an emulated MMIO access; mitigations only slow down a throwaway VM.
 */
const KERNEL_ARGS = "console=ttyS0 panic=-1 tsc=reliable mitigations=off";

/**
 * True when this host's /dev/kvm opens for reading and writing: then KVM
 * tests run directly and the harness is not needed.
 *
 * @example
 * ```ts
 * import { hostHasKvm } from "./run.ts";
 * console.log(hostHasKvm() ? "run tests directly" : "run them nested");
 * ```
 */
export function hostHasKvm(): boolean {
  return hostKind() !== "none";
}

/**
 * Deno's cache directory as Deno resolves it (`DENO_DIR`, else the XDG or
 * home cache directory).
 *
 * @example
 * ```ts ignore
 * import { denoDir } from "./run.ts";
 * console.log(denoDir()); // e.g. /root/.cache/deno
 * ```
 */
export function denoDir(): string {
  const env = Deno.env.get("DENO_DIR");
  if (env) return absolute(env);
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg?.startsWith("/")) return `${xdg}/deno`;
  return `${Deno.env.get("HOME") ?? "/root"}/.cache/deno`;
}

function absolute(path: string): string {
  const p = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const parts: string[] = [];
  for (const c of p.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") parts.pop();
    else parts.push(c);
  }
  return "/" + parts.join("/");
}

/** POSIX shell single-quoting: safe for any bytes but NUL. */
function shq(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * The script the init runs with `sh -c` inside the chroot: cd, exports,
 * then `exec` of the command, every word single-quoted.
 *
 * @example
 * ```ts
 * import { commandScript } from "./run.ts";
 * console.log(commandScript(["echo", "it's"], "/repo", { CI: "true" }));
 * // cd '/repo' || exit 125
 * // export CI='true'
 * // exec 'echo' 'it'\''s'
 * ```
 */
export function commandScript(cmd: string[], cwd: string, env: Record<string, string>): string {
  const lines = [`cd ${shq(cwd)} || exit 125`];
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) {
      throw new VoltError(`Invalid environment variable name: ${k}`, "usage");
    }
    lines.push(`export ${k}=${shq(v)}`);
  }
  lines.push(`exec ${cmd.map(shq).join(" ")}`);
  return lines.join("\n") + "\n";
}

/**
 * The directories to share writable: existing, resolved through symlinks
 * (the init mounts each at its real path, where the chroot's lookups land),
 * outermost only (a share covers its subdirectories). The root, and paths
 * the init's line-based list cannot carry, are rejected.
 *
 * @example
 * ```ts ignore
 * import { writableDirs } from "./run.ts";
 * console.log(writableDirs(["/tmp", "/tmp/x/..", "/usr"])); // ["/tmp", "/usr"]
 * ```
 */
export function writableDirs(dirs: string[]): string[] {
  const real = dirs.map((d) => {
    const abs = absolute(d);
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(abs);
    } catch {
      throw new VoltError(`Writable directory not found: ${abs}`, "noinput");
    }
    if (!st.isDirectory) throw new VoltError(`Not a directory: ${abs}`, "usage");
    return Deno.realPathSync(abs);
  });
  const out: string[] = [];
  for (const d of [...new Set(real)].sort()) {
    if (d === "/") throw new VoltError("The host root cannot be shared writable", "usage");
    // The init reads the list with `read -r tag dir`, which trims trailing blanks.
    if (/[\n\r]|\s$/.test(d)) {
      throw new VoltError(
        `Unsupported character in a writable path: ${JSON.stringify(d)}`,
        "usage",
      );
    }
    if (!out.some((o) => d.startsWith(`${o}/`))) out.push(d);
  }
  return out;
}

/** Guest uptimes the init recorded, by step. */
function readTimes(ctl: string): Record<string, number> {
  const t: Record<string, number> = {};
  for (const l of (readText(`${ctl}/${CTL.times}`) ?? "").split("\n")) {
    const [k, v] = l.split(" ");
    if (k && v) t[k] = Number(v);
  }
  return t;
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined;
  }
}

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, data: Uint8Array) {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}

/**
 * Console output filter: holds back the boot log up to the init's start
 * marker (kept for error reports, or passed on when asked) and turns
 * "\r\n" into "\n"; a lone "\r" (a progress line) is kept.
 *
 * @example
 * ```ts
 * import { ConsoleFilter } from "./run.ts";
 * const f = new ConsoleFilter(false);
 * const out = f.push(new TextEncoder().encode("[ 1.0] boot\r\nvolt-nested: command start\nhi\r\n"));
 * console.log(new TextDecoder().decode(out)); // "hi\n"
 * ```
 */
export class ConsoleFilter {
  /** The helper's init printed its first line (the kernel is up). */
  sawInit = false;
  /** The start marker was seen. */
  started = false;
  /** When it was seen (performance.now()). */
  startedAt = 0;
  /** The last lines before the marker. */
  bootLog: string[] = [];
  #passBoot: boolean;
  #pending = new Uint8Array();
  #cr = false;

  /** `passBoot`: pass the boot log on too (the marker line itself never is). */
  constructor(passBoot: boolean) {
    this.#passBoot = passBoot;
  }

  /** The bytes to show for `chunk`. */
  push(chunk: Uint8Array): Uint8Array {
    if (this.started) return this.#crlf(chunk);
    const buf = concat(this.#pending, chunk);
    if (!this.sawInit && indexOf(buf, INIT_MARK) >= 0) this.sawInit = true;
    const at = indexOf(buf, MARKER);
    const nl = at < 0 ? -1 : buf.indexOf(0x0a, at);
    // Whole lines before the marker (or all of them while it has not come).
    const end = at >= 0 ? buf.lastIndexOf(0x0a, at) + 1 : buf.lastIndexOf(0x0a) + 1;
    const boot = buf.subarray(0, end);
    this.#log(boot);
    const shown = this.#passBoot ? this.#crlf(boot) : new Uint8Array();
    if (nl < 0) {
      this.#pending = buf.slice(end);
      return shown;
    }
    this.#pending = new Uint8Array();
    this.started = true;
    this.startedAt = performance.now();
    return concat(shown, this.#crlf(buf.subarray(nl + 1)));
  }

  #log(b: Uint8Array) {
    if (b.length === 0) return;
    const lines = new TextDecoder().decode(b).split("\n").slice(0, -1);
    this.bootLog.push(...lines.map((l) => l.replace(/\r$/, "")));
    if (this.bootLog.length > 200) this.bootLog.splice(0, this.bootLog.length - 200);
  }

  #crlf(b: Uint8Array): Uint8Array {
    const out = new Uint8Array(b.length + 1);
    let n = 0;
    for (const c of b) {
      if (this.#cr && c !== 0x0a) out[n++] = 0x0d;
      this.#cr = c === 0x0d;
      if (!this.#cr) out[n++] = c;
    }
    return out.subarray(0, n);
  }
}

const MARKER = new TextEncoder().encode(START_MARKER);
const INIT_MARK = new TextEncoder().encode(INIT_MARKER);

/**
 * The last lines of the command's output, kept for the watchdog's report.
 *
 * @example
 * ```ts
 * import { OutputTail } from "./run.ts";
 * const t = new OutputTail(2);
 * t.push(new TextEncoder().encode("a\nb\nc"));
 * console.log(t.lines()); // ["b", "c"]
 * ```
 */
export class OutputTail {
  #max: number;
  #text = "";

  /** Keeps at most `max` lines. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Adds output. */
  push(chunk: Uint8Array): void {
    this.#text += new TextDecoder().decode(chunk);
    // Bounded whatever the command prints: a line longer than 4 KiB is cut.
    if (this.#text.length > this.#max * 4096) this.#text = this.#text.slice(-this.#max * 4096);
    const lines = this.#text.split("\n");
    if (lines.length > this.#max) this.#text = lines.slice(-this.#max).join("\n");
  }

  /** The kept lines, without empty ones. */
  lines(): string[] {
    return this.#text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l);
  }
}

/**
 * Copies our stdin to `sink` until it ends or `stop()` is called.
 */
function pumpInput(sink: WritableStream<Uint8Array>): { stop(): void } {
  const writer = sink.getWriter();
  let done = false;
  (async () => {
    const buf = new Uint8Array(4096);
    while (!done) {
      const n = await Deno.stdin.read(buf).catch(() => null);
      if (n === null || done) break;
      await writer.write(buf.slice(0, n)).catch(() => (done = true));
    }
    await writer.close().catch(() => {});
  })();
  return {
    stop() {
      done = true;
      writer.releaseLock();
    },
  };
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (
    let i = hay.indexOf(needle[0]);
    i >= 0 && i + needle.length <= hay.length;
    i = hay.indexOf(needle[0], i + 1)
  ) {
    for (let j = 1; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** QEMU's option syntax doubles commas inside values. */
function qopt(v: string): string {
  return v.replaceAll(",", ",,");
}

function virtfs(path: string, tag: string, readonly = false): string[] {
  const ro = readonly ? ",readonly=on" : "";
  return [
    "-virtfs",
    `local,path=${qopt(path)},mount_tag=${tag},security_model=none,multidevs=remap${ro}`,
  ];
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(2);
}

/**
 * Runs `cmd` inside the nested-KVM helper VM and returns its exit status.
 * Its output (stdout and stderr, merged) streams to our stdout. A timeout
 * kills the VM and returns {@linkcode TIMEOUT_STATUS}; SIGINT/SIGTERM kill
 * it and return 130/143; a VM that fails to run the command throws a
 * {@linkcode VoltError}.
 *
 * @example
 * ```ts ignore
 * import { runNested } from "./run.ts";
 * const status = await runNested(["deno", "test", "-A", "tests/"], { cwd: "/work/main" });
 * Deno.exit(status);
 * ```
 */
export async function runNested(cmd: string[], opts: NestedOptions): Promise<number> {
  if (cmd.length === 0) throw new VoltError("No command given", "usage");
  const cwd = absolute(opts.cwd);
  const dd = denoDir();
  Deno.mkdirSync(dd, { recursive: true });
  const shares = writableDirs([cwd, dd, ...(opts.writable ?? [])]);
  const memory = opts.memory ?? "2G";
  if (!/^[1-9][0-9]*[MG]?$/i.test(memory)) {
    throw new VoltError(`Invalid memory size: ${memory}`, "usage");
  }
  const cpus = opts.cpus ?? 2;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) {
    throw new VoltError(`Invalid vCPU count: ${cpus}`, "usage");
  }
  const timeoutMs = opts.timeoutMs ?? 30 * 60_000;
  if (!hasTool(QEMU)) {
    throw new VoltError(`${QEMU} is not installed (apt-get install qemu-system-x86)`, "noinput");
  }
  let img;
  try {
    img = await ensureL1({
      progress: opts.progress ?? ((s) => console.error(s)),
      refresh: opts.refresh,
    });
  } catch (e) {
    if (!(e instanceof VoltError)) throw e;
    throw new VoltError(`The helper VM's image build failed: ${e.message}`, e.kind);
  }

  const tty = Deno.stdout.isTerminal();
  const term = Deno.env.get("TERM");
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    DENO_DIR: dd,
    ...(tty && term ? { TERM: term } : {}),
    ...opts.env,
  };

  const ctl = await Deno.makeTempDir({ prefix: "volt-nested-" });
  try {
    await Deno.writeTextFile(`${ctl}/${CTL.command}`, commandScript(cmd, cwd, env));
    const list = shares.map((d, i) => `${TAGS.share(i)} ${d}\n`).join("");
    await Deno.writeTextFile(`${ctl}/${CTL.shares}`, list);
    // Page-cached like the root: only this VM writes there while it runs,
    // and the init syncs before powering off.
    await Deno.writeTextFile(`${ctl}/${CTL.shareOptions}`, ",cache=loose\n");
    if (tty) await Deno.writeTextFile(`${ctl}/${CTL.tty}`, "");
    if (opts.input) await Deno.writeTextFile(`${ctl}/${CTL.stdin}`, "");

    const args = [
      ...["-accel", "tcg,thread=multi", "-cpu", CPU_MODEL, "-smp", String(cpus), "-m", memory],
      // The console alone on stdio: no monitor multiplexed in, so Ctrl-A
      // reaches the command (Volt's own Ctrl-A x) rather than QEMU.
      ...["-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none"],
      ...["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"],
      ...["-kernel", img.kernel, "-initrd", img.initrd],
      ...["-append", `${KERNEL_ARGS} ${opts.verbose ? "loglevel=7" : "quiet loglevel=0"}`],
      ...virtfs("/", TAGS.root, true),
      ...virtfs(ctl, TAGS.ctl),
      ...shares.flatMap((d, i) => virtfs(d, TAGS.share(i))),
    ];

    const t0 = performance.now();
    const child = new Deno.Command(QEMU, {
      args,
      stdin: opts.input ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let stopped: "timeout" | "stall" | "shutdown" | Deno.Signal | undefined;
    const stop = (why: "timeout" | "stall" | "shutdown" | Deno.Signal) => {
      stopped ??= why;
      child.kill("SIGKILL");
    };
    const timer = setTimeout(() => stop("timeout"), timeoutMs);
    const onInt = () => stop("SIGINT");
    const onTerm = () => stop("SIGTERM");
    Deno.addSignalListener("SIGINT", onInt);
    Deno.addSignalListener("SIGTERM", onTerm);

    const filter = new ConsoleFilter(opts.verbose ?? false);
    const bounds = { ...STALL_MS, ...opts.stallMs };
    const stage = (): Stage =>
      filter.started ? "command" : filter.sawInit ? "helper init" : "QEMU start";
    let lastProgress = performance.now();
    let stalled: Stage | undefined;
    let endedAt: number | undefined;
    const grace = opts.shutdownGraceMs ?? SHUTDOWN_GRACE_MS;
    const watchdog = setInterval(() => {
      const now = performance.now();
      endedAt ??= readText(`${ctl}/${CTL.status}`) === undefined ? undefined : now;
      if (endedAt !== undefined) {
        if (now - endedAt > grace) stop("shutdown");
        return;
      }
      const s = stage();
      if (now - lastProgress > bounds[s]) {
        stalled = s;
        stop("stall");
      }
    }, Math.min(1000, ...Object.values(bounds)));
    const stderr = new Response(child.stderr).text();
    const raw = opts.input && Deno.stdin.isTerminal();
    if (raw) Deno.stdin.setRaw(true);
    const pump = opts.input ? pumpInput(child.stdin) : undefined;
    let status: Deno.CommandStatus;
    const tail = new OutputTail(40);
    try {
      for await (const chunk of child.stdout) {
        lastProgress = performance.now();
        const shown = filter.push(chunk);
        if (filter.started) tail.push(shown);
        opts.tap?.(shown);
        await writeAll(Deno.stdout, shown);
      }
      status = await child.status;
    } finally {
      clearTimeout(timer);
      clearInterval(watchdog);
      pump?.stop();
      if (raw) Deno.stdin.setRaw(false);
      Deno.removeSignalListener("SIGINT", onInt);
      Deno.removeSignalListener("SIGTERM", onTerm);
    }
    const qemuErr = (await stderr).trim();

    if (opts.verbose || opts.timings) {
      const t = readTimes(ctl);
      const boot = filter.started ? seconds(filter.startedAt - t0) : "?";
      console.error(
        `volt nested: QEMU start to command start ${boot} s, total ${
          seconds(performance.now() - t0)
        } s (guest uptime at /init ${t.init}, modules loaded ${t.modules}, ` +
          `command start ${t.ready}, command end ${t.done})`,
      );
    }
    if (stopped === "stall" && stalled) {
      const last = stalled === "command" ? tail.lines().slice(-20) : [
        ...filter.bootLog.slice(-20),
        ...qemuErr.split("\n").slice(-5),
      ].filter((l) => l);
      if (last.length && stalled !== "command") console.error(last.join("\n"));
      const name = stalled === "command" ? opts.commandStage ?? stalled : stalled;
      console.error(
        `volt nested: the ${name} stage made no progress for ${
          Math.round(bounds[stalled] / 1000)
        } s; the helper VM was stopped (${
          last.length ? `last output: ${last[last.length - 1]}` : "it printed nothing"
        })`,
      );
      return STALL_STATUS;
    }
    if (stopped === "shutdown") {
      console.error(
        `volt nested: the helper VM did not power off within ${
          grace / 1000
        } s of the command's end; it was stopped (writes to the shared directories may be lost)`,
      );
    } else if (stopped === "timeout") {
      console.error(
        `volt nested: timed out after ${Math.round(timeoutMs / 1000)} s; the helper VM was killed`,
      );
      return TIMEOUT_STATUS;
    }
    if (stopped && stopped !== "shutdown") {
      console.error(`volt nested: ${stopped}; the helper VM was killed`);
      return stopped === "SIGINT" ? 130 : 143;
    }
    const rc = readText(`${ctl}/${CTL.status}`);
    if (rc !== undefined && /^[0-9]+$/.test(rc)) return Number(rc);

    // No status: show what the console and QEMU said before failing.
    const initError = readText(`${ctl}/${CTL.error}`);
    if (!opts.verbose) {
      const tail = [...filter.bootLog.slice(-30), ...qemuErr.split("\n").slice(-10)];
      if (tail.some((l) => l)) console.error(tail.filter((l) => l).join("\n"));
    }
    if (initError) throw new VoltError(`Nested VM: ${initError}`, "internal");
    if (!status.success) {
      const why = status.signal ? `killed by ${status.signal}` : `exit ${status.code}`;
      throw new VoltError(`${QEMU} failed (${why}): ${qemuErr.split("\n").pop()}`, "internal");
    }
    throw new VoltError(
      "The nested VM stopped without reporting the command's exit status",
      "internal",
    );
  } finally {
    await Deno.remove(ctl, { recursive: true }).catch(() => {});
  }
}

const USAGE = `Usage: deno run -A tools/nested/run.ts [options] -- cmd args...

Runs cmd in a QEMU TCG VM that has a working /dev/kvm (nested SVM), with the
host's filesystem read-only and the working directory and DENO_DIR writable.

Options:
  --cwd DIR         working directory (default: the current one)
  --env K=V         environment variable (repeatable)
  --writable DIR    another writable directory (repeatable)
  --memory SIZE     guest RAM (default 2G)
  --cpus N          vCPUs (default 2)
  --timeout SECS    kill the VM after SECS seconds (default 1800)
  --verbose         show the boot log (and the timings)
  --timings         print boot and run timings at the end
  --refresh-image   re-resolve the image's Debian package versions now
`;

/**
 * The CLI: parses `args` and returns the command's exit status.
 *
 * @example
 * ```ts ignore
 * import { main } from "./run.ts";
 * Deno.exit(await main(["--", "sh", "-c", "exit 7"])); // exits 7
 * ```
 */
export async function main(args: string[]): Promise<number> {
  const dash = args.indexOf("--");
  const own = dash < 0 ? args : args.slice(0, dash);
  const cmd = dash < 0 ? [] : args.slice(dash + 1);
  let values;
  try {
    ({ values } = parseArgs({
      args: own,
      strict: true,
      allowPositionals: false,
      options: {
        cwd: { type: "string" },
        env: { type: "string", multiple: true },
        writable: { type: "string", multiple: true },
        memory: { type: "string" },
        cpus: { type: "string" },
        timeout: { type: "string" },
        verbose: { type: "boolean" },
        timings: { type: "boolean" },
        "refresh-image": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new VoltError((e as Error).message.split("\n")[0], "usage");
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (cmd.length === 0) throw new VoltError("No command given (put it after --)", "usage");
  const env: Record<string, string> = {};
  for (const kv of values.env ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new VoltError(`--env takes NAME=VALUE, not ${kv}`, "usage");
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const num = (s: string | undefined, what: string) => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!Number.isFinite(n) || n <= 0) throw new VoltError(`Invalid ${what}: ${s}`, "usage");
    return n;
  };
  const timeout = num(values.timeout, "timeout");
  return await runNested(cmd, {
    cwd: values.cwd ?? Deno.cwd(),
    env,
    writable: values.writable,
    memory: values.memory,
    cpus: num(values.cpus, "vCPU count"),
    timeoutMs: timeout === undefined ? undefined : timeout * 1000,
    verbose: values.verbose,
    timings: values.timings,
    refresh: values["refresh-image"],
  });
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (!(e instanceof VoltError)) throw e;
    console.error(`volt nested: ${e.message}`);
    Deno.exit(e.exitCode);
  }
}
