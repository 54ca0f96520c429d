/**
 * Guest console bytes on their way to the user's terminal. A guest controls
 * every byte it prints, and a terminal obeys escape sequences: OSC 52
 * writes the clipboard, a title or DECRQSS report or a device-attributes
 * query makes the terminal type an answer into whatever reads it next (the
 * user's shell, once the VM is gone), and charset switches or the
 * alternate screen leave it unusable.
 *
 * The `safe` mode keeps what a console needs (text, UTF-8, colours and
 * attributes, cursor movement, erasing) and drops the rest: OSC, DCS, APC,
 * PM and SOS strings, sequences the terminal answers, private modes but
 * the cursor's visibility, charset designations and shifts, other C0 and
 * the C1 controls. It holds at most one control sequence's parameters
 * (64 bytes) between chunks, so a guest cannot grow it.
 *
 * @module
 */

/** How guest console bytes reach a terminal. */
export type ConsoleMode = "safe" | "raw";

/** Where console bytes go: a host file such as stdout. */
export interface ByteWriter {
  writeSync(data: Uint8Array): number;
}

const ESC = 0x1b;
/** Longest CSI parameter run kept; a longer one is dropped whole. */
const MAX_CSI = 64;
/** CSI finals that move, erase or colour, and that no terminal answers. */
const SAFE_CSI_FINALS = new Set([..."ABCDEFGHJKSTdfm@LMPX"].map((c) => c.charCodeAt(0)));
/** ESC finals passed: save/restore cursor, index, next line, reverse index. */
const SAFE_ESC_FINALS = new Set([..."78DEM"].map((c) => c.charCodeAt(0)));
/** C0 controls passed: BEL, BS, TAB, LF, CR. */
const SAFE_C0 = new Set([0x07, 0x08, 0x09, 0x0a, 0x0d]);

/** Filter states. */
const S = {
  Ground: 0,
  Esc: 1,
  /** ESC followed by a charset or line-attribute introducer: drop one more byte. */
  EscArg: 2,
  Csi: 3,
  /** A CSI too long to keep: drop up to its final byte. */
  CsiDrop: 4,
  /** Inside OSC/DCS/APC/PM/SOS: drop up to ST or BEL. */
  Str: 5,
  StrEsc: 6,
  /** After 0xC2: a C1 control follows if the next byte is 0x80..0x9f. */
  C2: 7,
} as const;

/**
 * A streaming sanitizer for `safe` mode. Sequences may be split across
 * chunks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConsoleFilter } from "./console_filter.ts";
 * const f = new ConsoleFilter();
 * const enc = new TextEncoder(), dec = new TextDecoder();
 * const osc52 = "\x1b]52;c;ZXZpbA==\x07";
 * assert.equal(dec.decode(f.filter(enc.encode(`\x1b[1mok\x1b[0m ${osc52}é\x1b[6n`))), "\x1b[1mok\x1b[0m é");
 * assert.equal(f.dropped, 2);
 * ```
 */
export class ConsoleFilter {
  /** Control sequences and bytes dropped so far. */
  dropped = 0;
  #state: number = S.Ground;
  readonly #csi = new Uint8Array(MAX_CSI);
  #csiLen = 0;

  #out = new Uint8Array(256);

