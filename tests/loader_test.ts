import assert from "node:assert/strict";
import { bytesImage } from "../src/boot/image.ts";
import { loadCmdline, loadInitrd, loadKernel } from "../src/boot/loader.ts";
import { parseElf } from "../src/boot/elf.ts";
import { parseBzImage } from "../src/boot/bzimage.ts";
import { buildCmdline, DEFAULT_CMDLINE } from "../src/boot/cmdline.ts";
import { GuestMemory } from "../src/memory/guest_memory.ts";
import { VoltError } from "../src/errors.ts";
import { makeBzImage, makeElf } from "./images.ts";
import { concat, craftBzImage, craftElf, note, noteElf, pvhNote } from "./crafted.ts";
import { debianKernel } from "./kernels.ts";

const HLT = new Uint8Array([0xf4]);
const mem = (mib = 64) => GuestMemory.fromBuffer(new ArrayBuffer(mib << 20));
const voltError = (re: RegExp) => (e: unknown) => e instanceof VoltError && re.test(e.message);
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("ELF: segments land at their physical address, BSS zeroed, PVH entry preferred", () => {
  const m = mem();
  m.bytes(0x1000000, 16).fill(0xaa);
  const img = bytesImage(
    "k",
    makeElf({ code: new Uint8Array([1, 2, 3]), pvhEntry: 0x1000040, bssExtra: 8 }),
  );
  const k = loadKernel(m, img, "auto");
  assert.equal(k.format, "elf");
  assert.equal(k.mode, "pvh");
  assert.equal(k.entry, 0x1000040);
  assert.deepEqual([...m.bytes(0x1000000, 6)], [1, 2, 3, 0, 0, 0]);
  assert.equal(k.end, 0x1000000 + 3 + 8);
  const k64 = loadKernel(m, img, "linux64");
  assert.deepEqual([k64.mode, k64.entry], ["linux64", 0x1000000]);
});

Deno.test("ELF: no PVH note means the 64-bit entry; asking for PVH is an error", () => {
  const img = bytesImage("k", makeElf({ code: HLT }));
  assert.equal(loadKernel(mem(), img, "auto").mode, "linux64");
  assert.throws(() => loadKernel(mem(), img, "pvh"), voltError(/no PVH entry note/));
});

Deno.test("ELF: truncated, foreign or empty files are refused with one line", () => {
  const elf = makeElf({ code: new Uint8Array(64) });
  assert.throws(() => parseElf(bytesImage("k", elf.subarray(0, 40))), voltError(/truncated/));
  assert.throws(
    () => parseElf(bytesImage("k", elf.subarray(0, elf.length - 10))),
    voltError(/truncated/),
  );
  assert.throws(
    () => parseElf(bytesImage("k", makeElf({ code: HLT, machine: 183 }))),
    voltError(/not built for x86_64/),
  );
  assert.throws(
    () => loadKernel(mem(), bytesImage("k", new Uint8Array(2000)), "auto"),
    voltError(/not a kernel image/),
  );
  assert.throws(
    () => loadKernel(mem(), bytesImage("k", new Uint8Array(10)), "auto"),
    voltError(/truncated or not a kernel/),
  );
});

Deno.test("ELF: a kernel beyond guest RAM is refused", () => {
  const img = bytesImage("k", makeElf({ code: HLT, paddr: 0x8000000 }));
  assert.throws(() => loadKernel(mem(64), img, "auto"), voltError(/needs guest memory/));
});

Deno.test("bzImage: protected-mode code at 1 MiB, 64-bit entry at +0x200, header kept", () => {
  const m = mem();
  const img = bytesImage("bz", makeBzImage({ code: new Uint8Array([0x90, 0xf4]) }));
  const k = loadKernel(m, img, "auto");
  assert.deepEqual([k.format, k.mode, k.entry], ["bzimage", "linux64", 0x100200]);
  assert.deepEqual([...m.bytes(0x100200, 2)], [0x90, 0xf4]);
  assert.equal(k.cmdlineMax, 2047);
  const dv = new DataView(k.setupHeader!.buffer, k.setupHeader!.byteOffset);
  assert.equal(dv.getUint32(0x202 - 0x1f1, true), 0x53726448);
});

