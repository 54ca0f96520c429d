/**
 * The i8042 keyboard controller, as far as a microVM needs it: answer the
 * probes Linux makes at boot at once (no keyboard traffic, no AUX port) and
 * turn the CPU-reset command into a clean stop.
 *
 * @module
 */

import type { BusDevice } from "./bus.ts";

/** Called when the guest pulses the reset line. */
export type ResetHandler = () => void;

const STATUS_OBF = 0x01;
const STATUS_SYS = 0x04;
const STATUS_CMD = 0x08;

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

// Int32 slots of the shared state; slot 0 is the device lock.
const S_CTR = 1, S_OUT = 2, S_PENDING = 3;
/** Bytes of shared state one controller needs. */
export const I8042_STATE_BYTES = 16;

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

  /**
   * `state` is shared by every thread that reaches the controller (slot 0
   * is its lock, taken by the bus); by default it has state of its own.
   */
  constructor(onReset: ResetHandler, state: SharedArrayBuffer = newI8042State()) {
    if (state.byteLength < I8042_STATE_BYTES) throw new RangeError("i8042 state too small");
    this.s = new Int32Array(state);
    this.onReset = onReset;
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
    } else if (offset === I8042_CMD_OFFSET) {
      data[0] = STATUS_SYS | (this.out >= 0 ? STATUS_OBF : 0) |
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