  /**
   * The bytes of `input` a terminal may see, in a buffer the filter reuses:
   * valid until the next call (the UART writes a byte per exit, and the
   * exit loop allocates nothing).
   */
  filter(input: Uint8Array): Uint8Array {
    // At most the input plus a held CSI and a held 0xC2.
    const need = input.length + MAX_CSI + 2;
    if (this.#out.length < need) this.#out = new Uint8Array(need);
    const out = this.#out;
    let n = 0;
    for (const b of input) {
      switch (this.#state) {
        case S.Ground:
          if (b === ESC) this.#state = S.Esc;
          else if (b === 0xc2) this.#state = S.C2;
          else if (b >= 0x20 && b !== 0x7f) out[n++] = b;
          else if (SAFE_C0.has(b)) out[n++] = b;
          else this.dropped++;
          break;
        case S.C2:
          // U+00A0..U+00BF pass; a C1 control (0x80..0x9f) is dropped, and
          // so is a lead byte without its continuation, lest a later byte
          // complete it.
          this.#state = S.Ground;
          if (b >= 0xa0 && b <= 0xbf) {
            out[n++] = 0xc2;
            out[n++] = b;
            break;
          }
          this.dropped++;
          if (b >= 0x80 && b <= 0x9f) break;
          if (b === ESC) this.#state = S.Esc;
          else if (b === 0xc2) this.#state = S.C2;
          else if ((b >= 0x20 && b !== 0x7f) || SAFE_C0.has(b)) out[n++] = b;
          else this.dropped++;
          break;
        case S.Esc:
          this.#state = S.Ground;
          if (b === 0x5b) { // [
            this.#state = S.Csi;
            this.#csiLen = 0;
          } else if (b === 0x5d || b === 0x50 || b === 0x5f || b === 0x5e || b === 0x58) {
            // ] P _ ^ X: OSC, DCS, APC, PM, SOS.
            this.#state = S.Str;
          } else if ((b >= 0x28 && b <= 0x2f) || b === 0x23 || b === 0x25) {
            // ( ) * + , - . / # %: charset or line attributes, one byte follows.
            this.#state = S.EscArg;
          } else if (SAFE_ESC_FINALS.has(b)) {
            out[n++] = ESC;
            out[n++] = b;
          } else {
            this.dropped++;
          }
          break;
        case S.EscArg:
          this.#state = S.Ground;
          this.dropped++;
          break;
        case S.Csi:
          if (b >= 0x40 && b <= 0x7e) {
            this.#state = S.Ground;
            if (this.#safeCsi(b)) {
              out[n++] = ESC;
              out[n++] = 0x5b;
              out.set(this.#csi.subarray(0, this.#csiLen), n);
              n += this.#csiLen;
              out[n++] = b;
            } else {
              this.dropped++;
            }
          } else if (b >= 0x20 && b <= 0x3f && this.#csiLen < MAX_CSI) {
            this.#csi[this.#csiLen++] = b;
          } else if (b >= 0x20 && b <= 0x3f) {
            this.#state = S.CsiDrop;
          } else {
            // A control byte cuts the sequence short: drop it whole.
            this.#state = b === ESC ? S.Esc : S.Ground;
            this.dropped++;
          }
          break;
        case S.CsiDrop:
          if (b >= 0x40 && b <= 0x7e) {
            this.#state = S.Ground;
            this.dropped++;
          } else if (b < 0x20) {
            this.#state = b === ESC ? S.Esc : S.Ground;
            this.dropped++;
          }
          break;
        case S.Str:
          if (b === 0x07) {
            this.#state = S.Ground;
            this.dropped++;
          } else if (b === ESC) this.#state = S.StrEsc;
          break;
        case S.StrEsc:
          if (b === 0x5c) { // ST is ESC \
            this.#state = S.Ground;
            this.dropped++;
          } else if (b !== ESC) this.#state = S.Str;
          break;
      }
    }
    return out.subarray(0, n);
  }

  /** Whether the held CSI with final byte `final` may reach the terminal. */
  #safeCsi(final: number): boolean {
    const p = this.#csi.subarray(0, this.#csiLen);
    // Only digits and ';' (plain parameters); '?' only for cursor visibility.
    let priv = false;
    for (let i = 0; i < p.length; i++) {
      const c = p[i];
      if (c === 0x3f && i === 0) priv = true;
      else if (!((c >= 0x30 && c <= 0x39) || c === 0x3b)) return false;
    }
    if (priv) {
      return (final === 0x68 || final === 0x6c) && p.length === 3 && p[1] === 0x32 && p[2] === 0x35;
    }
    return SAFE_CSI_FINALS.has(final);
  }
}

/**
 * What volt writes to a terminal after the guest, whatever it printed:
 * attributes off, ASCII charset, cursor shown; and, when the guest set a
 * private mode (`raw` mode only), off the alternate screen, mouse
 * reporting and bracketed paste. Leaving an alternate screen that was
 * never entered would move the cursor, so that part waits for a reason.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { terminalReset } from "./console_filter.ts";
 * assert.ok(terminalReset(true).length > terminalReset(false).length);
 * ```
 */
export function terminalReset(privateModes: boolean): Uint8Array {
  const base = "\x1b[0m\x1b(B\x0f\x1b[?25h";
  const modes = "\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l";
  return new TextEncoder().encode(privateModes ? base + modes : base);
}

/**
 * Watches raw console output for `ESC [ ?` (a private mode set or reset),
 * even split across chunks, so the reset at exit knows whether to leave
 * them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PrivateModeWatch } from "./console_filter.ts";
 * const w = new PrivateModeWatch();
 * w.watch(new Uint8Array([0x1b]));
 * w.watch(new TextEncoder().encode("[?1049h"));
 * assert.equal(w.seen, true);
 * ```
 */
export class PrivateModeWatch {
  /** A private mode sequence went by. */
  seen = false;
  #matched = 0;

