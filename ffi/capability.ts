/**
 * `capget`/`capset` ABI (include/uapi/linux/capability.h).
 *
 * @module
 */

/** The 64-bit capability ABI: two `__user_cap_data_struct` per call. */
export const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
/** `_LINUX_CAPABILITY_U32S_3`: data structs per call in version 3. */
export const LINUX_CAPABILITY_U32S_3 = 2;

/** `struct __user_cap_header_struct { __u32 version; int pid; }`. */
export const CAP_HEADER = { version: 0, pid: 4, size: 8 } as const;
/** `struct __user_cap_data_struct { __u32 effective, permitted, inheritable; }`. */
export const CAP_DATA = { effective: 0, permitted: 4, inheritable: 8, size: 12 } as const;

/** Needed to shrink the bounding set. */
export const CAP_SETPCAP = 8;
/** Mount, namespaces and most other administration. */
export const CAP_SYS_ADMIN = 21;
/**
 * `CAP_LAST_CAP` of the headers this was written against; the running
 * kernel's value is in /proc/sys/kernel/cap_last_cap and wins.
 */
export const CAP_LAST_CAP = 40;
