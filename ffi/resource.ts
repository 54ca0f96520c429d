/**
 * Resource limits and descriptor ranges (include/uapi/asm-generic/resource.h,
 * include/uapi/linux/close_range.h).
 *
 * @module
 */

/** Largest core file: 0 writes none. */
export const RLIMIT_CORE = 4;
/** One more than the highest descriptor number the process may open. */
export const RLIMIT_NOFILE = 7;
/** `RLIM_INFINITY` as a 64-bit value. */
export const RLIM_INFINITY = 0xffffffffffffffffn;

/** `struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; }`: two u64, 16 bytes. */
export const RLIMIT_STRUCT = { cur: 0, max: 8, size: 16 } as const;

/** `close_range(2)` flag: set close-on-exec instead of closing (Linux 5.11). */
export const CLOSE_RANGE_CLOEXEC = 1 << 2;
/** The highest descriptor `close_range` accepts as "to the end". */
export const CLOSE_RANGE_MAX = 0xffffffff;
