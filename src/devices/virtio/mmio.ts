/**
 * The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), as the guest's
 * register accesses see it: feature negotiation, the status state machine
 * and reset, queue setup, interrupt status and acknowledge, config space.
 * It runs on whichever vCPU thread exits, behind the device lock; queue
 * work happens elsewhere (the I/O loop), told by a {@linkcode Notifier}.
 *
 * @module
 */

import {
  F,
  INT,
  MMIO,
  STATUS,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_VERSION,
} from "../../../ffi/virtio.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { BusDevice } from "../bus.ts";
import type { Trigger } from "../serial.ts";
import { checkLayout } from "./queue.ts";
import {
  CONFIG_OFFSET,
  NEEDS_RESET_WHY,
  Q,
  Q_SLOTS,
  queueLayout,
  queueSlot,
  S,
} from "./mmio_state.ts";

/** Bytes of MMIO space one device takes. */
export const VIRTIO_MMIO_SIZE = 0x1000;
/** "VOLT", the vendor ID the guest reads. */
export const VOLT_VENDOR_ID = 0x544c4f56;

/** Tells the queue worker that the driver notified queue `queue`. */
export interface Notifier {
  notify(queue: number): void;
}

/**
 * One virtio-mmio device's registers over its shared state.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GuestMemory } from "../../memory/guest_memory.ts";
 * import { newVirtioState } from "./mmio_state.ts";
 * import { VirtioMmio } from "./mmio.ts";
 * const state = newVirtioState({
 *   deviceId: 4, features: 1n << 32n, queues: 1, queueMax: 8, config: new Uint8Array(0),
 * });
 * const mem = GuestMemory.fromBuffer(new ArrayBuffer(1 << 16));
 * const dev = new VirtioMmio(state, mem, { trigger() {} }, { notify() {} });
 * const word = new Uint8Array(4);
 * dev.read(0, word);
 * assert.equal(new DataView(word.buffer).getUint32(0, true), 0x74726976); // "virt"
 * ```
 */
export class VirtioMmio implements BusDevice {
  private readonly s: Int32Array;
  private readonly config: Uint8Array;

  constructor(
    state: SharedArrayBuffer,
    private readonly mem: GuestMemory,
    private readonly irq: Trigger,
    private readonly notifier: Notifier,
  ) {
    this.s = new Int32Array(state);
    this.config = new Uint8Array(state, CONFIG_OFFSET, this.s[S.CONFIG_BYTES]);
  }

  read(offset: number, data: Uint8Array): void {
    if (offset >= MMIO.CONFIG) return this.readConfig(offset - MMIO.CONFIG, data);
    // Registers are 32 bits wide and aligned (§4.2.2.2); anything else reads zero.
    if (data.length !== 4 || offset % 4) return void data.fill(0);
    const v = this.readReg(offset);
    data[0] = v;
    data[1] = v >>> 8;
    data[2] = v >>> 16;
    data[3] = v >>> 24;
  }

