/**
 * A small HTTP/1.1 server on a listening unix socket given as a
 * descriptor: the API socket is made before the jail, and the jailed
 * monitor (which may open no path) serves it on. Requests are bounded
 * (headers, body, connections), kept alive unless asked otherwise, and a
 * malformed one gets a fault response and a closed connection, never an
 * exception out of the server.
 *
 * @module
 */

import { errno, libc, PinnedBuffer } from "../../ffi/libc.ts";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_EVENT,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLRDHUP,
} from "../../ffi/eventfd.ts";
import { SHUT_WR, SOCK_CLOEXEC, SOCK_NONBLOCK } from "../../ffi/socket.ts";

const EINTR = 4;
const EAGAIN = 11;
/** epoll data of the listening socket and of the stop eventfd. */
const LISTEN = 0xffff_fff0;
const STOP = 0xffff_fff1;

/** One request, as the handler sees it. */
export interface HttpRequest {
  method: string;
  /** The path, without a query string. */
  path: string;
  /** The body's bytes (empty without one). */
  body: Uint8Array;
}

/** A handler's answer: a status and a JSON body, or none. */
export interface HttpResponse {
  status: number;
  body?: unknown;
  /** Close the connection after this answer (`Connection: close`). */
  close?: boolean;
}

/** Answers one request. */
export type HttpHandler = (req: HttpRequest) => HttpResponse | Promise<HttpResponse>;

/** Limits of {@linkcode UnixHttpServer}. */
export interface HttpLimits {
  /** Largest request body, bytes (Firecracker's default API payload limit is 51,200). */
  maxBody: number;
  /** Largest request line and headers, bytes. */
  maxHead: number;
  /** Connections served at once; more are closed on arrival. */
  maxConnections: number;
}

/** The limits unless told otherwise. */
export const DEFAULT_LIMITS: HttpLimits = {
  maxBody: 51_200,
  maxHead: 8192,
  maxConnections: 64,
};

const REASONS: Record<number, string> = {
  200: "OK",
  204: "No Content",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  413: "Payload Too Large",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
};

interface Conn {
  fd: number;
  buf: Uint8Array;
  len: number;
  /** A request is being answered: later bytes wait their turn. */
  busy: boolean;
  /**
   * Answered and shut for writing: bytes still to read and drop before the
   * close, so the client reads the answer instead of a reset.
   */
  draining?: number;
}

/** Bytes read and dropped after a closing answer, at most. */
const DRAIN_BYTES = 1 << 20;

/** What a parsed request head says, or why it cannot be served. */
type Head =
  | { ok: true; method: string; path: string; length: number; headEnd: number; close: boolean }
  | { ok: false; status: number; message: string };

const dec = new TextDecoder();
const enc = new TextEncoder();

/**
 * Parses the request line and headers in `buf[0, len)`; undefined while
 * they are incomplete.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseHead } from "./http.ts";
 * const b = new TextEncoder().encode("PUT /vm HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
 * const h = parseHead(b, b.length, 8192, 100);
 * assert.deepEqual(h, { ok: true, method: "PUT", path: "/vm", length: 2, headEnd: 40, close: false });
 * ```
 */
export function parseHead(
  buf: Uint8Array,
  len: number,
  maxHead: number,
  maxBody: number,
): Head | undefined {
  let end = -1;
  for (let i = 3; i < len; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) {
      end = i + 1;
      break;
    }
  }
  if (end < 0) {
    return len >= maxHead
      ? { ok: false, status: 431, message: `Request headers are longer than ${maxHead} bytes` }
      : undefined;
  }
  const lines = dec.decode(buf.subarray(0, end - 4)).split("\r\n");
  // The target in origin form (/path), or in absolute form (http://host/path)
  // as a client that takes the socket for a proxy sends it.
  const m = /^([A-Z]{1,10}) (?:https?:\/\/[^/ ]*)?(\/[^ ]*) HTTP\/1\.[01]$/.exec(lines[0]);
  if (!m) return { ok: false, status: 400, message: "Malformed request line" };
  let length = 0;
  let close = lines[0].endsWith("1.0");
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) return { ok: false, status: 400, message: "Malformed header line" };
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "content-length") {
      if (!/^\d{1,12}$/.test(value)) {
        return { ok: false, status: 400, message: "Bad Content-Length" };
      }
      length = Number(value);
    } else if (name === "transfer-encoding") {
      return { ok: false, status: 501, message: "Chunked request bodies are not supported" };
    } else if (name === "connection") {
      close = value.toLowerCase() === "close"
        ? true
        : value.toLowerCase() === "keep-alive"
        ? false
        : close;
    }
  }
  if (length > maxBody) {
    return {
      ok: false,
      status: 413,
      message: `Request payload of ${length} bytes exceeds the limit of ${maxBody} bytes`,
    };
  }
  return { ok: true, method: m[1], path: m[2].split("?")[0], length, headEnd: end, close };
}

