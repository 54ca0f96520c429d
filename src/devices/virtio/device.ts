/**
 * The queue side of a virtio device: a backend (block, entropy, yours)
 * handles one request at a time; {@linkcode QueueRunner} takes the chains
 * the driver made available, hands them over, returns them used and
 * raises the interrupt. It runs on the I/O loop and reads the
 * transport's setup from the shared state; a driver error puts the device
 * in DEVICE_NEEDS_RESET instead of reaching the monitor.
 *
 * @module
 */

import { F, INT, STATUS } from "../../../ffi/virtio.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { Trigger } from "../serial.ts";
import { markNeedsReset } from "./mmio.ts";
import { Q, queueLayout, queueSlot, S, type VirtioDeviceInfo } from "./mmio_state.ts";
import { DescriptorChain, fullFence, QueueError, type QueueFeatures, SplitQueue } from "./queue.ts";

/** A virtio device model: what it offers, and how it serves one request. */
export interface VirtioBackend {
  /** ID, features, queues and config space. */
  readonly info: VirtioDeviceInfo;
  /**
   * Serves the request in `chain` (its buffers are checked to lie in guest
   * RAM); returns the bytes it wrote into the chain's device-writable
   * buffers. Throws a {@linkcode QueueError} for a request so malformed the
   * device must be reset.
   */
  handle(queue: number, chain: DescriptorChain): number;
  /**
   * Serves queue `queue` itself, for a device whose chains wait on the
   * host (net's receive queue waits for frames): at most `quota` of them,
   * returning how many it used, or -1 to have {@linkcode handle} serve
   * that queue chain by chain. It arms its own notifications.
   */
  serve?(queue: number, ring: SplitQueue, chain: DescriptorChain, quota: number): number;
  /** The driver set DRIVER_OK with `features` (once per reset). */
  activate?(features: bigint): void;
  /** The driver reset the device. */
  reset?(): void;
  /**
   * A host descriptor whose readiness is work for the device (a TAP, the
   * device's own epoll set): the I/O loop watches it, edge-triggered, and
   * serves the device's queues when it fires.
   */
  readonly hostFd?: number;
  /** ms until the device must be served even if nothing fires (a protocol timeout). */
  nextDeadline?(): number;
  /** Releases what the device holds on the host (its connections); the VM is ending. */
  close?(): void;
  /** Counters since the device was made (requests, bytes, failures), for the metrics. */
  readonly stats?: Readonly<Record<string, number>>;
}

/**
 * Serves one device's queues when the driver notifies.
 *
 * @example
 * ```ts ignore
 * const runner = new QueueRunner(backend, state, memory, irq);
 * runner.notified(); // on every queue notification
 * ```
 */
export class QueueRunner {
  private readonly s: Int32Array;
  private readonly queues: Array<SplitQueue | undefined>;
  private readonly chain: DescriptorChain;
  private generation = -1;
  private active = false;
  /** Requests served, for tests and metrics. */
  served = 0;
  /** Notifications taken and interrupts raised, for metrics. */
  private notifies = 0;
  private interrupts = 0;

  /** The reset generation whose queues go on from guest RAM (a restored device's); -2 for none. */
  private readonly resumeGeneration: number;

  /** With `resume`, the queues the driver set up before a snapshot go on where they were. */
  constructor(
    readonly backend: VirtioBackend,
    state: SharedArrayBuffer,
    private readonly mem: GuestMemory,
    private readonly irq: Trigger,
    opts: { resume?: boolean } = {},
  ) {
    this.s = new Int32Array(state);
    this.resumeGeneration = opts.resume ? Atomics.load(this.s, S.RESET_GENERATION) : -2;
    this.queues = new Array(backend.info.queues).fill(undefined);
    this.chain = new DescriptorChain(backend.info.queueMax);
  }

