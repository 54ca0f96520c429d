/**
 * cpio "newc" archives, the format Linux unpacks as an initramfs: a
 * deterministic writer (same entries, same bytes) and a reader.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/**
 * One archive member. Paths are relative to the archive root; a leading "/"
 * is accepted and dropped. `mode` is the permission bits (e.g. `0o755`);
 * `uid`/`gid` default to 0.
 *
 * @example
 * ```ts
 * import type { CpioEntry } from "./cpio.ts";
 * const tty: CpioEntry = { type: "chardev", path: "dev/console", major: 5, minor: 1 };
 * ```
 */
export type CpioEntry =
  | { type: "file"; path: string; data: Uint8Array; mode?: number; uid?: number; gid?: number }
  | { type: "dir"; path: string; mode?: number; uid?: number; gid?: number }
  | { type: "symlink"; path: string; target: string; uid?: number; gid?: number }
  | {
    type: "chardev" | "blockdev";
    path: string;
    major: number;
    minor: number;
    mode?: number;
    uid?: number;
    gid?: number;
  };

/**
 * Options of {@linkcode writeCpio}.
 *
 * @example
 * ```ts
 * import { type WriteCpioOptions, writeCpio } from "./cpio.ts";
 * const opts: WriteCpioOptions = { mtime: 1700000000 };
 * writeCpio([{ type: "dir", path: "tmp", mode: 0o1777 }], opts);
 * ```
 */
export interface WriteCpioOptions {
  /** Modification time of every entry, in seconds since the epoch (default 0). */
  mtime?: number;
}

const MAGIC = "070701";
const MAGIC_CRC = "070702";
const HEADER_SIZE = 110;
const TRAILER = "TRAILER!!!";

const S_IFMT = 0o170000;
const TYPE_BITS = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  chardev: 0o020000,
  blockdev: 0o060000,
} as const;

const DEFAULT_MODE = { file: 0o644, dir: 0o755, symlink: 0o777, chardev: 0o600, blockdev: 0o600 };

const encoder = new TextEncoder();
/**
 * A path in a message: quoted and escaped, so a name with a newline stays one
 * line, and cut at 80 characters, since an archive's name may be megabytes.
 */
const q = (path: string) => JSON.stringify(path.length > 80 ? `${path.slice(0, 80)}…` : path);
const decoder = new TextDecoder();

/** `path` without leading "/", empty or "." components; rejects "..". */
function normalizePath(path: string): string {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new VoltError(`Cpio path must not contain "..": ${q(path)}`);
  if (parts.length === 0) throw new VoltError(`Empty cpio path: ${q(path)}`);
  if (path.includes("\0")) {
    throw new VoltError(`Cpio path contains a NUL byte: ${q(path)}`);
  }
  return parts.join("/");
}

/** Checks that `value` fits a header field (8 hex digits). */
function field(value: number, what: string, path: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new VoltError(`Cpio ${what} out of range for ${q(path)}: ${value}`);
  }
  return value;
}

function permissions(mode: number | undefined, fallback: number, path: string): number {
  if (mode === undefined) return fallback;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new VoltError(`Cpio mode of ${q(path)} must be permission bits (0 to 0o7777)`);
  }
  return mode;
}

/** 4-byte alignment padding after `n` bytes. */
function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

interface Member {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Uint8Array;
}

function member(e: CpioEntry, name: string): Member {
  const uid = field(e.uid ?? 0, "uid", name);
  const gid = field(e.gid ?? 0, "gid", name);
  const base = { name, uid, gid, nlink: 1, rdevMajor: 0, rdevMinor: 0, data: new Uint8Array() };
  switch (e.type) {
    case "file":
      return {
        ...base,
        mode: TYPE_BITS.file | permissions(e.mode, DEFAULT_MODE.file, name),
        data: e.data,
      };
    case "dir":
      // Two links: its own name and its "." (subdirectories are not counted; the kernel ignores it).
      return {
        ...base,
        mode: TYPE_BITS.dir | permissions(e.mode, DEFAULT_MODE.dir, name),
        nlink: 2,
      };
    case "symlink":
      if (e.target === "") throw new VoltError(`Empty symlink target for ${q(name)}`);
      return {
        ...base,
        mode: TYPE_BITS.symlink | DEFAULT_MODE.symlink,
        data: encoder.encode(e.target),
      };
    case "chardev":
    case "blockdev":
      return {
        ...base,
        mode: TYPE_BITS[e.type] | permissions(e.mode, DEFAULT_MODE[e.type], name),
        rdevMajor: field(e.major, "major", name),
        rdevMinor: field(e.minor, "minor", name),
      };
    default:
      throw new VoltError(`Unknown cpio entry type: ${(e as { type: unknown }).type}`);
  }
}