/** An HTTP/1.1 response's bytes. */
export function encodeResponse(r: HttpResponse, close: boolean): Uint8Array {
  const body = r.body === undefined ? "" : JSON.stringify(r.body);
  const bytes = enc.encode(body);
  const head = [
    `HTTP/1.1 ${r.status} ${REASONS[r.status] ?? "Status"}`,
    "Server: Volt",
    ...(bytes.length || r.status !== 204 ? ["Content-Type: application/json"] : []),
    `Content-Length: ${bytes.length}`,
    ...(close ? ["Connection: close"] : []),
    "",
    "",
  ].join("\r\n");
  const out = new Uint8Array(head.length + bytes.length);
  out.set(enc.encode(head));
  out.set(bytes, head.length);
  return out;
}

/**
 * Serves HTTP on a listening unix socket descriptor (non-blocking) with
 * one handler. Make it before a seccomp filter is installed (it opens an
 * epoll set and an eventfd); {@linkcode serve} then needs only accept4,
 * read, write, close and epoll.
 *
 * @example
 * ```ts ignore
 * const server = new UnixHttpServer(fd, (req) => ({ status: 200, body: { path: req.path } }));
 * const done = server.serve();
 * server.close();
 * await done;
 * ```
 */
export class UnixHttpServer {
  readonly #listenFd: number;
  readonly #handler: HttpHandler;
  readonly #limits: HttpLimits;
  readonly #epollFd: number;
  readonly #stopFd: number;
  readonly #conns = new Map<number, Conn>();
  readonly #scratch = new PinnedBuffer(64 * 1024);
  #closed = false;

