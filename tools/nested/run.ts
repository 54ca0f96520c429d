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
import { CTL, ensureL1, START_MARKER, TAGS } from "./l1.ts";

/** Options of {@linkcode runNested}. */
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
  /** Show the boot log and the boot timings on stderr. */
  verbose?: boolean;
  /** Progress of the one-time image build (default: lines on stderr). */
  progress?: (line: string) => void;
}

/** Status returned when the VM is killed for taking too long (as timeout(1)). */
export const TIMEOUT_STATUS = 124;

const QEMU = "qemu-system-x86_64";

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
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Deno's cache directory as Deno resolves it (`DENO_DIR`, else the XDG or
 * home cache directory).
 *
 * @example
 * ```ts
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

/** The script the init runs with `sh -c` inside the chroot. */
function commandScript(cmd: string[], cwd: string, env: Record<string, string>): string {
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

/** Writable directories, outermost only (a share covers its subdirectories). */
function writableDirs(dirs: string[]): string[] {
  const abs = [...new Set(dirs.map(absolute))].sort();
  const out: string[] = [];
  for (const d of abs) {
    if (d === "/") throw new VoltError("The host root cannot be shared writable", "usage");
    if (/[\n,]/.test(d)) {
      throw new VoltError(
        `Unsupported character in a writable path: ${JSON.stringify(d)}`,
        "usage",
      );
    }
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(d);
    } catch {
      throw new VoltError(`Writable directory not found: ${d}`, "noinput");
    }
    if (!st.isDirectory) throw new VoltError(`Not a directory: ${d}`, "usage");
    if (!out.some((o) => d.startsWith(`${o}/`))) out.push(d);
  }
  return out;
}

/** Guest uptimes the init recorded, by step. */
function readTimes(ctl: string): Record<string, number> {
  try {
    const t: Record<string, number> = {};
    for (const l of Deno.readTextFileSync(`${ctl}/${CTL.times}`).trim().split("\n")) {
      const [k, v] = l.split(" ");
      t[k] = Number(v);
    }
    return t;
  } catch {
    return {};
  }
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined;
  }
}

async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}

/**
 * Console output filter: drops the boot log up to the start marker (kept
 * for error reports) and turns "\r\n" into "\n".
 */
class ConsoleFilter {
  /** The start marker was seen. */
  started = false;
  /** When it was seen (performance.now()). */
  startedAt = 0;
  /** The last lines before the marker. */
  bootLog: string[] = [];
  #passBoot: boolean;
  #pending = "";
  #cr = false;

  constructor(passBoot: boolean) {
    this.#passBoot = passBoot;
  }

  /** The bytes to show for `chunk`. */
  push(chunk: Uint8Array): Uint8Array {
    if (!this.started) {
      // windows-1252 maps each byte to one UTF-16 unit, so string offsets are byte offsets.
      this.#pending += new TextDecoder("windows-1252").decode(chunk);
      const at = this.#pending.indexOf(START_MARKER);
      const nl = at < 0 ? -1 : this.#pending.indexOf("\n", at);
      if (nl < 0) {
        const lines = this.#pending.split("\n");
        this.#pending = lines.pop()!;
        this.#log(lines);
        const seen = this.#passBoot
          ? this.#crlf(latin1(lines.map((l) => l + "\n").join("")))
          : new Uint8Array();
        return seen;
      }
      this.#log(this.#pending.slice(0, at).split("\n").slice(0, -1));
      const rest = chunk.subarray(chunk.length - (this.#pending.length - nl - 1));
      this.#pending = "";
      this.started = true;
      this.startedAt = performance.now();
      return this.#crlf(rest);
    }
    return this.#crlf(chunk);
  }

  #log(lines: string[]) {
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

function latin1(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
  return b;
}

/** QEMU's option syntax doubles commas inside values. */
function qopt(v: string): string {
  return v.replaceAll(",", ",,");
}

/**
 * Runs `cmd` inside the nested-KVM helper VM and returns its exit status.
 * Its output (stdout and stderr, merged) streams to our stdout. A timeout
 * kills the VM and returns {@linkcode TIMEOUT_STATUS}; a VM that fails to
 * run the command throws a {@linkcode VoltError}.
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

  const progress = opts.progress ?? ((s: string) => console.error(s));
  const img = await ensureL1({ progress });

  const tty = Deno.stdout.isTerminal();
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    DENO_DIR: dd,
    ...(tty && Deno.env.get("TERM") ? { TERM: Deno.env.get("TERM")! } : {}),
    ...opts.env,
  };

  const ctl = await Deno.makeTempDir({ prefix: "volt-nested-" });
  try {
    await Deno.writeTextFile(`${ctl}/${CTL.command}`, commandScript(cmd, cwd, env));
    await Deno.writeTextFile(
      `${ctl}/${CTL.shares}`,
      shares.map((d, i) => `${TAGS.share(i)} ${d}\n`).join(""),
    );
    await Deno.writeTextFile(`${ctl}/${CTL.shareOptions}`, ",cache=loose\n");
    if (tty) await Deno.writeTextFile(`${ctl}/${CTL.tty}`, "");

    const virtfs = (path: string, tag: string, ro = false) => [
      "-virtfs",
      `local,path=${qopt(path)},mount_tag=${tag},security_model=none,multidevs=remap${
        ro ? ",readonly=on" : ""
      }`,
    ];
    const args = [
      ...["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", String(cpus), "-m", memory],
      ...["-nographic", "-no-reboot", "-nic", "none"],
      ...["-kernel", img.kernel, "-initrd", img.initrd],
      ...["-append", `console=ttyS0 panic=-1 ${opts.verbose ? "loglevel=7" : "quiet loglevel=0"}`],
      ...virtfs("/", TAGS.root, true),
      ...virtfs(ctl, TAGS.ctl),
      ...shares.flatMap((d, i) => virtfs(d, TAGS.share(i))),
    ];

    const t0 = performance.now();
    const child = new Deno.Command(QEMU, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    const onSignal = () => child.kill("SIGKILL");
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);

    const filter = new ConsoleFilter(opts.verbose ?? false);
    const pumpOut = (async () => {
      for await (const chunk of child.stdout) await writeAll(Deno.stdout, filter.push(chunk));
    })();
    const stderr = new Response(child.stderr).text();
    const status = await child.status;
    await pumpOut;
    const qemuErr = (await stderr).trim();
    clearTimeout(timer);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    const t1 = performance.now();

    if (opts.verbose) {
      const t = readTimes(ctl);
      const boot = filter.started ? ((filter.startedAt - t0) / 1000).toFixed(2) : "?";
      console.error(
        `volt nested: QEMU start to command start ${boot} s wall (guest uptime: /init ${t.init}, ` +
          `modules ${t.modules}, ready ${t.ready}, done ${t.done}); total ${
            ((t1 - t0) / 1000).toFixed(2)
          } s`,
      );
    }
    if (timedOut) {
      console.error(
        `volt nested: timed out after ${Math.round(timeoutMs / 1000)} s; the helper VM was killed`,
      );
      return TIMEOUT_STATUS;
    }
    if (status.signal) throw new VoltError(`${QEMU} was killed by ${status.signal}`, "internal");
    const rc = readText(`${ctl}/${CTL.status}`);
    if (rc !== undefined && /^[0-9]+$/.test(rc)) return Number(rc);

    const initError = readText(`${ctl}/${CTL.error}`);
    if (!opts.verbose) {
      const tail = [
        ...filter.bootLog.slice(-30),
        ...(qemuErr ? qemuErr.split("\n").slice(-10) : []),
      ];
      if (tail.length) console.error(tail.join("\n"));
    }
    if (initError) throw new VoltError(`Nested VM: ${initError}`, "internal");
    if (!status.success) {
      throw new VoltError(
        `${QEMU} failed (exit ${status.code}): ${qemuErr.split("\n").pop()}`,
        "internal",
      );
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
  --verbose         show the boot log and timings
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
