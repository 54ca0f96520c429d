/**
 * What the jailed monitor inherits as a process: its environment, its
 * descriptors, its resource limits and whether it can be dumped. The jail
 * narrows each before `execve`; the monitor checks them after.
 *
 * @module
 */

import { errnoName } from "../../ffi/errno.ts";
import { errno, libc } from "../../ffi/libc.ts";
import { PR_GET_DUMPABLE, PR_SET_DUMPABLE } from "../../ffi/prctl.ts";
import {
  CLOSE_RANGE_CLOEXEC,
  CLOSE_RANGE_MAX,
  RLIMIT_CORE,
  RLIMIT_NOFILE,
  RLIMIT_STRUCT,
} from "../../ffi/resource.ts";
import { SYSCALLS } from "../../ffi/syscalls.ts";
import { VoltError } from "../errors.ts";

/**
 * Environment variables the jailed monitor keeps, when set: Deno's cache
 * and colour choice. Everything else (tokens, proxies, `LD_*`, the
 * caller's `PATH`) stays outside.
 */
export const KEPT_ENV = ["DENO_DIR", "NO_COLOR"] as const;

/**
 * The jailed monitor's environment: {@linkcode KEPT_ENV} from `env`, with
 * `DENO_DIR` made explicit (Deno would otherwise derive it from `HOME`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { monitorEnv } from "./process.ts";
 * const env = monitorEnv({ HOME: "/root", AWS_SECRET_ACCESS_KEY: "x", NO_COLOR: "1" }, "/root/.cache/deno");
 * assert.deepEqual(env, { DENO_DIR: "/root/.cache/deno", NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" });
 * ```
 */
export function monitorEnv(
  env: Readonly<Record<string, string>>,
  denoDir: string,
): Record<string, string> {
  const out: Record<string, string> = { DENO_DIR: denoDir };
  for (const k of KEPT_ENV) if (k !== "DENO_DIR" && env[k] !== undefined) out[k] = env[k];
  out.DENO_NO_UPDATE_CHECK = "1";
  return out;
}

/** The limits the jail sets, soft and hard alike: a monitor without capabilities cannot raise them. */
export const MONITOR_RLIMITS = {
  /** No core file: guest memory and the monitor's heap stay on the host. */
  core: 0n,
  /** Deno, the VM, its vCPUs and a few devices use about 40; a leak stops here. */
  nofile: 1024n,
} as const;

function rlimitBuf(cur: bigint, max: bigint): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(RLIMIT_STRUCT.size);
  const v = new DataView(b.buffer);
  v.setBigUint64(RLIMIT_STRUCT.cur, cur, true);
  v.setBigUint64(RLIMIT_STRUCT.max, max, true);
  return b;
}

/**
 * A resource limit of this process, as `[soft, hard]`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getLimit } from "./process.ts";
 * import { RLIMIT_NOFILE } from "../../ffi/resource.ts";
 * const [soft, hard] = getLimit(RLIMIT_NOFILE);
 * assert.ok(soft <= hard);
 * ```
 */
export function getLimit(resource: number): [bigint, bigint] {
  const b = rlimitBuf(0n, 0n);
  if (libc().getrlimit(resource, b) !== 0) {
    throw new VoltError(`Reading resource limit ${resource} failed: ${errnoName(errno())}`);
  }
  const v = new DataView(b.buffer);
  return [v.getBigUint64(RLIMIT_STRUCT.cur, true), v.getBigUint64(RLIMIT_STRUCT.max, true)];
}

function setLimit(resource: number, value: bigint, name: string): void {
  // Never raise: a caller's lower limit stands.
  const [, hard] = getLimit(resource);
  const v = value < hard ? value : hard;
  if (libc().setrlimit(resource, rlimitBuf(v, v)) !== 0) {
    throw new VoltError(`Setting the ${name} limit failed: ${errnoName(errno())}`, "internal");
  }
}

/**
 * Lowers the core-size and open-file limits to {@linkcode MONITOR_RLIMITS},
 * soft and hard. Inherited across `execve`. No process-count limit:
 * RLIMIT_NPROC counts every process of the user, not this one's threads,
 * and does not bind root; seccomp allows thread creation only.
 */
export function limitResources(): void {
  setLimit(RLIMIT_CORE, MONITOR_RLIMITS.core, "core size");
  setLimit(RLIMIT_NOFILE, MONITOR_RLIMITS.nofile, "open files");
}

/**
 * Marks every descriptor from 3 up close-on-exec, except `keep`: what the
 * caller left open (a shell's redirections, a parent's pipes) does not
 * reach the monitor.
 */
export function closeOnExecExcept(keep: readonly number[]): void {
  const l = libc();
  const kept = [...new Set(keep.filter((fd) => fd >= 3))].sort((a, b) => a - b);
  let from = 3;
  for (const fd of [...kept, CLOSE_RANGE_MAX + 1]) {
    if (fd > from) {
      const r = l.syscall3(
        BigInt(SYSCALLS.close_range),
        BigInt(from),
        BigInt(Math.min(fd - 1, CLOSE_RANGE_MAX)),
        BigInt(CLOSE_RANGE_CLOEXEC),
      );
      if (r !== 0n) {
        throw new VoltError(
          `Marking inherited descriptors close-on-exec failed: ${errnoName(errno())}`,
          "internal",
        );
      }
    }
    from = fd + 1;
  }
}

/**
 * Makes the process not dumpable: no core file, no ptrace attach by the
 * same user, its /proc files owned by root. `execve` resets the flag, so
 * the monitor sets it itself.
 */
export function makeUndumpable(): void {
  if (libc().prctl(PR_SET_DUMPABLE, 0n, 0n, 0n, 0n) !== 0) {
    throw new VoltError(`Clearing the dumpable flag failed: ${errnoName(errno())}`, "internal");
  }
}

/** True when the process may be dumped. */
export function dumpable(): boolean {
  return libc().prctl(PR_GET_DUMPABLE, 0n, 0n, 0n, 0n) !== 0;
}
