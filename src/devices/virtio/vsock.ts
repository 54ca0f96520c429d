/**
 * virtio-vsock (virtio 1.2 §5.10) with Firecracker's hybrid host side:
 * the guest's stream sockets meet unix sockets on the host.
 *
 * - Host to guest: a client connects to the listening socket, sends
 *   `CONNECT <port>\n`, and gets `OK <local_port>\n` once the guest
 *   accepts, or a closed stream (nobody listening, a malformed line, no
 *   answer within {@linkcode VSOCK_HANDSHAKE_MS}).
 * - Guest to host: a guest connecting to CID 2 port P reaches the unix
 *   socket listening at `<uds_path>_P`, or gets a reset.
 *
 * Streams keep the protocol's credit-based flow control both ways: the
 * guest may have at most {@linkcode VSOCK_BUF_ALLOC} bytes in flight to a
 * host socket (what the socket will not take yet waits in a buffer of that
 * size, made only when needed), and the device sends the guest only what
 * the guest said it has room for. At most {@linkcode VSOCK_MAX_CONNECTIONS}
 * connections; a packet for no connection, of an unknown type or
 * operation, or from a CID not the guest's gets a reset. Host sockets are
 * served from an epoll set of the device's own, which the I/O loop watches
 * as one descriptor.
 *
 * @module
 */

import { EPOLL_CTL_ADD, EPOLL_EVENT, EPOLLET, EPOLLIN, EPOLLOUT } from "../../../ffi/eventfd.ts";
import { dataPath, errno, libc, PinnedBuffer } from "../../../ffi/libc.ts";
import {
  AF_UNIX,
  SHUT_WR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  sockaddrUn,
} from "../../../ffi/socket.ts";
import { DEVICE_ID, F, VSOCK } from "../../../ffi/virtio.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { Iovecs } from "./blk.ts";
import type { VirtioBackend } from "./device.ts";
import type { VirtioDeviceInfo } from "./mmio_state.ts";
import { type DescriptorChain, fullFence, QueueError, type SplitQueue } from "./queue.ts";

/** Connections at once (Firecracker's limit). */
export const VSOCK_MAX_CONNECTIONS = 1023;
/** Bytes from the guest one connection may have in flight to its host socket. */
export const VSOCK_BUF_ALLOC = 256 << 10;
/** The longest host clients wait for a restored guest to handle its transport reset. */
const RESET_GATE_MS = 5000;
/** How long past the guest's reading of its CID (the reset's first step) they wait. */
const RESET_SETTLE_MS = 50;

/** How long a host client's `CONNECT` line, and the guest's answer, may take. */
export const VSOCK_HANDSHAKE_MS = 2000;
/** Queue entries each vsock queue offers. */
export const VSOCK_QUEUE_SIZE = 256;
/** Local ports for host-initiated connections start here (Firecracker's choice). */
export const VSOCK_LOCAL_PORT_BASE = 2 ** 30;
/** Bytes of one `RW` packet's payload at most. */
const RW_MAX = 64 << 10;
const CONNECT_LINE_MAX = 32;
const EINTR = 4, EAGAIN = 11;
/** epoll data of the listening socket (connections use their slot). */
const LISTENER = 0xffff;
/** Resets for packets that belong to no connection, waiting for a receive buffer. */
const ORPHAN_RSTS = 64;

const enum State {
  Free,
  /** A host client; its `CONNECT` line is not in yet. */
  AwaitLine,
  /** REQUEST sent to the guest for a host client; no answer yet. */
  Requested,
  Open,
  /** SHUTDOWN sent to the guest after the host side closed; waiting for its reset. */
  Closing,
}

/** Control packets a connection owes the guest, as bits, sent in this order. */
const CTL = { REQUEST: 1, RESPONSE: 2, SHUTDOWN: 4, CREDIT_UPDATE: 8 } as const;

class Conn {
  state = State.Free;
  fd = -1;
  guestPort = 0;
  hostPort = 0;
  ctl = 0;
  /** Host socket has data the guest has not been sent (edge-triggered). */
  readable = false;
  /** In the work list. */
  queued = false;
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  /** Bytes sent to the guest. */
  txCnt = 0;
  /** Bytes from the guest written to the host socket. */
  fwdCnt = 0;
  /** `fwdCnt` as last told to the guest. */
  toldFwd = 0;
  /** Guest bytes the host socket would not take yet (made on first need). */
  pending?: PinnedBuffer;
  pendBytes?: Uint8Array;
  pendStart = 0;
  pendLen = 0;
  /** Host side said no more: shut its write side once `pending` is empty. */
  shutHostWrite = false;
  line = 0;
  deadline = 0;
}

