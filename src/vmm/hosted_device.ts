/**
 * Devices a script writes in TypeScript, served on the thread that made the
 * VM (the script's main thread): a vCPU thread that exits on one posts the
 * access to the device's mailbox (shared memory) and waits; the script's
 * event loop serves it and answers. The device's code is single-threaded
 * and never runs on a vCPU thread.
 *
 * @module
 */

import type { BusDevice } from "../devices/bus.ts";
import type { Trigger } from "../devices/serial.ts";

// Int32 slots of a mailbox; slot 0 is the device lock the bus takes.
const M_STATE = 1, M_OP = 2, M_OFFSET = 3, M_LEN = 4, M_DATA = 5;
/** Bytes of one mailbox: the slots and 8 data bytes. */
export const MAILBOX_BYTES = (M_DATA + 2) * 4;
const IDLE = 0, ASKED = 1, ANSWERED = 2;
const READ = 0, WRITE = 1;
/** How long a vCPU waits on its answer before it checks whether the VM is stopping. */
const POLL_MS = 20;

/** A device a script plugs into a VM it creates. */
export interface UserDevice {
  /** `"pio"` for ports, `"mmio"` for an address range in the MMIO gap. */
  bus: "pio" | "mmio";
  /** First port or guest-physical address. */
  base: number;
  /** Ports or bytes it claims. */
  size: number;
  /** Give it an interrupt line (its trigger is passed to `attach`). */
  irq?: boolean;
  /**
   * The device: `read` fills `data` (1, 2 or 4 bytes for a port, up to 8
   * for MMIO) for an access at `offset` into its range, `write` takes one.
   * Both run on the script's thread, one access at a time.
   */
  device: BusDevice & {
    /** Called once with the device's interrupt (when `irq` is set) before the guest runs. */
    attach?(irq: Trigger | undefined): void;
  };
}

/**
 * The vCPU side: posts each access and waits for the answer; while the VM
 * stops (`stopping()`), reads are all-ones and writes are dropped.
 */
export class MailboxDevice implements BusDevice {
  private readonly s: Int32Array;
  private readonly bytes: Uint8Array;

  constructor(state: SharedArrayBuffer, private readonly stopping: () => boolean) {
    this.s = new Int32Array(state);
    this.bytes = new Uint8Array(state, M_DATA * 4, 8);
  }

  read(offset: number, data: Uint8Array): void {
    if (!this.ask(READ, offset, data)) return void data.fill(0xff);
    data.set(this.bytes.subarray(0, data.length));
  }

  write(offset: number, data: Uint8Array): void {
    this.ask(WRITE, offset, data);
  }

  /** One round trip; false if the VM stopped first. */
  private ask(op: number, offset: number, data: Uint8Array): boolean {
    const s = this.s;
    const len = Math.min(data.length, 8);
    s[M_OP] = op;
    s[M_OFFSET] = offset;
    s[M_LEN] = len;
    if (op === WRITE) this.bytes.set(data.subarray(0, len));
    Atomics.store(s, M_STATE, ASKED);
    Atomics.notify(s, M_STATE);
    while (Atomics.load(s, M_STATE) !== ANSWERED) {
      if (this.stopping()) {
        Atomics.store(s, M_STATE, IDLE);
        return false;
      }
      Atomics.wait(s, M_STATE, ASKED, POLL_MS);
    }
    Atomics.store(s, M_STATE, IDLE);
    return true;
  }
}

/**
 * The script's side: serves the mailbox's accesses with `device` until
 * `stopped()`; resolves then.
 */
export async function serveMailbox(
  state: SharedArrayBuffer,
  device: BusDevice,
  stopped: () => boolean,
  onError: (e: unknown) => void,
): Promise<void> {
  const s = new Int32Array(state);
  const bytes = new Uint8Array(state, M_DATA * 4, 8);
  while (!stopped()) {
    const v = Atomics.load(s, M_STATE);
    if (v !== ASKED) {
      const w = Atomics.waitAsync(s, M_STATE, v, 100);
      if (w.async) await w.value;
      continue;
    }
    const data = bytes.subarray(0, Math.min(s[M_LEN], 8));
    try {
      if (s[M_OP] === WRITE) device.write(s[M_OFFSET], data);
      else {
        data.fill(0);
        device.read(s[M_OFFSET], data);
      }
    } catch (e) {
      // A throwing device answers all-ones rather than wedging its vCPU.
      data.fill(0xff);
      onError(e);
    }
    Atomics.store(s, M_STATE, ANSWERED);
    Atomics.notify(s, M_STATE);
  }
}
