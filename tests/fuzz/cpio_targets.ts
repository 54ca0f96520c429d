/**
 * Fuzz targets of the cpio codec: random entries read back as written
 * (normalized, parents added, sorted), refused exactly when invalid; a
 * mutated archive reads or fails with a one-line VoltError.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { type CpioEntry, readCpio, writeCpio } from "../../src/guest/cpio.ts";
import { cpioSeed, mutated, randomBytes } from "./inputs.ts";
import { defineTarget, expectVoltError, type Target } from "./target.ts";

const CPIO = cpioSeed();

const segment = fc.oneof(
  fc.stringMatching(/^[a-z0-9._-]{1,6}$/),
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 4 }),
  fc.constantFrom(".", "..", ""),
);
const cpioPath = fc.tuple(fc.array(segment, { minLength: 1, maxLength: 3 }), fc.boolean())
  .map(([parts, lead]) => (lead ? "/" : "") + parts.join("/"));
const u32 = fc.nat({ max: 0xffffffff });
const owner = { uid: fc.option(u32, { nil: undefined }), gid: fc.option(u32, { nil: undefined }) };
const perm = fc.option(fc.nat({ max: 0o7777 }), { nil: undefined });
const cpioEntry: fc.Arbitrary<CpioEntry> = fc.oneof(
  fc.record({
    type: fc.constant("file" as const),
    path: cpioPath,
    data: fc.uint8Array({ maxLength: 64 }),
    mode: perm,
    ...owner,
  }, { requiredKeys: ["type", "path", "data"] }),
  fc.record({ type: fc.constant("dir" as const), path: cpioPath, mode: perm, ...owner }, {
    requiredKeys: ["type", "path"],
  }),
  fc.record({
    type: fc.constant("symlink" as const),
    path: cpioPath,
    target: fc.string({ unit: "grapheme", maxLength: 12 }),
    ...owner,
  }, { requiredKeys: ["type", "path", "target"] }),
  fc.record({
    type: fc.constantFrom("chardev" as const, "blockdev" as const),
    path: cpioPath,
    major: u32,
    minor: u32,
    mode: perm,
    ...owner,
  }, { requiredKeys: ["type", "path", "major", "minor"] }),
);

const DEFAULT_MODE = { file: 0o644, dir: 0o755, chardev: 0o600, blockdev: 0o600 };

/** What `readCpio(writeCpio(entries))` must give, or undefined when writeCpio must refuse. */
function cpioModel(entries: CpioEntry[]): CpioEntry[] | undefined {
  const byPath = new Map<string, CpioEntry>();
  for (const e of entries) {
    const parts = e.path.split("/").filter((p) => p !== "" && p !== ".");
    if (parts.includes("..") || parts.length === 0 || e.path.includes("\0")) return undefined;
    if (e.type === "symlink" && e.target === "") return undefined;
    const path = parts.join("/");
    if (byPath.has(path)) return undefined;
    byPath.set(path, e);
  }
  const all = new Map<string, CpioEntry>();
  for (const [path, e] of byPath) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const p = byPath.get(parent);
      if (p && p.type !== "dir") return undefined;
      if (!p) all.set(parent, { type: "dir", path: parent, mode: 0o755, uid: 0, gid: 0 });
    }
    const base = { path, uid: e.uid ?? 0, gid: e.gid ?? 0 };
    if (e.type === "symlink") all.set(path, { type: "symlink", target: e.target, ...base });
    else if (e.type === "file") {
      all.set(path, { type: "file", data: e.data, mode: e.mode ?? DEFAULT_MODE.file, ...base });
    } else if (e.type === "dir") {
      all.set(path, { type: "dir", mode: e.mode ?? DEFAULT_MODE.dir, ...base });
    } else {
      all.set(path, {
        type: e.type,
        major: e.major,
        minor: e.minor,
        mode: e.mode ?? DEFAULT_MODE[e.type],
        ...base,
      });
    }
  }
  return [...all.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map((p) => all.get(p)!);
}

function checkCpioRoundTrip({ entries, mtime }: { entries: CpioEntry[]; mtime: number }): void {
  const want = cpioModel(entries);
  let archive;
  try {
    archive = writeCpio(entries, { mtime });
  } catch (e) {
    expectVoltError(e);
    assert.equal(want, undefined, `writeCpio refused valid entries: ${(e as Error).message}`);
    return;
  }
  assert.notEqual(want, undefined, "writeCpio accepted entries it must refuse");
  assert.equal(archive.length % 4, 0);
  assert.deepEqual(readCpio(archive), want);
  // Deterministic: the same entries in another order give the same bytes.
  assert.deepEqual(writeCpio([...entries].reverse(), { mtime }), archive);
}

function checkCpioRead(bytes: Uint8Array): void {
  let entries;
  try {
    entries = readCpio(bytes);
  } catch (e) {
    return expectVoltError(e);
  }
  let data = 0;
  for (const e of entries) {
    assert.equal(typeof e.path, "string");
    if (e.type === "file") data += e.data.length;
  }
  assert.ok(data + entries.length * 112 <= bytes.length);
}

/** The cpio targets. */
export const CPIO_TARGETS: Target[] = [
  defineTarget({
    name: "cpio-roundtrip",
    about: "readCpio(writeCpio(entries)) is the entries, normalized; refusals exactly when invalid",
    arbitrary: fc.record({
      entries: fc.array(cpioEntry, { maxLength: 12 }),
      mtime: fc.oneof(fc.constant(0), u32),
    }),
    check: checkCpioRoundTrip,
  }),
  defineTarget({
    name: "cpio-read",
    about: "readCpio on an archive with its hex header fields, names and data mutated",
    arbitrary: fc.oneof(mutated(CPIO), randomBytes(CPIO.bytes.subarray(0, 110), 1024)),
    check: checkCpioRead,
  }),
];