Deno.test("bzImage: old protocol, 32-bit only, truncated and PVH requests are refused", () => {
  assert.throws(
    () => parseBzImage(bytesImage("bz", makeBzImage({ code: HLT, version: 0x205 }))),
    voltError(/older than 2.06/),
  );
  assert.throws(
    () => parseBzImage(bytesImage("bz", makeBzImage({ code: HLT, xloadflags: 0 }))),
    voltError(/no 64-bit entry/),
  );
  const full = makeBzImage({ code: new Uint8Array(4096) });
  assert.throws(
    () => parseBzImage(bytesImage("bz", full.subarray(0, full.length - 1000))),
    voltError(/truncated/),
  );
  assert.throws(
    () => parseBzImage(bytesImage("bz", full.subarray(0, 0x250))),
    voltError(/truncated/),
  );
  assert.throws(
    () => loadKernel(mem(), bytesImage("bz", full), "pvh"),
    voltError(/PVH boot needs the vmlinux/),
  );
});

Deno.test("initrd: page-aligned at the top of low RAM, under initrd_addr_max, above the kernel", () => {
  const m = mem(64);
  const k = loadKernel(m, bytesImage("k", makeElf({ code: HLT })), "auto");
  const data = new Uint8Array(10000).fill(7);
  const r = loadInitrd(m, k, bytesImage("initrd", data));
  assert.equal(r.addr % 4096, 0);
  assert.ok(r.addr + r.size <= 64 << 20 && r.addr + r.size > (64 << 20) - 8192);
  assert.deepEqual(m.bytes(r.addr, 10000), data);
  const bz = loadKernel(
    m,
    bytesImage("bz", makeBzImage({ code: HLT, initrdAddrMax: 0x1ffffff })),
    "auto",
  );
  const r2 = loadInitrd(m, bz, bytesImage("initrd", data));
  assert.ok(r2.addr + r2.size <= 0x2000000);
  assert.throws(
    () => loadInitrd(m, k, bytesImage("initrd", new Uint8Array(65 << 20))),
    voltError(/does not fit in guest memory/),
  );
});

Deno.test("cmdline: defaults, replace, append, and the kernel's limit", () => {
  assert.equal(buildCmdline({}), DEFAULT_CMDLINE);
  assert.equal(buildCmdline({ append: "quiet" }), `${DEFAULT_CMDLINE} quiet`);
  assert.equal(
    buildCmdline({ cmdline: "console=ttyS0", extra: ["x"], append: "y" }),
    "console=ttyS0 x y",
  );
  const m = mem();
  const k = loadKernel(m, bytesImage("bz", makeBzImage({ code: HLT, cmdlineSize: 32 })), "auto");
  const c = loadCmdline(m, k, "a".repeat(32));
  assert.equal(c.size, 32);
  assert.equal(m.bytes(c.addr + 32, 1)[0], 0);
  assert.throws(
    () => loadCmdline(m, k, "a".repeat(33)),
    voltError(/33 bytes; this kernel takes at most 32/),
  );
});

Deno.test({
  name: "Debian's cloud kernel: bzImage header and vmlinux ELF with a PVH note",
  ignore: debianKernel() === undefined,
  fn() {
    const { bzImage, vmlinux } = debianKernel()!;
    const bz = parseBzImage(bytesImage("bz", Deno.readFileSync(bzImage)));
    assert.ok(bz.version >= 0x20f, `protocol 0x${bz.version.toString(16)}`);
    assert.equal(bz.cmdlineSize, 2047);
    assert.ok(bz.initSize > 16 << 20);
    const elf = parseElf(bytesImage("vmlinux", Deno.readFileSync(vmlinux)));
    assert.ok(elf.pvhEntry !== undefined && elf.pvhEntry < 0x4000000);
    assert.equal(elf.entry, 0x1000000);
    assert.ok(elf.segments.every((s) => s.paddr >= 0x1000000));
  },
});

// Crafted headers (issue 10): each one got a RangeError ("Internal error",
// exit 70), a hang, a wrong message or a silent misload before.

const elfError = (re: RegExp) =>
  voltError(new RegExp(`^k is not a usable x86_64 vmlinux: ${re.source}`));
const noteKernel = (notes: Uint8Array) => bytesImage("k", noteElf(notes));

