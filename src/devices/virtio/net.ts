/**
 * virtio-net (virtio 1.2 §5.1) over a TAP: a receive and a transmit queue,
 * mergeable receive buffers, checksum and TSO offloads handed to the TAP.
 * Frames move between the TAP and guest RAM with one `readv`/`writev` over
 * the guest's buffers: no copy, no allocation. A frame is read from the TAP
 * only when the guest has posted room for the largest one, so none is
 * lost to a full ring; the rest wait in the TAP's own queue.
 *
 * @module
 */

import { dataPath, errno } from "../../../ffi/libc.ts";
import { TUN_F } from "../../../ffi/tun.ts";
import { DEVICE_ID, F, NET } from "../../../ffi/virtio.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { Iovecs } from "./blk.ts";
import type { VirtioBackend } from "./device.ts";
import type { VirtioDeviceInfo } from "./mmio_state.ts";
import { type DescriptorChain, fullFence, QueueError, type SplitQueue } from "./queue.ts";

/** Queue entries each network queue offers. */
export const NET_QUEUE_SIZE = 256;
/**
 * The largest frame a TAP hands over, its virtio header included: a
 * 64 KiB GSO packet, an Ethernet header and a VLAN tag.
 */
export const NET_FRAME_MAX = NET.HDR_SIZE + 65535 + 14 + 4;
/** Receive chains one frame may span (mergeable buffers of a page or more each). */
const RX_CHAINS_MAX = 64;

const EINTR = 4, EAGAIN = 11;

/** Where a network device's frames go and come from: a TAP, or a test's socket. */
export interface NetPort {
  /** The descriptor whose readiness means a frame waits, if it has one. */
  readonly fd?: number;
  /** Reads one frame (virtio header first) into `count` buffers: bytes, 0 when none waits, -1 on error. */
  readv(iov: Iovecs, count: number): number;
  /** Writes one frame from `count` buffers: bytes, or -1 on error. */
  writev(iov: Iovecs, count: number): number;
  /** Lets the port hand over frames with `TUN_F` offloads unfinished; false if it cannot. */
  offload(flags: number): boolean;
}

/**
 * A {@linkcode NetPort} over a non-blocking descriptor whose reads and
 * writes are whole frames: a TAP opened with `IFF_VNET_HDR` and a 12-byte
 * header, or a datagram socket in tests.
 */
export class FdNetPort implements NetPort {
  constructor(readonly fd: number, private readonly setOffload?: (flags: number) => boolean) {}

  readv(iov: Iovecs, count: number): number {
    for (;;) {
      const n = dataPath.readv(this.fd, iov.addr, count);
      if (n >= 0) return n;
      const e = errno();
      if (e === EINTR) continue;
      return e === EAGAIN ? 0 : -1;
    }
  }

  writev(iov: Iovecs, count: number): number {
    for (;;) {
      const n = dataPath.writev(this.fd, iov.addr, count);
      if (n >= 0 || errno() !== EINTR) return n;
    }
  }

  offload(flags: number): boolean {
    return this.setOffload?.(flags) ?? false;
  }
}

/** The config space and features of a network device with MAC address `mac`. */
export function netInfo(mac: Uint8Array): VirtioDeviceInfo {
  if (mac.length !== 6) throw new RangeError("A MAC address is 6 bytes");
  const config = new Uint8Array(NET.CONFIG_BYTES);
  config.set(mac, NET.CONFIG_MAC);
  new DataView(config.buffer).setUint16(NET.CONFIG_STATUS, NET.S_LINK_UP, true);
  const bits = [
    F.VERSION_1,
    F.RING_EVENT_IDX,
    F.RING_INDIRECT_DESC,
    NET.F_MAC,
    NET.F_STATUS,
    NET.F_MRG_RXBUF,
    NET.F_CSUM,
    NET.F_HOST_TSO4,
    NET.F_HOST_TSO6,
    NET.F_GUEST_CSUM,
    NET.F_GUEST_TSO4,
    NET.F_GUEST_TSO6,
  ];
  const features = bits.reduce((f, b) => f | (1n << BigInt(b)), 0n);
  return { deviceId: DEVICE_ID.NET, features, queues: 2, queueMax: NET_QUEUE_SIZE, config };
}

/** Counters of one network device. */
export type NetStats = {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  /** Transmit chains refused: device-writable buffers, too short or too long. */
  txDropped: number;
  /** Frames the port failed to take. */
  txErrors: number;
};

/**
 * The network device.
 *
 * @example
 * ```ts ignore
 * const net = new VirtioNet(new FdNetPort(tapFd), memory, mac);
 * ```
 */
export class VirtioNet implements VirtioBackend {
  readonly info: VirtioDeviceInfo;
  readonly stats: NetStats = {
    rxFrames: 0,
    rxBytes: 0,
    txFrames: 0,
    txBytes: 0,
    txDropped: 0,
    txErrors: 0,
  };
  private readonly hostBase: number;
  private readonly host: Uint8Array;
  private readonly txIov = new Iovecs(NET_QUEUE_SIZE);
  private readonly rxIov = new Iovecs(NET_QUEUE_SIZE);
  private readonly heads = new Uint16Array(RX_CHAINS_MAX);
  private readonly room = new Uint32Array(RX_CHAINS_MAX);
  private mergeable = false;
  /** The TAP: frames waiting on it are work. */
  readonly hostFd?: number;

