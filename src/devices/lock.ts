/**
 * The lock that serialises a device's accesses across threads: one Int32
 * in the device's shared state, taken by the bus wrapper
 * ({@linkcode Serialized}) around every access, so device code itself
 * stays single-threaded.
 *
 * @module
 */

import type { BusDevice } from "./bus.ts";

/** Uncontended tries before a waiter sleeps: a device access takes well under a microsecond. */
const SPINS = 200;
/** Longest single sleep, ms: a waiter rechecks even if a wake-up is missed. */
const WAIT_MS = 1;

/**
 * A futex-style mutex over `state[slot]` (0 free, 1 held, 2 held with
 * waiters). Waiters spin briefly, then sleep in `Atomics.wait`, so 32
 * vCPU threads on two host cores do not burn a preempted holder's slice.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DeviceLock } from "./lock.ts";
 * const lock = new DeviceLock(new Int32Array(new SharedArrayBuffer(4)));
 * assert.equal(lock.hold(() => 42), 42);
 * ```
 */
export class DeviceLock {
  constructor(private readonly state: Int32Array, private readonly slot = 0) {
    if (!(state.buffer instanceof SharedArrayBuffer)) {
      throw new TypeError("A device lock needs shared state");
    }
    if (slot < 0 || slot >= state.length) throw new RangeError("Device lock slot out of range");
  }

  /** Takes the lock, waiting as long as it takes. */
  acquire(): void {
    const s = this.state, i = this.slot;
    if (Atomics.compareExchange(s, i, 0, 1) === 0) return;
    for (let n = 0; n < SPINS; n++) {
      if (Atomics.load(s, i) === 0 && Atomics.compareExchange(s, i, 0, 1) === 0) return;
    }
    while (Atomics.exchange(s, i, 2) !== 0) Atomics.wait(s, i, 2, WAIT_MS);
  }

  /** Releases the lock, waking one waiter if there is one. */
  release(): void {
    if (Atomics.exchange(this.state, this.slot, 0) === 2) Atomics.notify(this.state, this.slot, 1);
  }

  /** Runs `fn` holding the lock. */
  hold<T>(fn: () => T): T {
    this.acquire();
    try {
      return fn();
    } finally {
      this.release();
    }
  }
}

/**
 * What a shared device may add to {@linkcode BusDevice}: work that must run
 * after its lock is released (a UART's output to a stdout that may block).
 */
export interface DeferredWork {
  /** Called right after every access, outside the lock. */
  afterAccess(): void;
}

/**
 * A device whose state several threads share, behind its lock: the one
 * place an access from any thread is serialised.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DeviceLock, Serialized } from "./lock.ts";
 * const state = new Int32Array(new SharedArrayBuffer(8));
 * const dev = new Serialized({
 *   read: (_o, d) => d.fill(state[1]),
 *   write: (_o, d) => void (state[1] = d[0]),
 * }, new DeviceLock(state));
 * dev.write(0, new Uint8Array([7]));
 * const out = new Uint8Array(1);
 * dev.read(0, out);
 * assert.equal(out[0], 7);
 * ```
 */
export class Serialized implements BusDevice {
  private readonly after?: DeferredWork;
  constructor(readonly device: BusDevice & Partial<DeferredWork>, readonly lock: DeviceLock) {
    if (typeof device.afterAccess === "function") this.after = device as DeferredWork;
  }

  read(offset: number, data: Uint8Array): void {
    this.lock.acquire();
    try {
      this.device.read(offset, data);
    } finally {
      this.lock.release();
    }
    this.after?.afterAccess();
  }

  write(offset: number, data: Uint8Array): void {
    this.lock.acquire();
    try {
      this.device.write(offset, data);
    } finally {
      this.lock.release();
    }
    this.after?.afterAccess();
  }
}
