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

/** `SOL_SOCKET`: the socket-level option and control-message level. */
export const SOL_SOCKET = 1;
/** `SCM_RIGHTS`: a control message carrying descriptors. */
export const SCM_RIGHTS = 1;
/** `MSG_CTRUNC`: the control data did not fit (descriptors were dropped). */
export const MSG_CTRUNC = 0x8;
/** `MSG_DONTWAIT`: this call does not block. */
export const MSG_DONTWAIT = 0x40;
/** `MSG_NOSIGNAL`: a closed peer is EPIPE, not SIGPIPE. */
export const MSG_NOSIGNAL = 0x4000;
/** `MSG_CMSG_CLOEXEC`: received descriptors are close-on-exec. */
export const MSG_CMSG_CLOEXEC = 0x40000000;

/** `struct iovec` (include/uapi/linux/uio.h) on x86_64. */
export const IOVEC = { size: 16, base: 0, len: 8 } as const;

/** `struct msghdr` (include/linux/socket.h, the user ABI) on x86_64. */
export const MSGHDR = {
  size: 56,
  name: 0,
  namelen: 8,
  iov: 16,
  iovlen: 24,
  control: 32,
  controllen: 40,
  flags: 48,
} as const;

/** `struct cmsghdr` on x86_64; its data starts at `CMSG_DATA`, 8-byte aligned. */
export const CMSGHDR = { size: 16, len: 0, level: 8, type: 12, data: 16 } as const;

/**
 * `CMSG_SPACE(bytes)`: room a control message of `bytes` of data takes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cmsgSpace } from "./socket.ts";
 * assert.equal(cmsgSpace(3 * 4), 32);
 * ```
 */
export function cmsgSpace(bytes: number): number {
  return CMSGHDR.data + ((bytes + 7) & ~7);
}

/** `struct pollfd` (include/uapi/asm-generic/poll.h). */
export const POLLFD = { size: 8, fd: 0, events: 4, revents: 6 } as const;
/** `POLLIN`. */
export const POLLIN = 0x1;
/** `POLLERR`. */
export const POLLERR = 0x8;
/** `POLLHUP`. */
export const POLLHUP = 0x10;
/** `POLLNVAL`. */
export const POLLNVAL = 0x20;