/** The config space and features of a vsock device for guest CID `cid`. */
export function vsockInfo(cid: number): VirtioDeviceInfo {
  if (!Number.isSafeInteger(cid) || cid < 3 || cid > 0xfffffffe) {
    throw new RangeError(`Guest CID ${cid} is not 3 to 4294967294`);
  }
  const config = new Uint8Array(VSOCK.CONFIG_BYTES);
  new DataView(config.buffer).setBigUint64(0, BigInt(cid), true);
  return {
    deviceId: DEVICE_ID.VSOCK,
    features: 1n << BigInt(F.VERSION_1),
    queues: 3,
    queueMax: VSOCK_QUEUE_SIZE,
    config,
  };
}

/** Counters of one vsock device. */
export type VsockStats = {
  /** Connections made, either way. */
  connections: number;
  /** Resets sent to the guest. */
  resets: number;
  /** Host clients turned away (bad line, timeout, too many, guest said no). */
  refused: number;
};

/**
 * The vsock device.
 *
 * @example
 * ```ts ignore
 * const vsock = new VirtioVsock(memory, { cid: 3, listenFd, udsPath: "/run/v.sock" });
 * ```
 */
export class VirtioVsock implements VirtioBackend {
  readonly info: VirtioDeviceInfo;
  readonly stats: VsockStats = { connections: 0, resets: 0, refused: 0 };
  /** The device's epoll set: the I/O loop watches it as one descriptor. */
  readonly hostFd: number;
  private readonly cid: number;
  private readonly conns: Conn[] = [];
  private readonly free: number[] = [];
  /** Host-initiated connections by local port; guest-initiated ones by guest port. */
  private readonly byLocal = new Map<number, number>();
  private readonly byGuest = new Map<number, number>();
  private readonly work = new Int16Array(VSOCK_MAX_CONNECTIONS + 1);
  private workHead = 0;
  private workLen = 0;
  private readonly orphans = new Uint32Array(2 * ORPHAN_RSTS);
  private orphanHead = 0;
  private orphanLen = 0;
  private nextLocal = VSOCK_LOCAL_PORT_BASE;
  private deadlines = 0;
  private readonly hostBase: number;
  private readonly host: Uint8Array;
  private readonly hdr = new Uint8Array(VSOCK.HDR_SIZE);
  private readonly h = new DataView(this.hdr.buffer);
  private readonly iov = new Iovecs(VSOCK_QUEUE_SIZE);
  private readonly events = new Uint8Array(EPOLL_EVENT.size * 64);
  private readonly ev = new DataView(this.events.buffer);
  private readonly scratch = new PinnedBuffer(CONNECT_LINE_MAX);
  private readonly lines = new Uint8Array(VSOCK_MAX_CONNECTIONS * CONNECT_LINE_MAX);
  private readonly ctlEvent = new Uint8Array(EPOLL_EVENT.size);

  constructor(
    memory: GuestMemory,
    private readonly opts: {
      cid: number;
      /** A listening, non-blocking unix stream socket: host clients come in here. */
      listenFd: number;
      /** Its path: guest connections to port P go to `<udsPath>_P`. */
      udsPath: string;
      /** The clock, in ms (tests move it). */
      now?: () => number;
      /**
       * A restored device: its connections stayed with the process that
       * saved it, so the guest is told the transport was reset (its
       * connected sockets close, its listeners stay), as Firecracker does.
       */
      restored?: boolean;
      /** The transport's count of driver config reads (see {@linkcode gated}). */
      configReads?: () => number;
    },
  ) {
    this.info = vsockInfo(opts.cid);
    this.cid = opts.cid;
    this.hostBase = Number(memory.hostAddr);
    this.host = memory.host;
    const fd = libc().epoll_create1(0o2000000);
    if (fd < 0) throw new Error(`epoll_create1 failed (errno ${errno()})`);
    this.hostFd = fd;
    this.watch(opts.listenFd, LISTENER, EPOLLIN);
    this.resetOwed = opts.restored ?? false;
    if (this.resetOwed) this.gateUntil = this.now() + RESET_GATE_MS;
  }

