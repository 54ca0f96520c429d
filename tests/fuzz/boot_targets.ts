/**
 * Fuzz targets of the kernel parsers and the loader: random and mutated
 * ELF and bzImage files must parse into a result whose every offset, size
 * and address is a safe integer inside the file and the address space, or
 * fail with a one-line VoltError; a loaded kernel's bytes are where its
 * headers say, and the initrd goes nowhere outside RAM or under the kernel.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { HIMEM_START } from "../../src/arch/x86_64/layout.ts";
import { parseBzImage } from "../../src/boot/bzimage.ts";
import { parseElf } from "../../src/boot/elf.ts";
import { bytesImage, type Image } from "../../src/boot/image.ts";
import { type BootProtocol, loadInitrd, loadKernel } from "../../src/boot/loader.ts";
import { GuestMemory } from "../../src/memory/guest_memory.ts";
import { bzSeed, elfSeed, FUZZ_MEMORY, mutated, randomBytes } from "./inputs.ts";
import { defineTarget, expectVoltError, safe, strictImage, type Target } from "./target.ts";

const PHYS_LIMIT = 2 ** 52;

function checkElf(bytes: Uint8Array): void {
  const img = strictImage("k", bytes);
  let k;
  try {
    k = parseElf(img);
  } catch (e) {
    return expectVoltError(e);
  }
  assert.ok(safe(k.entry) && k.entry < PHYS_LIMIT);
  if (k.pvhEntry !== undefined) assert.ok(safe(k.pvhEntry) && k.pvhEntry <= 0xffffffff);
  assert.ok(k.segments.length > 0);
  for (const s of k.segments) {
    assert.ok([s.offset, s.paddr, s.filesz, s.memsz].every(safe), JSON.stringify(s));
    assert.ok(s.offset + s.filesz <= bytes.length);
    assert.ok(s.filesz <= s.memsz);
    assert.ok(s.paddr + s.memsz <= PHYS_LIMIT);
  }
  const sorted = k.segments.filter((s) => s.memsz > 0).sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < sorted.length; i++) {
    assert.ok(sorted[i - 1].paddr + sorted[i - 1].memsz <= sorted[i].paddr, "overlap");
  }
}

function checkBzImage(bytes: Uint8Array): void {
  let bz;
  try {
    bz = parseBzImage(strictImage("bz", bytes));
  } catch (e) {
    return expectVoltError(e);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert.ok(bz.version >= 0x206);
  assert.ok(safe(bz.pmOffset) && bz.pmOffset < bytes.length);
  assert.equal(bz.pmOffset + bz.pmSize, bytes.length);
  assert.ok(bz.pmSize >= dv.getUint32(0x1f4, true) * 16);
  assert.ok([bz.initrdAddrMax, bz.cmdlineSize, bz.initSize].every((v) => safe(v) && v < 2 ** 32));
  assert.ok(safe(bz.prefAddress) && bz.prefAddress < PHYS_LIMIT);
  assert.ok(bz.setupHeader.length <= 0x264 - 0x1f1);
}

const ELF = elfSeed();
const BZ = bzSeed();
const memory = GuestMemory.fromBuffer(new ArrayBuffer(FUZZ_MEMORY));

/** Zero check on at most 8 KiB at each end of a range: a full BSS scan would dominate. */
function zeroed(addr: number, len: number): boolean {
  const ends = len <= 16384 ? [[addr, len]] : [[addr, 8192], [addr + len - 8192, 8192]];
  return ends.every(([a, n]) => memory.bytes(a, n).every((b) => b === 0));
}

interface LoadCase {
  kernel: Uint8Array;
  protocol: BootProtocol;
  initrdSize: number;
}

