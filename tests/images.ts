/**
 * Crafted kernel images for loader tests: a minimal ELF64 vmlinux (with an
 * optional PVH note) and a minimal bzImage whose 64-bit entry runs `code`.
 */

/** Options for {@linkcode makeElf}. */
export interface ElfSpec {
  code: Uint8Array;
  paddr?: number;
  entry?: number;
  pvhEntry?: number;
  machine?: number;
  bssExtra?: number;
}

/** An ELF64 with one PT_LOAD (and a Xen PVH note when asked). */
export function makeElf(spec: ElfSpec): Uint8Array {
  const paddr = spec.paddr ?? 0x1000000;
  const note = spec.pvhEntry === undefined ? undefined : (() => {
    const n = new Uint8Array(12 + 4 + 8);
    const dv = new DataView(n.buffer);
    dv.setUint32(0, 4, true);
    dv.setUint32(4, 8, true);
    dv.setUint32(8, 18, true);
    n.set([0x58, 0x65, 0x6e, 0], 12); // "Xen\0"
    dv.setBigUint64(16, BigInt(spec.pvhEntry), true);
    return n;
  })();
  const phnum = note ? 2 : 1;
  const codeOff = 0x1000;
  const noteOff = codeOff + spec.code.length;
  const out = new Uint8Array(noteOff + (note?.length ?? 0));
  const dv = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, spec.machine ?? 62, true);
  dv.setUint32(20, 1, true);
  dv.setBigUint64(24, BigInt(spec.entry ?? paddr), true);
  dv.setBigUint64(32, 64n, true); // phoff
  dv.setUint16(52, 64, true);
  dv.setUint16(54, 56, true);
  dv.setUint16(56, phnum, true);
  const ph = (
    i: number,
    type: number,
    off: number,
    addr: number,
    filesz: number,
    memsz: number,
  ) => {
    const o = 64 + i * 56;
    dv.setUint32(o, type, true);
    dv.setUint32(o + 4, 5, true);
    dv.setBigUint64(o + 8, BigInt(off), true);
    dv.setBigUint64(o + 16, BigInt(addr + 0xffffffff80000000), true);
    dv.setBigUint64(o + 24, BigInt(addr), true);
    dv.setBigUint64(o + 32, BigInt(filesz), true);
    dv.setBigUint64(o + 40, BigInt(memsz), true);
  };
  ph(0, 1, codeOff, paddr, spec.code.length, spec.code.length + (spec.bssExtra ?? 0));
  if (note) ph(1, 4, noteOff, 0, note.length, note.length);
  out.set(spec.code, codeOff);
  if (note) out.set(note, noteOff);
  return out;
}

/** Options for {@linkcode makeBzImage}. */
export interface BzSpec {
  /** Bytes placed at the 64-bit entry (protected-mode start + 0x200). */
  code: Uint8Array;
  version?: number;
  xloadflags?: number;
  cmdlineSize?: number;
  initrdAddrMax?: number;
  initSize?: number;
}

/** A bzImage: 4 setup sectors with a real setup header, then the payload. */
export function makeBzImage(spec: BzSpec): Uint8Array {
  const setupSects = 4;
  // Real images pad the payload to whole 16-byte units, as syssize counts.
  const pm = new Uint8Array(Math.ceil((0x200 + spec.code.length) / 16) * 16);
  pm.set(spec.code, 0x200);
  const out = new Uint8Array((setupSects + 1) * 512 + pm.length);
  const dv = new DataView(out.buffer);
  out[0x1f1] = setupSects;
  dv.setUint32(0x1f4, Math.ceil(pm.length / 16), true); // syssize
  dv.setUint16(0x1fe, 0xaa55, true);
  out[0x200] = 0xeb; // jmp short
  out[0x201] = 0x66; // header ends at 0x268
  dv.setUint32(0x202, 0x53726448, true);
  dv.setUint16(0x206, spec.version ?? 0x20f, true);
  out[0x211] = 0x01; // LOADED_HIGH
  dv.setUint32(0x214, 0x100000, true);
  dv.setUint32(0x22c, spec.initrdAddrMax ?? 0x7fffffff, true);
  dv.setUint32(0x230, 0x200000, true);
  out[0x234] = 1;
  dv.setUint16(0x236, spec.xloadflags ?? 0x1, true);
  dv.setUint32(0x238, spec.cmdlineSize ?? 2047, true);
  dv.setBigUint64(0x258, 0x1000000n, true);
  dv.setUint32(0x260, spec.initSize ?? 0x100000, true);
  out.set(pm, (setupSects + 1) * 512);
  return out;
}
