/**
 * The warm pool's wire protocol, on a unix socket (`volt pool`).
 *
 * A client connects and sends one line of JSON (`{"version": 1}`) with its
 * stdin, stdout and stderr as `SCM_RIGHTS` descriptors, in one message. A
 * ready monitor of the pool accepts it, answers one line
 * (`{"accepted": true, "pid": N}` or `{"error": "..."}`), takes the three
 * descriptors as its own 0, 1 and 2, and starts its VM: the console is the
 * client's. When the VM ends it sends one more line, the
 * {@linkcode PoolResult}, and closes the connection.
 *
 * Each side waits with `poll(2)` on Deno's main thread: a monitor waiting
 * for a client has nothing else to do, and a client nothing but wait.
 *
 * @module
 */

import { errno, libc } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";
import {
  AF_UNIX,
  CMSGHDR,
  cmsgSpace,
  IOVEC,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSGHDR,
  POLLERR,
  POLLFD,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  SCM_RIGHTS,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  sockaddrUn,
  SOL_SOCKET,
} from "../../ffi/socket.ts";
import {
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_EVENT,
  EPOLLHUP,
  EPOLLIN,
  EPOLLRDHUP,
} from "../../ffi/eventfd.ts";
import { VoltError } from "../errors.ts";

/** The protocol's version; a request with another is refused. */
export const POOL_PROTOCOL_VERSION = 1;
/** Longest request or answer line, with its newline. */
export const POOL_LINE_MAX = 4096;
/** Descriptors a start request carries: stdin, stdout, stderr. */
export const POOL_FDS = 3;
/** How long a monitor waits for a connected client's request. */
export const POOL_REQUEST_TIMEOUT_MS = 2000;

/** The line a monitor sends when its VM has ended. */
export interface PoolResult {
  /** The monitor's exit code, as `volt run` would have exited. */
  exit_code: number;
  /** Why the VM ended, in one line. */
  message: string;
  /** Wall clock (ms since the epoch) when the monitor accepted the client. */
  accepted_at: number;
  /** Wall clock when the first vCPU entered KVM_RUN, if one did. */
  first_run_at?: number;
}

/** A start request a monitor accepted: the connection and the client's descriptors. */
export interface PoolClient {
  /** The connection, for the answers. */
  conn: number;
  /** The client's stdin, stdout and stderr (close-on-exec). */
  fds: [number, number, number];
  /** Wall clock when it was accepted. */
  acceptedAt: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Wall clock in ms with sub-ms precision (comparable across processes). */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/** `poll(2)` on `fds` (each with `events`), blocking up to `timeoutMs` (-1: forever). */
function poll(fds: readonly { fd: number; events: number }[], timeoutMs: number): number[] {
  const buf = new Uint8Array(POLLFD.size * fds.length);
  const dv = new DataView(buf.buffer);
  fds.forEach((p, i) => {
    dv.setInt32(i * POLLFD.size + POLLFD.fd, p.fd, true);
    dv.setInt16(i * POLLFD.size + POLLFD.events, p.events, true);
  });
  for (;;) {
    const n = libc().poll(buf, BigInt(fds.length), timeoutMs);
    if (n >= 0) break;
    if (errnoName(errno()) !== "EINTR") {
      throw new VoltError(`poll failed: ${errnoName(errno())}`, "internal");
    }
  }
  return fds.map((_, i) => dv.getInt16(i * POLLFD.size + POLLFD.revents, true));
}

/**
 * Writes one JSON line to `fd` (a socket), whole, never raising SIGPIPE;
 * `send(2)` (sendto), which the monitor's seccomp filter allows.
 */
export function sendLine(fd: number, value: unknown): boolean {
  const bytes = encoder.encode(`${JSON.stringify(value)}\n`);
  let off = 0;
  while (off < bytes.length) {
    const n = Number(
      libc().send(fd, bytes.subarray(off), BigInt(bytes.length - off), MSG_NOSIGNAL),
    );
    if (n < 0) {
      if (errnoName(errno()) === "EINTR") continue;
      return false;
    }
    off += n;
  }
  return true;
}

/** A `struct msghdr` with one iovec over `data` and room for `control` bytes. */
function msghdr(data: Uint8Array, control = 0) {
  const iov = new Uint8Array(IOVEC.size);
  const iv = new DataView(iov.buffer);
  iv.setBigUint64(IOVEC.base, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(data))), true);
  iv.setBigUint64(IOVEC.len, BigInt(data.length), true);
  const cmsg = new Uint8Array(Math.max(control, 8));
  const hdr = new Uint8Array(MSGHDR.size);
  const hv = new DataView(hdr.buffer);
  hv.setBigUint64(MSGHDR.iov, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(iov))), true);
  hv.setBigUint64(MSGHDR.iovlen, 1n, true);
  if (control) {
    hv.setBigUint64(
      MSGHDR.control,
      BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(cmsg))),
      true,
    );
    hv.setBigUint64(MSGHDR.controllen, BigInt(control), true);
  }
  // iov and cmsg must stay alive as long as hdr is used.
  return { hdr, hv, iov, cmsg, data };
}

