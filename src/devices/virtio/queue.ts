/**
 * The device side of a split virtqueue (virtio 1.2 §2.7): takes descriptor
 * chains the driver made available and returns them used. Every index,
 * address and length comes from the guest and is checked before use; the
 * data path allocates nothing.
 *
 * @module
 */

import { VRING } from "../../../ffi/virtio.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { NEEDS_RESET_WHY } from "./mmio_state.ts";

/** Where a queue's three parts live, as the driver configured them. */
export interface QueueLayout {
  /** Entries (a power of two, at most the device's maximum). */
  size: number;
  /** Guest address of the descriptor table (16-byte aligned). */
  desc: number;
  /** Guest address of the driver (available) ring (2-byte aligned). */
  avail: number;
  /** Guest address of the device (used) ring (4-byte aligned). */
  used: number;
}

/** Why a queue layout is unusable, or undefined if it is fine. */
export function checkLayout(
  mem: GuestMemory,
  q: QueueLayout,
  maxSize: number,
): string | undefined {
  const { size, desc, avail, used } = q;
  if (!(size > 0 && size <= maxSize && (size & (size - 1)) === 0)) {
    return `queue size ${size} is not a power of two up to ${maxSize}`;
  }
  if (desc % 16 || avail % 2 || used % 4) return "queue rings are misaligned";
  if (mem.offsetOf(desc, VRING.DESC_SIZE * size) < 0) return "descriptor table is outside RAM";
  if (mem.offsetOf(avail, 6 + 2 * size) < 0) return "driver ring is outside RAM";
  if (mem.offsetOf(used, 6 + 8 * size) < 0) return "device ring is outside RAM";
  return undefined;
}

/** A driver error that makes the queue unusable until the device is reset. */
export class QueueError extends Error {
  /** A {@linkcode NEEDS_RESET_WHY} code. */
  readonly why: number;
  constructor(message: string, why: number = NEEDS_RESET_WHY.BAD_CHAIN) {
    super(message);
    this.why = why;
    this.name = "QueueError";
  }
}

/**
 * One descriptor chain, in arrays reused for every request: buffer `i` is
 * `len[i]` bytes at offset `host[i]` of guest RAM's host mapping,
 * device-writable when `writable[i]` is 1.
 */
export class DescriptorChain {
  /** Head descriptor index (what goes back in the used ring). */
  head = 0;
  /** Buffers in the chain. */
  count = 0;
  /** Total bytes over every buffer. */
  bytes = 0;
  readonly host: Float64Array;
  readonly len: Uint32Array;
  readonly writable: Uint8Array;

  constructor(maxSize: number) {
    this.host = new Float64Array(maxSize);
    this.len = new Uint32Array(maxSize);
    this.writable = new Uint8Array(maxSize);
  }
}

const FENCE = new Int32Array(new SharedArrayBuffer(4));

/**
 * A full memory fence (a locked read-modify-write on x86): orders this
 * thread's earlier stores before its later loads, which plain JS accesses
 * to guest RAM do not. A device needs it between writing a ring index and
 * reading the driver's flag or event index (virtio 1.2 §2.7.7.2).
 */
export function fullFence(): void {
  Atomics.add(FENCE, 0, 0);
}

/** Ring features the driver accepted, which change how the queue is read. */
export interface QueueFeatures {
  /** `VIRTIO_RING_F_INDIRECT_DESC`: a descriptor may point at a table of more. */
  indirect?: boolean;
  /** `VIRTIO_RING_F_EVENT_IDX`: the rings' trailing words replace the flags. */
  eventIdx?: boolean;
}

/**
 * A split virtqueue over guest RAM.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GuestMemory } from "../../memory/guest_memory.ts";
 * import { DescriptorChain, SplitQueue } from "./queue.ts";
 * const mem = GuestMemory.fromBuffer(new ArrayBuffer(1 << 16));
 * const q = new SplitQueue(mem, { size: 4, desc: 0x1000, avail: 0x2000, used: 0x3000 });
 * const dv = new DataView(mem.host.buffer);
 * dv.setUint32(0x1000, 0x4000, true); // desc 0: 64 writable bytes at 0x4000
 * dv.setUint32(0x1008, 64, true);
 * dv.setUint16(0x100c, 2, true);
 * dv.setUint16(0x2004, 0, true); // avail ring[0] = 0, avail idx = 1
 * dv.setUint16(0x2002, 1, true);
 * const chain = new DescriptorChain(4);
 * assert.ok(q.pop(chain));
 * assert.equal(chain.bytes, 64);
 * q.push(chain.head, 64);
 * assert.equal(dv.getUint16(0x3002, true), 1);
 * ```
 */
