/**
 * The jail step: restrict the calling thread, then `execve` the monitor.
 *
 * Capabilities and Landlock bind the thread that applies them, and Deno
 * runs several threads before user code, so applying them in place leaves
 * those threads free. Everything set before an `execve` is inherited by the
 * new image, and all its threads start from that one: restricting, then
 * executing, is what makes these per-thread layers process-wide.
 *
 * @module
 */

import { errnoName } from "../../ffi/errno.ts";
import { cstr, errno, libc } from "../../ffi/libc.ts";
import { PR_SET_NO_NEW_PRIVS } from "../../ffi/prctl.ts";
import { VoltError } from "../errors.ts";
import { dropCapabilities } from "./caps.ts";
import { applyLandlock, type LandlockRule, pathExists } from "./landlock.ts";
import { closeOnExecExcept, limitResources } from "./process.ts";

/**
 * Where Deno keeps its caches: `DENO_DIR`, else the XDG cache directory,
 * as Deno itself decides.
 *
 * @example
 * ```ts
 * import { denoDir } from "./jail.ts";
 * console.log(denoDir()); // e.g. /root/.cache/deno
 * ```
 */
export function denoDir(): string {
  const dir = Deno.env.get("DENO_DIR");
  if (dir) return dir;
  const cache = Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME")}/.cache`;
  return `${cache}/deno`;
}

/**
 * The Landlock rules a jailed `deno run` needs to start and exit: its
 * executable's directory and the system libraries (exec-read), and its
 * cache directory, read-only: the unjailed `volt` runs the code cached
 * there next time, so a compromised monitor must not write it. Deno then
 * keeps its SQLite caches in memory and transpiles what is not cached
 * (measured: a fresh worker module loads). The program's own files,
 * /dev/kvm, guest images and /proc are the caller's to add. Measured: Deno
 * starts without /proc, /sys, /etc and /dev/null.
 *
 * @example
 * ```ts ignore
 * import { denoRuntimeRules, enterJail } from "./jail.ts";
 * enterJail({
 *   landlockRules: [...denoRuntimeRules(), { path: "/dev/kvm", access: "readwrite" }],
 *   then: { execPath: Deno.execPath(), args: ["run", "-A", "mod.ts", "run"] },
 * });
 * ```
 */
export function denoRuntimeRules(): LandlockRule[] {
  const exe = Deno.execPath();
  const rules: LandlockRule[] = [{ path: exe.slice(0, exe.lastIndexOf("/")), access: "exec-read" }];
  // The loader and libc; /lib and /lib64 are symlinks into /usr on
  // merged-/usr systems, and a rule follows them to the same tree.
  for (const p of ["/lib", "/lib64", "/usr/lib", "/usr/lib64"]) {
    if (pathExists(p)) rules.push({ path: p, access: "exec-read" });
  }
  // A missing cache directory could not take a rule.
  if (!pathExists(denoDir())) Deno.mkdirSync(denoDir(), { recursive: true });
  rules.push({ path: denoDir(), access: "read" });
  return rules;
}

/** The program the jail becomes. */
export interface JailExec {
  /** Absolute path of the executable (no PATH search). */
  execPath: string;
  /** Arguments after argv[0]; argv[0] is `execPath`. */
  args: readonly string[];
  /** The whole environment of the new program (default: the current one). */
  env?: Readonly<Record<string, string>>;
}

/** Options of {@linkcode enterJail}. */
export interface JailOptions {
  /**
   * Paths the program may open. Without this, Landlock is not applied; an
   * empty list denies every path (and so the exec itself).
   */
  landlockRules?: readonly LandlockRule[];
  /** Fail instead of going on when the kernel lacks Landlock (default false). */
  requireLandlock?: boolean;
  /** Turns the reason Landlock is missing into the refusal's message (default: the reason). */
  requireLandlockWhy?: (reason: string) => string;
  /** Receives one line when Landlock is skipped (default: stderr). */
  warn?: (line: string) => void;
  /** Descriptors from 3 up that the program inherits; every other one is closed on exec. */
  keepFds?: readonly number[];
  /** Called after each layer: "no_new_privs set", "landlock applied", "capabilities dropped", "limits set". */
  onStep?: (step: string) => void;
  /**
   * What to execute once restricted; a function learns what was applied
   * (to pass it on).
   */
  then: JailExec | ((applied: JailApplied) => JailExec);
}

