/**
 * The zero page (`struct boot_params`) for the Linux 64-bit boot protocol.
 *
 * @module
 */

import {
  BOOT_FLAG,
  BOOT_PARAMS,
  BOOT_PARAMS_SIZE,
  CAN_USE_HEAP,
  E820_ENTRY_SIZE,
  E820_MAX_ENTRIES,
  LOADER_TYPE_UNDEFINED,
  SETUP,
  SETUP_MAGIC,
} from "../../../ffi/bootparam.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { E820Entry } from "./e820.ts";
import { ZERO_PAGE_ADDR } from "./layout.ts";

/** What the zero page tells the kernel. */
export interface ZeroPageConfig {
  /** The bzImage's setup header bytes (from offset 0x1f1), if booting one. */
  setupHeader?: Uint8Array;
  cmdlineAddr: number;
  cmdlineSize: number;
  initrdAddr?: number;
  initrdSize?: number;
  e820: E820Entry[];
  /** The ACPI root pointer, if the VM has ACPI tables (boot protocol 2.14's field). */
  rsdpAddr?: number;
}

/**
 * Builds the zero page at {@linkcode ZERO_PAGE_ADDR} and returns its address.
 *
 * @example
 * ```ts
 * import { GuestMemory } from "../../memory/guest_memory.ts";
 * import { writeZeroPage } from "./boot_params.ts";
 * import { e820Map } from "./e820.ts";
 * const mem = GuestMemory.fromBuffer(new ArrayBuffer(4 << 20));
 * writeZeroPage(mem, { cmdlineAddr: 0x20000, cmdlineSize: 1, e820: e820Map(mem) });
 * ```
 */
export function writeZeroPage(mem: GuestMemory, cfg: ZeroPageConfig): number {
  if (cfg.e820.length > E820_MAX_ENTRIES) throw new RangeError("Too many e820 entries");
  const page = mem.bytes(ZERO_PAGE_ADDR, BOOT_PARAMS_SIZE);
  page.fill(0);
  const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
  if (cfg.setupHeader) {
    page.set(cfg.setupHeader, SETUP.setup_sects);
  } else {
    dv.setUint16(SETUP.boot_flag, BOOT_FLAG, true);
    dv.setUint32(SETUP.header, SETUP_MAGIC, true);
    // Lets a vmlinux relocate as a bzImage would.
    dv.setUint32(SETUP.kernel_alignment, 0x1000000, true);
  }
  dv.setUint8(SETUP.type_of_loader, LOADER_TYPE_UNDEFINED);
  dv.setUint8(SETUP.loadflags, dv.getUint8(SETUP.loadflags) | CAN_USE_HEAP);
  dv.setUint16(SETUP.heap_end_ptr, 0xfe00, true);
  dv.setUint32(SETUP.cmd_line_ptr, cfg.cmdlineAddr, true);
  dv.setUint32(BOOT_PARAMS.ext_cmd_line_ptr, 0, true);
  dv.setUint32(SETUP.cmdline_size, cfg.cmdlineSize, true);
  if (cfg.initrdAddr !== undefined && cfg.initrdSize) {
    dv.setUint32(SETUP.ramdisk_image, cfg.initrdAddr, true);
    dv.setUint32(SETUP.ramdisk_size, cfg.initrdSize, true);
  }
  if (cfg.rsdpAddr) dv.setBigUint64(BOOT_PARAMS.acpi_rsdp_addr, BigInt(cfg.rsdpAddr), true);
  dv.setUint8(BOOT_PARAMS.e820_entries, cfg.e820.length);
  cfg.e820.forEach((e, i) => {
    const off = BOOT_PARAMS.e820_table + i * E820_ENTRY_SIZE;
    dv.setBigUint64(off, BigInt(e.addr), true);
    dv.setBigUint64(off + 8, BigInt(e.size), true);
    dv.setUint32(off + 16, e.type, true);
  });
  return ZERO_PAGE_ADDR;
}