  constructor(private readonly port: NetPort, mem: GuestMemory, mac: Uint8Array) {
    this.info = netInfo(mac);
    this.hostFd = port.fd;
    this.hostBase = Number(mem.hostAddr);
    this.host = mem.host;
  }

  /** Hands the TAP the offloads the guest can take unfinished. */
  activate(features: bigint): void {
    const has = (bit: number) => (features >> BigInt(bit)) & 1n ? true : false;
    this.mergeable = has(NET.F_MRG_RXBUF);
    let flags = 0;
    if (has(NET.F_GUEST_CSUM)) {
      flags |= TUN_F.CSUM;
      if (has(NET.F_GUEST_TSO4)) flags |= TUN_F.TSO4;
      if (has(NET.F_GUEST_TSO6)) flags |= TUN_F.TSO6;
    }
    // A port that cannot only finishes every frame itself: the guest gets plain ones.
    this.port.offload(flags);
  }

  reset(): void {
    this.mergeable = false;
    this.port.offload(0);
  }

  /** Transmit: the chain's buffers are the frame, header first. */
  handle(queue: number, c: DescriptorChain): number {
    if (queue !== NET.TX) return 0;
    let len = 0;
    for (let i = 0; i < c.count; i++) {
      if (c.writable[i]) {
        this.stats.txDropped++;
        return 0;
      }
      this.txIov.set(i, this.hostBase + c.host[i], c.len[i]);
      len += c.len[i];
    }
    if (len <= NET.HDR_SIZE || len > NET_FRAME_MAX) {
      this.stats.txDropped++;
      return 0;
    }
    if (this.port.writev(this.txIov, c.count) < 0) this.stats.txErrors++;
    else {
      this.stats.txFrames++;
      this.stats.txBytes += len - NET.HDR_SIZE;
    }
    return 0;
  }

  /** Receive: frames from the port into the guest's posted buffers, while there is room. */
  serve(queue: number, ring: SplitQueue, c: DescriptorChain, quota: number): number {
    if (queue !== NET.RX) return -1;
    let frames = 0;
    // Bounded tries: a driver that keeps moving its index cannot hold the loop.
    for (let tries = 0; frames < quota && tries < quota; tries++) {
      const got = this.receive(ring, c);
      if (got > 0) {
        frames++;
        continue;
      }
      if (got === 0) return frames;
      // No room: ask for a notify once the driver posts more, then look once more.
      const posted = ring.availIndex();
      ring.armNotify(posted);
      fullFence();
      if (ring.availIndex() === posted) return frames;
    }
    return frames;
  }

  /**
   * Moves one frame: 1 if one was delivered, 0 if none waits (or the port
   * failed), -1 if the guest has not posted room for the largest frame.
   */
  private receive(ring: SplitQueue, c: DescriptorChain): number {
    const iov = this.rxIov;
    let chains = 0, buffers = 0, room = 0;
    // Without mergeable buffers a frame takes one chain, whatever its size.
    const need = this.mergeable ? NET_FRAME_MAX : 1;
    while (room < need && chains < RX_CHAINS_MAX && ring.pop(c)) {
      if (buffers + c.count > iov.capacity) {
        ring.unpop(1);
        break;
      }
      for (let i = 0; i < c.count; i++) {
        if (!c.writable[i]) {
          ring.unpop(chains + 1);
          throw new QueueError("receive buffer is not device-writable");
        }
        iov.set(buffers++, this.hostBase + c.host[i], c.len[i]);
      }
      this.heads[chains] = c.head;
      this.room[chains++] = c.bytes;
      room += c.bytes;
    }
    if (chains === 0 || room < need || this.room[0] < NET.HDR_SIZE) {
      ring.unpop(chains);
      return -1;
    }
    const n = Math.min(this.port.readv(iov, buffers), room);
    if (n <= 0) {
      ring.unpop(chains);
      return 0;
    }
    let rest = n, used = 0;
    while (rest > 0) {
      const take = Math.min(rest, this.room[used]);
      ring.push(this.heads[used++], take);
      rest -= take;
    }
    ring.unpop(chains - used);
    this.setNumBuffers(used);
    this.stats.rxFrames++;
    this.stats.rxBytes += n - NET.HDR_SIZE;
    return 1;
  }

  /** Writes `num_buffers` into the header, wherever its two bytes fell among the buffers. */
  private setNumBuffers(n: number): void {
    const iov = this.rxIov;
    for (let byte = 0; byte < 2; byte++) {
      // The first chain holds the whole header (checked before the read).
      let i = 0, off = NET.HDR_NUM_BUFFERS + byte;
      while (off >= iov.len(i)) off -= iov.len(i++);
      this.host[iov.base(i) - this.hostBase + off] = byte === 0 ? n & 0xff : n >> 8;
    }
  }
}
