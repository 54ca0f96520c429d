/**
 * `open(2)` flags beyond those in libc.ts (include/uapi/asm-generic/fcntl.h).
 *
 * @module
 */

/** Open a path without reading it: what Landlock rules take as parent_fd. */
export const O_PATH = 0o10000000;
/** Fail unless the path is a directory. */
export const O_DIRECTORY = 0o200000;
