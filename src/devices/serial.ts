/**
 * A 16550A UART. Its registers live in a SharedArrayBuffer so that every
 * vCPU worker and the main thread (which feeds host input) act on one
 * device; the caller serialises accesses with the lock in slot 0 (the bus
 * wraps it in {@linkcode Serialized}). Output goes to a writer, after the
 * lock is released; interrupts go to a trigger: the device knows nothing of
 * buses or threads.
 *
 * @module
 */

import type { BusDevice } from "./bus.ts";
import { type DeferredWork, DeviceLock, Serialized } from "./lock.ts";

/** Where transmitted bytes go. */
export interface Writer {
  writeSync(data: Uint8Array): number;
}

/** Raises the device's interrupt (an edge on its line). */
export interface Trigger {
  /** Raises the interrupt once. */
  trigger(): void;
}

// Register offsets.
const DATA = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

const IER_RDA = 0x01;
const IER_THRE = 0x02;
const IER_MASK = 0x0f;
const IIR_NONE = 0x01;
const IIR_THRE = 0x02;
const IIR_RDA = 0x04;
const IIR_FIFO = 0xc0;
const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
const LCR_DLAB = 0x80;
const LSR_DR = 0x01;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;

/** Receive FIFO depth (larger than a 16550's 16: host input comes in bursts). */
export const RX_FIFO_SIZE = 64;

// Int32 slots of the shared state; slot 0 is the device lock.
const S_IER = 1, S_THRE_PENDING = 2, S_LCR = 3, S_MCR = 4, S_SCR = 5;
const S_DLL = 6, S_DLM = 7, S_FCR = 8, S_RX_HEAD = 9, S_RX_COUNT = 10, S_RX = 11;
const SLOTS = S_RX + RX_FIFO_SIZE;

/** Bytes of shared state one UART needs. */
export const SERIAL_STATE_BYTES = SLOTS * 4;

/** A fresh shared state (baud divisor 12 = 9600, as after reset). */
export function newSerialState(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(SERIAL_STATE_BYTES);
  const s = new Int32Array(sab);
  s[S_DLL] = 12;
  s[S_MCR] = MCR_OUT2;
  return sab;
}

/**
 * The UART, as a view over shared state.
 *
 * @example
 * ```ts
 * import { newSerialState, Serial } from "./serial.ts";
 * const out: number[] = [];
 * const uart = new Serial(newSerialState(), {
 *   writeSync: (d) => (out.push(...d), d.length),
 * }, { trigger() {} });
 * uart.write(0, new Uint8Array([0x41]));
 * uart.afterAccess(); // out = [0x41]
 * ```
 */
export class Serial implements BusDevice, DeferredWork {
  private readonly s: Int32Array;
  private readonly out: Writer;
  private readonly irq: Trigger;
  private readonly one = new Uint8Array(1);
  /** A byte the last write transmits, sent by {@linkcode afterAccess}; -1 for none. */
  private tx = -1;

  constructor(state: SharedArrayBuffer, out: Writer, irq: Trigger) {
    if (state.byteLength < SERIAL_STATE_BYTES) throw new RangeError("Serial state too small");
    this.s = new Int32Array(state);
    this.out = out;
    this.irq = irq;
  }

  /** The interrupt the guest would read from IIR now. */
  private pendingIir(): number {
    const s = this.s;
    if ((s[S_IER] & IER_RDA) && s[S_RX_COUNT] > 0) return IIR_RDA;
    if ((s[S_IER] & IER_THRE) && s[S_THRE_PENDING]) return IIR_THRE;
    return IIR_NONE;
  }

  /** Raises the line if an interrupt is pending and OUT2 gates it through. */
  private maybeInterrupt(): void {
    if (this.pendingIir() !== IIR_NONE && (this.s[S_MCR] & MCR_OUT2)) this.irq.trigger();
  }

  private pushRx(byte: number): boolean {
    const s = this.s;
    if (s[S_RX_COUNT] >= RX_FIFO_SIZE) return false;
    s[S_RX + ((s[S_RX_HEAD] + s[S_RX_COUNT]) % RX_FIFO_SIZE)] = byte;
    s[S_RX_COUNT]++;
    return true;
  }

  /**
   * Queues host input for the guest; returns how many bytes fit in the FIFO
   * (the caller retries the rest).
   */
  enqueueInput(data: Uint8Array): number {
    let n = 0;
    // In loopback the line is disconnected from the outside world.
    if (this.s[S_MCR] & MCR_LOOP) return data.length;
    while (n < data.length && this.pushRx(data[n])) n++;
    if (n > 0) this.maybeInterrupt();
    return n;
  }

  /** The guest's driver has enabled the receive interrupt: input will be read. */
  get rxReady(): boolean {
    return (Atomics.load(this.s, S_IER) & IER_RDA) !== 0;
  }

  /** Free space in the receive FIFO. */
  get rxSpace(): number {
    return RX_FIFO_SIZE - Atomics.load(this.s, S_RX_COUNT);
  }

  /**
   * A read of one register. Its registers are a byte wide: a 16- or 32-bit
   * access reads all-ones and touches nothing (as Firecracker's UART), since
   * reading RBR or IIR has side effects a wider access must not repeat or
   * half-apply.
   */
  read(offset: number, data: Uint8Array): void {
    if (data.length !== 1) {
      data.fill(0xff);
      return;
    }
    data[0] = this.readReg(offset);
  }

