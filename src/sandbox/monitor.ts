/**
 * The sandbox of `volt run`, end to end.
 *
 * The outer process (any permissions) resolves the guest, then jails
 * itself (no_new_privs, Landlock, every capability dropped) and executes
 * `deno run` again with the narrowest Deno permissions: `--allow-ffi` and
 * reads of the program, libc and the guest files. The inner process, the
 * monitor proper, checks that it is jailed, revokes its reads once the
 * guest and the vCPU workers are loaded, and installs the seccomp
 * allow-list on every thread right before the first KVM_RUN.
 *
 * @module
 */

import { errnoName } from "../../ffi/errno.ts";
import { errno, libc, libcPath } from "../../ffi/libc.ts";
import { PR_CAPBSET_READ, PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP } from "../../ffi/prctl.ts";
import { RLIMIT_CORE, RLIMIT_NOFILE } from "../../ffi/resource.ts";
import { VoltError } from "../errors.ts";
import type { Mark } from "../vmm/trace.ts";
import { capLastCap, getCapabilities } from "./caps.ts";
import { denoDir, denoRuntimeRules, type JailApplied, type JailExec } from "./jail.ts";
import { landlockEnforced, type LandlockRule } from "./landlock.ts";
import { getLimit, MONITOR_RLIMITS, monitorEnv } from "./process.ts";

/** Which layers a run asks for. */
export interface SandboxOptions {
  /** Install the seccomp allow-list (default on; `--no-seccomp`). */
  seccomp: boolean;
  /** Apply Landlock (default on; `--no-landlock`). */
  landlock: boolean;
  /** Refuse to run when a layer cannot be applied (`--require-sandbox`). */
  require: boolean;
  /** Log instead of killing on a syscall outside the allow-list (calibration). */
  seccompLog: boolean;
  /**
   * Landlock must be in force: the monitor runs as root, which without
   * capabilities still owns root's files, and Landlock is what confines
   * them (`--allow-root-without-landlock` lifts it).
   */
  landlockRequired: boolean;
}

/**
 * Whether a monitor run by `uid` must have Landlock. Root without
 * capabilities keeps file-owner access to everything root owns (/etc/shadow,
 * /root/.ssh, Deno's cache); Landlock takes it away whatever the uid, and
 * its ptrace and signal scoping keep root's other processes out of reach,
 * so root runs the monitor only under Landlock. Switching to an
 * unprivileged uid instead would need every file the monitor reads (Deno's
 * cache and a jsr program under /root, the guest cache, /dev/kvm's 0600
 * node) passed in as descriptors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rootNeedsLandlock } from "./monitor.ts";
 * assert.equal(rootNeedsLandlock(0, false), true);
 * assert.equal(rootNeedsLandlock(1000, false), false);
 * assert.equal(rootNeedsLandlock(0, true), false);
 * ```
 */
export function rootNeedsLandlock(uid: number, allowed: boolean): boolean {
  return uid === 0 && !allowed;
}

/** The one line that refuses root without Landlock, and how to proceed. */
export function rootWithoutLandlock(why: string): string {
  return `Refusing to run the monitor as root without Landlock (${why}): run volt as a user with access to /dev/kvm, or pass --allow-root-without-landlock`;
}

/** What the outer process tells the jailed monitor: what its jail applied, and more. */
export interface JailState extends JailApplied {
  /** Epoch ms of the outer runtime's start: trace times count from there. */
  origin: number;
  /** Phases of the outer process, in ms since `origin`. */
  marks: Mark[];
  /** Descriptor, inherited across `execve`, that `--metrics-json` goes to. */
  metricsFd?: number;
}

/** The hidden `volt run` option that carries a {@linkcode JailState}. */
export const JAIL_STATE_OPTION = "jail-state";

/**
 * Encodes a jail state for the command line.
 *
 * @example
 * ```ts
 * import { decodeJailState, encodeJailState } from "./monitor.ts";
 * const s = { origin: 1, marks: [], landlock: { skipped: "off" }, bounding: true };
 * decodeJailState(encodeJailState(s)).bounding; // true
 * ```
 */
export function encodeJailState(state: JailState): string {
  return btoa(JSON.stringify(state));
}

/** Decodes {@linkcode encodeJailState}'s output; a damaged value is a usage error. */
export function decodeJailState(text: string): JailState {
  try {
    const s = JSON.parse(atob(text)) as JailState;
    if (typeof s.origin === "number" && Array.isArray(s.marks) && s.landlock) return s;
  } catch { /* fall through */ }
  throw new VoltError(
    `--${JAIL_STATE_OPTION} is internal to volt and this value is damaged`,
    "usage",
  );
}