  /** Looks at the next bytes of output. */
  watch(bytes: Uint8Array): void {
    if (this.seen) return;
    const want = [ESC, 0x5b, 0x3f];
    for (const b of bytes) {
      this.#matched = b === want[this.#matched] ? this.#matched + 1 : b === ESC ? 1 : 0;
      if (this.#matched === 3) {
        this.seen = true;
        return;
      }
    }
  }
}

/**
 * The console mode for `auto`: `safe` when stdout is a terminal and stdin
 * is not (the guest is not the user's interactive shell), else `raw`: a
 * pipe or file gets the guest's bytes as they are, and an interactive
 * shell keeps full-screen programs working.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { autoConsoleMode } from "./console_filter.ts";
 * assert.equal(autoConsoleMode(true, false), "safe");
 * assert.equal(autoConsoleMode(false, false), "raw");
 * ```
 */
export function autoConsoleMode(stdoutTty: boolean, stdinTty: boolean): ConsoleMode {
  return stdoutTty && !stdinTty ? "safe" : "raw";
}

/**
 * A vCPU thread's console writer to a terminal (or pipe): in `safe` mode
 * through its own {@linkcode ConsoleFilter}, in `raw` mode watched for
 * private modes. Each vCPU has one; their filters are separate, which
 * stays safe: a filter writes only whole sequences, so interleaved
 * writes cannot make one, and a sequence a guest splits across vCPUs is
 * text to each. Counts go to shared `counters` slots (Atomics), for the
 * monitor's summary and its terminal reset.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConsoleWriter } from "./console_filter.ts";
 * const seen: number[] = [];
 * const counters = new Int32Array(new SharedArrayBuffer(8));
 * const w = new ConsoleWriter({ writeSync: (d) => (seen.push(...d), d.length) }, "safe", counters, 0, 1);
 * w.writeSync(new TextEncoder().encode("a\x1b]52;c;x\x07b"));
 * assert.deepEqual(seen, [0x61, 0x62]);
 * assert.equal(counters[0], 1);
 * ```
 */
export class ConsoleWriter implements ByteWriter {
  readonly #inner: ByteWriter;
  readonly #filter?: ConsoleFilter;
  readonly #watch?: PrivateModeWatch;
  readonly #counters: Int32Array;
  readonly #droppedSlot: number;
  readonly #modesSlot: number;

  constructor(
    inner: ByteWriter,
    mode: ConsoleMode,
    counters: Int32Array,
    droppedSlot: number,
    modesSlot: number,
  ) {
    this.#inner = inner;
    if (mode === "safe") this.#filter = new ConsoleFilter();
    else this.#watch = new PrivateModeWatch();
    this.#counters = counters;
    this.#droppedSlot = droppedSlot;
    this.#modesSlot = modesSlot;
  }

  writeSync(data: Uint8Array): number {
    let out = data;
    if (this.#filter) {
      const before = this.#filter.dropped;
      out = this.#filter.filter(data);
      const dropped = this.#filter.dropped - before;
      if (dropped) Atomics.add(this.#counters, this.#droppedSlot, dropped);
    } else if (!this.#watch!.seen) {
      this.#watch!.watch(data);
      if (this.#watch!.seen) Atomics.store(this.#counters, this.#modesSlot, 1);
    }
    // Short writes: the serial device expects every byte taken.
    for (let done = 0; done < out.length;) {
      done += this.#inner.writeSync(done ? out.subarray(done) : out);
    }
    return data.length;
  }
}
