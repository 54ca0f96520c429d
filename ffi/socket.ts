/**
 * Unix-domain sockets: constants of include/linux/socket.h and
 * include/linux/net.h, and `struct sockaddr_un` (include/uapi/linux/un.h).
 *
 * @module
 */

/** `AF_UNIX`. */
export const AF_UNIX = 1;
/** `SOCK_STREAM`. */
export const SOCK_STREAM = 1;
/** `SOCK_NONBLOCK` (= O_NONBLOCK), or'ed into the type. */
export const SOCK_NONBLOCK = 0o4000;
/** `SOCK_CLOEXEC` (= O_CLOEXEC), or'ed into the type. */
export const SOCK_CLOEXEC = 0o2000000;
/** `shutdown(2)`: no more sends. */
export const SHUT_WR = 1;

/** `struct sockaddr_un`: `sa_family_t sun_family; char sun_path[108];`. */
export const SOCKADDR_UN = { size: 110, family: 0, path: 2, pathMax: 108 } as const;

/**
 * A `sockaddr_un` for `path`; throws a RangeError when the path (and its
 * NUL) does not fit the 108 bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sockaddrUn } from "./socket.ts";
 * assert.equal(sockaddrUn("/tmp/v.sock")[2], "/".charCodeAt(0));
 * ```
 */
export function sockaddrUn(path: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length >= SOCKADDR_UN.pathMax) {
    throw new RangeError(
      `Socket path is ${bytes.length} bytes; at most ${SOCKADDR_UN.pathMax - 1}`,
    );
  }
  const sa = new Uint8Array(SOCKADDR_UN.size);
  new DataView(sa.buffer).setUint16(SOCKADDR_UN.family, AF_UNIX, true);
  sa.set(bytes, SOCKADDR_UN.path);
  return sa;
}
