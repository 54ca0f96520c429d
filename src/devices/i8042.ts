/**
 * The i8042 keyboard controller, as far as a microVM needs it: answer the
 * probes Linux makes at boot at once (no AUX port), turn the CPU-reset
 * command into a clean stop, and deliver the few keys the host presses
 * (Ctrl-Alt-Del), one byte per interrupt.
 *
 * @module
 */

import type { BusDevice } from "./bus.ts";
import type { Trigger } from "./serial.ts";

/** Called when the guest pulses the reset line. */
export type ResetHandler = () => void;

const STATUS_OBF = 0x01;
const STATUS_SYS = 0x04;
const STATUS_CMD = 0x08;
/** Set: the keyboard is not inhibited (Linux warns "Keylock active" when it is clear). */
const STATUS_UNLOCKED = 0x10;

const CMD_READ_CTR = 0x20;
const CMD_WRITE_CTR = 0x60;
const CMD_AUX_DISABLE = 0xa7;
const CMD_AUX_ENABLE = 0xa8;
const CMD_AUX_TEST = 0xa9;
const CMD_SELF_TEST = 0xaa;
const CMD_KBD_TEST = 0xab;
const CMD_KBD_DISABLE = 0xad;
const CMD_KBD_ENABLE = 0xae;
const CMD_READ_OUTPORT = 0xd0;
const CMD_WRITE_OUTPORT = 0xd1;
const CMD_AUX_LOOP = 0xd3;
const CMD_WRITE_AUX = 0xd4;
const CMD_RESET = 0xfe;

/** Command byte after reset: keyboard interrupt on, system flag set. */
const CTR_DEFAULT = 0x05;

/** Device-port offsets. */
const DATA = 0;

// Int32 slots of the shared state; slot 0 is the device lock. Then the
// keys waiting behind the output buffer: a ring of KEY_QUEUE bytes.
const S_CTR = 1, S_OUT = 2, S_PENDING = 3, S_QHEAD = 4, S_QLEN = 5, S_QUEUE = 6;
/** Scancode bytes the host may have waiting at once: a few key presses, no more. */
export const KEY_QUEUE = 16;
/** Bytes of shared state one controller needs. */
export const I8042_STATE_BYTES = (S_QUEUE + KEY_QUEUE) * 4;

/**
 * Ctrl, Alt and Delete pressed, in scancode set 2 (the controller does not
 * translate: its command byte leaves XLATE off), as Firecracker sends them.
 */
export const CTRL_ALT_DEL: readonly number[] = [0x14, 0x11, 0xe0, 0x71];

/** A controller's state as after power-on. */
export function newI8042State(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(I8042_STATE_BYTES);
  const s = new Int32Array(sab);
  s[S_CTR] = CTR_DEFAULT;
  s[S_OUT] = -1;
  s[S_PENDING] = -1;
  return sab;
}
/** Status/command sits 4 ports above data (0x60/0x64). */
export const I8042_CMD_OFFSET = 4;

/**
 * The controller. Register it over 0x60..0x64 (five ports) on the PIO bus.
 *
 * @example
 * ```ts
 * import { I8042 } from "./i8042.ts";
 * let reset = false;
 * const kbc = new I8042(() => (reset = true));
 * kbc.write(4, new Uint8Array([0xfe])); // reset === true
 * ```
 */
export class I8042 implements BusDevice {
  private readonly s: Int32Array;
  private readonly onReset: ResetHandler;
  private readonly irq?: Trigger;

  /**
   * `state` is shared by every thread that reaches the controller (slot 0
   * is its lock, taken by the bus); by default it has state of its own.
   * `irq` is the keyboard's line (IRQ 1), raised for each byte delivered.
   */
  constructor(onReset: ResetHandler, state: SharedArrayBuffer = newI8042State(), irq?: Trigger) {
    if (state.byteLength < I8042_STATE_BYTES) throw new RangeError("i8042 state too small");
    this.s = new Int32Array(state);
    this.onReset = onReset;
    this.irq = irq;
  }