  write(offset: number, data: Uint8Array): void {
    // Config space holds nothing the driver may write; odd-sized register writes are dropped.
    if (offset >= MMIO.CONFIG || data.length !== 4 || offset % 4) return;
    this.writeReg(offset, (data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)) >>> 0);
  }

  /** Config bytes at `off`; past the end reads zero. */
  private readConfig(off: number, data: Uint8Array): void {
    Atomics.add(this.s, S.CONFIG_READS, 1);
    const c = this.config;
    for (let i = 0; i < data.length; i++) data[i] = off + i < c.length ? c[off + i] : 0;
  }

  private queue(): number {
    const q = this.s[S.QUEUE_SEL];
    return q >= 0 && q < this.s[S.NUM_QUEUES] ? q : -1;
  }

  private readReg(offset: number): number {
    const s = this.s;
    const q = this.queue();
    switch (offset) {
      case MMIO.MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case MMIO.VERSION:
        return VIRTIO_MMIO_VERSION;
      case MMIO.DEVICE_ID:
        return s[S.DEVICE_ID];
      case MMIO.VENDOR_ID:
        return VOLT_VENDOR_ID;
      case MMIO.DEVICE_FEATURES: {
        const sel = s[S.DEVICE_FEATURES_SEL];
        return sel === 0 ? s[S.DEVICE_FEATURES_LO] : sel === 1 ? s[S.DEVICE_FEATURES_HI] : 0;
      }
      case MMIO.QUEUE_NUM_MAX:
        return q < 0 ? 0 : s[S.QUEUE_MAX];
      case MMIO.QUEUE_READY:
        return q < 0 ? 0 : s[queueSlot(q, Q.READY)];
      case MMIO.INTERRUPT_STATUS:
        return Atomics.load(s, S.INTERRUPT_STATUS);
      case MMIO.STATUS:
        return Atomics.load(s, S.STATUS);
      case MMIO.CONFIG_GENERATION:
        return s[S.CONFIG_GENERATION];
    }
    // Write-only and reserved registers read zero.
    return 0;
  }

  private writeReg(offset: number, v: number): void {
    const s = this.s;
    const status = Atomics.load(s, S.STATUS);
    switch (offset) {
      case MMIO.DEVICE_FEATURES_SEL:
        s[S.DEVICE_FEATURES_SEL] = v;
        return;
      case MMIO.DRIVER_FEATURES_SEL:
        s[S.DRIVER_FEATURES_SEL] = v;
        return;
      case MMIO.DRIVER_FEATURES: {
        // Only while negotiating (§3.1.1): after FEATURES_OK they are fixed.
        if (!(status & STATUS.DRIVER) || status & STATUS.FEATURES_OK) return;
        const sel = s[S.DRIVER_FEATURES_SEL];
        if (sel === 0) s[S.DRIVER_FEATURES_LO] = v;
        else if (sel === 1) s[S.DRIVER_FEATURES_HI] = v;
        return;
      }
      case MMIO.QUEUE_SEL:
        s[S.QUEUE_SEL] = v;
        return;
      case MMIO.QUEUE_NUM:
      case MMIO.QUEUE_DESC_LOW:
      case MMIO.QUEUE_DESC_HIGH:
      case MMIO.QUEUE_AVAIL_LOW:
      case MMIO.QUEUE_AVAIL_HIGH:
      case MMIO.QUEUE_USED_LOW:
      case MMIO.QUEUE_USED_HIGH:
        return this.writeQueueField(offset, v, status);
      case MMIO.QUEUE_READY:
        return this.writeQueueReady(v, status);
      case MMIO.QUEUE_NOTIFY:
        // Reached only without an ioeventfd for it; a queue that does not
        // exist, or a device not yet live, is nothing to notify.
        Atomics.add(s, S.NOTIFY_EXITS, 1);
        if (v < s[S.NUM_QUEUES] && status & STATUS.DRIVER_OK) this.notifier.notify(v);
        return;
      case MMIO.INTERRUPT_ACK:
        Atomics.and(s, S.INTERRUPT_STATUS, ~v);
        return;
      case MMIO.STATUS:
        return this.writeStatus(v, status);
    }
  }

  private writeQueueField(offset: number, v: number, status: number): void {
    const q = this.queue();
    // Queues are set up between FEATURES_OK and DRIVER_OK, and not while live.
    if (q < 0 || !(status & STATUS.FEATURES_OK) || status & STATUS.DRIVER_OK) return;
    if (this.s[queueSlot(q, Q.READY)]) return;
    let field: number = Q.NUM;
    if (offset !== MMIO.QUEUE_NUM) {
      // DESC, AVAIL and USED pairs sit 0x10 apart, low word first.
      field = Q.DESC_LO + 2 * ((offset - MMIO.QUEUE_DESC_LOW) >> 4) + ((offset >> 2) & 1);
    }
    this.s[queueSlot(q, field)] = v | 0;
  }

  private writeQueueReady(v: number, status: number): void {
    const q = this.queue();
    if (q < 0) return;
    const s = this.s;
    const ready = queueSlot(q, Q.READY);
    if (v === 0) {
      Atomics.store(s, ready, 0);
      return;
    }
    if (!(status & STATUS.FEATURES_OK) || s[ready]) return;
    const why = checkLayout(this.mem, queueLayout(s, q), s[S.QUEUE_MAX]);
    if (why) {
      this.needsReset(NEEDS_RESET_WHY.BAD_QUEUE_LAYOUT);
      return;
    }
    // Last: the I/O loop reads the layout only once READY says it is whole.
    Atomics.store(s, ready, 1);
  }

  private writeStatus(v: number, status: number): void {
    const s = this.s;
    if (v === 0) return this.reset();
    // The driver adds bits; it clears them only by a reset (§2.1.2).
    let add = (v & ~status) & 0xff;
    if (add & STATUS.FEATURES_OK && !this.featuresAcceptable()) add &= ~STATUS.FEATURES_OK;
    if (add & STATUS.DRIVER_OK && !((status | add) & STATUS.FEATURES_OK)) add &= ~STATUS.DRIVER_OK;
    Atomics.or(s, S.STATUS, add & ~STATUS.DEVICE_NEEDS_RESET);
  }

  /** The driver's features are a subset of the device's, `VERSION_1` among them. */
  private featuresAcceptable(): boolean {
    const s = this.s;
    const lo = s[S.DRIVER_FEATURES_LO], hi = s[S.DRIVER_FEATURES_HI];
    if ((lo & ~s[S.DEVICE_FEATURES_LO]) || (hi & ~s[S.DEVICE_FEATURES_HI])) return false;
    return (hi & (1 << (F.VERSION_1 - 32))) !== 0;
  }

  /** Back to the state after power-on (§2.4): status, features, queues, interrupts. */
  private reset(): void {
    const s = this.s;
    for (
      const i of [
        S.DEVICE_FEATURES_SEL,
        S.DRIVER_FEATURES_SEL,
        S.DRIVER_FEATURES_LO,
        S.DRIVER_FEATURES_HI,
        S.QUEUE_SEL,
        S.NEEDS_RESET_WHY,
      ]
    ) s[i] = 0;
    for (let q = 0; q < s[S.NUM_QUEUES]; q++) {
      for (let f = 0; f < Q_SLOTS; f++) Atomics.store(s, queueSlot(q, f), 0);
    }
    Atomics.store(s, S.INTERRUPT_STATUS, 0);
    Atomics.add(s, S.RESET_GENERATION, 1);
    // Last: a driver polling for 0 sees the reset done.
    Atomics.store(s, S.STATUS, 0);
  }

  /** Sets DEVICE_NEEDS_RESET and tells the driver by a config-change interrupt (§2.1.2). */
  private needsReset(why: number): void {
    markNeedsReset(this.s, why);
    this.irq.trigger();
  }
}

/**
 * Puts the device in DEVICE_NEEDS_RESET (from any thread): the status bit,
 * why, a new config generation and the config-change interrupt bit. The
 * caller raises the interrupt.
 */
export function markNeedsReset(s: Int32Array, why: number): void {
  Atomics.compareExchange(s, S.NEEDS_RESET_WHY, 0, why);
  Atomics.or(s, S.STATUS, STATUS.DEVICE_NEEDS_RESET);
  Atomics.add(s, S.CONFIG_GENERATION, 1);
  Atomics.or(s, S.INTERRUPT_STATUS, INT.CONFIG_CHANGE);
}
