/**
 * bzImage parsing (Linux boot protocol ≥ 2.06 with the 64-bit entry).
 *
 * @module
 */

import { BOOT_FLAG, LOADED_HIGH, SETUP, SETUP_MAGIC, XLF_KERNEL_64 } from "../../ffi/bootparam.ts";
import { VoltError } from "../errors.ts";
import type { Image } from "./image.ts";

/** Offset of `syssize` (protected-mode size in 16-byte units). */
const SYSSIZE = 0x1f4;
/** Lowest protocol with cmdline_size and the fields we read. */
export const MIN_BOOT_PROTOCOL = 0x206;
/** Where the 64-bit entry sits past the protected-mode load address. */
export const ENTRY_64_OFFSET = 0x200;

/** What the loader needs from a bzImage. */
export interface BzImage {
  /** Boot protocol version, e.g. 0x20f. */
  version: number;
  /** The setup header, from 0x1f1, as the zero page carries it. */
  setupHeader: Uint8Array;
  /** File offset and length of the protected-mode kernel. */
  pmOffset: number;
  pmSize: number;
  initrdAddrMax: number;
  cmdlineSize: number;
  /** Memory the kernel needs from its load address while booting. */
  initSize: number;
  prefAddress: number;
}

/**
 * True when `head` (at least 0x206 bytes) carries a setup header.
 *
 * @example
 * ```ts
 * import { isBzImage } from "./bzimage.ts";
 * isBzImage(new Uint8Array(0x206)); // false: no "HdrS"
 * ```
 */
export function isBzImage(head: Uint8Array): boolean {
  if (head.length < SETUP.version) return false;
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return dv.getUint32(SETUP.header, true) === SETUP_MAGIC;
}

/**
 * Parses and validates the setup header.
 *
 * @example
 * ```ts ignore
 * import { openImage } from "./image.ts";
 * import { parseBzImage } from "./bzimage.ts";
 * parseBzImage(openImage("/boot/vmlinuz", "Kernel")).version.toString(16); // "20f"
 * ```
 */
export function parseBzImage(img: Image): BzImage {
  const bad = (why: string) => new VoltError(`${img.name} is not a usable bzImage: ${why}`);
  const headLen = SETUP.init_size + 4;
  if (img.size < headLen) throw new VoltError(`${img.name} is truncated`);
  const head = new Uint8Array(headLen);
  img.readAt(0, head);
  const dv = new DataView(head.buffer);
  if (dv.getUint32(SETUP.header, true) !== SETUP_MAGIC) throw bad("no setup header");
  if (dv.getUint16(SETUP.boot_flag, true) !== BOOT_FLAG) throw bad("bad boot flag");
  const version = dv.getUint16(SETUP.version, true);
  if (version < MIN_BOOT_PROTOCOL) {
    throw bad(
      `boot protocol ${(version >> 8)}.${
        (version & 0xff).toString().padStart(2, "0")
      } is older than 2.06`,
    );
  }
  if (!(dv.getUint8(SETUP.loadflags) & LOADED_HIGH)) throw bad("not a high-loading kernel");
  if (!(dv.getUint16(SETUP.xloadflags, true) & XLF_KERNEL_64)) throw bad("no 64-bit entry point");
  // 0 means 4 (boot.rst); at most 255, so the offset stays below 128 KiB.
  const setupSects = dv.getUint8(SETUP.setup_sects) || 4;
  const pmOffset = (setupSects + 1) * 512;
  if (pmOffset >= img.size) {
    throw new VoltError(
      `${img.name} is truncated: its ${setupSects} setup sectors end at 0x${
        pmOffset.toString(16)
      }, past its ${img.size} bytes`,
    );
  }
  // A u32 times 16: below 2^36, exact as a Number.
  const syssize = dv.getUint32(SYSSIZE, true) * 16;
  if (img.size - pmOffset < syssize) throw new VoltError(`${img.name} is truncated`);
  const prefAddress = dv.getBigUint64(SETUP.pref_address, true);
  // x86-64 physical addresses have at most 52 bits; below 2^53 Numbers are exact.
  if (prefAddress >= 1n << 52n) {
    throw bad(`pref_address 0x${prefAddress.toString(16)} is not a physical address`);
  }
  const headerEnd = SETUP.jump + 2 + dv.getUint8(SETUP.jump + 1);
  return {
    version,
    setupHeader: head.slice(SETUP.setup_sects, Math.min(headerEnd, headLen)),
    pmOffset,
    pmSize: img.size - pmOffset,
    initrdAddrMax: dv.getUint32(SETUP.initrd_addr_max, true),
    cmdlineSize: dv.getUint32(SETUP.cmdline_size, true),
    initSize: dv.getUint32(SETUP.init_size, true),
    prefAddress: Number(prefAddress),
  };
}
