import assert from "node:assert/strict";
import { GuestMemory, memoryRegions } from "../src/memory/guest_memory.ts";
import { translate, writeIdentityPageTables } from "../src/arch/x86_64/paging.ts";
import { e820Map } from "../src/arch/x86_64/e820.ts";
import { E820_RAM, E820_RESERVED } from "../ffi/bootparam.ts";

Deno.test("RAM above the MMIO gap start moves to 4 GiB", () => {
  assert.deepEqual(memoryRegions(128 << 20), [{ guestAddr: 0, size: 128 << 20, hostOffset: 0 }]);
  const four = 4 * 2 ** 30;
  assert.deepEqual(memoryRegions(four), [
    { guestAddr: 0, size: 0xc0000000, hostOffset: 0 },
    { guestAddr: 0x100000000, size: four - 0xc0000000, hostOffset: 0xc0000000 },
  ]);
});

Deno.test("guest accesses outside RAM are refused", () => {
  const mem = GuestMemory.fromBuffer(new ArrayBuffer(1 << 20));
  assert.throws(() => mem.bytes((1 << 20) - 4, 8), /outside guest RAM/);
  mem.write(0x100, new Uint8Array([1, 2]));
  assert.deepEqual([...mem.bytes(0x100, 2)], [1, 2]);
});

Deno.test("e820: low RAM, the reserved legacy hole, RAM from 1 MiB", () => {
  const mem = GuestMemory.fromBuffer(new ArrayBuffer(64 << 20));
  assert.deepEqual(e820Map(mem), [
    { addr: 0, size: 0x9fc00, type: E820_RAM },
    { addr: 0x9fc00, size: 0x100000 - 0x9fc00, type: E820_RESERVED },
    { addr: 0x100000, size: (64 << 20) - 0x100000, type: E820_RAM },
  ]);
});

Deno.test("identity page tables map the first GiB with 2 MiB pages", () => {
  const mem = GuestMemory.fromBuffer(new ArrayBuffer(2 << 20));
  const cr3 = writeIdentityPageTables(mem);
  for (const a of [0n, 0x1234n, 0x1000000n, 0x3fffffffn]) {
    assert.equal(translate(mem, cr3, a), Number(a));
  }
  assert.equal(translate(mem, cr3, 0x40000000n), undefined);
  assert.equal(translate(mem, cr3, 0xffffffff81000000n), undefined);
});

Deno.test("written-page record: off until tracked; a range marks every page it touches; cleared whole", () => {
  const mem = GuestMemory.fromBuffer(new ArrayBuffer(64 * 4096 + 100));
  mem.markDirty(0, 4096); // not tracked: nothing to record into
  assert.equal(mem.tracked, false);
  assert.throws(() => mem.dirtyPages, /not tracked/);
  mem.trackWrites();
  const pages = () => {
    const d = mem.dirtyPages, out: number[] = [];
    for (let p = 0; p < d.length * 32; p++) if (d[p >>> 5] & (1 << (p & 31))) out.push(p);
    return out;
  };
  assert.equal(mem.dirtyPages.length, 3, "65 pages in 32-bit words");
  assert.deepEqual(pages(), []);
  mem.markDirty(4095, 2);
  mem.markDirty(31 * 4096, 4097);
  mem.markDirty(10 * 4096, 0);
  mem.markDirty(64 * 4096 + 99, 1);
  assert.deepEqual(pages(), [0, 1, 31, 32, 64]);
  mem.clearDirty();
  assert.deepEqual(pages(), []);
});
