/**
 * Laying a diff snapshot's memory file onto its base (Firecracker's
 * `rebase-snap`): the diff's data extents replace the base's bytes there.
 * The result is written beside the base and renamed over it, so VMs
 * restored from the base keep mapping the file they opened, and a failure
 * leaves the base as it was.
 *
 * @module
 */

import { SEEK_DATA, SEEK_HOLE } from "../../ffi/fcntl.ts";
import { SEEK_END } from "../../ffi/eventfd.ts";
import { check, dataPath, errno, libc, O_RDONLY, openPath, SysError } from "../../ffi/libc.ts";
import { VoltError } from "../errors.ts";
import { setLength, writeFrom, writeWhole } from "./file_out.ts";

const CHUNK = 1 << 20;
/** `lseek`'s answer when no data follows the offset. */
const ENXIO = 6;

/** Each extent of data in `fd` (of `size` bytes) as [start, end); holes are skipped. */
function* extents(fd: number, size: number): Generator<[number, number]> {
  const l = libc();
  let at = 0;
  while (at < size) {
    const start = Number(l.lseek(fd, BigInt(at), SEEK_DATA));
    if (start < 0) {
      // ENXIO: no data past `at`.
      if (errno() === ENXIO) return;
      throw new SysError("lseek", errno());
    }
    const end = Math.min(
      size,
      Number(check(Number(l.lseek(fd, BigInt(start), SEEK_HOLE)), "lseek")),
    );
    yield [start, end];
    at = end;
  }
}

/** Copies `len` bytes at `offset` from `from` to `to`, through `buf`. */
function copyRange(from: number, to: number, offset: number, len: number, buf: Uint8Array): void {
  const addr = Number(
    Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>)),
  );
  for (let done = 0; done < len;) {
    const want = Math.min(buf.length, len - done);
    const n = dataPath.pread(from, addr, want, offset + done);
    if (n < 0) throw new SysError("pread", errno());
    if (n === 0) throw new Error("the file ended early");
    writeFrom(to, addr, n, offset + done);
    done += n;
  }
}

/**
 * Writes the diff memory file at `diffPath` onto the memory file at
 * `basePath` (the full snapshot the diff was taken after, or the last
 * rebase of it). Both must be of the same size; one line otherwise.
 *
 * @example
 * ```ts ignore
 * import { rebaseMemoryFile } from "./rebase.ts";
 * rebaseMemoryFile("vm.mem", "vm.diff.mem"); // vm.mem now restores with the diff's state file
 * ```
 */
export function rebaseMemoryFile(basePath: string, diffPath: string): void {
  const l = libc();
  const open = (path: string, what: string) => {
    try {
      return openPath(path, O_RDONLY);
    } catch (e) {
      throw new VoltError(`Cannot open ${what} ${path}: ${(e as Error).message}`, "noinput");
    }
  };
  const base = open(basePath, "base memory file");
  let diff = -1;
  try {
    diff = open(diffPath, "diff memory file");
    const size = Number(l.lseek(base, 0n, SEEK_END));
    const diffSize = Number(l.lseek(diff, 0n, SEEK_END));
    if (size !== diffSize) {
      throw new VoltError(
        `The diff ${diffPath} has ${diffSize} bytes, the base ${basePath} ${size}: not the same VM's memory`,
        "input",
      );
    }
    const buf = new Uint8Array(CHUNK);
    writeWhole(basePath, "memory file", (out) => {
      setLength(out, size);
      for (const [s, e] of extents(base, size)) copyRange(base, out, s, e - s, buf);
      for (const [s, e] of extents(diff, size)) copyRange(diff, out, s, e - s, buf);
    });
  } finally {
    l.close(base);
    if (diff >= 0) l.close(diff);
  }
}
