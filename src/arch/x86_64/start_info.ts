/**
 * The PVH `hvm_start_info` block a kernel entered through its
 * XEN_ELFNOTE_PHYS32_ENTRY reads (pointer in EBX).
 *
 * @module
 */

import {
  HVM_MEMMAP_ENTRY_SIZE,
  HVM_MODLIST_ENTRY_SIZE,
  HVM_START_INFO,
  HVM_START_MAGIC,
} from "../../../ffi/bootparam.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { E820Entry } from "./e820.ts";
import { PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR } from "./layout.ts";

/** What the start info tells the kernel. */
export interface StartInfoConfig {
  cmdlineAddr: number;
  initrdAddr?: number;
  initrdSize?: number;
  e820: E820Entry[];
  /** The ACPI root pointer, if the VM has ACPI tables. */
  rsdpAddr?: number;
}

/**
 * Writes the start info, memory map and module list; returns the start-info
 * address for EBX.
 *
 * @example
 * ```ts
 * import { GuestMemory } from "../../memory/guest_memory.ts";
 * import { writeStartInfo } from "./start_info.ts";
 * import { e820Map } from "./e820.ts";
 * const mem = GuestMemory.fromBuffer(new ArrayBuffer(4 << 20));
 * writeStartInfo(mem, { cmdlineAddr: 0x20000, e820: e820Map(mem) });
 * ```
 */
export function writeStartInfo(mem: GuestMemory, cfg: StartInfoConfig): number {
  const maxEntries = (PVH_MODLIST_ADDR - PVH_MEMMAP_ADDR) / HVM_MEMMAP_ENTRY_SIZE;
  if (cfg.e820.length > maxEntries) throw new RangeError("Too many memory map entries");
  const info = mem.view(PVH_INFO_ADDR, HVM_START_INFO.size);
  for (let i = 0; i < HVM_START_INFO.size; i++) info.setUint8(i, 0);
  info.setUint32(HVM_START_INFO.magic, HVM_START_MAGIC, true);
  info.setUint32(HVM_START_INFO.version, 1, true);
  if (cfg.rsdpAddr) info.setBigUint64(HVM_START_INFO.rsdp_paddr, BigInt(cfg.rsdpAddr), true);
  info.setBigUint64(HVM_START_INFO.cmdline_paddr, BigInt(cfg.cmdlineAddr), true);
  info.setBigUint64(HVM_START_INFO.memmap_paddr, BigInt(PVH_MEMMAP_ADDR), true);
  info.setUint32(HVM_START_INFO.memmap_entries, cfg.e820.length, true);
  const map = mem.view(PVH_MEMMAP_ADDR, cfg.e820.length * HVM_MEMMAP_ENTRY_SIZE);
  cfg.e820.forEach((e, i) => {
    const off = i * HVM_MEMMAP_ENTRY_SIZE;
    map.setBigUint64(off, BigInt(e.addr), true);
    map.setBigUint64(off + 8, BigInt(e.size), true);
    map.setUint32(off + 16, e.type, true);
    map.setUint32(off + 20, 0, true);
  });
  if (cfg.initrdAddr !== undefined && cfg.initrdSize) {
    const mod = mem.view(PVH_MODLIST_ADDR, HVM_MODLIST_ENTRY_SIZE);
    mod.setBigUint64(0, BigInt(cfg.initrdAddr), true);
    mod.setBigUint64(8, BigInt(cfg.initrdSize), true);
    mod.setBigUint64(16, 0n, true);
    mod.setBigUint64(24, 0n, true);
    info.setUint32(HVM_START_INFO.nr_modules, 1, true);
    info.setBigUint64(HVM_START_INFO.modlist_paddr, BigInt(PVH_MODLIST_ADDR), true);
  }
  return PVH_INFO_ADDR;
}
