/**
 * The snapshot state file: a versioned, checksummed container for a JSON
 * document whose binary leaves (KVM structures, device registers) are
 * stored raw after it.
 *
 * Layout, little-endian: the magic `VOLTSNAP`, the format version (u32),
 * the JSON's length (u32), the binary area's length (u64), the JSON, the
 * binary area, then a SHA-256 of everything before it. A `Uint8Array` in
 * the document is written as `{"$bin": [offset, length]}` into the binary
 * area and read back as a `Uint8Array`.
 *
 * @module
 */

import { sha256 } from "./sha256.ts";
import { VoltError } from "../errors.ts";
import { writeBytes, writeWhole } from "./file_out.ts";

/** The format this code writes and reads. */
export const STATE_FORMAT_VERSION = 1;
const MAGIC = new TextEncoder().encode("VOLTSNAP");
const HEAD = 8 + 4 + 4 + 8;
const DIGEST = 32;
/** Largest JSON part read: a VM's document is a few KiB; this bounds a hostile file. */
const MAX_JSON = 16 << 20;
/** Largest binary area read (state of many vCPUs; guest RAM is in its own file). */
const MAX_BINARY = 256 << 20;

/** A document: JSON values with `Uint8Array` leaves. */
export type StateValue =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | StateValue[]
  | { [key: string]: StateValue };

/**
 * Encodes `doc` as a state file's bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeStateFile, encodeStateFile } from "./state_file.ts";
 * const bytes = encodeStateFile({ cpus: 1, lapic: new Uint8Array([1, 2]) });
 * assert.deepEqual(decodeStateFile(bytes, "s"), { cpus: 1, lapic: new Uint8Array([1, 2]) });
 * ```
 */
export function encodeStateFile(doc: StateValue): Uint8Array {
  const blobs: Uint8Array[] = [];
  let at = 0;
  const json = JSON.stringify(doc, (_k, v) => {
    if (!(v instanceof Uint8Array)) return v;
    blobs.push(v);
    const ref = { $bin: [at, v.length] };
    at += v.length;
    return ref;
  });
  const text = new TextEncoder().encode(json);
  const head = new Uint8Array(HEAD);
  head.set(MAGIC);
  const dv = new DataView(head.buffer);
  dv.setUint32(8, STATE_FORMAT_VERSION, true);
  dv.setUint32(12, text.length, true);
  dv.setBigUint64(16, BigInt(at), true);
  const parts = [head, text, ...blobs];
  const digest = sha256(parts);
  const out = new Uint8Array(HEAD + text.length + at + DIGEST);
  let o = 0;
  for (const p of [...parts, digest]) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Decodes a state file's bytes; `name` (its path) is how errors call it.
 * Throws a one-line {@linkcode VoltError} on a file that is not a Volt
 * snapshot, is truncated or damaged, or comes from another format version.
 */
export function decodeStateFile(bytes: Uint8Array, name: string): StateValue {
  const bad = (why: string) => new VoltError(`Snapshot ${name} ${why}`, "input");
  if (bytes.length < MAGIC.length || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw bad("is not a Volt snapshot state file");
  }
  if (bytes.length < HEAD + DIGEST) throw bad("is truncated");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== STATE_FORMAT_VERSION) {
    throw bad(`has format version ${version}; this Volt reads version ${STATE_FORMAT_VERSION}`);
  }
  const jsonLen = dv.getUint32(12, true);
  const binLen = Number(dv.getBigUint64(16, true));
  if (jsonLen > MAX_JSON || binLen > MAX_BINARY) throw bad("is damaged (its lengths are wrong)");
  const end = HEAD + jsonLen + binLen;
  if (bytes.length < end + DIGEST) throw bad("is truncated");
  if (bytes.length > end + DIGEST) throw bad("is damaged (it has bytes past its end)");
  const want = bytes.subarray(end, end + DIGEST);
  const got = sha256([bytes.subarray(0, end)]);
  if (got.some((b, i) => b !== want[i])) throw bad("is damaged (its checksum does not match)");
  const bin = bytes.subarray(HEAD + jsonLen, end);
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(
      bytes.subarray(HEAD, HEAD + jsonLen),
    ));
  } catch {
    throw bad("is damaged (its document is not JSON)");
  }
  const revive = (v: unknown): StateValue => {
    if (Array.isArray(v)) return v.map(revive);
    if (v !== null && typeof v === "object") {
      const ref = (v as { $bin?: unknown }).$bin;
      if (ref !== undefined) {
        const [off, len] = Array.isArray(ref) ? ref : [];
        if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0) {
          throw bad("is damaged (a binary reference is not two offsets)");
        }
        if (off + len > bin.length) throw bad("is damaged (a binary reference is past its end)");
        return bin.slice(off, off + len);
      }
      const out: { [key: string]: StateValue } = {};
      for (const [k, x] of Object.entries(v)) out[k] = revive(x);
      return out;
    }
    return v as StateValue;
  };
  return revive(doc);
}

/**
 * Writes `doc` to `path` whole or not at all: to a temporary file beside
 * it, synced, then renamed over `path`, so a failure never leaves a torn
 * state file where a good one was.
 */
export function writeStateFile(path: string, doc: StateValue): void {
  const bytes = encodeStateFile(doc);
  writeWhole(path, "snapshot", (fd) => writeBytes(fd, bytes, 0));
}

/** Reads and decodes the state file at `path` (see {@linkcode decodeStateFile}). */
export function readStateFile(path: string): StateValue {
  let bytes: Uint8Array;
  try {
    const size = Deno.statSync(path).size;
    if (size > HEAD + MAX_JSON + MAX_BINARY + DIGEST) {
      throw new VoltError(`Snapshot ${path} is too large to be a state file`, "input");
    }
    bytes = Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof VoltError) throw e;
    throw new VoltError(`Cannot read snapshot ${path}: ${(e as Error).message}`, "noinput");
  }
  return decodeStateFile(bytes, path);
}
