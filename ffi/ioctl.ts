/**
 * Linux `_IOC` request encoding (include/uapi/asm-generic/ioctl.h) for x86.
 *
 * @module
 */

const NRBITS = 8;
const TYPEBITS = 8;
const SIZEBITS = 14;
const NRSHIFT = 0;
const TYPESHIFT = NRSHIFT + NRBITS;
const SIZESHIFT = TYPESHIFT + TYPEBITS;
const DIRSHIFT = SIZESHIFT + SIZEBITS;

/** No data transfer. */
export const IOC_NONE = 0;
/** Userspace writes, kernel reads. */
export const IOC_WRITE = 1;
/** Kernel writes, userspace reads. */
export const IOC_READ = 2;

/**
 * Encodes an ioctl request number; `>>> 0` keeps it unsigned for `u32` FFI
 * parameters (JS bit operations are signed).
 *
 * @example
 * ```ts
 * import { ioc, IOC_NONE } from "./ioctl.ts";
 * ioc(IOC_NONE, 0xae, 0x01, 0); // KVM_CREATE_VM = 0xae01
 * ```
 */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  if (size >= 1 << SIZEBITS) throw new RangeError(`ioctl size ${size} too large`);
  return ((dir << DIRSHIFT) | (type << TYPESHIFT) | (nr << NRSHIFT) | (size << SIZESHIFT)) >>> 0;
}

/** `_IO(type, nr)`. */
export const io = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
/** `_IOR(type, nr, size)`. */
export const ior = (type: number, nr: number, size: number): number =>
  ioc(IOC_READ, type, nr, size);
/** `_IOW(type, nr, size)`. */
export const iow = (type: number, nr: number, size: number): number =>
  ioc(IOC_WRITE, type, nr, size);
/** `_IOWR(type, nr, size)`. */
export const iowr = (type: number, nr: number, size: number): number =>
  ioc(IOC_READ | IOC_WRITE, type, nr, size);