export class SplitQueue {
  readonly size: number;
  private readonly dv: DataView;
  private readonly mem: GuestMemory;
  private readonly descOff: number;
  private readonly availOff: number;
  private readonly usedOff: number;
  /** The driver ring index this device reads next (free-running, mod 2^16). */
  private nextAvail = 0;
  /** The device ring index this device writes next. */
  private nextUsed = 0;
  /** The used index when {@linkcode wantsInterrupt} last said yes or no. */
  private signalled = 0;
  private readonly indirect: boolean;
  /** Whether the driver negotiated `VIRTIO_RING_F_EVENT_IDX`. */
  readonly eventIdx: boolean;

  /** Throws a {@linkcode QueueError} on a layout {@linkcode checkLayout} refuses. */
  constructor(
    mem: GuestMemory,
    q: QueueLayout,
    maxSize: number = VRING.MAX_SIZE,
    features: QueueFeatures = {},
  ) {
    const why = checkLayout(mem, q, maxSize);
    if (why) throw new QueueError(why);
    this.mem = mem;
    this.size = q.size;
    this.indirect = features.indirect ?? false;
    this.eventIdx = features.eventIdx ?? false;
    this.dv = new DataView(mem.host.buffer, mem.host.byteOffset, mem.host.byteLength);
    this.descOff = mem.offsetOf(q.desc, VRING.DESC_SIZE * q.size);
    this.availOff = mem.offsetOf(q.avail, 6 + 2 * q.size);
    this.usedOff = mem.offsetOf(q.used, 6 + 8 * q.size);
  }

  /**
   * Chains the driver has made available and this device has not taken.
   * Throws when the driver claims more than the queue holds.
   */
  pending(): number {
    const idx = this.dv.getUint16(this.availOff + 2, true);
    const n = (idx - this.nextAvail) & 0xffff;
    if (n > this.size) throw new QueueError(`driver ring index ${idx} runs ahead of the queue`);
    return n;
  }

  /**
   * Takes the next available chain into `chain`; false when none is
   * waiting. Throws a {@linkcode QueueError} on a malformed chain: a head
   * or next index past the queue or its indirect table, a loop or a chain
   * longer than the queue, a buffer outside guest RAM, an indirect
   * descriptor the driver did not negotiate, or one that is nested,
   * chained on, or not a whole number of descriptors.
   */
  pop(chain: DescriptorChain): boolean {
    if (this.pending() === 0) return false;
    const dv = this.dv;
    const size = this.size;
    const slot = this.nextAvail & (size - 1);
    const head = dv.getUint16(this.availOff + 4 + 2 * slot, true);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    if (head >= size) throw new QueueError(`descriptor index ${head} is past the queue`);
    if (chain.host.length < size) throw new RangeError("Descriptor chain arrays too small");
    chain.head = head;
    chain.count = 0;
    chain.bytes = 0;
    // The table being walked: the queue's, then at most one indirect one.
    let table = this.descOff, entries = size, nested = false;
    // A chain in the queue's table visits each descriptor at most once, so
    // one longer than the queue has a loop; an indirect table may take a
    // chain past the queue's size (Linux does), up to what `chain` holds.
    let limit = size;
    let i = head;
    for (;;) {
      if (chain.count >= limit) throw new QueueError("descriptor chain loops or outruns the queue");
      const d = table + VRING.DESC_SIZE * i;
      const addr = dv.getUint32(d, true) + dv.getUint32(d + 4, true) * 2 ** 32;
      const len = dv.getUint32(d + 8, true);
      const flags = dv.getUint16(d + 12, true);
      const next = dv.getUint16(d + 14, true);
      if (flags & VRING.DESC_F_INDIRECT) {
        if (!this.indirect) throw new QueueError("indirect descriptor not negotiated");
        if (nested) throw new QueueError("indirect descriptor inside an indirect table");
        if (flags & VRING.DESC_F_NEXT) throw new QueueError("indirect descriptor with a next");
        if (len === 0 || len % VRING.DESC_SIZE) {
          throw new QueueError(`indirect table of ${len} bytes`);
        }
        const at = this.mem.offsetOf(addr, len);
        if (at < 0) {
          throw new QueueError(`indirect table 0x${addr.toString(16)}+${len} is outside RAM`);
        }
        table = at;
        entries = len / VRING.DESC_SIZE;
        limit = chain.host.length;
        nested = true;
        i = 0;
        continue;
      }
      const host = len === 0 ? 0 : this.mem.offsetOf(addr, len);
      if (host < 0) {
        throw new QueueError(`descriptor buffer 0x${addr.toString(16)}+${len} is outside RAM`);
      }
      const n = chain.count++;
      chain.host[n] = host;
      chain.len[n] = len;
      chain.writable[n] = flags & VRING.DESC_F_WRITE ? 1 : 0;
      // Recorded now, before the device writes it: a diff snapshot must carry it.
      if (flags & VRING.DESC_F_WRITE) this.mem.markDirty(host, len);
      chain.bytes += len;
      if (!(flags & VRING.DESC_F_NEXT)) return true;
      if (next >= entries) throw new QueueError(`descriptor index ${next} is past its table`);
      i = next;
    }
  }