/**
 * Reads one line (up to {@linkcode POOL_LINE_MAX}) from `fd`, waiting up
 * to `timeoutMs` in all (-1: forever); undefined if the peer closed first.
 */
export function readLine(fd: number, timeoutMs = -1): string | undefined {
  const buf = new Uint8Array(POOL_LINE_MAX);
  let len = 0;
  const deadline = timeoutMs < 0 ? Infinity : Date.now() + timeoutMs;
  while (len < buf.length) {
    const left = deadline === Infinity ? -1 : Math.max(0, deadline - Date.now());
    const [rev] = poll([{ fd, events: POLLIN }], left);
    if (!rev) throw new VoltError("The pool's peer sent no line in time", "input");
    const msg = msghdr(buf.subarray(len));
    const n = Number(libc().recvmsg(fd, msg.hdr, MSG_DONTWAIT));
    if (n < 0) {
      const e = errnoName(errno());
      if (e === "EINTR" || e === "EAGAIN") continue;
      if (e === "ECONNRESET") return undefined;
      throw new VoltError(`Reading from the pool failed: ${e}`, "input");
    }
    if (n === 0) return undefined;
    const nl = buf.subarray(len, len + n).indexOf(10);
    len += n;
    if (nl >= 0) return decoder.decode(buf.subarray(0, len - n + nl));
  }
  throw new VoltError(`The pool's peer sent a line longer than ${POOL_LINE_MAX} bytes`, "input");
}

/**
 * The client's side: connects to the pool at `path` and sends the start
 * request with `fds` (stdin, stdout, stderr). Returns the connection;
 * read the answers with {@linkcode readLine}.
 *
 * @example
 * ```ts ignore
 * import { readLine, requestStart } from "./pool.ts";
 * const conn = requestStart("/run/volt/pool.sock");
 * console.log(readLine(conn)); // {"accepted":true,"pid":1234}
 * ```
 */
export function requestStart(path: string, fds: readonly number[] = [0, 1, 2]): number {
  const l = libc();
  const addr = sockaddrUn(path);
  const fd = l.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new VoltError(`Cannot make a unix socket: ${errnoName(errno())}`, "internal");
  if (l.connect(fd, addr, addr.length) !== 0) {
    const e = errnoName(errno());
    l.close(fd);
    throw new VoltError(
      e === "ENOENT" || e === "ECONNREFUSED"
        ? `No pool is listening on ${path} (start one with volt pool --socket ${path})`
        : `Cannot connect to the pool at ${path}: ${e}`,
      "noinput",
    );
  }
  const data = encoder.encode(`${JSON.stringify({ version: POOL_PROTOCOL_VERSION })}\n`);
  const space = cmsgSpace(4 * fds.length);
  const msg = msghdr(data, space);
  const cv = new DataView(msg.cmsg.buffer);
  cv.setBigUint64(CMSGHDR.len, BigInt(CMSGHDR.data + 4 * fds.length), true);
  cv.setInt32(CMSGHDR.level, SOL_SOCKET, true);
  cv.setInt32(CMSGHDR.type, SCM_RIGHTS, true);
  fds.forEach((f, i) => cv.setInt32(CMSGHDR.data + 4 * i, f, true));
  const n = Number(l.sendmsg(fd, msg.hdr, MSG_NOSIGNAL));
  if (n !== data.length) {
    const e = errnoName(errno());
    l.close(fd);
    throw new VoltError(`Sending the start request to the pool failed: ${e}`, "input");
  }
  return fd;
}

/** Why {@linkcode acceptStart} returned without a client. */
export type NoClient = "parent-gone";

/**
 * The monitor's side: waits for a client on `listenFd` (non-blocking,
 * shared by every monitor of the pool) and reads its request. Returns
 * "parent-gone" when `parentFd` (the pipe to the pool) reports an error or
 * hang-up: the pool has gone, and nobody will connect. A bad request gets
 * its `{"error"}` line and the wait goes on.
 */
export function acceptStart(listenFd: number, parentFd: number): PoolClient | NoClient {
  const l = libc();
  for (;;) {
    const [listen, parent] = poll(
      [{ fd: listenFd, events: POLLIN }, { fd: parentFd, events: 0 }],
      -1,
    );
    if (parent & (POLLERR | POLLHUP | POLLNVAL)) return "parent-gone";
    if (listen & POLLNVAL) throw new VoltError("The pool's socket is not open", "internal");
    if (!(listen & POLLIN)) continue;
    // Another monitor of the pool may have taken this client: EAGAIN.
    const conn = l.accept4(listenFd, null, null, SOCK_CLOEXEC);
    if (conn < 0) continue;
    const acceptedAt = wallClockMs();
    const got = receiveRequest(conn);
    if ("fds" in got) return { conn, fds: got.fds, acceptedAt };
    sendLine(conn, { error: got.error });
    l.close(conn);
  }
}