/** What {@linkcode enterJail} applied before executing. */
export interface JailApplied {
  /** Landlock's ABI and rule count, or why it was not applied. */
  landlock: { abi: number; rules: number; scoped?: boolean } | { skipped: string };
  /** The capability bounding set was emptied (needs CAP_SETPCAP). */
  bounding: boolean;
}

// The kernel reads argv and envp during execve; these keep every C string
// and pointer array reachable until then.
const pinned = new Set<unknown>();

/**
 * A NULL-terminated array of C string pointers, with the strings it points
 * to (which must outlive the call).
 */
function cArray(
  strings: readonly string[],
): { array: BigUint64Array<ArrayBuffer>; keep: unknown[] } {
  const keep: unknown[] = [];
  const array = new BigUint64Array(strings.length + 1);
  strings.forEach((s, i) => {
    if (s.includes("\0")) throw new VoltError(`Jail argument contains a NUL byte: ${s}`, "usage");
    const c = cstr(s);
    keep.push(c);
    array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(c)));
  });
  keep.push(array);
  return { array, keep };
}

/**
 * On the calling thread: sets no_new_privs, applies Landlock, drops every
 * capability, lowers the resource limits, marks inherited descriptors
 * close-on-exec, then executes `then`, which inherits all of it on every
 * thread it will ever have. Returns only by throwing.
 *
 * @example
 * ```ts ignore
 * import { enterJail } from "./jail.ts";
 * enterJail({
 *   landlockRules: [{ path: "/usr", access: "exec-read" }, { path: "/dev/kvm", access: "readwrite" }],
 *   then: { execPath: Deno.execPath(), args: ["run", "-A", "mod.ts", "run", "--kernel", "k"] },
 * });
 * ```
 */
export function enterJail(opts: JailOptions): never {
  const l = libc();
  if (l.prctl(PR_SET_NO_NEW_PRIVS, 1n, 0n, 0n, 0n) !== 0) {
    throw new VoltError(`Setting no_new_privs failed: ${errnoName(errno())}`, "internal");
  }
  opts.onStep?.("no_new_privs set");
  let landlock: JailApplied["landlock"] = { skipped: "off" };
  if (opts.landlockRules) {
    const r = applyLandlock(opts.landlockRules, { denyTcp: true, scoped: true });
    if ("unsupported" in r) {
      if (opts.requireLandlock) {
        throw new VoltError(opts.requireLandlockWhy?.(r.unsupported) ?? r.unsupported, "internal");
      }
      (opts.warn ?? ((line: string) => console.error(line)))(`${r.unsupported}; going on`);
      landlock = { skipped: `unavailable (${r.unsupported})` };
    } else {
      landlock = { abi: r.abi, rules: opts.landlockRules.length, scoped: r.scoped };
      opts.onStep?.("landlock applied");
    }
  }
  const { bounding } = dropCapabilities();
  opts.onStep?.("capabilities dropped");
  limitResources();
  opts.onStep?.("limits set");

  const then = typeof opts.then === "function" ? opts.then({ landlock, bounding }) : opts.then;
  const { execPath, args } = then;
  const env = then.env ?? Deno.env.toObject();
  const path = cstr(execPath);
  const argv = cArray([execPath, ...args]);
  const envp = cArray(Object.entries(env).map(([k, v]) => `${k}=${v}`));
  const keep = [path, argv.keep, envp.keep];
  pinned.add(keep);
  closeOnExecExcept(opts.keepFds ?? []);
  l.execve(path, argv.array, envp.array);
  const e = errno();
  pinned.delete(keep);
  throw new VoltError(`Executing ${execPath} in the jail failed: ${errnoName(e)}`, "internal");
}
