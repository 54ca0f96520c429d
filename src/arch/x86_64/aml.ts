/**
 * A small AML encoder (ACPI 6.5 §20): the few terms a microVM's DSDT
 * needs, a scope, devices, named integers, strings, packages and resource
 * templates, each returned as bytes.
 *
 * @module
 */

import { AML, RESOURCE } from "../../../ffi/acpi.ts";

/** A piece of AML. */
export type Aml = Uint8Array;

function concat(parts: Aml[]): Aml {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * A PkgLength (§20.2.4) for `payload` bytes that follow it: the encoded
 * length counts its own bytes too.
 */
export function pkgLength(payload: number): Aml {
  if (payload + 1 < 0x40) return Uint8Array.of(payload + 1);
  for (let n = 2; n <= 4; n++) {
    const total = payload + n;
    if (total < 2 ** (4 + 8 * (n - 1))) {
      const out = new Uint8Array(n);
      out[0] = ((n - 1) << 6) | (total & 0xf);
      for (let i = 1; i < n; i++) out[i] = (total >>> (4 + 8 * (i - 1))) & 0xff;
      return out;
    }
  }
  throw new RangeError(`AML package of ${payload} bytes is too long`);
}

/** A NameSeg: four characters, `[A-Z_][A-Z0-9_]{3}`. */
export function nameSeg(name: string): Aml {
  if (!/^[A-Z_][A-Z0-9_]{3}$/.test(name)) throw new RangeError(`Bad AML name ${name}`);
  return new TextEncoder().encode(name);
}

/** An integer in the shortest encoding. */
export function integer(n: number | bigint): Aml {
  const v = BigInt(n);
  if (v < 0n || v >= 1n << 64n) throw new RangeError(`AML integer ${n} out of range`);
  if (v === 0n) return Uint8Array.of(AML.ZERO);
  if (v === 1n) return Uint8Array.of(AML.ONE);
  const [prefix, bytes] = v <= 0xffn
    ? [AML.BYTE_PREFIX, 1]
    : v <= 0xffffn
    ? [AML.WORD_PREFIX, 2]
    : v <= 0xffffffffn
    ? [AML.DWORD_PREFIX, 4]
    : [AML.QWORD_PREFIX, 8];
  const out = new Uint8Array(1 + bytes);
  out[0] = prefix;
  for (let i = 0; i < bytes; i++) out[1 + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** A string constant (ASCII, no NUL). */
export function string(s: string): Aml {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c > 0x7f) throw new RangeError("AML strings are ASCII without NUL");
  }
  return concat([Uint8Array.of(AML.STRING_PREFIX), new TextEncoder().encode(s), Uint8Array.of(0)]);
}

/**
 * `EISAID("PNP0501")`: a PNP ID compressed into an integer (three 5-bit
 * letters and four hex digits, stored byte-swapped).
 */
export function eisaId(id: string): Aml {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`Bad EISA ID ${id}`);
  const letter = (i: number) => id.charCodeAt(i) - 0x40;
  const v =
    ((letter(0) << 26) | (letter(1) << 21) | (letter(2) << 16) | parseInt(id.slice(3), 16)) >>>
    0;
  const swapped = (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>>
    0;
  return integer(swapped);
}

/** `Name(name, value)`. */
export function name(n: string, value: Aml): Aml {
  return concat([Uint8Array.of(AML.NAME), nameSeg(n), value]);
}

/** `Package() { ... }` of up to 255 elements. */
export function pkg(elements: Aml[]): Aml {
  if (elements.length > 0xff) throw new RangeError("AML package of more than 255 elements");
  const body = concat([Uint8Array.of(elements.length), ...elements]);
  return concat([Uint8Array.of(AML.PACKAGE), pkgLength(body.length), body]);
}

/** `Buffer() { bytes }`. */
export function buffer(bytes: Uint8Array): Aml {
  const body = concat([integer(bytes.length), bytes]);
  return concat([Uint8Array.of(AML.BUFFER), pkgLength(body.length), body]);
}

/** `Scope(\name) { terms }`, at the root. */
export function rootScope(n: string, terms: Aml[]): Aml {
  const body = concat([Uint8Array.of(AML.ROOT_CHAR), nameSeg(n), ...terms]);
  return concat([Uint8Array.of(AML.SCOPE), pkgLength(body.length), body]);
}

/** `Device(name) { terms }`. */
export function device(n: string, terms: Aml[]): Aml {
  const body = concat([nameSeg(n), ...terms]);
  return concat([Uint8Array.of(AML.EXT_PREFIX, AML.DEVICE), pkgLength(body.length), body]);
}

/** `Memory32Fixed(ReadWrite, base, size)`. */
export function memory32Fixed(base: number, size: number): Aml {
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  out[0] = RESOURCE.MEMORY32_FIXED;
  dv.setUint16(1, RESOURCE.MEMORY32_FIXED_LENGTH, true);
  out[3] = 1; // read-write
  dv.setUint32(4, base, true);
  dv.setUint32(8, size, true);
  return out;
}

/** `IO(Decode16, base, base, 1, length)`: a fixed run of I/O ports. */
export function ioPorts(base: number, length: number): Aml {
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  out[0] = RESOURCE.IO_PORT;
  out[1] = 1; // 16-bit decode
  dv.setUint16(2, base, true);
  dv.setUint16(4, base, true);
  out[6] = 1;
  out[7] = length;
  return out;
}

/** `Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { line }`. */
export function edgeInterrupt(line: number): Aml {
  const out = new Uint8Array(9);
  const dv = new DataView(out.buffer);
  out[0] = RESOURCE.EXTENDED_IRQ;
  dv.setUint16(1, 6, true);
  out[3] = RESOURCE.IRQ_CONSUMER | RESOURCE.IRQ_EDGE;
  out[4] = 1;
  dv.setUint32(5, line, true);
  return out;
}

/** `ResourceTemplate() { descriptors }`: a buffer closed by an end tag. */
export function resourceTemplate(descriptors: Aml[]): Aml {
  return buffer(concat([...descriptors, Uint8Array.of(RESOURCE.END_TAG, 0)]));
}

/**
 * A list of terms, one after another.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { integer, name, terms } from "./aml.ts";
 * assert.deepEqual([...terms([name("_UID", integer(0))])], [0x08, 0x5f, 0x55, 0x49, 0x44, 0x00]);
 * ```
 */
export function terms(list: Aml[]): Aml {
  return concat(list);
}
