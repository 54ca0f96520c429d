/**
 * vmlinux (ELF64) parsing: loadable segments at their physical addresses, the
 * 64-bit entry, and the PVH entry note when the kernel has one.
 *
 * Every size and offset comes from the file, so each is checked against the
 * file's size (64-bit fields as BigInt, before they become Numbers) and every
 * loop is bounded by the bytes it walks.
 *
 * @module
 */

import {
  ELF,
  ELF_MAGIC,
  ELFCLASS64,
  ELFDATA2LSB,
  EM_X86_64,
  PT_LOAD,
  PT_NOTE,
  XEN_ELFNOTE_PHYS32_ENTRY,
} from "../../ffi/bootparam.ts";
import { VoltError } from "../errors.ts";
import type { Image } from "./image.ts";

/** A PT_LOAD segment. */
export interface ElfSegment {
  offset: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

/** What the loader needs from a vmlinux. */
export interface ElfKernel {
  entry: number;
  pvhEntry?: number;
  segments: ElfSegment[];
}

/**
 * True when `head` starts with the ELF magic.
 *
 * @example
 * ```ts
 * import { isElf } from "./elf.ts";
 * isElf(new Uint8Array([0x7f, 0x45, 0x4c, 0x46])); // true
 * ```
 */
export function isElf(head: Uint8Array): boolean {
  return head.length >= 4 &&
    new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === ELF_MAGIC;
}

/** Notes larger than this are not a kernel's: skipped unread. */
const MAX_NOTE_BYTES = 1 << 20;
/** Linux's own ELF loader refuses program header tables above 64 KiB. */
const MAX_PHDR_BYTES = 64 << 10;
/** x86-64 physical addresses have at most 52 bits; below 2^53 Numbers are exact. */
const PHYS_LIMIT = 1n << 52n;
const NOTE_HEADER = 12;

const hex = (v: number | bigint) => `0x${v.toString(16)}`;
/** Rounds a u32 up to 4 in Number arithmetic (`& ~3` would wrap at 2^31). */
const align4 = (n: number) => Math.ceil(n / 4) * 4;

/**
 * Parses and validates the headers: segments must lie inside the file and
 * the physical address space and must not overlap; a malformed note is an
 * error. Every failure is a {@linkcode VoltError} of kind "input".
 *
 * @example
 * ```ts ignore
 * import { openImage } from "./image.ts";
 * import { parseElf } from "./elf.ts";
 * const k = parseElf(openImage("vmlinux", "Kernel"));
 * console.log(k.entry.toString(16), k.pvhEntry?.toString(16));
 * ```
 */
export function parseElf(img: Image): ElfKernel {
  const bad = (why: string) => new VoltError(`${img.name} is not a usable x86_64 vmlinux: ${why}`);
  const truncated = () => new VoltError(`${img.name} is truncated`);
  if (img.size < ELF.ehdr_size) throw truncated();
  const eh = new Uint8Array(ELF.ehdr_size);
  img.readAt(0, eh);
  const dv = new DataView(eh.buffer);
  if (!isElf(eh)) throw bad("no ELF header");
  if (eh[ELF.ident_class] !== ELFCLASS64) throw bad("not a 64-bit ELF");
  if (eh[ELF.ident_data] !== ELFDATA2LSB) throw bad("not little-endian");
  if (dv.getUint16(ELF.machine, true) !== EM_X86_64) throw bad("not built for x86_64");
  const size = BigInt(img.size);
  const phoff = dv.getBigUint64(ELF.phoff, true);
  const phnum = dv.getUint16(ELF.phnum, true);
  const phentsize = dv.getUint16(ELF.phentsize, true);
  if (phnum === 0) throw bad("no program headers");
  if (phentsize < ELF.phdr_size) throw bad("bad program header size");
  // Both u16: the product is at most 2^32, exact as a Number.
  const phBytes = phnum * phentsize;
  if (phBytes > MAX_PHDR_BYTES) {
    throw bad(`${phnum} program headers of ${phentsize} bytes exceed the 64 KiB Linux takes`);
  }
  if (phoff + BigInt(phBytes) > size) throw truncated();
  const ph = new Uint8Array(phBytes);
  img.readAt(Number(phoff), ph);
  const pv = new DataView(ph.buffer);
  const segments: ElfSegment[] = [];
  const notes: Array<{ offset: number; filesz: number }> = [];
  for (let i = 0; i < phnum; i++) {
    const o = i * phentsize;
    const type = pv.getUint32(o + ELF.ph_type, true);
    if (type !== PT_LOAD && type !== PT_NOTE) continue;
    const offset = pv.getBigUint64(o + ELF.ph_offset, true);
    const filesz = pv.getBigUint64(o + ELF.ph_filesz, true);
    if (offset + filesz > size) throw truncated();
    if (type === PT_NOTE) {
      notes.push({ offset: Number(offset), filesz: Number(filesz) });
      continue;
    }
    const paddr = pv.getBigUint64(o + ELF.ph_paddr, true);
    const memsz = pv.getBigUint64(o + ELF.ph_memsz, true);
    if (memsz < filesz) throw bad("segment smaller in memory than in the file");
    if (paddr + memsz > PHYS_LIMIT) {
      throw bad(`segment ${i} (${hex(paddr)}+${hex(memsz)}) is beyond 52-bit physical addresses`);
    }
    segments.push({
      offset: Number(offset),
      paddr: Number(paddr),
      filesz: Number(filesz),
      memsz: Number(memsz),
    });
  }
  if (segments.length === 0) throw bad("no loadable segments");
  checkOverlap(segments, bad);
  const entry = dv.getBigUint64(ELF.entry, true);
  if (entry >= PHYS_LIMIT) throw bad(`entry point ${hex(entry)} is not a physical address`);
  return { entry: Number(entry), pvhEntry: findPvhEntry(img, notes, bad), segments };
}

/** A later segment would silently overwrite an earlier one in guest memory. */
function checkOverlap(segments: ElfSegment[], bad: (why: string) => VoltError): void {
  const sorted = segments.filter((s) => s.memsz > 0).sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1], b = sorted[i];
    if (a.paddr + a.memsz > b.paddr) {
      throw bad(
        `segments at ${hex(a.paddr)}+${hex(a.memsz)} and ${hex(b.paddr)}+${hex(b.memsz)} overlap`,
      );
    }
  }
}

