/**
 * Fuzz targets of the UART and the i8042, driven through their public API
 * (register reads and writes of any width, host input) against a model of
 * what the guest may observe.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { I8042, I8042_CMD_OFFSET } from "../../src/devices/i8042.ts";
import { newSerialState, RX_FIFO_SIZE, SharedSerial } from "../../src/devices/serial.ts";
import { defineTarget, type Target } from "./target.ts";

type UartOp =
  | { op: "read"; offset: number; width: number }
  | { op: "write"; offset: number; value: number; width: number }
  | { op: "input"; bytes: Uint8Array };

const width = fc.constantFrom(1, 1, 1, 1, 1, 1, 2, 4);
const uartOp: fc.Arbitrary<UartOp> = fc.oneof(
  fc.record({ op: fc.constant("read" as const), offset: fc.nat({ max: 7 }), width }),
  {
    arbitrary: fc.record({
      op: fc.constant("write" as const),
      offset: fc.nat({ max: 7 }),
      // Bits the driver sets: DLAB, loopback, OUT2, FIFO enable and clear.
      value: fc.oneof(fc.nat({ max: 255 }), fc.constantFrom(0x80, 0x10, 0x08, 0x1b, 0x03, 0x07)),
      width,
    }),
    weight: 2,
  },
  fc.record({
    op: fc.constant("input" as const),
    bytes: fc.uint8Array({ maxLength: 80, size: "medium" }),
  }),
);

/**
 * The 16550A as the guest may observe it: a FIFO of at most
 * {@linkcode RX_FIFO_SIZE} bytes read in order, LSR's DR bit exactly when it
 * holds data (THRE and TEMT always: transmission is instant), IIR naming the
 * highest pending enabled source, an edge on the line exactly when an
 * enabled source is pending after the access and OUT2 gates it, and a
 * wider-than-byte access touching nothing.
 */
function checkUart(ops: UartOp[]): void {
  const out: number[] = [];
  let edges = 0;
  const dev = new SharedSerial(newSerialState(), { writeSync: (d) => (out.push(...d), d.length) }, {
    trigger: () => void edges++,
  });
  const m = { lcr: 0, mcr: 0x08, ier: 0, fcr: 0, scr: 0, dll: 12, dlm: 0, thre: 0 };
  const rx: number[] = [];
  const pending = () => (m.ier & 1 && rx.length ? 4 : m.ier & 2 && m.thre ? 2 : 1);
  const wantEdge = () => (pending() !== 1 && m.mcr & 0x08 ? 1 : 0);
  const loop = () => (m.mcr & 0x10) !== 0;
  ops.forEach((o, i) => {
    const at = `op ${i} ${JSON.stringify(o)}`;
    const before = edges, sent = out.length;
    let edge = 0;
    if (o.op === "input") {
      const space = RX_FIFO_SIZE - rx.length;
      const n = dev.enqueueInput(o.bytes);
      if (loop()) assert.equal(n, o.bytes.length, at);
      else {
        assert.equal(n, Math.min(space, o.bytes.length), at);
        rx.push(...o.bytes.subarray(0, n));
        if (n > 0) edge = wantEdge();
      }
    } else if (o.width !== 1) {
      const data = new Uint8Array(o.width);
      if (o.op === "read") {
        dev.read(o.offset, data);
        assert.ok(data.every((b) => b === 0xff), at);
      } else dev.write(o.offset, data.fill(o.op === "write" ? o.value : 0));
    } else if (o.op === "read") {
      const data = new Uint8Array(1);
      dev.read(o.offset, data);
      const dlab = m.lcr & 0x80;
      let want: number;
      switch (o.offset) {
        case 0:
          want = dlab ? m.dll : (rx.shift() ?? 0);
          break;
        case 1:
          want = dlab ? m.dlm : m.ier;
          break;
        case 2: {
          const iir = pending();
          if (iir === 2) m.thre = 0;
          want = iir | (m.fcr & 1 ? 0xc0 : 0);
          break;
        }
        case 3:
          want = m.lcr;
          break;
        case 4:
          want = m.mcr;
          break;
        case 5:
          want = 0x60 | (rx.length ? 1 : 0);
          break;
        case 6:
          want = loop()
            ? (m.mcr & 1 ? 0x20 : 0) | (m.mcr & 2 ? 0x10 : 0) | (m.mcr & 4 ? 0x40 : 0) |
              (m.mcr & 8 ? 0x80 : 0)
            : 0xb0;
          break;
        default:
          want = m.scr;
      }
      assert.equal(data[0], want, `${at}: read 0x${data[0].toString(16)}`);
    } else {
      dev.write(o.offset, new Uint8Array([o.value]));
      const v = o.value, dlab = m.lcr & 0x80;
      if (o.offset === 0 && dlab) m.dll = v;
      else if (o.offset === 0) {
        m.thre = 1;
        if (loop()) {
          if (rx.length < RX_FIFO_SIZE) rx.push(v);
        } else {
          assert.deepEqual(out.slice(sent), [v], `${at}: transmitted`);
        }
        edge = wantEdge();
      } else if (o.offset === 1 && dlab) m.dlm = v;
      else if (o.offset === 1) {
        if (!(m.ier & 2) && v & 2) m.thre = 1;
        m.ier = v & 0x0f;
        edge = wantEdge();
      } else if (o.offset === 2) {
        m.fcr = v;
        if (v & 2) rx.length = 0;
      } else if (o.offset === 3) m.lcr = v;
      else if (o.offset === 4) m.mcr = v & 0x1f;
      else if (o.offset === 7) m.scr = v;
    }
    assert.equal(edges - before, edge, `${at}: ${edges - before} edges, want ${edge}`);
    if (!(o.op === "write" && o.width === 1 && o.offset === 0 && !(m.lcr & 0x80) && !loop())) {
      assert.equal(out.length, sent, `${at}: nothing to transmit`);
    }
    assert.equal(dev.rxSpace, RX_FIFO_SIZE - rx.length, `${at}: FIFO level`);
    assert.ok(dev.rxSpace >= 0 && dev.rxSpace <= RX_FIFO_SIZE);
    assert.equal(dev.rxReady, (m.ier & 1) !== 0, at);
  });
}

