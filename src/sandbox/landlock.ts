/**
 * Landlock: restrict which files the calling thread (and whatever it
 * executes next) can open. Rights follow the running kernel's ABI; network
 * rights (ABI 4 and later) stay unhandled, so allowed, unless asked for.
 *
 * `landlock_restrict_self` covers the calling thread only: Deno's other
 * threads (the pool that serves async file reads) escape it. Apply it in
 * the jail before `execve` (see jail.ts) to cover the whole monitor.
 *
 * @module
 */

import { errnoName } from "../../ffi/errno.ts";
import { O_DIRECTORY, O_PATH } from "../../ffi/fcntl.ts";
import {
  ACCESS_FILE,
  ACCESS_FS,
  ACCESS_NET,
  fsRightsForAbi,
  LANDLOCK_CREATE_RULESET_VERSION,
  LANDLOCK_NET_ABI,
  LANDLOCK_RULE_PATH_BENEATH,
  LANDLOCK_SCOPE_ABI,
  PATH_BENEATH_ATTR,
  RULESET_ATTR,
  SCOPE,
} from "../../ffi/landlock.ts";
import { cstr, errno, libc, O_CLOEXEC } from "../../ffi/libc.ts";
import { PR_SET_NO_NEW_PRIVS } from "../../ffi/prctl.ts";
import { SYSCALLS } from "../../ffi/syscalls.ts";
import { VoltError } from "../errors.ts";

const ENOSYS = 38;
const EOPNOTSUPP = 95;

/**
 * Whether `path` is a directory, asked of the kernel: Deno refuses to stat
 * device files such as /dev/kvm without --allow-all.
 */
function isDirectory(path: string): boolean {
  return opens(path, O_DIRECTORY);
}

function opens(path: string, flags: number): boolean {
  const l = libc();
  const fd = l.open(cstr(path), O_PATH | O_CLOEXEC | flags, 0);
  if (fd < 0) return false;
  l.close(fd);
  return true;
}

/**
 * Whether `path` exists, asked of the kernel (see {@linkcode isDirectory}).
 *
 * @example
 * ```ts
 * import { pathExists } from "./landlock.ts";
 * pathExists("/"); // true
 * ```
 */
export function pathExists(path: string): boolean {
  return opens(path, 0);
}

const EACCES = 13;

/**
 * Whether a Landlock domain restricts this thread, by a probe that must be
 * denied: listing `/`, which no rule of volt's jail covers. Without
 * Landlock, root's directory opens for anyone.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { landlockEnforced } from "./landlock.ts";
 * assert.equal(landlockEnforced(), false); // the test runner is not jailed
 * ```
 */
export function landlockEnforced(probe = "/"): boolean {
  const l = libc();
  const fd = l.open(cstr(probe), O_DIRECTORY | O_CLOEXEC, 0);
  if (fd >= 0) {
    l.close(fd);
    return false;
  }
  return errno() === EACCES;
}

/** How much of a path a rule grants. */
export type LandlockAccess = "read" | "readwrite" | "exec-read";

/** One rule: `path` and everything beneath it. */
export interface LandlockRule {
  /** A directory (covers its tree) or a single file. */
  path: string;
  /** What the rule grants. */
  access: LandlockAccess;
}

/** Landlock cannot be used here, and why (one line). */
export interface LandlockUnsupported {
  /** E.g. "Landlock is not enabled at boot (EOPNOTSUPP)". */
  unsupported: string;
}

/**
 * The highest Landlock ABI of the running kernel, or why there is none.
 *
 * @example
 * ```ts
 * import { landlockAbi } from "./landlock.ts";
 * const abi = landlockAbi();
 * console.log(typeof abi === "number" ? `ABI ${abi}` : abi.unsupported);
 * ```
 */
export function landlockAbi(): number | LandlockUnsupported {
  const r = libc().syscall3(
    BigInt(SYSCALLS.landlock_create_ruleset),
    0n,
    0n,
    BigInt(LANDLOCK_CREATE_RULESET_VERSION),
  );
  if (r >= 0n) return Number(r);
  const e = errno();
  if (e === ENOSYS) return { unsupported: "Landlock is not in this kernel (ENOSYS)" };
  if (e === EOPNOTSUPP) {
    return { unsupported: "Landlock is not enabled at boot (EOPNOTSUPP): add it to lsm=" };
  }
  return { unsupported: `Landlock ABI query failed: ${errnoName(e)}` };
}

/**
 * The rights an access kind grants under `abi`.
 *
 * @example
 * ```ts
 * import { accessRights } from "./landlock.ts";
 * accessRights("read", 7); // READ_FILE | READ_DIR = 0xcn
 * ```
 */
export function accessRights(access: LandlockAccess, abi: number): bigint {
  const read = ACCESS_FS.READ_FILE | ACCESS_FS.READ_DIR;
  const all = fsRightsForAbi(abi);
  switch (access) {
    case "read":
      return read & all;
    case "exec-read":
      return (read | ACCESS_FS.EXECUTE) & all;
    case "readwrite":
      return all & ~ACCESS_FS.EXECUTE;
  }
}

/** Options of a {@linkcode Ruleset}. */
export interface RulesetOptions {
  /** Also deny TCP bind and connect (ABI 4 and later; ignored before). */
  denyTcp?: boolean;
  /**
   * Also deny signals to processes outside the domain and connections to
   * abstract unix sockets made outside it (ABI 6 and later; ignored before).
   */
  scoped?: boolean;
}