function header(m: Member, ino: number, mtime: number): Uint8Array {
  const name = encoder.encode(m.name);
  const fields = [
    ino,
    m.mode,
    m.uid,
    m.gid,
    m.nlink,
    mtime,
    field(m.data.length, "file size", m.name),
    0, // devmajor: the archive has no source filesystem
    0, // devminor
    m.rdevMajor,
    m.rdevMinor,
    name.length + 1,
    0, // check: only used by the "070702" variant
  ];
  const text = MAGIC + fields.map(hex8).join("");
  const out = new Uint8Array(HEADER_SIZE + name.length + 1 + pad4(HEADER_SIZE + name.length + 1));
  out.set(encoder.encode(text));
  out.set(name, HEADER_SIZE);
  return out;
}

/**
 * Serializes `entries` as a newc archive. The output depends on the entries
 * only: they are sorted by path, missing parent directories are added
 * (mode 0755), inodes are numbered in order and every mtime is `opts.mtime`.
 * Duplicate paths and paths with ".." throw a {@linkcode VoltError}.
 *
 * @example
 * ```ts
 * import { readCpio, writeCpio } from "./cpio.ts";
 * const archive = writeCpio([
 *   { type: "file", path: "/init", data: new TextEncoder().encode("#!/bin/sh\n"), mode: 0o755 },
 *   { type: "symlink", path: "bin/sh", target: "busybox" },
 * ]);
 * console.log(readCpio(archive).map((e) => e.path)); // ["bin", "bin/sh", "init"]
 * ```
 */