Deno.test("ELF note: a huge, negative-as-int32 or wrapping size is refused, never a RangeError or a hang", () => {
  const past = elfError(
    /note at file offset 0x\w+ \(name \d+ bytes, data \d+ bytes\) runs past its segment$/,
  );
  const empty = new Uint8Array();
  // (0x7ffffffe + 3) & ~3 was -2^31: a negative offset, then a RangeError.
  assert.throws(() => parseElf(noteKernel(note(0x7ffffffe, 0, 18, empty, empty))), past);
  // Both rounded sizes wrapped to -12 and 0: the walk stayed on one note forever.
  assert.throws(() => parseElf(noteKernel(note(0xfffffffd, 0xfffffff4, 18, empty, empty))), past);
  assert.throws(() => parseElf(noteKernel(note(4, 0xffffffff, 18, text("Xen\0"), empty))), past);
  assert.throws(() => parseElf(noteKernel(note(0x80000000, 0x80000000, 1, empty, empty))), past);
  // A note after a good one is still checked; one that ends its segment exactly is fine.
  assert.throws(
    () =>
      parseElf(
        noteKernel(
          concat(note(4, 4, 1, text("GNU\0"), text("abcd")), note(0, 16, 1, empty, empty)),
        ),
      ),
    past,
  );
  assert.equal(
    parseElf(noteKernel(concat(note(4, 4, 1, text("GNU\0"), text("abcd")), pvhNote(0x1000000))))
      .pvhEntry,
    0x1000000,
  );
});

Deno.test("ELF note: a PVH entry must be a 4- or 8-byte address below 4 GiB", () => {
  assert.equal(parseElf(noteKernel(pvhNote(0x1000100, 4))).pvhEntry, 0x1000100);
  // It was taken as is, and the vCPU started in 32-bit mode at its low half.
  assert.throws(
    () => parseElf(noteKernel(pvhNote(0x100001000n))),
    elfError(/PVH entry 0x100001000 is above 4 GiB$/),
  );
  // A 2-byte entry was ignored: the kernel silently booted through the other entry.
  assert.throws(
    () => parseElf(noteKernel(note(4, 2, 18, text("Xen\0"), new Uint8Array(2)))),
    elfError(/PVH entry note has 2 bytes of data, not 4 or 8$/),
  );
});

Deno.test("ELF program headers: past the end of the file, too many, or beyond 64-bit sizes", () => {
  const load = { type: 1, offset: 0x1000, paddr: 0x1000000, filesz: 1, memsz: 1 };
  const truncated = voltError(/^k is truncated$/);
  const k = (spec: Parameters<typeof craftElf>[0]) => bytesImage("k", craftElf(spec));
  assert.throws(() => parseElf(k({ phdrs: [load], phoff: 0x1000 - 20 })), truncated);
  assert.throws(() => parseElf(k({ phdrs: [load], phoff: 0xffffffffffffffc0n })), truncated);
  assert.throws(
    () => parseElf(k({ phdrs: [{ ...load, offset: 0xfffffffffffff000n, filesz: 0x2000 }] })),
    truncated,
  );
  assert.throws(() => parseElf(k({ phdrs: [{ ...load, filesz: 0x1001 }] })), truncated);
  // phnum 0xffff (PN_XNUM) asked for a 3.6 MB table.
  assert.throws(
    () => parseElf(k({ phdrs: [load], phnum: 0xffff })),
    elfError(/65535 program headers of 56 bytes exceed the 64 KiB Linux takes$/),
  );
  assert.throws(
    () => parseElf(k({ phdrs: [{ ...load, paddr: 0xfffffffffffff000n, memsz: 0x2000 }] })),
    elfError(/segment 0 \(0xfffffffffffff000\+0x2000\) is beyond 52-bit physical addresses$/),
  );
  assert.throws(
    () => parseElf(k({ phdrs: [{ ...load, memsz: 0xffffffffffffffffn }] })),
    elfError(/segment 0 .* is beyond 52-bit physical addresses$/),
  );
  assert.throws(
    () => parseElf(k({ phdrs: [load], entry: 0xffffffff81000000n })),
    elfError(/entry point 0xffffffff81000000 is not a physical address$/),
  );
});

Deno.test("ELF: overlapping segments are refused instead of overwriting each other", () => {
  const body = new Uint8Array(0x2000);
  const seg = (offset: number, paddr: number, memsz: number) => ({
    type: 1,
    offset,
    paddr,
    filesz: 0x100,
    memsz,
  });
  const k = (...phdrs: ReturnType<typeof seg>[]) => bytesImage("k", craftElf({ body, phdrs }));
  // The second segment's bytes used to land on the first one's BSS.
  assert.throws(
    () =>
      loadKernel(mem(), k(seg(0x1000, 0x1000000, 0x2000), seg(0x2000, 0x1001000, 0x100)), "auto"),
    elfError(/segments at 0x1000000\+0x2000 and 0x1001000\+0x100 overlap$/),
  );
  // Order in the file does not matter; touching is fine, as are empty segments.
  assert.throws(
    () => parseElf(k(seg(0x2000, 0x1001000, 0x100), seg(0x1000, 0x1000f00, 0x101))),
    /overlap/,
  );
  const ok = loadKernel(
    mem(),
    k(seg(0x2000, 0x1001000, 0x100), seg(0x1000, 0x1000000, 0x1000)),
    "auto",
  );
  assert.equal(ok.end, 0x1001100);
});

