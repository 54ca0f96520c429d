/**
 * The guest's physical memory map, as both boot paths report it.
 *
 * @module
 */

import { E820_RAM, E820_RESERVED } from "../../../ffi/bootparam.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { EBDA_START, HIMEM_START } from "./layout.ts";

/** One e820 range. */
export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/**
 * RAM below the EBDA, the legacy hole reserved up to 1 MiB, then every RAM
 * region from 1 MiB (split around the MMIO gap).
 *
 * @example
 * ```ts
 * import { GuestMemory } from "../../memory/guest_memory.ts";
 * import { e820Map } from "./e820.ts";
 * e820Map(GuestMemory.fromBuffer(new ArrayBuffer(64 << 20))).length; // 3
 * ```
 */
export function e820Map(mem: GuestMemory): E820Entry[] {
  const map: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: HIMEM_START - EBDA_START, type: E820_RESERVED },
  ];
  for (const r of mem.regions) {
    const start = Math.max(r.guestAddr, HIMEM_START);
    const end = r.guestAddr + r.size;
    if (end > start) map.push({ addr: start, size: end - start, type: E820_RAM });
  }
  return map;
}
