import assert from "node:assert/strict";
import { bytesImage } from "../src/boot/image.ts";
import { loadCmdline, loadInitrd, loadKernel } from "../src/boot/loader.ts";
import { parseElf } from "../src/boot/elf.ts";
import { parseBzImage } from "../src/boot/bzimage.ts";
import { buildCmdline, DEFAULT_CMDLINE } from "../src/boot/cmdline.ts";
import { GuestMemory } from "../src/vmm/memory.ts";
import { VoltError } from "../src/errors.ts";
import { makeBzImage, makeElf } from "./images.ts";
import { debianKernel } from "./kernels.ts";

const HLT = new Uint8Array([0xf4]);
const mem = (mib = 64) => GuestMemory.fromBuffer(new ArrayBuffer(mib << 20));
const voltError = (re: RegExp) => (e: unknown) => e instanceof VoltError && re.test(e.message);

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