  /**
   * Queues scancode bytes from the host's keyboard; returns how many it
   * took (the queue holds {@linkcode KEY_QUEUE}). The first goes to the
   * output buffer at once if it is free, with an interrupt; each read of
   * the data port brings the next.
   */
  pressKeys(bytes: readonly number[]): number {
    const s = this.s;
    let taken = 0;
    for (const b of bytes) {
      if (s[S_QLEN] >= KEY_QUEUE) break;
      s[S_QUEUE + (s[S_QHEAD] + s[S_QLEN]) % KEY_QUEUE] = b & 0xff;
      s[S_QLEN]++;
      taken++;
    }
    this.nextKey();
    return taken;
  }

  /** Moves the next queued key byte into a free output buffer, and interrupts. */
  private nextKey(): void {
    const s = this.s;
    if (this.out >= 0 || s[S_QLEN] === 0) return;
    this.out = s[S_QUEUE + s[S_QHEAD]];
    s[S_QHEAD] = (s[S_QHEAD] + 1) % KEY_QUEUE;
    s[S_QLEN]--;
    // Keyboard interrupts only when the driver enabled them (command byte bit 0).
    if (this.ctr & 1) this.irq?.trigger();
  }

  private get ctr(): number {
    return this.s[S_CTR];
  }
  private set ctr(v: number) {
    this.s[S_CTR] = v;
  }
  /** The output buffer's byte, or -1 when empty. */
  private get out(): number {
    return this.s[S_OUT];
  }
  private set out(v: number) {
    this.s[S_OUT] = v;
  }
  /** The command waiting for its data byte, or -1. */
  private get pending(): number {
    return this.s[S_PENDING];
  }
  private set pending(v: number) {
    this.s[S_PENDING] = v;
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset === DATA) {
      data[0] = this.out >= 0 ? this.out : 0;
      this.out = -1;
      this.nextKey();
    } else if (offset === I8042_CMD_OFFSET) {
      data[0] = STATUS_SYS | STATUS_UNLOCKED | (this.out >= 0 ? STATUS_OBF : 0) |
        (this.pending >= 0 ? STATUS_CMD : 0);
    }
  }

  write(offset: number, data: Uint8Array): void {
    const v = data[0];
    if (offset === I8042_CMD_OFFSET) this.command(v);
    else if (offset === DATA) this.data(v);
  }

  private command(cmd: number): void {
    this.pending = -1;
    switch (cmd) {
      case CMD_READ_CTR:
        this.out = this.ctr;
        break;
      case CMD_WRITE_CTR:
      case CMD_WRITE_OUTPORT:
      case CMD_WRITE_AUX:
      case CMD_AUX_LOOP:
        this.pending = cmd;
        break;
      case CMD_SELF_TEST:
        this.out = 0x55;
        break;
      case CMD_KBD_TEST:
        this.out = 0x00;
        break;
      case CMD_AUX_TEST:
        // "Clock line stuck low": Linux concludes there is no AUX port, at once.
        this.out = 0x01;
        break;
      case CMD_READ_OUTPORT:
        this.out = 0x01; // A20 and reset lines inactive
        break;
      case CMD_RESET:
        this.onReset();
        break;
      case CMD_AUX_DISABLE:
      case CMD_AUX_ENABLE:
      case CMD_KBD_DISABLE:
      case CMD_KBD_ENABLE:
      default:
        break;
    }
  }

  private data(v: number): void {
    const cmd = this.pending;
    this.pending = -1;
    switch (cmd) {
      case CMD_WRITE_CTR:
        this.ctr = v;
        break;
      case CMD_AUX_LOOP:
        // Echo something other than what was sent: no working AUX loop.
        this.out = 0xff;
        break;
      case CMD_WRITE_OUTPORT:
        // Bit 0 low pulses the reset line.
        if (!(v & 1)) this.onReset();
        break;
      default:
        // Keyboard commands get no answer: there is no keyboard.
        break;
    }
  }
}
