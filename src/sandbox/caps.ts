/**
 * Capabilities: drop all of them (bounding, ambient, then effective,
 * permitted and inheritable) and read each thread's security state from
 * /proc.
 *
 * Every call here changes the calling thread only. Deno runs several
 * threads before user code, so a monitor that drops capabilities in place
 * leaves its other threads privileged: drop them in the jail, before the
 * `execve` that starts the monitor (see jail.ts).
 *
 * @module
 */

import {
  CAP_DATA,
  CAP_HEADER,
  CAP_SETPCAP,
  LINUX_CAPABILITY_U32S_3,
  LINUX_CAPABILITY_VERSION_3,
} from "../../ffi/capability.ts";
import { errnoName } from "../../ffi/errno.ts";
import { errno, libc } from "../../ffi/libc.ts";
import {
  PR_CAP_AMBIENT,
  PR_CAP_AMBIENT_CLEAR_ALL,
  PR_CAPBSET_DROP,
  PR_CAPBSET_READ,
} from "../../ffi/prctl.ts";
import { VoltError } from "../errors.ts";

const EINVAL = 22;

/**
 * The highest capability number of the running kernel: from
 * /proc/sys/kernel/cap_last_cap, else probed with PR_CAPBSET_READ (which
 * answers EINVAL past the last one).
 *
 * @example
 * ```ts
 * import { capLastCap } from "./caps.ts";
 * console.log(capLastCap()); // 40 on Linux 5.9 and later
 * ```
 */
export function capLastCap(): number {
  try {
    const n = Number(Deno.readTextFileSync("/proc/sys/kernel/cap_last_cap").trim());
    if (Number.isInteger(n) && n > 0) return n;
  } catch { /* /proc may be hidden: probe instead */ }
  let cap = 0;
  while (libc().prctl(PR_CAPBSET_READ, BigInt(cap + 1), 0n, 0n, 0n) >= 0) cap++;
  return cap;
}

function capHeader(): Uint8Array<ArrayBuffer> {
  const h = new Uint8Array(CAP_HEADER.size);
  const v = new DataView(h.buffer);
  v.setUint32(CAP_HEADER.version, LINUX_CAPABILITY_VERSION_3, true);
  // pid 0 means the calling thread.
  v.setInt32(CAP_HEADER.pid, 0, true);
  return h;
}

/** The calling thread's capability sets as 64-bit masks. */
export interface CapSets {
  /** Effective. */
  effective: bigint;
  /** Permitted. */
  permitted: bigint;
  /** Inheritable. */
  inheritable: bigint;
}

/**
 * Reads the calling thread's capability sets with `capget(2)`.
 *
 * @example
 * ```ts
 * import { getCapabilities } from "./caps.ts";
 * console.log(getCapabilities().effective.toString(16));
 * ```
 */
export function getCapabilities(): CapSets {
  const data = new Uint8Array(CAP_DATA.size * LINUX_CAPABILITY_U32S_3);
  if (libc().capget(capHeader(), data) !== 0) {
    throw new VoltError(`Reading capabilities failed: ${errnoName(errno())}`, "internal");
  }
  const v = new DataView(data.buffer);
  // Version 3 splits each 64-bit set over two structs: low word first.
  const get = (off: number) =>
    BigInt(v.getUint32(off, true)) | (BigInt(v.getUint32(CAP_DATA.size + off, true)) << 32n);
  return {
    effective: get(CAP_DATA.effective),
    permitted: get(CAP_DATA.permitted),
    inheritable: get(CAP_DATA.inheritable),
  };
}

/**
 * Empties the calling thread's bounding set, so no later `execve` (of a
 * setuid or file-capability binary, or of anything as root) can regain a
 * capability. Needs CAP_SETPCAP; returns false without it, the set
 * untouched (no_new_privs still blocks those gains).
 *
 * @example
 * ```ts ignore
 * import { dropBoundingSet } from "./caps.ts";
 * dropBoundingSet();
 * ```
 */
export function dropBoundingSet(): boolean {
  if (!(getCapabilities().effective & (1n << BigInt(CAP_SETPCAP)))) return false;
  const l = libc();
  const last = capLastCap();
  for (let cap = 0; cap <= last; cap++) {
    if (l.prctl(PR_CAPBSET_DROP, BigInt(cap), 0n, 0n, 0n) !== 0) {
      const e = errno();
      // A kernel older than /proc claims knows fewer: nothing left to drop.
      if (e === EINVAL) break;
      throw new VoltError(
        `Dropping capability ${cap} from the bounding set failed: ${errnoName(e)}`,
        "internal",
      );
    }
  }
  return true;
}

