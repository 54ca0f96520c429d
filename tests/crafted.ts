/**
 * Malformed kernel images and archives, built field by field, for the
 * parsers' regression tests and as seeds of the fuzz targets: an ELF64 with
 * any program headers and notes, a bzImage with any setup-header field, a
 * cpio newc member with any header value.
 */

import { PT_LOAD, PT_NOTE, XEN_ELFNOTE_PHYS32_ENTRY } from "../ffi/bootparam.ts";

/** One program header; 64-bit fields take a bigint for values past 2^53. */
export interface PhdrSpec {
  type: number;
  offset: number | bigint;
  paddr: number | bigint;
  filesz: number | bigint;
  memsz: number | bigint;
}

/** Options for {@linkcode craftElf}. */
export interface CraftElfSpec {
  phdrs: PhdrSpec[];
  /** Bytes placed at file offset 0x1000 (segments usually point there). */
  body?: Uint8Array;
  entry?: number | bigint;
  /** Overrides of the header's program table fields. */
  phoff?: number | bigint;
  phnum?: number;
  phentsize?: number;
  /** File length (default: the end of `body`). */
  size?: number;
}

/** Where {@linkcode craftElf} puts `body`. */
export const BODY_OFFSET = 0x1000;

/**
 * An x86_64 ELF64 with exactly the given program headers.
 *
 * @example
 * ```ts ignore
 * import { craftElf } from "./crafted.ts";
 * craftElf({ phdrs: [{ type: 1, offset: 0x1000, paddr: 0x1000000, filesz: 1, memsz: 1 }] });
 * ```
 */
export function craftElf(spec: CraftElfSpec): Uint8Array {
  const body = spec.body ?? new Uint8Array([0xf4]);
  const phentsize = spec.phentsize ?? 56;
  const end = Math.max(BODY_OFFSET + body.length, 64 + spec.phdrs.length * phentsize);
  const out = new Uint8Array(spec.size ?? end);
  const full = new Uint8Array(Math.max(end, out.length));
  const dv = new DataView(full.buffer);
  full.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, 62, true); // EM_X86_64
  dv.setUint32(20, 1, true);
  dv.setBigUint64(24, BigInt(spec.entry ?? 0x1000000), true);
  dv.setBigUint64(32, BigInt(spec.phoff ?? 64), true);
  dv.setUint16(52, 64, true);
  dv.setUint16(54, phentsize, true);
  dv.setUint16(56, spec.phnum ?? spec.phdrs.length, true);
  spec.phdrs.forEach((p, i) => {
    const o = 64 + i * phentsize;
    dv.setUint32(o, p.type, true);
    dv.setUint32(o + 4, 7, true);
    dv.setBigUint64(o + 8, BigInt(p.offset), true);
    dv.setBigUint64(o + 16, BigInt.asUintN(64, BigInt(p.paddr) + 0xffffffff80000000n), true);
    dv.setBigUint64(o + 24, BigInt(p.paddr), true);
    dv.setBigUint64(o + 32, BigInt(p.filesz), true);
    dv.setBigUint64(o + 40, BigInt(p.memsz), true);
  });
  full.set(body, BODY_OFFSET);
  out.set(full.subarray(0, out.length));
  return out;
}

/** One ELF note: the header as given, then name and data, each padded to 4. */
export function note(
  namesz: number,
  descsz: number,
  type: number,
  name: Uint8Array,
  desc: Uint8Array,
): Uint8Array {
  const pad = (n: number) => Math.ceil(n / 4) * 4;
  const out = new Uint8Array(12 + pad(name.length) + pad(desc.length));
  const dv = new DataView(out.buffer);
  dv.setUint32(0, namesz, true);
  dv.setUint32(4, descsz, true);
  dv.setUint32(8, type, true);
  out.set(name, 12);
  out.set(desc, 12 + pad(name.length));
  return out;
}

const XEN = new Uint8Array([0x58, 0x65, 0x6e, 0]);

