/**
 * Identity page tables for the 64-bit entry: one PML4 entry, one PDPT entry,
 * 512 two-MiB pages covering the first GiB.
 *
 * @module
 */

import type { GuestMemory } from "../../memory/guest_memory.ts";
import { PD_ADDR, PDPT_ADDR, PML4_ADDR } from "./layout.ts";

const PRESENT = 1n;
const WRITABLE = 2n;
const HUGE = 0x80n;

/**
 * Writes the tables and returns the value for CR3.
 *
 * @example
 * ```ts
 * import { GuestMemory } from "../../memory/guest_memory.ts";
 * import { writeIdentityPageTables } from "./paging.ts";
 * const cr3 = writeIdentityPageTables(GuestMemory.fromBuffer(new ArrayBuffer(1 << 20)));
 * ```
 */
export function writeIdentityPageTables(mem: GuestMemory): number {
  mem.view(PML4_ADDR, 8).setBigUint64(0, BigInt(PDPT_ADDR) | PRESENT | WRITABLE, true);
  mem.view(PDPT_ADDR, 8).setBigUint64(0, BigInt(PD_ADDR) | PRESENT | WRITABLE, true);
  const pd = mem.view(PD_ADDR, 4096);
  for (let i = 0; i < 512; i++) {
    pd.setBigUint64(i * 8, (BigInt(i) << 21n) | PRESENT | WRITABLE | HUGE, true);
  }
  return PML4_ADDR;
}

/**
 * Walks 4-level page tables to translate a virtual address, for reading the
 * instruction at a faulting RIP. Returns undefined when unmapped.
 */
export function translate(
  mem: GuestMemory,
  cr3: number,
  vaddr: bigint,
): number | undefined {
  let table = BigInt(cr3) & 0x000ffffffffff000n;
  for (let level = 3; level >= 0; level--) {
    const idx = (vaddr >> BigInt(12 + 9 * level)) & 0x1ffn;
    let entry: bigint;
    try {
      entry = mem.view(Number(table + idx * 8n), 8).getBigUint64(0, true);
    } catch {
      return undefined;
    }
    if (!(entry & PRESENT)) return undefined;
    const frame = entry & 0x000ffffffffff000n;
    if (level > 0 && level < 3 && (entry & HUGE)) {
      const mask = (1n << BigInt(12 + 9 * level)) - 1n;
      return Number((frame & ~mask) | (vaddr & mask));
    }
    table = frame;
  }
  return Number(table | (vaddr & 0xfffn));
}