// --- i8042 ---

type KbcOp = { op: "read" | "write"; offset: number; value: number; width: number };

const kbcOp: fc.Arbitrary<KbcOp> = fc.record({
  op: fc.constantFrom("read" as const, "write" as const),
  offset: fc.oneof(fc.constantFrom(0, I8042_CMD_OFFSET), fc.nat({ max: 4 })),
  value: fc.oneof(
    fc.constantFrom(0x20, 0x60, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xad, 0xae, 0xd0, 0xd1, 0xd3, 0xd4),
    fc.constantFrom(0xfe, 0x00, 0x01),
    fc.nat({ max: 255 }),
  ),
  width: fc.constantFrom(1, 1, 1, 2, 4),
});

/**
 * The controller as Linux's i8042 driver sees it: status always has SYS
 * and the keylock bit (not inhibited), OBF exactly while a byte waits (a data read takes it), CMD while a
 * command waits for its data byte; the command byte reads back as written;
 * the probes' answers; and a reset exactly on 0xfe or an output-port write
 * with bit 0 low.
 */
function checkI8042(ops: KbcOp[]): void {
  let resets = 0;
  const dev = new I8042(() => void resets++);
  const m = { ctr: 0x05, out: -1, pending: -1, resets: 0 };
  const ANSWER: Record<number, number> = {
    0x20: -2,
    0xaa: 0x55,
    0xab: 0x00,
    0xa9: 0x01,
    0xd0: 0x01,
  };
  ops.forEach((o, i) => {
    const at = `op ${i} ${JSON.stringify(o)}`;
    const data = new Uint8Array(o.width);
    if (o.op === "read") {
      dev.read(o.offset, data);
      let want = 0;
      if (o.offset === 0) {
        want = m.out >= 0 ? m.out : 0;
        m.out = -1;
      } else if (o.offset === I8042_CMD_OFFSET) {
        want = 0x04 | 0x10 | (m.out >= 0 ? 0x01 : 0) | (m.pending >= 0 ? 0x08 : 0);
      }
      assert.equal(data[0], want, `${at}: read 0x${data[0].toString(16)}`);
      assert.ok(data.subarray(1).every((b) => b === 0), at);
    } else {
      data[0] = o.value;
      dev.write(o.offset, data);
      if (o.offset === I8042_CMD_OFFSET) {
        m.pending = -1;
        const v = o.value;
        if (v in ANSWER) m.out = ANSWER[v] === -2 ? m.ctr : ANSWER[v];
        else if ([0x60, 0xd1, 0xd3, 0xd4].includes(v)) m.pending = v;
        else if (v === 0xfe) m.resets++;
      } else if (o.offset === 0) {
        const cmd = m.pending;
        m.pending = -1;
        if (cmd === 0x60) m.ctr = o.value;
        else if (cmd === 0xd3) m.out = 0xff;
        else if (cmd === 0xd1 && !(o.value & 1)) m.resets++;
      }
    }
    assert.equal(resets, m.resets, `${at}: resets`);
  });
}

/** The device targets. */
export const DEVICE_TARGETS: Target[] = [
  defineTarget({
    name: "uart",
    about: "16550A register reads/writes and host input against a model of FIFO, LSR, IIR and IRQ",
    arbitrary: fc.array(uartOp, { maxLength: 200, size: "medium" }),
    check: checkUart,
  }),
  defineTarget({
    name: "i8042",
    about: "i8042 command/data/status sequences against a model of status bits, answers and resets",
    arbitrary: fc.array(kbcOp, { maxLength: 100, size: "medium" }),
    check: checkI8042,
  }),
];