function checkLoad({ kernel, protocol, initrdSize }: LoadCase): void {
  // Dirty guest RAM, so a BSS left uncleared shows.
  memory.host.fill(0xa5, 0, 0x300000);
  const img = strictImage("k", kernel);
  let k;
  try {
    k = loadKernel(memory, img, protocol);
  } catch (e) {
    // Asking a bzImage for PVH, or a kernel without the note, is a usage error.
    return expectVoltError(e, ["input", "usage"]);
  }
  assert.ok(k.end <= FUZZ_MEMORY && safe(k.entry));
  if (k.format === "elf") {
    const elf = parseElf(bytesImage("k", kernel));
    for (const s of elf.segments) {
      assert.deepEqual(
        memory.bytes(s.paddr, s.filesz),
        kernel.subarray(s.offset, s.offset + s.filesz),
      );
      assert.ok(zeroed(s.paddr + s.filesz, s.memsz - s.filesz), "BSS not cleared");
    }
    assert.equal(k.end, Math.max(...elf.segments.map((s) => s.paddr + s.memsz)));
    if (protocol === "pvh") assert.equal(k.mode, "pvh");
    assert.equal(k.entry, k.mode === "pvh" ? elf.pvhEntry : elf.entry);
  } else {
    const bz = parseBzImage(bytesImage("bz", kernel));
    assert.deepEqual(memory.bytes(HIMEM_START, bz.pmSize), kernel.subarray(bz.pmOffset));
    assert.equal(k.entry, HIMEM_START + 0x200);
  }
  // An initrd image of any size, even one no buffer could hold: reads are checked, not done.
  const initrd: Image = {
    name: "initrd",
    size: initrdSize,
    readAt(offset, dest) {
      assert.equal(offset, 0);
      assert.equal(dest.length, initrdSize);
    },
    close() {},
  };
  let r;
  try {
    r = loadInitrd(memory, k, initrd);
  } catch (e) {
    return expectVoltError(e);
  }
  assert.equal(r.size, initrdSize);
  assert.equal(r.addr % 4096, 0);
  assert.ok(r.addr >= Math.ceil(k.end / 4096) * 4096, "initrd below the kernel's end");
  assert.ok(r.addr + r.size <= Math.min(memory.lowEnd, k.initrdAddrMax + 1), "initrd too high");
}

/** The parser and loader targets. */
export const BOOT_TARGETS: Target[] = [
  defineTarget({
    name: "elf-random",
    about: "parseElf on random bytes (half behind a valid ELF header)",
    arbitrary: randomBytes(ELF.bytes.subarray(0, 64), 2048),
    check: checkElf,
  }),
  defineTarget({
    name: "elf-mutated",
    about: "parseElf on a vmlinux-like ELF with its header, program header and note fields mutated",
    arbitrary: mutated(ELF),
    check: checkElf,
  }),
  defineTarget({
    name: "bzimage-random",
    about: "parseBzImage on random bytes (half behind a valid setup header)",
    arbitrary: randomBytes(BZ.bytes.subarray(0, 0x268), 4096),
    check: checkBzImage,
  }),
  defineTarget({
    name: "bzimage-mutated",
    about: "parseBzImage on a bzImage with its setup header fields mutated",
    arbitrary: mutated(BZ),
    check: checkBzImage,
  }),
  defineTarget({
    name: "loader",
    about:
      "loadKernel and loadInitrd into 8 MiB of guest RAM: bytes where the headers say, or an error",
    arbitrary: fc.record({
      kernel: fc.oneof(mutated(ELF), mutated(BZ), fc.constant(ELF.bytes), fc.constant(BZ.bytes)),
      protocol: fc.constantFrom<BootProtocol>("auto", "pvh", "linux64"),
      initrdSize: fc.oneof(
        fc.nat({ max: 1 << 16 }),
        fc.nat({ max: FUZZ_MEMORY }),
        fc.constantFrom(FUZZ_MEMORY, FUZZ_MEMORY + 1, 2 ** 32, 2 ** 53 - 1),
      ),
    }),
    check: checkLoad,
  }),
];