  /** Until when host clients wait after a restore (0: they do not). */
  private gateUntil = 0;
  /** The driver's config reads when the reset event went out. */
  private readsAtReset = -1;

  /**
   * Whether host clients must wait: a connection the guest accepts before
   * it handles the transport reset would be reset with the old ones. Linux
   * handles the event by reading the config space (the guest CID) and then
   * resetting its connected sockets, so clients wait until that read (and
   * a moment more), or {@linkcode RESET_GATE_MS} at most.
   */
  private gated(): boolean {
    if (this.gateUntil === 0) return false;
    const now = this.now();
    if (now >= this.gateUntil) {
      this.gateUntil = 0;
      return false;
    }
    const reads = this.opts.configReads?.();
    if (!this.resetOwed && reads !== undefined && reads !== this.readsAtReset) {
      this.gateUntil = Math.min(this.gateUntil, now + RESET_SETTLE_MS);
    }
    return true;
  }

  /** A transport reset the guest is still to be told of (see `opts.restored`). */
  private resetOwed: boolean;

  private now(): number {
    return this.opts.now?.() ?? performance.now();
  }

  private watch(fd: number, data: number, events: number): boolean {
    const v = new DataView(this.ctlEvent.buffer);
    v.setUint32(EPOLL_EVENT.events, events >>> 0, true);
    v.setBigUint64(EPOLL_EVENT.data, BigInt(data), true);
    return libc().epoll_ctl(this.hostFd, EPOLL_CTL_ADD, fd, this.ctlEvent) === 0;
  }

  /** ms until the earliest handshake or close deadline; Infinity if none. */
  nextDeadline(): number {
    // While host clients wait on a restore's reset, look again soon.
    if (this.gateUntil !== 0) return RESET_SETTLE_MS;
    if (this.deadlines === 0) return Infinity;
    let soonest = Infinity;
    for (const c of this.conns) {
      if (c.state === State.AwaitLine || c.state === State.Requested || c.state === State.Closing) {
        soonest = Math.min(soonest, c.deadline);
      }
    }
    return Math.max(0, soonest - this.now());
  }

  /** Closes every connection (the device is reset, or the VM ends). */
  reset(): void {
    for (let i = 0; i < this.conns.length; i++) {
      if (this.conns[i].state !== State.Free) this.drop(i, false);
    }
    this.orphanLen = 0;
  }

  /** Closes the connections and the device's epoll set. */
  close(): void {
    this.reset();
    libc().close(this.hostFd);
  }

  // --- the guest's packets (transmit queue) -------------------------------