/** A well-formed PVH entry note (`Xen`, type 18) with a 4- or 8-byte entry. */
export function pvhNote(entry: number | bigint, bytes: 4 | 8 = 8): Uint8Array {
  const desc = new Uint8Array(bytes);
  const dv = new DataView(desc.buffer);
  if (bytes === 8) dv.setBigUint64(0, BigInt(entry), true);
  else dv.setUint32(0, Number(entry), true);
  return note(4, bytes, XEN_ELFNOTE_PHYS32_ENTRY, XEN, desc);
}

/**
 * A one-byte kernel at 16 MiB plus a PT_NOTE segment over `notes` (the
 * header's sizes may lie: the segment is exactly the bytes given).
 */
export function noteElf(notes: Uint8Array): Uint8Array {
  const body = new Uint8Array(16 + notes.length);
  body[0] = 0xf4;
  body.set(notes, 16);
  return craftElf({
    body,
    phdrs: [
      { type: PT_LOAD, offset: BODY_OFFSET, paddr: 0x1000000, filesz: 1, memsz: 1 },
      { type: PT_NOTE, offset: BODY_OFFSET + 16, paddr: 0, filesz: notes.length, memsz: 0 },
    ],
  });
}

/** Setup-header fields of {@linkcode craftBzImage}, by offset: [offset, bytes, value]. */
export type SetupField = [offset: number, bytes: 1 | 2 | 4 | 8, value: number | bigint];

/**
 * A valid bzImage (protocol 2.15, 4 setup sectors, 64-bit entry, payload of
 * `payload` bytes) with `fields` then written over its header.
 */
export function craftBzImage(fields: SetupField[] = [], payload = 0x400): Uint8Array {
  const setupSects = 4;
  const out = new Uint8Array((setupSects + 1) * 512 + payload);
  const dv = new DataView(out.buffer);
  out[0x1f1] = setupSects;
  dv.setUint32(0x1f4, Math.ceil(payload / 16), true);
  dv.setUint16(0x1fe, 0xaa55, true);
  out[0x200] = 0xeb;
  out[0x201] = 0x66;
  dv.setUint32(0x202, 0x53726448, true);
  dv.setUint16(0x206, 0x20f, true);
  out[0x211] = 0x01;
  dv.setUint32(0x214, 0x100000, true);
  dv.setUint32(0x22c, 0x7fffffff, true);
  dv.setUint32(0x230, 0x200000, true);
  out[0x234] = 1;
  dv.setUint16(0x236, 0x1, true);
  dv.setUint32(0x238, 2047, true);
  dv.setBigUint64(0x258, 0x1000000n, true);
  dv.setUint32(0x260, 0x100000, true);
  for (const [off, bytes, v] of fields) {
    if (bytes === 1) dv.setUint8(off, Number(v));
    else if (bytes === 2) dv.setUint16(off, Number(v), true);
    else if (bytes === 4) dv.setUint32(off, Number(v), true);
    else dv.setBigUint64(off, BigInt(v), true);
  }
  return out;
}

/** Header fields of a cpio newc member, as {@linkcode cpioMember} writes them. */
export interface CpioHeaderSpec {
  mode?: number;
  /** The header's filesize, whatever `data` holds. */
  filesize?: number;
  /** The header's namesize, whatever `name` holds. */
  namesize?: number;
}

/** One newc member with its header fields forced; name NUL-terminated, both padded. */
export function cpioMember(name: string, data: Uint8Array, spec: CpioHeaderSpec = {}): Uint8Array {
  const nameBytes = new TextEncoder().encode(`${name}\0`);
  const hex8 = (n: number) => n.toString(16).padStart(8, "0");
  const fields = [
    1,
    spec.mode ?? 0o100644,
    0,
    0,
    1,
    0,
    spec.filesize ?? data.length,
    0,
    0,
    0,
    0,
    spec.namesize ?? nameBytes.length,
    0,
  ];
  const header = new TextEncoder().encode(`070701${fields.map(hex8).join("")}`);
  const pad = (n: number) => (4 - (n % 4)) % 4;
  const head = header.length + nameBytes.length;
  const out = new Uint8Array(head + pad(head) + data.length + pad(data.length));
  out.set(header);
  out.set(nameBytes, header.length);
  out.set(data, head + pad(head));
  return out;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
