/**
 * The boot GDT and the segment descriptors KVM wants alongside it.
 *
 * One table serves both entry paths: the 64-bit boot protocol wants
 * `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18; PVH enters in 32-bit protected
 * mode through the 0x08 code descriptor.
 *
 * @module
 */

/** A segment as KVM's `struct kvm_segment` describes it. */
export interface Segment {
  base: number;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
}

/** Selectors of the boot GDT. */
export const SELECTOR = { code32: 0x08, code64: 0x10, data: 0x18, tss: 0x20 } as const;

/** Access/flags words (bits 8..23 of the high dword) of each descriptor. */
const FLAGS = { code32: 0xc09b, code64: 0xa09b, data: 0xc093, tss: 0x808b } as const;

/**
 * Encodes a descriptor from its flags word, base and limit.
 *
 * @example
 * ```ts
 * import { gdtEntry } from "./gdt.ts";
 * gdtEntry(0xa09b, 0, 0xfffff); // 0x00af9b000000ffffn, flat 64-bit code
 * ```
 */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit >>> 0);
  const f = BigInt(flags);
  return ((b & 0xff000000n) << 32n) | ((f & 0x0000f0ffn) << 40n) | ((l & 0x000f0000n) << 32n) |
    ((b & 0x00ffffffn) << 16n) | (l & 0x0000ffffn);
}

/** Decodes a descriptor into the segment KVM loads for `selector`. */
export function segmentFromEntry(entry: bigint, selector: number): Segment {
  const e = entry;
  const base = Number(((e >> 16n) & 0xffffffn) | ((e >> 32n) & 0xff000000n));
  const rawLimit = Number((e & 0xffffn) | ((e >> 32n) & 0xf0000n));
  const g = Number((e >> 55n) & 1n);
  return {
    base,
    // KVM takes the limit in bytes.
    limit: g ? (rawLimit * 4096 + 4095) >>> 0 : rawLimit,
    selector,
    type: Number((e >> 40n) & 0xfn),
    s: Number((e >> 44n) & 1n),
    dpl: Number((e >> 45n) & 3n),
    present: Number((e >> 47n) & 1n),
    avl: Number((e >> 52n) & 1n),
    l: Number((e >> 53n) & 1n),
    db: Number((e >> 54n) & 1n),
    g,
  };
}

/** The boot GDT, indexed by selector / 8. */
export function bootGdt(): bigint[] {
  return [
    0n,
    gdtEntry(FLAGS.code32, 0, 0xfffff),
    gdtEntry(FLAGS.code64, 0, 0xfffff),
    gdtEntry(FLAGS.data, 0, 0xfffff),
    gdtEntry(FLAGS.tss, 0, 0xfffff),
  ];
}

/** Serializes descriptors little-endian. */
export function gdtBytes(entries: bigint[]): Uint8Array {
  const out = new Uint8Array(entries.length * 8);
  const dv = new DataView(out.buffer);
  entries.forEach((e, i) => dv.setBigUint64(i * 8, e, true));
  return out;
}