  /** Returns chain `head` to the driver with `len` bytes written. */
  push(head: number, len: number): void {
    const dv = this.dv;
    const e = this.usedOff + 4 + 8 * (this.nextUsed & (this.size - 1));
    dv.setUint32(e, head, true);
    dv.setUint32(e + 4, len, true);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    // The entry is in place before the index says so (x86 keeps stores in order).
    dv.setUint16(this.usedOff + 2, this.nextUsed, true);
    this.mem.markDirty(this.usedOff + 2, 2);
    this.mem.markDirty(e, 8);
  }

  /**
   * Records as written every buffer the driver's descriptor table (and the
   * indirect tables it points at) offers the device, and the used ring: what
   * the device may still write into chains it holds once a diff snapshot
   * has cleared the record. Malformed entries are skipped; the walk is
   * bounded by the queue's size and each table's length.
   */
  markPosted(): void {
    const dv = this.dv, mem = this.mem;
    mem.markDirty(this.usedOff, 6 + 8 * this.size);
    const walk = (table: number, entries: number, nested: boolean) => {
      for (let i = 0; i < entries; i++) {
        const d = table + VRING.DESC_SIZE * i;
        const addr = dv.getUint32(d, true) + dv.getUint32(d + 4, true) * 2 ** 32;
        const len = dv.getUint32(d + 8, true);
        const flags = dv.getUint16(d + 12, true);
        if (len === 0) continue;
        const at = mem.offsetOf(addr, len);
        if (at < 0) continue;
        if (flags & VRING.DESC_F_INDIRECT) {
          if (!nested && this.indirect && len % VRING.DESC_SIZE === 0) {
            walk(at, len / VRING.DESC_SIZE, true);
          }
        } else if (flags & VRING.DESC_F_WRITE) mem.markDirty(at, len);
      }
    };
    walk(this.descOff, this.size, false);
  }

  /**
   * Whether the entries used since the last call need an interrupt: with
   * EVENT_IDX, when the used index passed the driver's `used_event`
   * (§2.7.10); otherwise unless the driver set `VRING_AVAIL_F_NO_INTERRUPT`.
   * Call after a full fence that follows {@linkcode push}.
   */
  wantsInterrupt(): boolean {
    const old = this.signalled, now = this.nextUsed;
    this.signalled = now;
    if (!this.eventIdx) {
      return (this.dv.getUint16(this.availOff, true) & VRING.AVAIL_F_NO_INTERRUPT) === 0;
    }
    const event = this.dv.getUint16(this.availOff + 4 + 2 * this.size, true);
    return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
  }

  /**
   * With EVENT_IDX, asks the driver to notify again once it makes chain
   * `at` available (by default the next one this device will take). The
   * caller fences, then looks at the ring once more, so a chain added
   * before the driver saw the new value is not left waiting.
   */
  armNotify(at: number = this.nextAvail): void {
    if (!this.eventIdx) return;
    this.dv.setUint16(this.usedOff + 4 + 8 * this.size, at & 0xffff, true);
    this.mem.markDirty(this.usedOff + 4 + 8 * this.size, 2);
  }

  /** The driver's avail index: the chains it has made available, ever (mod 2^16). */
  availIndex(): number {
    return this.dv.getUint16(this.availOff + 2, true);
  }

  /**
   * Where both sides are: the driver ring's index and flags, the device
   * ring's index, each side's event index, and this device's cursors.
   */
  indices(): Record<string, number> {
    const dv = this.dv, n = this.size;
    return {
      availIdx: dv.getUint16(this.availOff + 2, true),
      availFlags: dv.getUint16(this.availOff, true),
      usedEvent: dv.getUint16(this.availOff + 4 + 2 * n, true),
      usedIdx: dv.getUint16(this.usedOff + 2, true),
      availEvent: dv.getUint16(this.usedOff + 4 + 8 * n, true),
      nextAvail: this.nextAvail,
      nextUsed: this.nextUsed,
      signalled: this.signalled,
    };
  }

  /**
   * Goes on from the device ring's index in guest RAM, as a queue restored
   * from a snapshot does: every chain taken before the save was used (the
   * devices that may hold chains are not saved), so the next to take is
   * the next to use.
   */
  resume(): void {
    const used = this.dv.getUint16(this.usedOff + 2, true);
    this.nextAvail = this.nextUsed = this.signalled = used;
  }

  /** Gives back the last `n` chains taken and not pushed: the next pops take them again. */
  unpop(n: number): void {
    this.nextAvail = (this.nextAvail - n) & 0xffff;
  }
}
