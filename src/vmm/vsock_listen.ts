/**
 * The host end of the vsock device: the unix socket host clients connect
 * to (`CONNECT <port>\n`), made and bound before the jail and handed over
 * as a descriptor, like a disk or a TAP.
 *
 * @module
 */

import { errno, libc } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";
import { AF_UNIX, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, sockaddrUn } from "../../ffi/socket.ts";
import { VoltError } from "../errors.ts";

/** Longest `uds` path: guest connections to port P go to `<path>_P`, up to 10 digits more. */
export const VSOCK_PATH_MAX = 107 - 11;

/**
 * Listens on `path` (non-blocking) for vsock's host clients.
 *
 * @example
 * ```ts ignore
 * const fd = listenVsock("/run/volt/v.sock");
 * ```
 */
export function listenVsock(path: string, opts: { inheritable?: boolean } = {}): number {
  if (new TextEncoder().encode(path).length > VSOCK_PATH_MAX) {
    throw new VoltError(
      `vsock socket path is longer than ${VSOCK_PATH_MAX} bytes: ${path}`,
      "usage",
    );
  }
  return listenUnix(path, { ...opts, what: "vsock socket" });
}

/** Longest path a unix socket address holds (`sun_path` less its NUL). */
export const UNIX_PATH_MAX = 107;

/**
 * Listens on a unix socket at `path` (non-blocking): a stale socket file
 * there is replaced, anything else refused in one line naming `what`.
 * `inheritable` leaves close-on-exec off.
 *
 * @example
 * ```ts ignore
 * const fd = listenUnix("/run/volt/api.sock", { what: "API socket" });
 * ```
 */
export function listenUnix(
  path: string,
  opts: { inheritable?: boolean; what: string },
): number {
  const { what } = opts;
  if (new TextEncoder().encode(path).length > UNIX_PATH_MAX) {
    throw new VoltError(
      `${what} path is longer than ${UNIX_PATH_MAX} bytes: ${path}`,
      "usage",
    );
  }
  try {
    const info = Deno.lstatSync(path);
    if (!info.isSocket) {
      throw new VoltError(`${what} path exists and is not a socket: ${path}`, "cantCreate");
    }
    // A socket left by an earlier VM: nobody can be listening on it any more once we bind anew.
    Deno.removeSync(path);
  } catch (e) {
    if (e instanceof VoltError) throw e;
  }
  const l = libc();
  const fd = l.socket(
    AF_UNIX,
    SOCK_STREAM | SOCK_NONBLOCK | (opts.inheritable ? 0 : SOCK_CLOEXEC),
    0,
  );
  if (fd < 0) throw new VoltError(`Cannot make a unix socket: ${errnoName(errno())}`, "internal");
  const addr = sockaddrUn(path);
  if (l.bind(fd, addr, addr.length) !== 0 || l.listen(fd, 128) !== 0) {
    const e = errnoName(errno());
    l.close(fd);
    throw new VoltError(`Cannot listen on ${path}: ${e}`, "cantCreate");
  }
  return fd;
}
