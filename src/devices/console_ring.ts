/**
 * A byte ring in a SharedArrayBuffer carrying guest console output from
 * vCPU threads to the main thread. Writers never wait on the reader's event
 * loop (a vCPU thread is inside KVM_RUN most of the time), so partial lines
 * such as a shell prompt arrive at once, without a message per byte.
 *
 * @module
 */

import type { Writer } from "./serial.ts";

const H_LOCK = 0, H_HEAD = 1, H_TAIL = 2, H_SEQ = 3;
const HEADER_BYTES = 16;
/** Ring capacity. */
export const CONSOLE_RING_BYTES = 64 * 1024;

/** A fresh ring. */
export function newConsoleRing(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_BYTES + CONSOLE_RING_BYTES);
}

/**
 * The writer side (vCPU threads). When the ring is full it waits for the
 * reader, like a slow terminal would make the guest wait, until `stopped`
 * says the VM is stopping: then the rest is dropped, so a reader that
 * never drains (stdout blocked) cannot hold a vCPU past a stop.
 *
 * @example
 * ```ts
 * import { ConsoleRingReader, ConsoleRingWriter, newConsoleRing } from "./console_ring.ts";
 * const sab = newConsoleRing();
 * new ConsoleRingWriter(sab).writeSync(new Uint8Array([0x41]));
 * new ConsoleRingReader(sab).drain(); // Uint8Array [0x41]
 * ```
 */
export class ConsoleRingWriter implements Writer {
  private readonly h: Int32Array;
  private readonly data: Uint8Array;
  private readonly stopped: () => boolean;
  constructor(sab: SharedArrayBuffer, stopped: () => boolean = () => false) {
    this.h = new Int32Array(sab, 0, 4);
    this.data = new Uint8Array(sab, HEADER_BYTES);
    this.stopped = stopped;
  }
  writeSync(bytes: Uint8Array): number {
    const h = this.h;
    while (Atomics.compareExchange(h, H_LOCK, 0, 1) !== 0) { /* spin: held for ns */ }
    try {
      for (let i = 0; i < bytes.length; i++) {
        let head = Atomics.load(h, H_HEAD);
        while (head - Atomics.load(h, H_TAIL) >= CONSOLE_RING_BYTES) {
          if (this.stopped()) return bytes.length;
          // Full: let the reader catch up.
          Atomics.notify(h, H_SEQ);
          Atomics.wait(h, H_TAIL, Atomics.load(h, H_TAIL), 10);
          head = Atomics.load(h, H_HEAD);
        }
        this.data[head % CONSOLE_RING_BYTES] = bytes[i];
        Atomics.store(h, H_HEAD, head + 1);
      }
    } finally {
      Atomics.store(h, H_LOCK, 0);
    }
    Atomics.add(h, H_SEQ, 1);
    Atomics.notify(h, H_SEQ);
    return bytes.length;
  }
}

/** The reader side (main thread). */
export class ConsoleRingReader {
  private readonly h: Int32Array;
  private readonly data: Uint8Array;
  private stopped = false;
  constructor(sab: SharedArrayBuffer) {
    this.h = new Int32Array(sab, 0, 4);
    this.data = new Uint8Array(sab, HEADER_BYTES);
  }

  /** Takes everything written so far. */
  drain(): Uint8Array {
    const h = this.h;
    const head = Atomics.load(h, H_HEAD);
    const tail = Atomics.load(h, H_TAIL);
    const out = new Uint8Array(head - tail);
    for (let i = 0; i < out.length; i++) out[i] = this.data[(tail + i) % CONSOLE_RING_BYTES];
    Atomics.store(h, H_TAIL, head);
    Atomics.notify(h, H_TAIL);
    return out;
  }

  /** Calls `sink` with each batch until {@linkcode stop}. */
  async pump(sink: (bytes: Uint8Array) => void): Promise<void> {
    while (!this.stopped) {
      const seq = Atomics.load(this.h, H_SEQ);
      const got = this.drain();
      if (got.length) sink(got);
      const w = Atomics.waitAsync(this.h, H_SEQ, seq, 100);
      if (w.async) await w.value;
    }
    const rest = this.drain();
    if (rest.length) sink(rest);
  }

  /** Ends {@linkcode pump} after a last drain. */
  stop(): void {
    this.stopped = true;
    Atomics.notify(this.h, H_SEQ);
  }
}
