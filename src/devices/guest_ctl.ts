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

/** The boot-timer port: any write marks the guest ready. */
export class BootTimerPort implements BusDevice {
  private readonly h: GuestCtlHandler;
  constructor(h: GuestCtlHandler) {
    this.h = h;
  }
  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }
  write(_offset: number, _data: Uint8Array): void {
    this.h.ready();
  }
}