/** Where the running program's code is, and how to start it again. */
export interface ProgramLocation {
  /** The main module, as `deno run` takes it. */
  main: string;
  /** A local directory holding every module of the program (read-only). */
  root?: string;
  /** The deno.json that maps its imports, when it has one. */
  config?: string;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

let standalone = false;

/**
 * Declares the program a single file (the bundle): its jail then reads
 * that file's directory only, with no deno.json.
 */
export function markStandalone(): void {
  standalone = true;
}

/**
 * Locates the program from its main module: a local module's tree is the
 * directory of the nearest deno.json above it (or its own directory; a
 * standalone program's is always its own).
 *
 * @example
 * ```ts ignore
 * import { programLocation } from "./monitor.ts";
 * programLocation("file:///src/volt/mod.ts");
 * // { main: "/src/volt/mod.ts", root: "/src/volt", config: "/src/volt/deno.json" }
 * ```
 */
export function programLocation(mainModule: string = Deno.mainModule): ProgramLocation {
  if (!mainModule.startsWith("file:")) return { main: mainModule };
  const main = decodeURIComponent(new URL(mainModule).pathname);
  let dir = main.slice(0, main.lastIndexOf("/")) || "/";
  const own = dir;
  if (standalone) return { main, root: own };
  for (;;) {
    if (isFile(`${dir}/deno.json`)) return { main, root: dir, config: `${dir}/deno.json` };
    if (dir === "/") return { main, root: own };
    dir = dir.slice(0, dir.lastIndexOf("/")) || "/";
  }
}

/** Input of {@linkcode planJail}. */
export interface JailPlanInput {
  program: ProgramLocation;
  /** Guest files the monitor reads (kernel, initrd, read-only disks). */
  readFiles: readonly string[];
  /** Devices and files it opens read-write (/dev/kvm). */
  readWrite: readonly string[];
  /** Directories it writes files in through libc (`--snapshot-dir`): a Landlock rule each. */
  writeDirs?: readonly string[];
  /** `volt` arguments of the jailed monitor (after the main module). */
  args: readonly string[];
  /** Build Landlock rules (false: `--no-landlock`). */
  landlock: boolean;
}

/** The jail for one run: Landlock rules, and the command it becomes. */
export interface JailPlan {
  /** Undefined when Landlock is off. */
  rules?: LandlockRule[];
  /** The jailed monitor. */
  exec: JailExec;
}

/**
 * Plans the jail of a run: Landlock grants what Deno needs to start, the
 * program's files and the guest's, and the KVM device; Deno grants FFI and
 * reads of the program, libc and the guest files, nothing else.
 *
 * @example
 * ```ts ignore
 * import { planJail, programLocation } from "./monitor.ts";
 * const plan = planJail({
 *   program: programLocation(),
 *   readFiles: ["/boot/vmlinux"],
 *   readWrite: ["/dev/kvm"],
 *   args: ["run", "--kernel=/boot/vmlinux"],
 *   landlock: true,
 * });
 * console.log(plan.exec.args.join(" "));
 * ```
 */
export function planJail(input: JailPlanInput): JailPlan {
  const { program } = input;
  // Written through libc (src/snapshot/file_out.ts): Landlock's rule, no Deno permission.
  const writes = input.writeDirs ?? [];
  const reads = [...(program.root ? [program.root] : []), libcPath(), ...input.readFiles];
  const comma = reads.find((p) => p.includes(","));
  if (comma) {
    throw new VoltError(
      `Path ${comma} contains a comma, which Deno's --allow-read list cannot carry`,
      "usage",
    );
  }
  const deno = ["run", "--no-prompt", "--cached-only"];
  deno.push(program.config ? `--config=${program.config}` : "--no-config");
  deno.push("--allow-ffi", `--allow-read=${reads.join(",")}`);
  // A remote program's vCPU workers load from its host.
  if (!program.root) deno.push(`--allow-import=${new URL(program.main).host}`);
  const env = monitorEnv(Deno.env.toObject(), denoDir());
  const exec: JailExec = {
    execPath: Deno.execPath(),
    args: [...deno, program.main, ...input.args],
    env,
  };
  if (!input.landlock) return { exec };
  const rules: LandlockRule[] = [
    ...denoRuntimeRules(),
    ...(program.root ? [{ path: program.root, access: "read" as const }] : []),
    ...input.readFiles.map((path) => ({ path, access: "read" as const })),
    ...input.readWrite.map((path) => ({ path, access: "readwrite" as const })),
    ...writes.map((path) => ({ path, access: "readwrite" as const })),
  ];
  return { rules, exec };
}

/** The calling thread's no_new_privs flag. */
export function noNewPrivs(): boolean {
  return libc().prctl(PR_GET_NO_NEW_PRIVS, 0n, 0n, 0n, 0n) === 1;
}

/** True when the calling thread's bounding set is empty. */
export function boundingSetEmpty(): boolean {
  const l = libc();
  const last = capLastCap();
  for (let cap = 0; cap <= last; cap++) {
    const r = l.prctl(PR_CAPBSET_READ, BigInt(cap), 0n, 0n, 0n);
    if (r < 0) throw new VoltError(`Reading the bounding set failed: ${errnoName(errno())}`);
    if (r === 1) return false;
  }
  return true;
}

/**
 * Checks, in the jailed monitor, every layer the jail state claims, by
 * measuring it: no_new_privs, no capabilities, an empty bounding set when
 * claimed, Landlock by a probe that must be denied, the resource limits.
 * The state comes from the command line, and anyone under an existing
 * no_new_privs can forge one: a mismatch is an error, so the sandbox
 * summary never claims a layer that is not there, and `require` (or
 * `landlockRequired`, for root) refuses a state that skipped one.
 *
 * @example
 * ```ts ignore
 * import { decodeJailState, verifyJailed } from "./monitor.ts";
 * verifyJailed(decodeJailState(flag), false, true);
 * ```
 */
export function verifyJailed(state: JailState, require: boolean, landlockRequired = false): void {
  const missing: string[] = [];
  if (!noNewPrivs()) missing.push("no_new_privs is not set");
  const caps = getCapabilities();
  if (caps.effective | caps.permitted | caps.inheritable) missing.push("capabilities remain");
  const emptyBounding = boundingSetEmpty();
  if ((state.bounding || require) && !emptyBounding) missing.push("the bounding set is not empty");
  const claimsLandlock = "abi" in state.landlock;
  if ((claimsLandlock || require || landlockRequired) && !landlockEnforced()) {
    missing.push("Landlock is not enforced");
  }
  const [, core] = getLimit(RLIMIT_CORE);
  const [, nofile] = getLimit(RLIMIT_NOFILE);
  if (core > MONITOR_RLIMITS.core || nofile > MONITOR_RLIMITS.nofile) {
    missing.push("the resource limits are not set");
  }
  if (missing.length) {
    throw new VoltError(`The monitor is not jailed as planned: ${missing.join(", ")}`, "internal");
  }
}

/** The calling thread's seccomp mode: 0 none, 1 strict, 2 filter. */
export function seccompMode(): number {
  return libc().prctl(PR_GET_SECCOMP, 0n, 0n, 0n, 0n);
}

/** The facts of one sandboxed run, for its one-line summary. */
export interface SandboxFacts {
  /** Syscalls of the process-wide filter and of each vCPU thread's own. */
  seccomp: { syscalls: number; vcpuSyscalls?: number; log: boolean } | "off";
  state: JailState;
  revoked: boolean;
  /** Measured: the process may be dumped and ptraced by its user. */
  dumpable: boolean;
}

/**
 * The one line `--log-level info` prints about the sandbox.
 *
 * @example
 * ```ts
 * import { sandboxSummary } from "./monitor.ts";
 * sandboxSummary({
 *   seccomp: { syscalls: 55, log: false },
 *   state: { origin: 0, marks: [], landlock: { abi: 6, rules: 9 }, bounding: true },
 *   revoked: true,
 *   dumpable: false,
 * });
 * ```
 */
export function sandboxSummary(f: SandboxFacts): string {
  const { landlock } = f.state;
  const parts = [
    f.seccomp === "off"
      ? "seccomp off"
      : `seccomp ${f.seccomp.syscalls} syscalls${
        f.seccomp.vcpuSyscalls ? `, ${f.seccomp.vcpuSyscalls} on vCPU threads` : ""
      } (${f.seccomp.log ? "log" : "kill"} otherwise)`,
    "abi" in landlock
      ? `Landlock ABI ${landlock.abi} with ${landlock.rules} rules${
        landlock.scoped ? " (signals and abstract sockets scoped)" : ""
      }`
      : `Landlock ${landlock.skipped}`,
    f.state.bounding ? "no capabilities (bounding set empty)" : "no capabilities",
    "no_new_privs",
    f.dumpable ? "dumpable" : "undumpable",
    f.revoked ? "Deno: FFI only (reads revoked)" : "Deno: FFI and guest reads",
  ];
  return `Sandbox: ${parts.join(", ")}`;
}
