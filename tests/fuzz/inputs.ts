/**
 * Inputs for the fuzz targets: valid seed images with the offsets of their
 * header fields, and fast-check arbitraries that mutate a seed where a
 * parser is most likely to go wrong (sizes and offsets set to values around
 * 2^31, 2^32, 2^53, 2^64 and the file's size) or anywhere at random.
 */

import fc from "fast-check";
import { PT_LOAD, PT_NOTE } from "../../ffi/bootparam.ts";
import { type CpioEntry, writeCpio } from "../../src/guest/cpio.ts";
import { BODY_OFFSET, concat, craftBzImage, craftElf, note, pvhNote } from "../crafted.ts";

/** A little-endian field of a seed: name (for counterexamples), byte offset and width. */
export interface FieldAt {
  name: string;
  at: number;
  bytes: 1 | 2 | 4 | 8;
}

/** A valid input and the fields worth mutating. */
export interface Seed {
  bytes: Uint8Array;
  fields: FieldAt[];
  /** Fields written as 8 ASCII hex digits (cpio) instead of binary. */
  hex?: boolean;
  /** Names the seed in counterexamples. */
  label: string;
}

/** Guest RAM of the loader target: small, so a BSS clear stays cheap. */
export const FUZZ_MEMORY = 8 << 20;

const GNU_NOTE = note(4, 4, 1, new TextEncoder().encode("GNU\0"), new Uint8Array([1, 2, 3, 4]));

/**
 * A vmlinux as a linker lays it out, scaled down: two PT_LOADs (the second
 * with BSS), a PT_NOTE with a GNU note then the PVH entry note, and a
 * PT_GNU_STACK the parser skips.
 */
export function elfSeed(): Seed {
  const notes = concat(GNU_NOTE, pvhNote(0x100000));
  const body = new Uint8Array(0x200 + notes.length).map((_, i) => (i * 13) & 0xff);
  body.set(notes, 0x200);
  const bytes = craftElf({
    body,
    entry: 0x100000,
    phdrs: [
      { type: PT_LOAD, offset: BODY_OFFSET, paddr: 0x100000, filesz: 0x100, memsz: 0x180 },
      { type: PT_LOAD, offset: BODY_OFFSET + 0x100, paddr: 0x200000, filesz: 0x100, memsz: 0x100 },
      { type: PT_NOTE, offset: BODY_OFFSET + 0x200, paddr: 0, filesz: notes.length, memsz: 0 },
      { type: 0x6474e551, offset: 0, paddr: 0, filesz: 0, memsz: 0 },
    ],
  });
  const fields: FieldAt[] = [
    { name: "e_entry", at: 24, bytes: 8 },
    { name: "e_phoff", at: 32, bytes: 8 },
    { name: "e_phentsize", at: 54, bytes: 2 },
    { name: "e_phnum", at: 56, bytes: 2 },
  ];
  for (let i = 0; i < 4; i++) {
    const o = 64 + i * 56;
    fields.push(
      { name: `ph${i}.type`, at: o, bytes: 4 },
      { name: `ph${i}.offset`, at: o + 8, bytes: 8 },
      { name: `ph${i}.paddr`, at: o + 24, bytes: 8 },
      { name: `ph${i}.filesz`, at: o + 32, bytes: 8 },
      { name: `ph${i}.memsz`, at: o + 40, bytes: 8 },
    );
  }
  const gnu = BODY_OFFSET + 0x200, xen = gnu + GNU_NOTE.length;
  for (const [n, at] of [["gnu", gnu], ["xen", xen]] as const) {
    fields.push(
      { name: `${n}.namesz`, at, bytes: 4 },
      { name: `${n}.descsz`, at: at + 4, bytes: 4 },
      { name: `${n}.type`, at: at + 8, bytes: 4 },
    );
  }
  fields.push({ name: "pvh_entry", at: xen + 16, bytes: 8 });
  return { bytes, fields, label: "elf" };
}