/** Reads and checks one start request on `conn`; every descriptor it carried is closed on error. */
export function receiveRequest(
  conn: number,
  timeoutMs = POOL_REQUEST_TIMEOUT_MS,
): { fds: [number, number, number] } | { error: string } {
  const l = libc();
  const [rev] = poll([{ fd: conn, events: POLLIN }], timeoutMs);
  if (!(rev & POLLIN)) return { error: "No start request in time" };
  const data = new Uint8Array(POOL_LINE_MAX);
  // Room for more than three, so that extra descriptors are seen (and closed), not cut.
  const space = cmsgSpace(4 * 16);
  const msg = msghdr(data, space);
  const n = Number(l.recvmsg(conn, msg.hdr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
  const fds: number[] = [];
  // Control messages the kernel wrote (it rewrites msg_controllen to their total).
  const total = Number(msg.hv.getBigUint64(MSGHDR.controllen, true));
  const cv = new DataView(msg.cmsg.buffer);
  for (let off = 0; n >= 0 && off + CMSGHDR.data <= total;) {
    const len = Number(cv.getBigUint64(off + CMSGHDR.len, true));
    if (len < CMSGHDR.data || off + len > total) break;
    if (
      cv.getInt32(off + CMSGHDR.level, true) === SOL_SOCKET &&
      cv.getInt32(off + CMSGHDR.type, true) === SCM_RIGHTS
    ) {
      for (let p = off + CMSGHDR.data; p + 4 <= off + len; p += 4) {
        fds.push(cv.getInt32(p, true));
      }
    }
    off += cmsgSpace(len - CMSGHDR.data);
  }
  const fail = (error: string) => {
    for (const f of fds) l.close(f);
    return { error };
  };
  if (n < 0) return fail(`Reading the start request failed: ${errnoName(errno())}`);
  if (msg.hv.getInt32(MSGHDR.flags, true) & MSG_CTRUNC) {
    return fail("The start request carried more descriptors than it may");
  }
  const nl = data.subarray(0, n).indexOf(10);
  if (nl < 0) return fail("The start request is not one line of JSON");
  let req: unknown;
  try {
    req = JSON.parse(decoder.decode(data.subarray(0, nl)));
  } catch {
    return fail("The start request is not valid JSON");
  }
  if (typeof req !== "object" || req === null || Array.isArray(req)) {
    return fail("The start request is not a JSON object");
  }
  const version = (req as Record<string, unknown>).version;
  if (version !== POOL_PROTOCOL_VERSION) {
    return fail(`The start request's version is ${JSON.stringify(version)}; this pool speaks 1`);
  }
  const extra = Object.keys(req).find((k) => k !== "version");
  if (extra !== undefined) return fail(`The start request has an unknown field "${extra}"`);
  if (fds.length !== POOL_FDS) {
    return fail(
      `The start request carried ${fds.length} descriptors, not stdin, stdout and stderr`,
    );
  }
  return { fds: [fds[0], fds[1], fds[2]] };
}

/**
 * Makes the client's descriptors this process's stdin, stdout and stderr
 * (closing the received copies), so the console, its terminal handling
 * and every log line go to the client.
 */
export function adoptClientFds(fds: readonly [number, number, number]): void {
  const l = libc();
  fds.forEach((f, target) => {
    if (l.dup3(f, target, 0) < 0) {
      throw new VoltError(
        `Taking the pool client's descriptors failed: ${errnoName(errno())}`,
        "internal",
      );
    }
  });
  for (const f of fds) if (f > 2) l.close(f);
}

/**
 * Resolves when the client on `conn` hangs up (it ended, or was killed):
 * its VM should stop, as a `volt run`'s does with it. Made before the
 * seccomp filter (epoll_create1); waits with epoll_wait on Deno's blocking
 * pool and reads with recv (recvfrom), both allowed after it. Bytes the
 * client sends are read and dropped.
 */
export function clientGone(conn: number): Promise<void> {
  const l = libc();
  const ep = l.epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) throw new VoltError(`epoll_create1 failed: ${errnoName(errno())}`, "internal");
  const ev = new Uint8Array(EPOLL_EVENT.size);
  new DataView(ev.buffer).setUint32(EPOLL_EVENT.events, EPOLLIN | EPOLLRDHUP, true);
  if (l.epoll_ctl(ep, EPOLL_CTL_ADD, conn, ev) !== 0) {
    const e = errnoName(errno());
    l.close(ep);
    throw new VoltError(`Watching the pool client failed: ${e}`, "internal");
  }
  const sink = new Uint8Array(POOL_LINE_MAX);
  return (async () => {
    try {
      for (;;) {
        const n = await l.epoll_wait_nb(ep, ev, 1, -1);
        if (n <= 0) continue;
        const events = new DataView(ev.buffer).getUint32(EPOLL_EVENT.events, true);
        if (events & (EPOLLHUP | EPOLLRDHUP)) return;
        const got = Number(l.recv(conn, sink, BigInt(sink.length), MSG_DONTWAIT));
        if (got === 0 || (got < 0 && errnoName(errno()) !== "EAGAIN")) return;
      }
    } finally {
      l.close(ep);
    }
  })();
}
