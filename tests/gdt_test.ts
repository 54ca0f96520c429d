import assert from "node:assert/strict";
import { bootGdt, gdtEntry, segmentFromEntry, SELECTOR } from "../src/arch/x86_64/gdt.ts";
import { bootRegs, bootSregs } from "../src/arch/x86_64/regs.ts";
import { GDT_ADDR, PML4_ADDR, ZERO_PAGE_ADDR } from "../src/arch/x86_64/layout.ts";

Deno.test("descriptors encode like the kernel's GDT_ENTRY macro", () => {
  assert.equal(gdtEntry(0xa09b, 0, 0xfffff), 0x00af9b000000ffffn);
  assert.equal(gdtEntry(0xc093, 0, 0xfffff), 0x00cf93000000ffffn);
  assert.equal(gdtEntry(0x808b, 0, 0xfffff), 0x008f8b000000ffffn);
  assert.equal(gdtEntry(0xc09b, 0x12345678, 0xabcde), 0x12ca9b345678bcden);
});

Deno.test("decoded segments carry flat 4 GiB limits and the long-mode bit", () => {
  const gdt = bootGdt();
  const code64 = segmentFromEntry(gdt[SELECTOR.code64 / 8], SELECTOR.code64);
  assert.deepEqual(
    [code64.l, code64.db, code64.type, code64.s, code64.present, code64.g, code64.limit],
    [1, 0, 0xb, 1, 1, 1, 0xffffffff],
  );
  const code32 = segmentFromEntry(gdt[SELECTOR.code32 / 8], SELECTOR.code32);
  assert.deepEqual([code32.l, code32.db], [0, 1]);
  const tss = segmentFromEntry(gdt[SELECTOR.tss / 8], SELECTOR.tss);
  assert.deepEqual([tss.s, tss.type], [0, 0xb]);
});

Deno.test("64-bit entry: long mode with paging, __BOOT_CS/__BOOT_DS, RSI at the zero page", () => {
  const s = bootSregs("linux64", PML4_ADDR);
  assert.equal(s.cs.selector, 0x10);
  assert.equal(s.ds.selector, 0x18);
  assert.equal((s.cr0 & 0x80000001) >>> 0, 0x80000001);
  assert.equal(s.cr4 & 0x20, 0x20);
  assert.equal(s.efer, 0x500);
  assert.equal(s.cr3, PML4_ADDR);
  assert.equal(s.gdt.base, GDT_ADDR);
  const r = bootRegs("linux64", 0x1000000, ZERO_PAGE_ADDR);
  assert.deepEqual([r.rip, r.rsi, r.rbx, r.rflags], [0x1000000, ZERO_PAGE_ADDR, 0, 2]);
});

Deno.test("PVH entry: 32-bit protected mode, paging off, EBX at the start info", () => {
  const s = bootSregs("pvh", PML4_ADDR);
  assert.equal(s.cs.selector, 0x08);
  assert.equal(s.cs.db, 1);
  assert.equal(s.cr0 & 0x80000000, 0);
  assert.equal(s.efer, 0);
  const r = bootRegs("pvh", 0x1000, 0x6000);
  assert.deepEqual([r.rbx, r.rsi], [0x6000, 0]);
});
