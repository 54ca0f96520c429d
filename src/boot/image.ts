/**
 * Random access to a kernel or initrd file, so loaders read straight into
 * guest memory instead of buffering whole images.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/** A readable image. */
export interface Image {
  /** Path or label, for messages. */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
  /** Fills `dest` from `offset`; throws if the image ends first. */
  readAt(offset: number, dest: Uint8Array): void;
  /** Releases the file. */
  close(): void;
}

/**
 * An image over bytes in memory.
 *
 * @example
 * ```ts
 * import { bytesImage } from "./image.ts";
 * const img = bytesImage("test", new Uint8Array([1, 2, 3]));
 * const b = new Uint8Array(2);
 * img.readAt(1, b); // b = [2, 3]
 * ```
 */
export function bytesImage(name: string, bytes: Uint8Array): Image {
  return {
    name,
    size: bytes.length,
    readAt(offset, dest) {
      if (!inside(offset, dest.length, bytes.length)) throw truncated(name);
      dest.set(bytes.subarray(offset, offset + dest.length));
    },
    close() {},
  };
}

/** `len` bytes at `offset` lie within `size`; a negative or fractional offset never does. */
function inside(offset: number, len: number, size: number): boolean {
  return Number.isSafeInteger(offset) && offset >= 0 && offset + len <= size;
}

function truncated(name: string): VoltError {
  return new VoltError(`${name} is truncated`, "input");
}

/**
 * Opens `path`, with one-line errors for missing or unreadable files.
 *
 * @example
 * ```ts ignore
 * import { openImage } from "./image.ts";
 * const img = openImage("vmlinux", "Kernel"); // errors name it "Kernel vmlinux"
 * img.close();
 * ```
 */
export function openImage(path: string, what: string): Image {
  let file: Deno.FsFile;
  let size: number;
  try {
    file = Deno.openSync(path, { read: true });
    const st = file.statSync();
    if (!st.isFile) {
      file.close();
      throw new VoltError(`${what} ${path} is not a regular file`, "noinput");
    }
    size = st.size;
  } catch (e) {
    if (e instanceof VoltError) throw e;
    if (e instanceof Deno.errors.NotFound) {
      throw new VoltError(`${what} not found: ${path}`, "noinput");
    }
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
      throw new VoltError(`${what} ${path} is not readable: permission denied`, "noinput");
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new VoltError(`${what} ${path} is not a regular file`, "noinput");
    }
    throw new VoltError(`${what} ${path} cannot be opened: ${(e as Error).message}`, "noinput");
  }
  const label = `${what} ${path}`;
  return {
    name: label,
    size,
    readAt(offset, dest) {
      if (!inside(offset, dest.length, size)) throw truncated(label);
      file.seekSync(offset, Deno.SeekMode.Start);
      let done = 0;
      while (done < dest.length) {
        const n = file.readSync(dest.subarray(done));
        if (n === null || n === 0) throw truncated(label);
        done += n;
      }
    },
    close() {
      file.close();
    },
  };
}