  constructor(listenFd: number, handler: HttpHandler, limits: Partial<HttpLimits> = {}) {
    this.#listenFd = listenFd;
    this.#handler = handler;
    this.#limits = { ...DEFAULT_LIMITS, ...limits };
    const l = libc();
    this.#epollFd = l.epoll_create1(EPOLL_CLOEXEC);
    this.#stopFd = l.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (this.#epollFd < 0 || this.#stopFd < 0) {
      throw new Error(`Cannot make the API server's epoll set (errno ${errno()})`);
    }
    this.#watch(listenFd, LISTEN);
    this.#watch(this.#stopFd, STOP);
  }

  #watch(fd: number, data: number): void {
    const ev = new Uint8Array(EPOLL_EVENT.size);
    const dv = new DataView(ev.buffer);
    dv.setUint32(EPOLL_EVENT.events, (EPOLLIN | EPOLLRDHUP) >>> 0, true);
    dv.setBigUint64(EPOLL_EVENT.data, BigInt(data), true);
    if (libc().epoll_ctl(this.#epollFd, EPOLL_CTL_ADD, fd, ev) !== 0) {
      throw new Error(`epoll_ctl failed (errno ${errno()})`);
    }
  }

  /** Serves until {@linkcode close}; then every connection is closed. */
  async serve(): Promise<void> {
    const l = libc();
    const events = new Uint8Array(EPOLL_EVENT.size * 16);
    const ev = new DataView(events.buffer);
    try {
      while (!this.#closed) {
        const n = await l.epoll_wait_nb(this.#epollFd, events, 16, -1);
        if (n < 0) {
          if (errno() === EINTR) continue;
          return;
        }
        for (let i = 0; i < n && !this.#closed; i++) {
          const flags = ev.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.events, true);
          const data = ev.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.data, true);
          if (data === STOP) return;
          if (data === LISTEN) this.#accept();
          else await this.#readable(data, flags);
        }
      }
    } finally {
      for (const fd of [...this.#conns.keys()]) this.#drop(fd);
      l.close(this.#epollFd);
      l.close(this.#stopFd);
    }
  }

  /** Stops serving; the listening socket stays its owner's. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const one = new Uint8Array(8);
    one[0] = 1;
    libc().write(this.#stopFd, one, 8n);
  }

  #accept(): void {
    const l = libc();
    for (;;) {
      const fd = l.accept4(this.#listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      if (this.#conns.size >= this.#limits.maxConnections) {
        l.close(fd);
        continue;
      }
      this.#conns.set(fd, { fd, buf: new Uint8Array(1024), len: 0, busy: false });
      this.#watch(fd, fd);
    }
  }

  async #readable(fd: number, flags: number): Promise<void> {
    const c = this.#conns.get(fd);
    if (!c) return;
    const l = libc();
    const room = this.#limits.maxHead + this.#limits.maxBody;
    for (;;) {
      const n = l.read_addr(
        fd,
        BigInt(this.#scratch.addr),
        BigInt(this.#scratch.buffer.byteLength),
      );
      if (n < 0) {
        if (errno() === EAGAIN) break;
        if (errno() === EINTR) continue;
        return this.#drop(fd);
      }
      if (c.draining !== undefined) {
        c.draining -= n;
        if (n === 0 || c.draining <= 0) return this.#drop(fd);
        continue;
      }
      if (n === 0) {
        // The peer is done sending; answer what it sent, then close.
        await this.#process(c);
        return this.#drop(fd);
      }
      const take = Math.min(n, room - c.len);
      if (c.len + take > c.buf.length) {
        const grown = new Uint8Array(Math.min(room, Math.max(c.buf.length * 2, c.len + take)));
        grown.set(c.buf.subarray(0, c.len));
        c.buf = grown;
      }
      c.buf.set(new Uint8Array(this.#scratch.buffer, 0, take), c.len);
      c.len += take;
      if (take < n) {
        // More than any request may hold: the head says why if it can.
        await this.#process(c);
        const tooLarge = { status: 413, body: { fault_message: "Request is too large" } };
        if (c.draining === undefined) this.#reply(c, tooLarge, true);
        return;
      }
    }
    await this.#process(c);
    if (flags & (EPOLLHUP | EPOLLERR)) this.#drop(fd);
  }

  /** Answers every complete request buffered on `c`, in order. */
  async #process(c: Conn): Promise<void> {
    if (c.busy) return;
    c.busy = true;
    try {
      while (this.#conns.has(c.fd) && c.draining === undefined && c.len > 0) {
        const head = parseHead(c.buf, c.len, this.#limits.maxHead, this.#limits.maxBody);
        if (!head) return;
        if (!head.ok) {
          this.#reply(c, { status: head.status, body: { fault_message: head.message } }, true);
          return;
        }
        const total = head.headEnd + head.length;
        if (c.len < total) return;
        const body = c.buf.slice(head.headEnd, total);
        c.buf.copyWithin(0, total, c.len);
        c.len -= total;
        let res: HttpResponse;
        try {
          res = await this.#handler({ method: head.method, path: head.path, body });
        } catch (e) {
          res = {
            status: 500,
            body: { fault_message: `Internal error: ${(e as Error)?.message ?? e}` },
          };
        }
        this.#reply(c, res, head.close || res.close === true);
      }
    } finally {
      c.busy = false;
    }
  }

  /** Writes a response (small: it fits the socket's buffer); a client that cannot take it is dropped. */
  #reply(c: Conn, res: HttpResponse, close: boolean): void {
    if (!this.#conns.has(c.fd)) return;
    const out = encodeResponse(res, close);
    let off = 0;
    const l = libc();
    while (off < out.length) {
      const n = Number(l.write(c.fd, out.subarray(off), BigInt(out.length - off)));
      if (n < 0 && errno() === EINTR) continue;
      if (n <= 0) return this.#drop(c.fd);
      off += n;
    }
    if (!close) return;
    // The peer may still be sending (a body past the limit): shut our side,
    // so it reads the answer and an end, and drop what it sends for a while.
    l.shutdown(c.fd, SHUT_WR);
    c.draining = DRAIN_BYTES;
    c.len = 0;
  }

  #drop(fd: number): void {
    if (!this.#conns.delete(fd)) return;
    const l = libc();
    l.epoll_ctl(this.#epollFd, EPOLL_CTL_DEL, fd, null);
    l.close(fd);
  }
}
