/**
 * Two write-only ports volt-init uses to talk to the monitor without the
 * console: the exit port (the guest's exit status; the VM stops there) and
 * the boot-timer port (the moment userspace is ready).
 *
 * @module
 */

import type { BusDevice } from "./bus.ts";

/** What the guest can tell the monitor. */
export interface GuestCtlHandler {
  /** The guest asks to stop with `status`. */
  exit(status: number): void;
  /** The guest reports it is ready. */
  ready(): void;
}

/**
 * The exit port: a write of 1 to 4 bytes carries the status (low byte used).
 *
 * @example
 * ```ts
 * import { ExitPort } from "./guest_ctl.ts";
 * let status = -1;
 * new ExitPort({ exit: (s) => (status = s), ready() {} }).write(0, new Uint8Array([3, 0, 0, 0]));
 * ```
 */
export class ExitPort implements BusDevice {
  private readonly h: GuestCtlHandler;
  constructor(h: GuestCtlHandler) {
    this.h = h;
  }
  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }
  write(offset: number, data: Uint8Array): void {
    if (offset === 0) this.h.exit(data[0]);
  }
}

/**
 * The boot-timer port: the first write marks the guest ready, later ones
 * do nothing. The latch is an Int32 slot, shared (a SharedArrayBuffer) by
 * the ports of every vCPU so the VM is ready once: a guest looping on the
 * port, or `rep outsb` to it, costs the exits and nothing more.
 *
 * @example
 * ```ts
 * import { BootTimerPort } from "./guest_ctl.ts";
 * let readies = 0;
 * const port = new BootTimerPort({ exit() {}, ready: () => void readies++ });
 * port.write(0, new Uint8Array([1]));
 * port.write(0, new Uint8Array([1])); // readies = 1
 * ```
 */
export class BootTimerPort implements BusDevice {
  private readonly h: GuestCtlHandler;
  private readonly latch: Int32Array;
  private readonly slot: number;
  /** `latch[slot]` is 0 until the first write (default: a latch of its own). */
  constructor(h: GuestCtlHandler, latch: Int32Array = new Int32Array(1), slot = 0) {
    if (slot < 0 || slot >= latch.length) {
      throw new RangeError("Boot-timer latch slot out of range");
    }
    this.h = h;
    this.latch = latch;
    this.slot = slot;
  }
  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }
  write(_offset: number, _data: Uint8Array): void {
    // A load first: once latched, a flood never takes the cache line exclusive.
    if (Atomics.load(this.latch, this.slot) !== 0) return;
    if (Atomics.compareExchange(this.latch, this.slot, 0, 1) === 0) this.h.ready();
  }
}
