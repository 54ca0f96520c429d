/**
 * `open(2)` flags beyond those in libc.ts (include/uapi/asm-generic/fcntl.h).
 *
 * @module
 */

/** Open a path without reading it: what Landlock rules take as parent_fd. */
export const O_PATH = 0o10000000;
/** Fail unless the path is a directory. */
export const O_DIRECTORY = 0o200000;
/** Open for writing only. */
export const O_WRONLY = 0o1;
/** Create the file if it does not exist. */
export const O_CREAT = 0o100;
/** Truncate an existing file to length 0. */
export const O_TRUNC = 0o1000;
/** `O_APPEND` (asm-generic/fcntl.h). */
export const O_APPEND = 0o2000;
/** `fcntl(2)`: read the file status flags. */
export const F_GETFL = 3;
/** `fcntl(2)`: set the file status flags. */
export const F_SETFL = 4;
/** `lseek(2)`: the next offset holding data (a sparse file's next extent). */
export const SEEK_DATA = 3;
/** `lseek(2)`: the next hole (or the end). */
export const SEEK_HOLE = 4;