  /** A write of one register; a write wider than a byte is dropped. */
  write(offset: number, data: Uint8Array): void {
    if (data.length !== 1) return;
    this.tx = this.writeReg(offset, data[0]);
  }

  /**
   * Sends the byte the last write transmitted, outside the lock: a stdout
   * that blocks holds this vCPU only, not every thread that reaches the UART.
   */
  afterAccess(): void {
    if (this.tx < 0) return;
    this.one[0] = this.tx;
    this.tx = -1;
    this.out.writeSync(this.one);
  }

  private readReg(offset: number): number {
    const s = this.s;
    const dlab = s[S_LCR] & LCR_DLAB;
    switch (offset) {
      case DATA: {
        if (dlab) return s[S_DLL];
        if (s[S_RX_COUNT] === 0) return 0;
        const b = s[S_RX + s[S_RX_HEAD]];
        s[S_RX_HEAD] = (s[S_RX_HEAD] + 1) % RX_FIFO_SIZE;
        s[S_RX_COUNT]--;
        return b;
      }
      case IER:
        return dlab ? s[S_DLM] : s[S_IER];
      case IIR_FCR: {
        const iir = this.pendingIir();
        // Reading IIR while it reports THRE acknowledges that interrupt.
        if (iir === IIR_THRE) s[S_THRE_PENDING] = 0;
        return iir | (s[S_FCR] & FCR_ENABLE ? IIR_FIFO : 0);
      }
      case LCR:
        return s[S_LCR];
      case MCR:
        return s[S_MCR];
      case LSR:
        // Transmission is instant: the holding register is always empty.
        return LSR_THRE | LSR_TEMT | (s[S_RX_COUNT] > 0 ? LSR_DR : 0);
      case MSR: {
        const mcr = s[S_MCR];
        if (mcr & MCR_LOOP) {
          // Loopback wires the modem outputs back to the inputs; the 8250 probe checks this.
          return (mcr & MCR_DTR ? MSR_DSR : 0) | (mcr & MCR_RTS ? MSR_CTS : 0) |
            (mcr & MCR_OUT1 ? MSR_RI : 0) | (mcr & MCR_OUT2 ? MSR_DCD : 0);
        }
        return MSR_DCD | MSR_DSR | MSR_CTS;
      }
      case SCR:
        return s[S_SCR];
    }
    return 0;
  }

  /** Applies a register write; returns a byte to transmit, or -1. */
  private writeReg(offset: number, v: number): number {
    const s = this.s;
    const dlab = s[S_LCR] & LCR_DLAB;
    switch (offset) {
      case DATA:
        if (dlab) {
          s[S_DLL] = v;
          return -1;
        }
        s[S_THRE_PENDING] = 1;
        if (s[S_MCR] & MCR_LOOP) {
          this.pushRx(v);
          this.maybeInterrupt();
          return -1;
        }
        this.maybeInterrupt();
        return v;
      case IER:
        if (dlab) {
          s[S_DLM] = v;
        } else {
          const was = s[S_IER];
          s[S_IER] = v & IER_MASK;
          // Enabling THRE with an empty holding register interrupts at once.
          if (!(was & IER_THRE) && (v & IER_THRE)) s[S_THRE_PENDING] = 1;
          this.maybeInterrupt();
        }
        return -1;
      case IIR_FCR:
        s[S_FCR] = v;
        if (v & FCR_CLEAR_RX) s[S_RX_HEAD] = s[S_RX_COUNT] = 0;
        return -1;
      case LCR:
        s[S_LCR] = v;
        return -1;
      case MCR:
        s[S_MCR] = v & 0x1f;
        return -1;
      case SCR:
        s[S_SCR] = v;
        return -1;
    }
    return -1;
  }
}

/**
 * The UART behind its lock, as every thread that reaches it uses it: bus
 * accesses and host input serialised on the state's lock slot.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newSerialState, SharedSerial } from "./serial.ts";
 * const out: number[] = [];
 * const uart = new SharedSerial(newSerialState(), {
 *   writeSync: (d) => (out.push(...d), d.length),
 * }, { trigger() {} });
 * uart.write(0, new Uint8Array([0x41]));
 * assert.deepEqual(out, [0x41]);
 * ```
 */
export class SharedSerial extends Serialized {
  private readonly uart: Serial;
  constructor(state: SharedArrayBuffer, out: Writer, irq: Trigger) {
    const uart = new Serial(state, out, irq);
    super(uart, new DeviceLock(new Int32Array(state)));
    this.uart = uart;
  }

  /** {@linkcode Serial.enqueueInput}, under the lock. */
  enqueueInput(data: Uint8Array): number {
    this.lock.acquire();
    try {
      return this.uart.enqueueInput(data);
    } finally {
      this.lock.release();
    }
  }

  /** {@linkcode Serial.rxReady}. */
  get rxReady(): boolean {
    return this.uart.rxReady;
  }

  /** {@linkcode Serial.rxSpace}. */
  get rxSpace(): number {
    return this.uart.rxSpace;
  }
}