/** A bzImage that loads in {@linkcode FUZZ_MEMORY}: runs at 1 MiB, needs 64 KiB. */
export function bzSeed(): Seed {
  const bytes = craftBzImage([[0x258, 8, 0x100000], [0x260, 4, 0x10000]], 0x400);
  const fields: FieldAt[] = [
    { name: "setup_sects", at: 0x1f1, bytes: 1 },
    { name: "syssize", at: 0x1f4, bytes: 4 },
    { name: "boot_flag", at: 0x1fe, bytes: 2 },
    { name: "jump+1", at: 0x201, bytes: 1 },
    { name: "header", at: 0x202, bytes: 4 },
    { name: "version", at: 0x206, bytes: 2 },
    { name: "loadflags", at: 0x211, bytes: 1 },
    { name: "initrd_addr_max", at: 0x22c, bytes: 4 },
    { name: "xloadflags", at: 0x236, bytes: 2 },
    { name: "cmdline_size", at: 0x238, bytes: 4 },
    { name: "pref_address", at: 0x258, bytes: 8 },
    { name: "init_size", at: 0x260, bytes: 4 },
  ];
  return { bytes, fields, label: "bzimage" };
}

/** A cpio archive with one member of each type; every header field is a target. */
export function cpioSeed(): Seed {
  const entries: CpioEntry[] = [
    { type: "dir", path: "bin" },
    { type: "file", path: "bin/busybox", data: new Uint8Array(37).fill(0x41), mode: 0o755 },
    { type: "symlink", path: "bin/sh", target: "busybox" },
    { type: "chardev", path: "dev/console", major: 5, minor: 1 },
    { type: "file", path: "init", data: new TextEncoder().encode("#!/bin/sh\n") },
  ];
  const bytes = writeCpio(entries);
  const fields: FieldAt[] = [];
  // Walk the members as written: 110-byte header, name, data, each padded to 4.
  const hex = (at: number) => parseInt(String.fromCharCode(...bytes.subarray(at, at + 8)), 16);
  const NAMES = [
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
  ];
  for (let off = 0, n = 0; off + 110 <= bytes.length; n++) {
    for (let i = 0; i < 13; i++) {
      fields.push({ name: `m${n}.${NAMES[i]}`, at: off + 6 + i * 8, bytes: 4 });
    }
    const nameEnd = off + 110 + hex(off + 94);
    const dataStart = Math.ceil(nameEnd / 4) * 4;
    off = Math.ceil((dataStart + hex(off + 54)) / 4) * 4;
  }
  return { bytes, fields, hex: true, label: "cpio" };
}

const INTERESTING = [
  0n,
  1n,
  2n,
  3n,
  4n,
  7n,
  8n,
  12n,
  56n,
  64n,
  0x7fn,
  0x80n,
  0xffn,
  0x100n,
  0x7fffn,
  0x8000n,
  0xffffn,
  0x10000n,
  0x100000n,
  0x7ffffffcn,
  0x7ffffffdn,
  0x7ffffffen,
  0x7fffffffn,
  0x80000000n,
  0x80000001n,
  0xfffffff0n,
  0xfffffff4n,
  0xfffffffcn,
  0xfffffffdn,
  0xfffffffen,
  0xffffffffn,
  0x100000000n,
  1n << 52n,
  (1n << 53n) - 1n,
  1n << 53n,
  (1n << 53n) + 1n,
  1n << 63n,
  (1n << 64n) - 0x1000n,
  (1n << 64n) - 12n,
  (1n << 64n) - 1n,
];

/** A value for a field of `bytes`, wrapped to its width. */
function fieldValue(bytes: number, size: number): fc.Arbitrary<bigint> {
  const max = (1n << BigInt(8 * bytes)) - 1n;
  return fc.oneof(
    fc.constantFrom(...INTERESTING),
    // Offsets and lengths around the file's own size.
    fc.integer({ min: 0, max: size + 64 }).map(BigInt),
    // Addresses in and just past the loader's guest RAM.
    fc.integer({ min: 0, max: 2 * FUZZ_MEMORY }).map(BigInt),
    fc.bigInt({ min: 0n, max }),
  ).map((v) => v & max);
}

