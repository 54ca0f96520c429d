/**
 * Writing a snapshot's files whole or not at all, through libc rather than
 * Deno's file system: the jailed monitor has no Deno write permission (and
 * no read permission once it runs), and Landlock bounds where it may write.
 * Guest RAM goes out straight from its mapping, with no copy.
 *
 * @module
 */

import { O_CREAT, O_TRUNC, O_WRONLY } from "../../ffi/fcntl.ts";
import { check, cstr, dataPath, errno, libc, O_CLOEXEC, SysError } from "../../ffi/libc.ts";
import { VoltError } from "../errors.ts";

/**
 * Writes `len` bytes from host address `addr` to `fd` at `offset`, across
 * short writes.
 */
export function writeFrom(fd: number, addr: number, len: number, offset: number): void {
  let done = 0;
  while (done < len) {
    const n = dataPath.pwrite(fd, addr + done, len - done, offset + done);
    if (n < 0) throw new SysError("pwrite", errno());
    if (n === 0) throw new Error("pwrite wrote nothing");
    done += n;
  }
}

/** Writes `bytes` to `fd` at `offset`. */
export function writeBytes(fd: number, bytes: Uint8Array, offset: number): void {
  if (bytes.length === 0) return;
  const addr = Number(
    Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes as Uint8Array<ArrayBuffer>)),
  );
  writeFrom(fd, addr, bytes.length, offset);
}

/**
 * Creates `path` through `fill`, which writes the open descriptor: into a
 * temporary file beside it, synced, then renamed over `path`. On any
 * failure the temporary file goes and `path` is as it was; the error is
 * one line naming `what`.
 *
 * @example
 * ```ts ignore
 * import { writeWhole, writeBytes } from "./file_out.ts";
 * writeWhole("/tmp/x.snap", "snapshot", (fd) => writeBytes(fd, new Uint8Array([1]), 0));
 * ```
 */
export function writeWhole(path: string, what: string, fill: (fd: number) => void): void {
  const l = libc();
  const tmp = cstr(`${path}.tmp-${Deno.pid}`);
  let fd = -1;
  try {
    fd = check(l.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600), "open");
    fill(fd);
    check(l.fdatasync(fd), "fdatasync");
    const closing = fd;
    fd = -1;
    check(l.close(closing), "close");
    check(l.rename(tmp, cstr(path)), "rename");
  } catch (e) {
    if (fd >= 0) l.close(fd);
    l.unlink(tmp);
    throw new VoltError(`Cannot write ${what} ${path}: ${(e as Error).message}`, "cantCreate");
  }
}

/** Sets `fd`'s length (the memory file's holes). */
export function setLength(fd: number, size: number): void {
  check(libc().ftruncate(fd, BigInt(size)), "ftruncate");
}