  handle(queue: number, c: DescriptorChain): number {
    if (queue !== VSOCK.TX) return 0;
    const h = this.h;
    // The header may span buffers; the payload follows it.
    let got = 0;
    for (let i = 0; i < c.count && got < VSOCK.HDR_SIZE; i++) {
      const n = Math.min(c.len[i], VSOCK.HDR_SIZE - got);
      for (let k = 0; k < n; k++) this.hdr[got + k] = this.host[c.host[i] + k];
      got += n;
    }
    for (let i = 0; i < c.count; i++) if (c.writable[i]) got = -1;
    if (got < VSOCK.HDR_SIZE) return 0;
    const srcCid = Number(h.getBigUint64(VSOCK.HDR_SRC_CID, true));
    const dstCid = Number(h.getBigUint64(VSOCK.HDR_DST_CID, true));
    const guestPort = h.getUint32(VSOCK.HDR_SRC_PORT, true);
    const hostPort = h.getUint32(VSOCK.HDR_DST_PORT, true);
    const len = h.getUint32(VSOCK.HDR_LEN, true);
    const op = h.getUint16(VSOCK.HDR_OP, true);
    const flags = h.getUint32(VSOCK.HDR_FLAGS, true);
    const slot = this.find(guestPort, hostPort);
    const bufAlloc = h.getUint32(VSOCK.HDR_BUF_ALLOC, true);
    const fwdCnt = h.getUint32(VSOCK.HDR_FWD_CNT, true);
    const bad = srcCid !== this.cid || dstCid !== VSOCK.HOST_CID ||
      h.getUint16(VSOCK.HDR_TYPE, true) !== VSOCK.TYPE_STREAM ||
      len > c.bytes - VSOCK.HDR_SIZE || (op !== VSOCK.OP_RW && len !== 0);
    if (bad) {
      // A reset never answers a reset.
      if (op !== VSOCK.OP_RST) this.reset1(slot, guestPort, hostPort);
      return 0;
    }
    if (op === VSOCK.OP_REQUEST) {
      if (slot >= 0) this.reset1(slot, guestPort, hostPort);
      else this.guestConnect(guestPort, hostPort, bufAlloc, fwdCnt);
      return 0;
    }
    if (slot < 0) {
      if (op !== VSOCK.OP_RST) this.orphanRst(guestPort, hostPort);
      return 0;
    }
    const conn = this.conns[slot];
    conn.peerBufAlloc = bufAlloc;
    conn.peerFwdCnt = fwdCnt;
    // Every packet carries the guest's credit: host data held back for the lack of it may go.
    if (conn.readable && conn.state === State.Open) this.enqueue(slot);
    switch (op) {
      case VSOCK.OP_RESPONSE:
        if (conn.state !== State.Requested) return this.reset1(slot, guestPort, hostPort), 0;
        this.open(conn);
        this.tellClient(slot, `OK ${conn.hostPort}\n`);
        if (conn.readable && (conn.state as State) === State.Open) this.enqueue(slot);
        break;
      case VSOCK.OP_RW:
        if (conn.state !== State.Open && conn.state !== State.Closing) {
          return this.reset1(slot, guestPort, hostPort), 0;
        }
        this.toHost(slot, c, len);
        break;
      case VSOCK.OP_CREDIT_REQUEST:
        this.owe(slot, CTL.CREDIT_UPDATE);
        break;
      case VSOCK.OP_CREDIT_UPDATE:
        break;
      case VSOCK.OP_SHUTDOWN:
        if ((flags & 3) === 3) {
          // The guest closed: what it sent is written, then the host socket goes.
          this.flush(slot);
          this.drop(slot, true);
        } else if (flags & VSOCK.SHUTDOWN_SEND) {
          conn.shutHostWrite = true;
          this.flush(slot);
        }
        break;
      case VSOCK.OP_RST:
        this.drop(slot, false);
        break;
      default:
        this.reset1(slot, guestPort, hostPort);
    }
    return 0;
  }

  private find(guestPort: number, hostPort: number): number {
    const l = this.byLocal.get(hostPort);
    if (l !== undefined && this.conns[l].guestPort === guestPort) return l;
    const g = this.byGuest.get(guestPort);
    if (g !== undefined && this.conns[g].hostPort === hostPort) return g;
    return -1;
  }

  /** Resets a connection, or answers a stray packet with a reset. */
  private reset1(slot: number, guestPort: number, hostPort: number): void {
    if (slot >= 0) this.drop(slot, true);
    else this.orphanRst(guestPort, hostPort);
  }

  private orphanRst(guestPort: number, hostPort: number): void {
    // A guest that floods with strays loses resets, not memory.
    if (this.orphanLen === ORPHAN_RSTS) return;
    const at = 2 * ((this.orphanHead + this.orphanLen++) % ORPHAN_RSTS);
    this.orphans[at] = guestPort;
    this.orphans[at + 1] = hostPort;
  }

  /** A new connection slot, or -1 when all are taken. */
  private take(): number {
    const slot = this.free.pop() ??
      (this.conns.length < VSOCK_MAX_CONNECTIONS ? this.conns.length : -1);
    if (slot === this.conns.length) this.conns.push(new Conn());
    return slot;
  }