  /**
   * Serves every queue with work waiting, at most a queue's worth of
   * chains each, and raises the interrupt once if any was used. Returns
   * true when a queue still has work: the caller comes back after serving
   * the others (a driver that keeps adding chains does not hold the loop).
   */
  notified(): boolean {
    this.notifies++;
    const s = this.s;
    const gen = Atomics.load(s, S.RESET_GENERATION);
    if (gen !== this.generation) {
      this.generation = gen;
      this.queues.fill(undefined);
      this.active = false;
      this.backend.reset?.();
    }
    const status = Atomics.load(s, S.STATUS);
    // Notifications before DRIVER_OK, or once the device needs a reset, do nothing.
    if (!(status & STATUS.DRIVER_OK) || status & STATUS.DEVICE_NEEDS_RESET) return false;
    if (!this.active) {
      this.active = true;
      this.backend.activate?.(
        BigInt(s[S.DRIVER_FEATURES_LO] >>> 0) | (BigInt(s[S.DRIVER_FEATURES_HI] >>> 0) << 32n),
      );
    }
    let used = false, again = false;
    // Last queue first: what the driver sent (vsock's transmit queue) may
    // owe it an answer on the first (its receive queue), in the same turn.
    for (let q = this.queues.length - 1; q >= 0; q--) {
      const queue = this.queue(q);
      if (!queue) continue;
      try {
        const own = this.backend.serve?.(q, queue, this.chain, queue.size) ?? -1;
        const n = own >= 0 ? own : this.drain(q, queue);
        this.served += n;
        again ||= n === queue.size;
        const pushed = n > 0;
        if (pushed) {
          // A full fence (a locked RMW) between the used index the device
          // wrote and the driver's flag or used_event it reads: x86 may
          // otherwise let the read pass the write, and a driver re-enabling
          // interrupts would see neither the new entries nor get an
          // interrupt (virtio 1.2 §2.7.7.2).
          fullFence();
          used ||= queue.wantsInterrupt();
        }
      } catch (e) {
        if (!(e instanceof QueueError)) throw e;
        markNeedsReset(s, e.why);
        this.irq.trigger();
        return false;
      }
    }
    if (used) {
      Atomics.or(s, S.INTERRUPT_STATUS, INT.USED_RING);
      this.interrupts++;
      this.irq.trigger();
    }
    return again;
  }

  /**
   * Hands queue `q`'s chains to the backend one by one, at most a queue's
   * worth; returns how many were used.
   */
  private drain(q: number, queue: SplitQueue): number {
    let n = 0;
    for (;;) {
      while (n < queue.size && queue.pop(this.chain)) {
        queue.push(this.chain.head, this.backend.handle(q, this.chain));
        n++;
      }
      if (n === queue.size || !queue.eventIdx) return n;
      // Tell the driver which chain to notify for next, then look once
      // more: one it added before it could see that would otherwise wait
      // for a notification it never sends. The fence orders the two.
      queue.armNotify();
      fullFence();
      if (queue.pending() === 0) return n;
    }
  }

  /**
   * The transport's counters and each ready queue's indices, as the device
   * and the driver left them: what tells a lost notification (the driver
   * ring ahead of what the device took) from a lost interrupt (the device
   * ring ahead of the driver's `used_event`) when a guest's I/O stops.
   */
  report(): Record<string, number> {
    const out: Record<string, number> = {
      notifies: this.notifies,
      interrupts: this.interrupts,
      interruptStatus: Atomics.load(this.s, S.INTERRUPT_STATUS),
      deviceStatus: Atomics.load(this.s, S.STATUS),
    };
    this.queues.forEach((q, i) => {
      if (!q) return;
      for (const [k, n] of Object.entries(q.indices())) out[`q${i}.${k}`] = n;
    });
    return out;
  }

  /**
   * Records as written what the device may still write in each ready
   * queue (see `SplitQueue.markPosted`): a diff snapshot clears the record
   * while the device may hold chains.
   */
  markPosted(): void {
    const s = this.s;
    for (let q = 0; q < this.queues.length; q++) {
      if (!Atomics.load(s, queueSlot(q, Q.READY))) continue;
      try {
        new SplitQueue(this.mem, queueLayout(s, q), s[S.QUEUE_MAX], this.ringFeatures())
          .markPosted();
      } catch (e) {
        // A layout the queue refuses holds nothing the device writes.
        if (!(e instanceof QueueError)) throw e;
      }
    }
  }

  /** The ring features the driver accepted (fixed from FEATURES_OK on). */
  private ringFeatures(): QueueFeatures {
    const lo = this.s[S.DRIVER_FEATURES_LO];
    return {
      indirect: (lo & (1 << F.RING_INDIRECT_DESC)) !== 0,
      eventIdx: (lo & (1 << F.RING_EVENT_IDX)) !== 0,
    };
  }

  /** Queue `q` as the driver set it up, once it is ready. */
  private queue(q: number): SplitQueue | undefined {
    const s = this.s;
    if (!Atomics.load(s, queueSlot(q, Q.READY))) {
      this.queues[q] = undefined;
      return undefined;
    }
    // The transport checked the layout before it set READY, and the
    // features are fixed from FEATURES_OK on.
    let queue = this.queues[q];
    if (queue) return queue;
    queue = new SplitQueue(this.mem, queueLayout(s, q), s[S.QUEUE_MAX], this.ringFeatures());
    if (this.generation === this.resumeGeneration) queue.resume();
    return this.queues[q] = queue;
  }
}
