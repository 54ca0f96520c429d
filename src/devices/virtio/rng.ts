/**
 * virtio-rng (virtio 1.2 §5.4): the guest's `/dev/hwrng` reads bytes from
 * the host's `getrandom`, written straight into its buffers.
 *
 * @module
 */

import { dataPath, errno } from "../../../ffi/libc.ts";
import { DEVICE_ID, F } from "../../../ffi/virtio.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { VirtioBackend } from "./device.ts";
import type { VirtioDeviceInfo } from "./mmio_state.ts";
import type { DescriptorChain } from "./queue.ts";

/** Queue entries the entropy device offers. */
export const RNG_QUEUE_SIZE = 64;
/**
 * Bytes one request gets at most: a guest asking for gigabytes at once
 * gets them a bounded piece at a time, and the I/O loop stays responsive.
 */
export const RNG_REQUEST_MAX = 64 << 10;

const EINTR = 4;

/** Where random bytes come from: fills `len` bytes at a host address, returns how many. */
export type RandomSource = (addr: number, len: number) => number;

/** The host's `getrandom(2)`. */
export const hostRandom: RandomSource = (addr, len) => {
  for (;;) {
    const n = dataPath.getrandom(addr, len);
    if (n >= 0 || errno() !== EINTR) return Math.max(n, 0);
  }
};

/** What the entropy device offers: one queue, no config, no features of its own. */
export function rngInfo(): VirtioDeviceInfo {
  return {
    deviceId: DEVICE_ID.ENTROPY,
    features: 1n << BigInt(F.VERSION_1),
    queues: 1,
    queueMax: RNG_QUEUE_SIZE,
    config: new Uint8Array(0),
  };
}

/**
 * The entropy device.
 *
 * @example
 * ```ts ignore
 * const rng = new VirtioRng(memory);
 * ```
 */
export class VirtioRng implements VirtioBackend {
  readonly info: VirtioDeviceInfo = rngInfo();
  private readonly hostBase: number;

  constructor(mem: GuestMemory, private readonly source: RandomSource = hostRandom) {
    this.hostBase = Number(mem.hostAddr);
  }

  handle(_queue: number, c: DescriptorChain): number {
    let left = RNG_REQUEST_MAX, total = 0;
    for (let i = 0; i < c.count && left > 0; i++) {
      if (!c.writable[i]) continue;
      const want = Math.min(c.len[i], left);
      const n = this.source(this.hostBase + c.host[i], want);
      total += n;
      left -= n;
      if (n < want) break;
    }
    return total;
  }
}