  /** The guest connects to host port `hostPort`: `<udsPath>_<hostPort>`. */
  private guestConnect(
    guestPort: number,
    hostPort: number,
    bufAlloc: number,
    fwdCnt: number,
  ): void {
    const slot = this.take();
    if (slot < 0) return this.orphanRst(guestPort, hostPort);
    const l = libc();
    const fd = l.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    let addr: Uint8Array<ArrayBuffer> | undefined;
    try {
      addr = sockaddrUn(`${this.opts.udsPath}_${hostPort}`);
    } catch { /* a path too long reaches nobody */ }
    const ok = fd >= 0 && addr !== undefined && l.connect(fd, addr, addr.length) === 0 &&
      this.watch(fd, slot, EPOLLIN | EPOLLOUT | EPOLLET);
    if (!ok) {
      if (fd >= 0) l.close(fd);
      this.free.push(slot);
      return this.orphanRst(guestPort, hostPort);
    }
    const c = this.conns[slot];
    this.init(c, fd, guestPort, hostPort);
    c.peerBufAlloc = bufAlloc;
    c.peerFwdCnt = fwdCnt;
    this.byGuest.set(guestPort, slot);
    this.open(c);
    this.owe(slot, CTL.RESPONSE);
    this.stats.connections++;
  }

  private init(c: Conn, fd: number, guestPort: number, hostPort: number): void {
    c.fd = fd;
    c.guestPort = guestPort;
    c.hostPort = hostPort;
    c.ctl = 0;
    c.readable = false;
    c.peerBufAlloc =
      c.peerFwdCnt =
      c.txCnt =
      c.fwdCnt =
      c.toldFwd =
        0;
    c.pendStart = c.pendLen = 0;
    c.shutHostWrite = false;
    c.line = 0;
  }

  private setDeadline(c: Conn, state: State): void {
    const had = c.state === State.AwaitLine || c.state === State.Requested ||
      c.state === State.Closing;
    const has = state === State.AwaitLine || state === State.Requested || state === State.Closing;
    this.deadlines += Number(has) - Number(had);
    c.state = state;
    if (has) c.deadline = this.now() + VSOCK_HANDSHAKE_MS;
  }

  private open(c: Conn): void {
    this.setDeadline(c, State.Open);
  }

  /** Closes connection `slot`; tells the guest with a reset when `rst`. */
  private drop(slot: number, rst: boolean): void {
    const c = this.conns[slot];
    if (c.state === State.Free) return;
    if (rst && c.state !== State.AwaitLine) this.orphanRst(c.guestPort, c.hostPort);
    if (c.state === State.AwaitLine || c.state === State.Requested) this.stats.refused++;
    this.setDeadline(c, State.Free);
    libc().close(c.fd);
    if (this.byLocal.get(c.hostPort) === slot) this.byLocal.delete(c.hostPort);
    if (this.byGuest.get(c.guestPort) === slot) this.byGuest.delete(c.guestPort);
    c.fd = -1;
    c.ctl = 0;
    c.readable = false;
    this.free.push(slot);
  }

  private owe(slot: number, bits: number): void {
    this.conns[slot].ctl |= bits;
    this.enqueue(slot);
  }

  private enqueue(slot: number): void {
    const c = this.conns[slot];
    if (c.queued) return;
    c.queued = true;
    this.work[(this.workHead + this.workLen++) % this.work.length] = slot;
  }

  /** Writes the RW payload of chain `c` (`len` bytes after the header) to the host socket. */
  private toHost(slot: number, c: DescriptorChain, len: number): void {
    const conn = this.conns[slot];
    if (len === 0) return;
    // Bytes past our credit: the guest broke the protocol.
    if (conn.pendLen + len > VSOCK_BUF_ALLOC) return this.drop(slot, true);
    const count = this.payloadIov(c, len);
    let written = 0;
    if (conn.pendLen === 0) {
      written = this.writev(conn.fd, count);
      if (written < 0) return this.drop(slot, true);
    }
    if (written < len) {
      // The rest waits for the socket: copied out of guest RAM, which the guest reuses.
      let at = 0;
      for (let i = 0; i < count; i++) {
        const base = this.iov.base(i) - this.hostBase, l = this.iov.len(i);
        const from = Math.max(0, written - at);
        if (from < l) this.stash(conn, base + from, l - from);
        at += l;
      }
    }
    this.forwarded(slot, written);
  }

  /** Points the iovecs at up to `limit` bytes of `c`'s buffers after the header; returns how many. */
  private payloadIov(c: DescriptorChain, limit: number): number {
    let count = 0, skip: number = VSOCK.HDR_SIZE, left = limit;
    for (let i = 0; i < c.count && left > 0; i++) {
      const l = c.len[i];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      const n = Math.min(l - skip, left);
      this.iov.set(count++, this.hostBase + c.host[i] + skip, n);
      left -= n;
      skip = 0;
    }
    return count;
  }