export function writeCpio(entries: CpioEntry[], opts: WriteCpioOptions = {}): Uint8Array {
  const mtime = field(opts.mtime ?? 0, "mtime", "the archive");
  const byPath = new Map<string, CpioEntry>();
  for (const e of entries) {
    const path = normalizePath(e.path);
    if (byPath.has(path)) throw new VoltError(`Duplicate cpio path: ${q(path)}`);
    byPath.set(path, e);
  }
  for (const path of [...byPath.keys()]) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const existing = byPath.get(parent);
      if (!existing) byPath.set(parent, { type: "dir", path: parent });
      else if (existing.type !== "dir") {
        throw new VoltError(`Cpio path ${q(parent)} is not a directory but holds ${q(path)}`);
      }
    }
  }
  // Code-unit order puts every directory before its contents, as unpacking needs.
  const names = [...byPath.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const chunks: Uint8Array[] = [];
  let ino = 1;
  for (const name of names) {
    const m = member(byPath.get(name)!, name);
    chunks.push(header(m, ino++, mtime), m.data, new Uint8Array(pad4(m.data.length)));
  }
  const trailer: Member = {
    name: TRAILER,
    mode: 0,
    uid: 0,
    gid: 0,
    nlink: 1,
    rdevMajor: 0,
    rdevMinor: 0,
    data: new Uint8Array(),
  };
  chunks.push(header(trailer, 0, 0));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/**
 * The 8 ASCII hex digits at `at`, read byte by byte: decoding the header as
 * UTF-8 first would shift every later field past a non-ASCII byte.
 */
function hexField(archive: Uint8Array, at: number): number {
  let v = 0;
  for (let i = at; i < at + 8; i++) {
    const c = archive[i];
    const d = c >= 0x30 && c <= 0x39
      ? c - 0x30
      : c >= 0x61 && c <= 0x66
      ? c - 0x57
      : c >= 0x41 && c <= 0x46
      ? c - 0x37
      : -1;
    if (d < 0) throw new VoltError(`Bad cpio header field at offset ${at}`);
    // Number arithmetic: `<< 4` would go negative from 0x80000000 up.
    v = v * 16 + d;
  }
  return v;
}

/**
 * Parses a newc archive (also the "070702" variant) up to its trailer.
 * Entries come back as stored, with explicit modes and owners; hard-link
 * and FIFO/socket members are not supported.
 *
 * @example
 * ```ts
 * import { readCpio, writeCpio } from "./cpio.ts";
 * const [dev] = readCpio(writeCpio([{ type: "chardev", path: "dev", major: 5, minor: 1 }]));
 * console.log(dev); // { type: "chardev", path: "dev", major: 5, minor: 1, mode: 384, uid: 0, gid: 0 }
 * ```
 */
export function readCpio(archive: Uint8Array): CpioEntry[] {
  const out: CpioEntry[] = [];
  let off = 0;
  const need = (n: number, what: string) => {
    if (off + n > archive.length) {
      throw new VoltError(`Cpio archive truncated in ${what} at offset ${off}`);
    }
  };
  // Each member takes at least a header and a NUL: at most length/111 turns.
  for (;;) {
    need(HEADER_SIZE, "a header");
    const magic = String.fromCharCode(...archive.subarray(off, off + 6));
    if (magic !== MAGIC && magic !== MAGIC_CRC) {
      throw new VoltError(`Not a cpio newc archive (bad magic at offset ${off})`);
    }
    const f: number[] = [];
    for (let i = 0; i < 13; i++) f.push(hexField(archive, off + 6 + i * 8));
    const [, mode, uid, gid, , , size, , , rdevMajor, rdevMinor, nameSize] = f;
    off += HEADER_SIZE;
    need(nameSize, "a name");
    if (nameSize === 0 || archive[off + nameSize - 1] !== 0) {
      throw new VoltError(`Cpio name not NUL-terminated at offset ${off}`);
    }
    const name = decoder.decode(archive.subarray(off, off + nameSize - 1));
    off += nameSize + pad4(HEADER_SIZE + nameSize);
    if (name === TRAILER) return out;
    need(size, `the data of ${q(name)}`);
    const data = archive.slice(off, off + size);
    off += size + pad4(size);
    const perm = mode & 0o7777;
    const owner = { uid, gid };
    switch (mode & S_IFMT) {
      case TYPE_BITS.file:
        out.push({ type: "file", path: name, data, mode: perm, ...owner });
        break;
      case TYPE_BITS.dir:
        out.push({ type: "dir", path: name, mode: perm, ...owner });
        break;
      case TYPE_BITS.symlink:
        out.push({ type: "symlink", path: name, target: decoder.decode(data), ...owner });
        break;
      case TYPE_BITS.chardev:
      case TYPE_BITS.blockdev: {
        const type = (mode & S_IFMT) === TYPE_BITS.chardev ? "chardev" : "blockdev";
        out.push({ type, path: name, major: rdevMajor, minor: rdevMinor, mode: perm, ...owner });
        break;
      }
      default:
        throw new VoltError(
          `Unsupported cpio file type 0o${(mode & S_IFMT).toString(8)} of ${q(name)}`,
        );
    }
  }
}

async function pipe(
  data: Uint8Array,
  stream: { writable: WritableStream<BufferSource>; readable: ReadableStream<Uint8Array> },
): Promise<Uint8Array> {
  // The web streams take ArrayBuffer-backed views only.
  const bytes = data.buffer instanceof ArrayBuffer ? data as Uint8Array<ArrayBuffer> : data.slice();
  const writer = stream.writable.getWriter();
  // Not awaited before reading: a large input would fill the stream's queue and stall.
  const writing = writer.write(bytes).then(() => writer.close());
  const read = new Response(stream.readable).arrayBuffer();
  const [, buf] = await Promise.all([writing, read]);
  return new Uint8Array(buf);
}

/**
 * Compresses `data` with gzip (the web `CompressionStream`), as an
 * initramfs for kernels with `CONFIG_RD_GZIP`.
 *
 * @example
 * ```ts
 * import { gunzip, gzip } from "./cpio.ts";
 * const z = await gzip(new TextEncoder().encode("hello"));
 * console.log(new TextDecoder().decode(await gunzip(z))); // "hello"
 * ```
 */
export function gzip(data: Uint8Array): Promise<Uint8Array> {
  return pipe(data, new CompressionStream("gzip"));
}

/**
 * Decompresses gzip `data`; corrupt input throws a {@linkcode VoltError}.
 *
 * @example
 * ```ts
 * import { gunzip, gzip } from "./cpio.ts";
 * const plain = await gunzip(await gzip(new Uint8Array([1, 2, 3])));
 * console.log(plain); // Uint8Array(3) [ 1, 2, 3 ]
 * ```
 */
export async function gunzip(data: Uint8Array): Promise<Uint8Array> {
  try {
    return await pipe(data, new DecompressionStream("gzip"));
  } catch (e) {
    throw new VoltError(`Not valid gzip data: ${(e as Error).message}`);
  }
}
