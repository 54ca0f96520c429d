/**
 * Landlock ABI (include/uapi/linux/landlock.h). Debian 12's headers stop
 * at ABI 2; the rights added later keep the upstream bit values, each
 * noted with the ABI that introduced it, and are used only when the
 * running kernel reports that ABI.
 *
 * @module
 */

/** `landlock_create_ruleset` flag: return the highest supported ABI. */
export const LANDLOCK_CREATE_RULESET_VERSION = 1 << 0;

/** `enum landlock_rule_type`: a rule on a file hierarchy. */
export const LANDLOCK_RULE_PATH_BENEATH = 1;

/**
 * `struct landlock_ruleset_attr { __u64 handled_access_fs; __u64
 * handled_access_net; __u64 scoped; }`. The kernel takes the size we pass,
 * so passing only `handled_access_fs` leaves network and scopes unhandled
 * (allowed) on every ABI.
 */
export const RULESET_ATTR = {
  handled_access_fs: 0,
  handled_access_net: 8,
  scoped: 16,
  sizeFs: 8,
  sizeNet: 16,
  sizeScoped: 24,
} as const;

/** `struct landlock_path_beneath_attr`, packed: u64 then s32, 12 bytes. */
export const PATH_BENEATH_ATTR = { allowed_access: 0, parent_fd: 8, size: 12 } as const;

/** `LANDLOCK_ACCESS_FS_*` bits. */
export const ACCESS_FS = {
  EXECUTE: 1n << 0n,
  WRITE_FILE: 1n << 1n,
  READ_FILE: 1n << 2n,
  READ_DIR: 1n << 3n,
  REMOVE_DIR: 1n << 4n,
  REMOVE_FILE: 1n << 5n,
  MAKE_CHAR: 1n << 6n,
  MAKE_DIR: 1n << 7n,
  MAKE_REG: 1n << 8n,
  MAKE_SOCK: 1n << 9n,
  MAKE_FIFO: 1n << 10n,
  MAKE_BLOCK: 1n << 11n,
  MAKE_SYM: 1n << 12n,
  /** ABI 2. */
  REFER: 1n << 13n,
  /** ABI 3. */
  TRUNCATE: 1n << 14n,
  /** ABI 5. */
  IOCTL_DEV: 1n << 15n,
} as const;

/** `LANDLOCK_ACCESS_NET_*` bits (ABI 4). */
export const ACCESS_NET = {
  BIND_TCP: 1n << 0n,
  CONNECT_TCP: 1n << 1n,
} as const;

/** Rights that make sense on a file (not only a directory) as rule target. */
export const ACCESS_FILE = ACCESS_FS.EXECUTE | ACCESS_FS.WRITE_FILE | ACCESS_FS.READ_FILE |
  ACCESS_FS.TRUNCATE | ACCESS_FS.IOCTL_DEV;

/**
 * Every filesystem right the given ABI knows: a ruleset must handle only
 * these or `landlock_create_ruleset` answers EINVAL.
 *
 * @example
 * ```ts
 * import { fsRightsForAbi } from "./landlock.ts";
 * fsRightsForAbi(1); // 0x1fffn
 * ```
 */
export function fsRightsForAbi(abi: number): bigint {
  if (abi < 1) return 0n;
  let mask = (1n << 13n) - 1n;
  if (abi >= 2) mask |= ACCESS_FS.REFER;
  if (abi >= 3) mask |= ACCESS_FS.TRUNCATE;
  if (abi >= 5) mask |= ACCESS_FS.IOCTL_DEV;
  return mask;
}

/** Landlock syscall numbers are in ffi/syscalls.ts; ABI 4 is the first with network rights. */
export const LANDLOCK_NET_ABI = 4;

/** `LANDLOCK_SCOPE_*` bits (ABI 6): IPC the domain may not reach outside itself. */
export const SCOPE = {
  /** Connecting to an abstract unix socket created outside the domain. */
  ABSTRACT_UNIX_SOCKET: 1n << 0n,
  /** Sending a signal to a process outside the domain. */
  SIGNAL: 1n << 1n,
} as const;

/** The first ABI with scopes. */
export const LANDLOCK_SCOPE_ABI = 6;