  private writev(fd: number, count: number): number {
    for (;;) {
      const n = dataPath.writev(fd, this.iov.addr, count);
      if (n >= 0) return n;
      const e = errno();
      if (e === EAGAIN) return 0;
      if (e !== EINTR) return -1;
    }
  }

  /** Copies `len` bytes of guest RAM at host offset `from` to the end of `c`'s pending bytes. */
  private stash(c: Conn, from: number, len: number): void {
    if (!c.pending) {
      c.pending = new PinnedBuffer(VSOCK_BUF_ALLOC);
      c.pendBytes = new Uint8Array(c.pending.buffer);
    }
    const p = c.pendBytes!, host = this.host;
    for (let i = 0; i < len; i++) p[(c.pendStart + c.pendLen++) % p.length] = host[from + i];
  }

  /** `n` more bytes reached the host: tell the guest when it has used up a quarter of its credit. */
  private forwarded(slot: number, n: number): void {
    const c = this.conns[slot];
    c.fwdCnt = (c.fwdCnt + n) >>> 0;
    if (((c.fwdCnt - c.toldFwd) >>> 0) >= VSOCK_BUF_ALLOC / 4) this.owe(slot, CTL.CREDIT_UPDATE);
  }

  /** Writes what waits for the host socket; shuts its write side if asked and done. */
  private flush(slot: number): void {
    const c = this.conns[slot];
    while (c.pendLen > 0) {
      const size = VSOCK_BUF_ALLOC;
      const run = Math.min(c.pendLen, size - c.pendStart);
      let n = dataPath.write(c.fd, c.pending!.addr + c.pendStart, run);
      if (n < 0 && errno() === EINTR) continue;
      if (n < 0) n = errno() === EAGAIN ? 0 : -1;
      if (n < 0) return this.drop(slot, true);
      if (n === 0) return;
      c.pendStart = (c.pendStart + n) % size;
      c.pendLen -= n;
      this.forwarded(slot, n);
    }
    if (c.shutHostWrite) libc().shutdown(c.fd, SHUT_WR);
  }

  /**
   * A short line to a host client (`OK <port>\n`), before any stream byte:
   * its socket buffer is empty, so it goes whole or the client is gone.
   */
  private tellClient(slot: number, text: string): void {
    const bytes = new TextEncoder().encode(text);
    new Uint8Array(this.scratch.buffer).set(bytes);
    if (dataPath.write(this.conns[slot].fd, this.scratch.addr, bytes.length) !== bytes.length) {
      this.drop(slot, true);
    }
  }

  // --- host sockets ---------------------------------------------------------