/**
 * A Landlock ruleset under construction: every filesystem right of the
 * ABI is handled (denied unless a rule grants it).
 *
 * @example
 * ```ts ignore
 * import { Ruleset } from "./landlock.ts";
 * const rs = new Ruleset(7);
 * rs.addPathRule("/usr", "exec-read");
 * rs.restrictSelf(); // this thread only
 * ```
 */
export class Ruleset {
  /** The ABI the rights were chosen for. */
  readonly abi: number;
  /** Rights the ruleset denies unless a rule grants them. */
  readonly handledFs: bigint;
  /** `LANDLOCK_SCOPE_*` bits in force (0n before ABI 6 or when not asked). */
  readonly scoped: bigint;
  #fd: number;

  /** Creates the ruleset for `abi`; throws a one-line error if the kernel refuses. */
  constructor(abi: number, opts: RulesetOptions = {}) {
    this.abi = abi;
    this.handledFs = fsRightsForAbi(abi);
    const net = opts.denyTcp && abi >= LANDLOCK_NET_ABI;
    const scoped = opts.scoped && abi >= LANDLOCK_SCOPE_ABI;
    this.scoped = scoped ? SCOPE.ABSTRACT_UNIX_SOCKET | SCOPE.SIGNAL : 0n;
    const attr = new Uint8Array(
      scoped ? RULESET_ATTR.sizeScoped : net ? RULESET_ATTR.sizeNet : RULESET_ATTR.sizeFs,
    );
    const v = new DataView(attr.buffer);
    if (scoped) v.setBigUint64(RULESET_ATTR.scoped, this.scoped, true);
    v.setBigUint64(RULESET_ATTR.handled_access_fs, this.handledFs, true);
    if (net) {
      v.setBigUint64(
        RULESET_ATTR.handled_access_net,
        ACCESS_NET.BIND_TCP | ACCESS_NET.CONNECT_TCP,
        true,
      );
    }
    const r = libc().syscall3_buf1(
      BigInt(SYSCALLS.landlock_create_ruleset),
      attr,
      BigInt(attr.length),
      0n,
    );
    if (r < 0n) {
      throw new VoltError(
        `Creating the Landlock ruleset failed: ${errnoName(errno())}`,
        "internal",
      );
    }
    this.#fd = Number(r);
  }

  /**
   * Grants `rights` (an access kind or a raw mask) on `path` and beneath;
   * rights that only mean something for directories are left out when
   * `path` is a file, where the kernel would refuse them.
   */
  addPathRule(path: string, rights: LandlockAccess | bigint): void {
    let mask = typeof rights === "bigint" ? rights : accessRights(rights, this.abi);
    mask &= this.handledFs;
    const l = libc();
    const fd = l.open(cstr(path), O_PATH | O_CLOEXEC, 0);
    if (fd < 0) {
      throw new VoltError(`Landlock rule path ${path} cannot be opened: ${errnoName(errno())}`);
    }
    try {
      if (!isDirectory(path)) mask &= ACCESS_FILE;
      const attr = new Uint8Array(PATH_BENEATH_ATTR.size);
      const v = new DataView(attr.buffer);
      v.setBigUint64(PATH_BENEATH_ATTR.allowed_access, mask, true);
      v.setInt32(PATH_BENEATH_ATTR.parent_fd, fd, true);
      const r = l.syscall4_buf3(
        BigInt(SYSCALLS.landlock_add_rule),
        BigInt(this.#fd),
        BigInt(LANDLOCK_RULE_PATH_BENEATH),
        attr,
        0n,
      );
      if (r < 0n) {
        throw new VoltError(
          `Adding the Landlock rule for ${path} failed: ${errnoName(errno())}`,
          "internal",
        );
      }
    } finally {
      l.close(fd);
    }
  }

  /**
   * Sets no_new_privs (Landlock requires it without CAP_SYS_ADMIN) and
   * enforces the ruleset on the calling thread, then closes it.
   */
  restrictSelf(): void {
    const l = libc();
    if (l.prctl(PR_SET_NO_NEW_PRIVS, 1n, 0n, 0n, 0n) !== 0) {
      throw new VoltError(`Setting no_new_privs failed: ${errnoName(errno())}`, "internal");
    }
    const r = l.syscall3(BigInt(SYSCALLS.landlock_restrict_self), BigInt(this.#fd), 0n, 0n);
    const e = errno();
    this.close();
    if (r < 0n) {
      throw new VoltError(`Enforcing the Landlock ruleset failed: ${errnoName(e)}`, "internal");
    }
  }

  /** Releases the ruleset's descriptor (enforcement keeps its own reference). */
  close(): void {
    if (this.#fd >= 0) libc().close(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Restricts the calling thread (and every program it executes) to the
 * given paths. On a kernel without Landlock nothing happens and the reason
 * comes back, for the caller to log on one line.
 *
 * @example
 * ```ts ignore
 * import { applyLandlock } from "./landlock.ts";
 * const r = applyLandlock([{ path: "/usr", access: "exec-read" }]);
 * if ("unsupported" in r) console.error(r.unsupported);
 * ```
 */
export function applyLandlock(
  rules: readonly LandlockRule[],
  opts: RulesetOptions = {},
): { abi: number; scoped: boolean } | LandlockUnsupported {
  const abi = landlockAbi();
  if (typeof abi !== "number") return abi;
  const rs = new Ruleset(abi, opts);
  try {
    for (const r of rules) rs.addPathRule(r.path, r.access);
  } catch (e) {
    rs.close();
    throw e;
  }
  rs.restrictSelf();
  return { abi, scoped: rs.scoped !== 0n };
}
