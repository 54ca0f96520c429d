import assert from "node:assert/strict";
import { writeZeroPage } from "../src/arch/x86_64/boot_params.ts";
import { writeStartInfo } from "../src/arch/x86_64/start_info.ts";
import { e820Map } from "../src/arch/x86_64/e820.ts";
import { buildMptable, writeMptable } from "../src/arch/x86_64/mptable.ts";
import { GuestMemory } from "../src/memory/guest_memory.ts";
import { BOOT_PARAMS, SETUP } from "../ffi/bootparam.ts";
import { CMDLINE_ADDR, PVH_MEMMAP_ADDR, ZERO_PAGE_ADDR } from "../src/arch/x86_64/layout.ts";

const mem = () => GuestMemory.fromBuffer(new ArrayBuffer(64 << 20));

Deno.test("zero page: loader type, magic, cmdline, initrd and the e820 table", () => {
  const m = mem();
  const e820 = e820Map(m);
  const addr = writeZeroPage(m, {
    cmdlineAddr: CMDLINE_ADDR,
    cmdlineSize: 42,
    initrdAddr: 0x3000000,
    initrdSize: 12345,
    e820,
  });
  assert.equal(addr, ZERO_PAGE_ADDR);
  const dv = m.view(addr, 4096);
  assert.equal(dv.getUint8(SETUP.type_of_loader), 0xff);
  assert.equal(dv.getUint16(SETUP.boot_flag, true), 0xaa55);
  assert.equal(dv.getUint32(SETUP.header, true), 0x53726448);
  assert.equal(dv.getUint32(SETUP.cmd_line_ptr, true), CMDLINE_ADDR);
  assert.equal(dv.getUint32(SETUP.cmdline_size, true), 42);
  assert.equal(dv.getUint32(SETUP.ramdisk_image, true), 0x3000000);
  assert.equal(dv.getUint32(SETUP.ramdisk_size, true), 12345);
  assert.equal(dv.getUint8(BOOT_PARAMS.e820_entries), e820.length);
  for (let i = 0; i < e820.length; i++) {
    const o = BOOT_PARAMS.e820_table + i * 20;
    assert.equal(Number(dv.getBigUint64(o, true)), e820[i].addr);
    assert.equal(Number(dv.getBigUint64(o + 8, true)), e820[i].size);
    assert.equal(dv.getUint32(o + 16, true), e820[i].type);
  }
});

Deno.test("zero page keeps a bzImage's own setup header fields", () => {
  const m = mem();
  const hdr = new Uint8Array(0x268 - 0x1f1);
  const hv = new DataView(hdr.buffer);
  hv.setUint16(0x206 - 0x1f1, 0x20f, true);
  hv.setUint32(0x202 - 0x1f1, 0x53726448, true);
  hv.setUint32(0x230 - 0x1f1, 0x200000, true);
  writeZeroPage(m, {
    setupHeader: hdr,
    cmdlineAddr: CMDLINE_ADDR,
    cmdlineSize: 1,
    e820: e820Map(m),
  });
  const dv = m.view(ZERO_PAGE_ADDR, 4096);
  assert.equal(dv.getUint16(SETUP.version, true), 0x20f);
  assert.equal(dv.getUint32(SETUP.kernel_alignment, true), 0x200000);
  assert.equal(dv.getUint8(SETUP.type_of_loader), 0xff);
});

Deno.test("PVH start info: magic, cmdline, memory map and the initrd module", () => {
  const m = mem();
  const e820 = e820Map(m);
  const addr = writeStartInfo(m, {
    cmdlineAddr: CMDLINE_ADDR,
    initrdAddr: 0x2000000,
    initrdSize: 99,
    e820,
  });
  const dv = m.view(addr, 56);
  assert.equal(dv.getUint32(0, true), 0x336ec578);
  assert.equal(dv.getUint32(4, true), 1);
  assert.equal(dv.getUint32(12, true), 1);
  assert.equal(Number(dv.getBigUint64(24, true)), CMDLINE_ADDR);
  assert.equal(Number(dv.getBigUint64(40, true)), PVH_MEMMAP_ADDR);
  assert.equal(dv.getUint32(48, true), e820.length);
  const mod = m.view(Number(dv.getBigUint64(16, true)), 16);
  assert.equal(Number(mod.getBigUint64(0, true)), 0x2000000);
  assert.equal(Number(mod.getBigUint64(8, true)), 99);
  const map = m.view(PVH_MEMMAP_ADDR, 24 * e820.length);
  assert.equal(Number(map.getBigUint64(24 * 2 + 8, true)), e820[2].size);
});

function sum(b: Uint8Array): number {
  return b.reduce((a, x) => (a + x) & 0xff, 0);
}

Deno.test("MP table: checksums, one processor entry per vCPU with the BSP flagged", () => {
  for (const cpus of [1, 4, 32]) {
    const t = buildMptable(cpus, 0x9fc00);
    assert.equal(new TextDecoder().decode(t.subarray(0, 4)), "_MP_");
    assert.equal(sum(t.subarray(0, 16)), 0);
    const dv = new DataView(t.buffer);
    assert.equal(dv.getUint32(4, true), 0x9fc00 + 16);
    const cfg = t.subarray(16);
    assert.equal(new TextDecoder().decode(cfg.subarray(0, 4)), "PCMP");
    assert.equal(dv.getUint16(16 + 4, true), cfg.length);
    assert.equal(sum(cfg), 0);
    const count = dv.getUint16(16 + 34, true);
    assert.equal(count, cpus + 1 + 1 + 16 + 2);
    const procs = [];
    for (let i = 0; i < cpus; i++) {
      const o = 16 + 44 + i * 20;
      procs.push([t[o], t[o + 1], t[o + 3]]);
    }
    assert.deepEqual(procs, Array.from({ length: cpus }, (_, i) => [0, i, i === 0 ? 3 : 1]));
  }
  assert.throws(() => buildMptable(0, 0x9fc00), RangeError);
  const m = mem();
  writeMptable(m, 2);
  assert.equal(new TextDecoder().decode(m.bytes(0x9fc00, 4)), "_MP_");
});