type Mutation =
  | { kind: "field"; field: number; value: bigint }
  | { kind: "byte"; at: number; value: number }
  | { kind: "truncate"; at: number }
  | { kind: "append"; bytes: Uint8Array };

function mutation(seed: Seed): fc.Arbitrary<Mutation> {
  const size = seed.bytes.length;
  const field = fc.integer({ min: 0, max: seed.fields.length - 1 }).chain((i) =>
    fieldValue(seed.fields[i].bytes, size).map((value): Mutation => ({
      kind: "field",
      field: i,
      value,
    }))
  );
  return fc.oneof(
    { arbitrary: field, weight: 6 },
    {
      arbitrary: fc.record({
        kind: fc.constant("byte" as const),
        at: fc.nat({ max: size - 1 }),
        value: fc.nat({ max: 255 }),
      }),
      weight: 3,
    },
    {
      arbitrary: fc.record({ kind: fc.constant("truncate" as const), at: fc.nat({ max: size }) }),
      weight: 1,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant("append" as const),
        bytes: fc.uint8Array({ maxLength: 64 }),
      }),
      weight: 1,
    },
  );
}

function apply(seed: Seed, mutations: Mutation[]): Uint8Array {
  let out: Uint8Array = seed.bytes.slice();
  for (const m of mutations) {
    if (m.kind === "truncate") out = out.slice(0, m.at);
    else if (m.kind === "append") out = concat(out, m.bytes);
    else if (m.kind === "byte") {
      if (m.at < out.length) out[m.at] = m.value;
    } else {
      const f = seed.fields[m.field];
      if (seed.hex) {
        const text = (m.value & 0xffffffffn).toString(16).padStart(8, "0");
        if (f.at + 8 <= out.length) out.set(new TextEncoder().encode(text), f.at);
        continue;
      }
      if (f.at + f.bytes > out.length) continue;
      const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
      if (f.bytes === 1) dv.setUint8(f.at, Number(m.value));
      else if (f.bytes === 2) dv.setUint16(f.at, Number(m.value), true);
      else if (f.bytes === 4) dv.setUint32(f.at, Number(m.value), true);
      else dv.setBigUint64(f.at, m.value, true);
    }
  }
  return out;
}

function describe(seed: Seed, m: Mutation): string {
  const h = (v: number | bigint) => `0x${v.toString(16)}`;
  if (m.kind === "field") return `${seed.fields[m.field].name}=${h(m.value)}`;
  if (m.kind === "byte") return `[${h(m.at)}]=${h(m.value)}`;
  if (m.kind === "truncate") return `truncate to ${h(m.at)}`;
  return `append ${m.bytes.length} bytes [${m.bytes.join(",")}]`;
}

/**
 * `seed` with one to eight mutations; shrinking removes mutations, and a
 * counterexample prints as the seed's name and its mutations, not as bytes.
 */
export function mutated(seed: Seed): fc.Arbitrary<Uint8Array> {
  return fc.array(mutation(seed), { minLength: 1, maxLength: 8 }).map((ms) => {
    const out = apply(seed, ms);
    const text = `${seed.label} seed with ${ms.map((m) => describe(seed, m)).join(", ")}`;
    Object.defineProperty(out, fc.toStringMethod, { value: () => text });
    return out;
  });
}

/** Random bytes, with `prefix` written over their start half the time. */
export function randomBytes(prefix: Uint8Array, maxLength = 4096): fc.Arbitrary<Uint8Array> {
  return fc.tuple(fc.uint8Array({ maxLength, size: "max" }), fc.boolean()).map(([b, keep]) => {
    if (!keep) return b;
    const out = new Uint8Array(Math.max(b.length, prefix.length));
    out.set(b);
    out.set(prefix);
    return out;
  });
}
