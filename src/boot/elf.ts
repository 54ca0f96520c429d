/**
 * vmlinux (ELF64) parsing: loadable segments at their physical addresses, the
 * 64-bit entry, and the PVH entry note when the kernel has one.
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

/** True when `head` starts with the ELF magic. */
export function isElf(head: Uint8Array): boolean {
  return head.length >= 4 &&
    new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === ELF_MAGIC;
}

const MAX_NOTE_BYTES = 1 << 20;

/**
 * Parses and validates the headers; segments must lie inside the file.
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
  if (img.size < ELF.ehdr_size) throw new VoltError(`${img.name} is truncated`);
  const eh = new Uint8Array(ELF.ehdr_size);
  img.readAt(0, eh);
  const dv = new DataView(eh.buffer);
  if (!isElf(eh)) throw bad("no ELF header");
  if (eh[ELF.ident_class] !== ELFCLASS64) throw bad("not a 64-bit ELF");
  if (eh[ELF.ident_data] !== ELFDATA2LSB) throw bad("not little-endian");
  if (dv.getUint16(ELF.machine, true) !== EM_X86_64) throw bad("not built for x86_64");
  const phoff = Number(dv.getBigUint64(ELF.phoff, true));
  const phnum = dv.getUint16(ELF.phnum, true);
  const phentsize = dv.getUint16(ELF.phentsize, true);
  if (phnum === 0) throw bad("no program headers");
  if (phentsize < ELF.phdr_size) throw bad("bad program header size");
  if (phoff + phnum * phentsize > img.size) throw new VoltError(`${img.name} is truncated`);
  const ph = new Uint8Array(phnum * phentsize);
  img.readAt(phoff, ph);
  const pv = new DataView(ph.buffer);
  const segments: ElfSegment[] = [];
  const notes: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = i * phentsize;
    const type = pv.getUint32(o + ELF.ph_type, true);
    if (type !== PT_LOAD && type !== PT_NOTE) continue;
    const seg = {
      offset: Number(pv.getBigUint64(o + ELF.ph_offset, true)),
      paddr: Number(pv.getBigUint64(o + ELF.ph_paddr, true)),
      filesz: Number(pv.getBigUint64(o + ELF.ph_filesz, true)),
      memsz: Number(pv.getBigUint64(o + ELF.ph_memsz, true)),
    };
    if (seg.offset + seg.filesz > img.size) throw new VoltError(`${img.name} is truncated`);
    if (type === PT_LOAD) {
      if (seg.memsz < seg.filesz) throw bad("segment smaller in memory than in the file");
      segments.push(seg);
    } else notes.push(seg);
  }
  if (segments.length === 0) throw bad("no loadable segments");
  const entry = Number(dv.getBigUint64(ELF.entry, true));
  return { entry, pvhEntry: findPvhEntry(img, notes), segments };
}

function findPvhEntry(img: Image, notes: ElfSegment[]): number | undefined {
  for (const n of notes) {
    if (n.filesz > MAX_NOTE_BYTES) continue;
    const buf = new Uint8Array(n.filesz);
    img.readAt(n.offset, buf);
    const dv = new DataView(buf.buffer);
    let o = 0;
    while (o + 12 <= buf.length) {
      const namesz = dv.getUint32(o, true);
      const descsz = dv.getUint32(o + 4, true);
      const type = dv.getUint32(o + 8, true);
      const nameOff = o + 12;
      const descOff = nameOff + ((namesz + 3) & ~3);
      const next = descOff + ((descsz + 3) & ~3);
      if (next > buf.length) break;
      const name = new TextDecoder().decode(buf.subarray(nameOff, nameOff + namesz)).replace(
        /\0+$/,
        "",
      );
      if (name === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY && descsz >= 4) {
        return descsz >= 8 ? Number(dv.getBigUint64(descOff, true)) : dv.getUint32(descOff, true);
      }
      o = next;
    }
  }
  return undefined;
}