/**
 * Empties the calling thread's ambient set.
 *
 * @example
 * ```ts ignore
 * import { clearAmbient } from "./caps.ts";
 * clearAmbient();
 * ```
 */
export function clearAmbient(): void {
  if (libc().prctl(PR_CAP_AMBIENT, BigInt(PR_CAP_AMBIENT_CLEAR_ALL), 0n, 0n, 0n) !== 0) {
    throw new VoltError(`Clearing ambient capabilities failed: ${errnoName(errno())}`, "internal");
  }
}

/**
 * Sets the calling thread's effective, permitted and inheritable sets to
 * empty with `capset(2)`: irreversible.
 *
 * @example
 * ```ts ignore
 * import { clearCapabilities } from "./caps.ts";
 * clearCapabilities();
 * ```
 */
export function clearCapabilities(): void {
  const data = new Uint8Array(CAP_DATA.size * LINUX_CAPABILITY_U32S_3);
  if (libc().capset(capHeader(), data) !== 0) {
    throw new VoltError(`Clearing capabilities failed: ${errnoName(errno())}`, "internal");
  }
}

/** What {@linkcode dropCapabilities} did. */
export interface DropResult {
  /** The bounding set was emptied (false: no CAP_SETPCAP, left as is). */
  bounding: boolean;
  /** The highest capability number of this kernel. */
  lastCap: number;
}

/**
 * Drops every capability of the calling thread, in the only order that
 * works: bounding set first (it needs CAP_SETPCAP), then ambient, then
 * effective/permitted/inheritable.
 *
 * @example
 * ```ts ignore
 * import { dropCapabilities } from "./caps.ts";
 * dropCapabilities(); // { bounding: true, lastCap: 40 } as root
 * ```
 */
export function dropCapabilities(): DropResult {
  const lastCap = capLastCap();
  const bounding = dropBoundingSet();
  clearAmbient();
  clearCapabilities();
  return { bounding, lastCap };
}

/** Security state of one thread, from /proc/PID/task/TID/status. */
export interface ThreadStatus {
  /** Thread id. */
  tid: number;
  /** Thread name (`Name:`). */
  name: string;
  /** Capability sets. */
  capInh: bigint;
  /** Permitted. */
  capPrm: bigint;
  /** Effective. */
  capEff: bigint;
  /** Bounding. */
  capBnd: bigint;
  /** Ambient. */
  capAmb: bigint;
  /** `NoNewPrivs:` 0 or 1. */
  noNewPrivs: number;
  /** `Seccomp:` 0 none, 1 strict, 2 filter. */
  seccomp: number;
  /** `Seccomp_filters:` filters stacked on the thread (Linux 5.9; 0 before). */
  seccompFilters: number;
}

/**
 * Parses the fields of a status file this module reports.
 *
 * @example
 * ```ts
 * import { parseStatus } from "./caps.ts";
 * parseStatus("Name:\tdeno\nCapEff:\t0000000000000000\nSeccomp:\t2\n").seccomp; // 2
 * ```
 */
export function parseStatus(text: string): Omit<ThreadStatus, "tid"> {
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) fields.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const hex = (k: string) => BigInt(`0x${fields.get(k) ?? "0"}`);
  const num = (k: string) => Number(fields.get(k) ?? "0");
  return {
    name: fields.get("Name") ?? "",
    capInh: hex("CapInh"),
    capPrm: hex("CapPrm"),
    capEff: hex("CapEff"),
    capBnd: hex("CapBnd"),
    capAmb: hex("CapAmb"),
    noNewPrivs: num("NoNewPrivs"),
    seccomp: num("Seccomp"),
    seccompFilters: num("Seccomp_filters"),
  };
}

/**
 * The status of every thread of a process (default: this one). A thread
 * that exits while being read is skipped.
 *
 * @example
 * ```ts
 * import { readThreadStatus } from "./caps.ts";
 * for (const t of readThreadStatus()) console.log(t.tid, t.name, t.capEff.toString(16));
 * ```
 */
export function readThreadStatus(pid: number | "self" = "self"): ThreadStatus[] {
  const dir = `/proc/${pid}/task`;
  const out: ThreadStatus[] = [];
  for (const e of Deno.readDirSync(dir)) {
    try {
      out.push({
        tid: Number(e.name),
        ...parseStatus(Deno.readTextFileSync(`${dir}/${e.name}/status`)),
      });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return out.sort((a, b) => a.tid - b.tid);
}