function findPvhEntry(
  img: Image,
  notes: Array<{ offset: number; filesz: number }>,
  bad: (why: string) => VoltError,
): number | undefined {
  for (const n of notes) {
    if (n.filesz > MAX_NOTE_BYTES) continue;
    const buf = new Uint8Array(n.filesz);
    img.readAt(n.offset, buf);
    const dv = new DataView(buf.buffer);
    // Each step advances by at least the 12-byte header: at most filesz/12 notes.
    let o = 0;
    while (buf.length - o >= NOTE_HEADER) {
      const namesz = dv.getUint32(o, true);
      const descsz = dv.getUint32(o + 4, true);
      const type = dv.getUint32(o + 8, true);
      const nameOff = o + NOTE_HEADER;
      // Below 2^35 even for u32 sizes near 2^32: exact in Number arithmetic.
      const descOff = nameOff + align4(namesz);
      // The last note's padding may be missing; its name and data may not.
      if (descOff + descsz > buf.length) {
        throw bad(
          `note at file offset ${
            hex(n.offset + o)
          } (name ${namesz} bytes, data ${descsz} bytes) runs past its segment`,
        );
      }
      if (type === XEN_ELFNOTE_PHYS32_ENTRY && isXen(buf.subarray(nameOff, nameOff + namesz))) {
        if (descsz !== 4 && descsz !== 8) {
          throw bad(`PVH entry note has ${descsz} bytes of data, not 4 or 8`);
        }
        const entry = descsz === 8
          ? dv.getBigUint64(descOff, true)
          : BigInt(dv.getUint32(descOff, true));
        // PVH starts the kernel in 32-bit protected mode.
        if (entry > 0xffffffffn) throw bad(`PVH entry ${hex(entry)} is above 4 GiB`);
        return Number(entry);
      }
      o = descOff + align4(descsz);
    }
  }
  return undefined;
}

/** The name "Xen", NUL-terminated or padded with NULs. */
function isXen(name: Uint8Array): boolean {
  if (name.length < 3 || name[0] !== 0x58 || name[1] !== 0x65 || name[2] !== 0x6e) return false;
  return name.subarray(3).every((b) => b === 0);
}