  /** Reads the device's epoll set without waiting and acts on what is ready. */
  private pollHost(): void {
    const l = libc();
    for (;;) {
      const n = l.epoll_wait(this.hostFd, this.events, 64, 0);
      if (n <= 0) break;
      for (let i = 0; i < n; i++) {
        const data = this.ev.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.data, true);
        const events = this.ev.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.events, true);
        if (data === LISTENER) {
          if (!this.gated()) this.acceptAll();
        } else if (data < this.conns.length) this.hostReady(data, events);
      }
      if (n < 64) break;
    }
    if (this.deadlines > 0) this.expire();
  }

  private acceptAll(): void {
    const l = libc();
    for (;;) {
      const fd = l.accept4(this.opts.listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      const slot = this.take();
      if (slot < 0 || !this.watch(fd, slot, EPOLLIN | EPOLLOUT | EPOLLET)) {
        l.close(fd);
        if (slot >= 0) this.free.push(slot);
        this.stats.refused++;
        continue;
      }
      const c = this.conns[slot];
      this.init(c, fd, 0, 0);
      this.setDeadline(c, State.AwaitLine);
      // Its CONNECT line may already be here.
      this.readLine(slot);
    }
  }

  private hostReady(slot: number, events: number): void {
    const c = this.conns[slot];
    if (c.state === State.Free) return;
    if (c.state === State.AwaitLine) return this.readLine(slot);
    if (events & EPOLLOUT && c.pendLen > 0) this.flush(slot);
    if (events & ~EPOLLOUT && this.conns[slot].state !== State.Free) {
      c.readable = true;
      if (c.state === State.Open) this.enqueue(slot);
    }
  }

  /** Reads a host client's `CONNECT <port>\n`, a byte at a time so no stream data is taken. */
  private readLine(slot: number): void {
    const c = this.conns[slot];
    const at = slot * CONNECT_LINE_MAX;
    for (;;) {
      const n = dataPath.read(c.fd, this.scratch.addr, 1);
      if (n < 0 && errno() === EAGAIN) return;
      if (n <= 0) return this.drop(slot, false);
      const b = new Uint8Array(this.scratch.buffer)[0];
      if (b === 0x0a) break;
      if (c.line === CONNECT_LINE_MAX - 1) return this.drop(slot, false);
      this.lines[at + c.line++] = b;
    }
    const text = new TextDecoder().decode(this.lines.subarray(at, at + c.line));
    const m = /^CONNECT ([0-9]{1,10})$/.exec(text);
    const port = m ? Number(m[1]) : -1;
    if (!(port >= 0 && port <= 0xffffffff)) return this.drop(slot, false);
    let local = this.nextLocal;
    while (this.byLocal.has(local)) local = local >= 0xfffffffe ? VSOCK_LOCAL_PORT_BASE : local + 1;
    this.nextLocal = local >= 0xfffffffe ? VSOCK_LOCAL_PORT_BASE : local + 1;
    c.guestPort = port;
    c.hostPort = local;
    this.byLocal.set(local, slot);
    this.setDeadline(c, State.Requested);
    // Bytes after the line are stream data: read once the guest accepts.
    c.readable = true;
    this.owe(slot, CTL.REQUEST);
    this.stats.connections++;
  }

  private expire(): void {
    const now = this.now();
    for (let i = 0; i < this.conns.length; i++) {
      const c = this.conns[i];
      if (
        (c.state === State.AwaitLine || c.state === State.Requested || c.state === State.Closing) &&
        now >= c.deadline
      ) this.drop(i, c.state !== State.AwaitLine);
    }
  }

  // --- packets to the guest (receive queue) --------------------------------

  serve(queue: number, ring: SplitQueue, chain: DescriptorChain, quota: number): number {
    if (queue === VSOCK.EVENT) return this.serveEvent(ring, chain);
    if (queue !== VSOCK.RX) return -1;
    this.pollHost();
    let used = 0;
    for (let tries = 0; used < quota && tries < 2 * quota; tries++) {
      if (this.orphanLen === 0 && this.workLen === 0) break;
      if (!ring.pop(chain)) {
        // No buffer: ask for a notify once the driver posts one, then look once more.
        const posted = ring.availIndex();
        ring.armNotify(posted);
        fullFence();
        if (ring.availIndex() === posted) break;
        continue;
      }
      let room = 0;
      for (let i = 0; i < chain.count; i++) {
        if (!chain.writable[i]) throw new QueueError("receive buffer is not device-writable");
        room += chain.len[i];
      }
      if (room < VSOCK.HDR_SIZE) throw new QueueError("receive buffer smaller than a header");
      const len = this.packet(chain, room - VSOCK.HDR_SIZE);
      if (len < 0) {
        ring.unpop(1);
        continue;
      }
      this.scatterHeader(chain);
      ring.push(chain.head, VSOCK.HDR_SIZE + len);
      used++;
    }
    return used;
  }

  /**
   * The event queue: its buffers stay with the device until there is an
   * event, and the only one is the transport reset a restore owes.
   */
  private serveEvent(ring: SplitQueue, chain: DescriptorChain): number {
    if (!this.resetOwed || !ring.pop(chain)) return 0;
    if (!chain.writable[0] || chain.len[0] < VSOCK.EVENT_SIZE) {
      throw new QueueError("event buffer is not 4 device-writable bytes");
    }
    new DataView(this.host.buffer, this.host.byteOffset + chain.host[0], VSOCK.EVENT_SIZE)
      .setUint32(0, VSOCK.EVENT_TRANSPORT_RESET, true);
    this.readsAtReset = this.opts.configReads?.() ?? -1;
    ring.push(chain.head, VSOCK.EVENT_SIZE);
    this.resetOwed = false;
    this.stats.resets++;
    return 1;
  }

  /**
   * Fills the header (and the payload, for data) of the next packet owed
   * to the guest into `chain`; returns the payload length, or -1 if the
   * connection turned out to have nothing to send.
   */
  private packet(chain: DescriptorChain, room: number): number {
    if (this.orphanLen > 0) {
      const at = 2 * this.orphanHead;
      this.orphanHead = (this.orphanHead + 1) % ORPHAN_RSTS;
      this.orphanLen--;
      this.header(this.orphans[at + 1], this.orphans[at], VSOCK.OP_RST, 0, 0, 0);
      return 0;
    }
    const slot = this.work[this.workHead];
    this.workHead = (this.workHead + 1) % this.work.length;
    this.workLen--;
    const c = this.conns[slot];
    c.queued = false;
    if (c.state === State.Free) return -1;
    if (c.ctl) {
      const bit = c.ctl & -c.ctl;
      c.ctl &= ~bit;
      const op = bit === CTL.REQUEST
        ? VSOCK.OP_REQUEST
        : bit === CTL.RESPONSE
        ? VSOCK.OP_RESPONSE
        : bit === CTL.SHUTDOWN
        ? VSOCK.OP_SHUTDOWN
        : VSOCK.OP_CREDIT_UPDATE;
      this.header(c.hostPort, c.guestPort, op, 0, op === VSOCK.OP_SHUTDOWN ? 3 : 0, c.fwdCnt);
      c.toldFwd = c.fwdCnt;
      if (c.ctl || c.readable) this.enqueue(slot);
      return 0;
    }
    if (!c.readable || c.state !== State.Open) return -1;
    const credit = c.peerBufAlloc - ((c.txCnt - c.peerFwdCnt) >>> 0);
    if (credit <= 0) return -1; // Back in the list when the guest grants more.
    // Payload: at most what the guest's credit allows.
    const count = this.payloadIov(chain, Math.min(room, credit, RW_MAX));
    let n = -1;
    do n = dataPath.readv(c.fd, this.iov.addr, count); while (n < 0 && errno() === EINTR);
    if (n < 0 && errno() === EAGAIN) {
      c.readable = false;
      return -1;
    }
    if (n <= 0) {
      // The host side closed (or failed): tell the guest, then wait for its reset.
      c.readable = false;
      c.ctl = 0;
      this.setDeadline(c, State.Closing);
      this.header(c.hostPort, c.guestPort, VSOCK.OP_SHUTDOWN, 0, 3, c.fwdCnt);
      return 0;
    }
    c.txCnt = (c.txCnt + n) >>> 0;
    this.header(c.hostPort, c.guestPort, VSOCK.OP_RW, n, 0, c.fwdCnt);
    c.toldFwd = c.fwdCnt;
    this.enqueue(slot);
    return n;
  }

  private header(
    srcPort: number,
    dstPort: number,
    op: number,
    len: number,
    flags: number,
    fwdCnt: number,
  ): void {
    const h = this.h;
    h.setBigUint64(VSOCK.HDR_SRC_CID, BigInt(VSOCK.HOST_CID), true);
    h.setBigUint64(VSOCK.HDR_DST_CID, BigInt(this.cid), true);
    h.setUint32(VSOCK.HDR_SRC_PORT, srcPort, true);
    h.setUint32(VSOCK.HDR_DST_PORT, dstPort, true);
    h.setUint32(VSOCK.HDR_LEN, len, true);
    h.setUint16(VSOCK.HDR_TYPE, VSOCK.TYPE_STREAM, true);
    h.setUint16(VSOCK.HDR_OP, op, true);
    h.setUint32(VSOCK.HDR_FLAGS, flags, true);
    h.setUint32(VSOCK.HDR_BUF_ALLOC, VSOCK_BUF_ALLOC, true);
    h.setUint32(VSOCK.HDR_FWD_CNT, fwdCnt, true);
    if (op === VSOCK.OP_RST) this.stats.resets++;
  }

  /** Copies the header into the chain's first bytes, across buffers. */
  private scatterHeader(chain: DescriptorChain): void {
    let done = 0;
    for (let i = 0; i < chain.count && done < VSOCK.HDR_SIZE; i++) {
      const n = Math.min(chain.len[i], VSOCK.HDR_SIZE - done);
      for (let k = 0; k < n; k++) this.host[chain.host[i] + k] = this.hdr[done + k];
      done += n;
    }
  }
}