Deno.test("loader: segments past guest memory or across the MMIO gap name the guest's real size", () => {
  const big = GuestMemory.allocate(4 * 2 ** 30);
  const k = (paddr: number, memsz: number) =>
    bytesImage("k", craftElf({ phdrs: [{ type: 1, offset: 0x1000, paddr, filesz: 1, memsz }] }));
  // `size >> 20` wrapped: 4 GiB was "0 MiB".
  assert.throws(
    () => loadKernel(big, k(0xbffff000, 0x2000), "auto"),
    voltError(/^The kernel needs guest memory up to 0xc0001000; the guest has 4096 MiB$/),
  );
  assert.throws(
    () => loadKernel(big, k(0x140000000, 1), "auto"),
    /up to 0x140000001; the guest has 4096 MiB$/,
  );
  // RAM above 4 GiB takes a kernel, but then no initrd fits above it in low RAM.
  const high = loadKernel(big, k(0x100000000, 0x1000), "auto");
  assert.equal(high.end, 0x100001000);
  assert.throws(
    () => loadInitrd(big, high, bytesImage("initrd", new Uint8Array(4096))),
    voltError(/^initrd \(4096 bytes\) does not fit in guest memory above the kernel \(4096 MiB\)$/),
  );
});

Deno.test("initrd: sizes and limits from the file never place it outside RAM or below the kernel", () => {
  const m = mem(32);
  const k = loadKernel(m, bytesImage("k", makeElf({ code: HLT })), "auto");
  const fitsNot = voltError(
    /^initrd \(\d+ bytes\) does not fit in guest memory above the kernel \(32 MiB\)$/,
  );
  // Fits in RAM, not above the kernel at 16 MiB.
  assert.throws(() => loadInitrd(m, k, bytesImage("initrd", new Uint8Array(20 << 20))), fitsNot);
  // initrd_addr_max 0: no room at all.
  const bz = loadKernel(m, bytesImage("bz", craftBzImage([[0x22c, 4, 0]])), "auto");
  assert.throws(() => loadInitrd(m, bz, bytesImage("initrd", new Uint8Array(16))), fitsNot);
  // An image claiming more bytes than a Number holds exactly.
  const huge = { name: "initrd", size: 2 ** 60, readAt() {}, close() {} };
  assert.throws(() => loadInitrd(m, k, huge), fitsNot);
  // Reads at a negative or fractional offset are refused by the image itself.
  const img = bytesImage("initrd", new Uint8Array(16));
  assert.throws(() => img.readAt(-8, new Uint8Array(8)), voltError(/^initrd is truncated$/));
  assert.throws(() => img.readAt(0.5, new Uint8Array(8)), voltError(/^initrd is truncated$/));
});

Deno.test("bzImage: setup_sects, syssize, pref_address and init_size from the file stay in bounds", () => {
  const bz = (fields: Parameters<typeof craftBzImage>[0], payload?: number) =>
    bytesImage("bz", craftBzImage(fields, payload));
  assert.equal(parseBzImage(bz([])).pmOffset, 5 * 512);
  // 255 setup sectors end at 128 KiB, past a 3 KiB file.
  assert.throws(
    () => parseBzImage(bz([[0x1f1, 1, 255]])),
    voltError(/^bz is truncated: its 255 setup sectors end at 0x20000, past its 3584 bytes$/),
  );
  assert.throws(() => parseBzImage(bz([[0x1f4, 4, 0xffffffff]])), voltError(/^bz is truncated$/));
  assert.throws(
    () => parseBzImage(bz([[0x258, 8, 0xffffffffffffffffn]])),
    voltError(
      /^bz is not a usable bzImage: pref_address 0xffffffffffffffff is not a physical address$/,
    ),
  );
  assert.throws(
    () => loadKernel(mem(), bz([[0x260, 4, 0xffffffff]]), "auto"),
    voltError(/^The kernel needs guest memory up to 0x100ffffff; the guest has 64 MiB$/),
  );
  // setup_sects 0 means 4.
  assert.equal(parseBzImage(bz([[0x1f1, 1, 0]])).pmOffset, 5 * 512);
});
