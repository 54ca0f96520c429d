import assert from "node:assert/strict";
import { Bus } from "../src/devices/bus.ts";
import { newSerialState, RX_FIFO_SIZE, SharedSerial } from "../src/devices/serial.ts";
import { CTRL_ALT_DEL, I8042, KEY_QUEUE } from "../src/devices/i8042.ts";
import { BootTimerPort, ExitPort } from "../src/devices/guest_ctl.ts";

function uart() {
  const out: number[] = [];
  let irqs = 0;
  const dev = new SharedSerial(newSerialState(), { writeSync: (d) => (out.push(...d), d.length) }, {
    trigger: () => void irqs++,
  });
  const r = (off: number) => {
    const d = new Uint8Array(1);
    dev.read(off, d);
    return d[0];
  };
  const w = (off: number, v: number) => dev.write(off, new Uint8Array([v]));
  return { dev, out, r, w, irqs: () => irqs };
}

Deno.test("UART: transmit goes to the writer; LSR says the transmitter is empty", () => {
  const u = uart();
  for (const c of "hi") u.w(0, c.charCodeAt(0));
  assert.equal(new TextDecoder().decode(new Uint8Array(u.out)), "hi");
  assert.equal(u.r(5) & 0x60, 0x60);
  assert.equal(u.r(5) & 1, 0);
});

Deno.test("UART: scratch, divisor latch and the loopback probe the 8250 driver makes", () => {
  const u = uart();
  u.w(7, 0x5a);
  assert.equal(u.r(7), 0x5a);
  u.w(3, 0x80); // DLAB
  u.w(0, 0x01);
  u.w(1, 0x00);
  assert.deepEqual([u.r(0), u.r(1)], [1, 0]);
  u.w(3, 0x03);
  u.w(4, 0x10 | 0x0a); // loopback, RTS, OUT2
  assert.equal(u.r(6) & 0xf0, 0x90);
  u.w(0, 0x41); // loops back into RX
  assert.deepEqual(u.out, []);
  assert.equal(u.r(5) & 1, 1);
  assert.equal(u.r(0), 0x41);
  u.w(4, 0x0b);
  assert.equal(u.r(6) & 0xb0, 0xb0, "DCD DSR CTS outside loopback");
});

Deno.test("UART: FIFO enable shows in IIR; THRE interrupt on enable, cleared by reading IIR", () => {
  const u = uart();
  u.w(2, 0x01);
  assert.equal(u.r(2) & 0xc0, 0xc0);
  u.w(4, 0x08); // OUT2 gates the line
  u.w(1, 0x02); // ETBEI
  assert.equal(u.irqs(), 1);
  assert.equal(u.r(2) & 0x0f, 0x02);
  assert.equal(u.r(2) & 0x0f, 0x01, "acknowledged");
  u.w(0, 0x41);
  assert.equal(u.irqs(), 2, "THRE again after a write");
});

Deno.test("UART: host input raises RX interrupts and is read in order; the FIFO bounds it", () => {
  const u = uart();
  u.w(4, 0x08);
  u.w(1, 0x01); // ERBFI
  assert.equal(u.dev.enqueueInput(new TextEncoder().encode("ab")), 2);
  assert.equal(u.irqs(), 1);
  assert.equal(u.r(2) & 0x0f, 0x04);
  assert.equal(u.r(5) & 1, 1);
  assert.equal(String.fromCharCode(u.r(0), u.r(0)), "ab");
  assert.equal(u.r(5) & 1, 0);
  assert.equal(u.r(2) & 0x0f, 0x01);
  assert.equal(u.dev.enqueueInput(new Uint8Array(RX_FIFO_SIZE + 10)), RX_FIFO_SIZE);
  assert.equal(u.dev.rxSpace, 0);
});

Deno.test("UART: no interrupt without OUT2 or with the source disabled", () => {
  const u = uart();
  u.w(4, 0x00);
  u.w(1, 0x03);
  u.dev.enqueueInput(new Uint8Array([1]));
  assert.equal(u.irqs(), 0);
});

Deno.test("UART: two views of one shared state act as one device", () => {
  const state = newSerialState();
  const a = new SharedSerial(state, { writeSync: (d) => d.length }, { trigger() {} });
  const b = new SharedSerial(state, { writeSync: (d) => d.length }, { trigger() {} });
  a.enqueueInput(new Uint8Array([0x42]));
  const d = new Uint8Array(1);
  b.read(0, d);
  assert.equal(d[0], 0x42);
});

function kbc() {
  let resets = 0;
  const dev = new I8042(() => void resets++);
  const r = (off: number) => {
    const d = new Uint8Array(1);
    dev.read(off, d);
    return d[0];
  };
  const w = (off: number, v: number) => dev.write(off, new Uint8Array([v]));
  return { r, w, resets: () => resets };
}

Deno.test("i8042: self test, interface test, command byte round trip, no AUX", () => {
  const k = kbc();
  assert.equal(k.r(4) & 1, 0);
  k.w(4, 0xaa);
  assert.equal(k.r(4) & 1, 1);
  assert.equal(k.r(0), 0x55);
  assert.equal(k.r(4) & 1, 0);
  k.w(4, 0xab);
  assert.equal(k.r(0), 0x00);
  k.w(4, 0x60);
  k.w(0, 0x47);
  k.w(4, 0x20);
  assert.equal(k.r(0), 0x47);
  k.w(4, 0xd3);
  k.w(0, 0x5a);
  assert.notEqual(k.r(0), 0x5a, "AUX loop must not echo");
  k.w(4, 0xa9);
  assert.equal(k.r(0), 0x01);
  assert.equal(k.resets(), 0);
});

Deno.test("i8042: 0xFE and an output-port write pulsing reset stop the VM", () => {
  const k = kbc();
  k.w(4, 0xfe);
  assert.equal(k.resets(), 1);
  k.w(4, 0xd1);
  k.w(0, 0xfe);
  assert.equal(k.resets(), 2);
});

Deno.test("bus: routes by range, refuses overlaps, unclaimed reads are all-ones", () => {
  const bus = new Bus();
  const seen: Array<[number, number]> = [];
  bus.insert(0x60, 5, { read: (o, d) => d.fill(o), write: (o, d) => void seen.push([o, d[0]]) });
  bus.insert(0x3f8, 8, { read: (o, d) => d.fill(0x30 + o), write: () => {} });
  assert.throws(() => bus.insert(0x3fc, 8, { read() {}, write() {} }), /overlaps/);
  const d = new Uint8Array(2);
  assert.equal(bus.read(0x3fa, d), true);
  assert.deepEqual([...d], [0x32, 0x32]);
  assert.equal(bus.read(0x1234, d), false);
  assert.deepEqual([...d], [0xff, 0xff]);
  assert.equal(bus.write(0x64, new Uint8Array([9])), true);
  assert.deepEqual(seen, [[4, 9]]);
  assert.equal(bus.write(0x9999, new Uint8Array([1])), false);
});

Deno.test("guest control ports: exit status and the boot-ready marker", () => {
  const got: string[] = [];
  const h = {
    exit: (s: number) => void got.push(`exit ${s}`),
    ready: () => void got.push("ready"),
  };
  new ExitPort(h).write(0, new Uint8Array([42, 0, 0, 0]));
  new BootTimerPort(h).write(0, new Uint8Array([1]));
  assert.deepEqual(got, ["exit 42", "ready"]);
});

Deno.test("console ring: partial lines arrive at once, in order, across writers", async () => {
  const { ConsoleRingReader, ConsoleRingWriter, newConsoleRing, CONSOLE_RING_BYTES } = await import(
    "../src/devices/console_ring.ts"
  );
  const sab = newConsoleRing();
  const a = new ConsoleRingWriter(sab);
  const b = new ConsoleRingWriter(sab);
  const reader = new ConsoleRingReader(sab);
  a.writeSync(new TextEncoder().encode("/ # "));
  assert.equal(new TextDecoder().decode(reader.drain()), "/ # ");
  b.writeSync(new Uint8Array([1, 2]));
  a.writeSync(new Uint8Array([3]));
  assert.deepEqual([...reader.drain()], [1, 2, 3]);
  // Wrapping past the end keeps bytes in order.
  const big = new Uint8Array(CONSOLE_RING_BYTES - 10).map((_, i) => i & 0xff);
  a.writeSync(big);
  assert.deepEqual(reader.drain(), big);
  a.writeSync(new Uint8Array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 42]));
  assert.deepEqual([...reader.drain()], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 42]);
});

Deno.test("UART: 16- and 32-bit accesses read all-ones, write nothing, change no state", () => {
  const state = newSerialState();
  const out: number[] = [];
  let irqs = 0;
  const dev = new SharedSerial(state, { writeSync: (d) => (out.push(...d), d.length) }, {
    trigger: () => void irqs++,
  });
  dev.write(4, new Uint8Array([0x08])); // OUT2
  dev.write(1, new Uint8Array([0x03])); // RX and THRE interrupts: THRE pending
  dev.write(7, new Uint8Array([0x5a]));
  dev.enqueueInput(new Uint8Array([0x41, 0x42]));
  const before = new Int32Array(state).slice();
  const irqsBefore = irqs;
  for (const width of [2, 4]) {
    for (let off = 0; off < 8; off++) {
      const d = new Uint8Array(width);
      dev.read(off, d);
      assert.deepEqual([...d], new Array(width).fill(0xff), `${width}-byte read at ${off}`);
      // LCR 0x80 would set DLAB, IER 0 would mask, FCR 0x02 would clear RX.
      dev.write(off, new Uint8Array(width).fill(off === 2 ? 0x02 : off === 1 ? 0 : 0x80));
    }
  }
  assert.deepEqual(new Int32Array(state), before, "no register, FIFO or pending interrupt moved");
  assert.deepEqual(out, [], "nothing transmitted");
  assert.equal(irqs, irqsBefore);
  const one = new Uint8Array(1);
  dev.read(0, one);
  assert.equal(one[0], 0x41, "byte reads still work");
});

Deno.test("boot-timer port: the first write is the event, on one latch for every vCPU", () => {
  let readies = 0;
  const h = { exit() {}, ready: () => void readies++ };
  const latch = new Int32Array(new SharedArrayBuffer(16));
  const cpu0 = new BootTimerPort(h, latch, 1);
  const cpu1 = new BootTimerPort(h, latch, 1);
  for (let i = 0; i < 10_000; i++) cpu0.write(0, new Uint8Array([1]));
  cpu1.write(0, new Uint8Array([1, 0]));
  assert.equal(readies, 1);
  assert.deepEqual([...latch], [0, 1, 0, 0], "only its own slot is used");
  const alone = new BootTimerPort(h);
  alone.write(0, new Uint8Array([1]));
  alone.write(0, new Uint8Array([1]));
  assert.equal(readies, 2, "a port with no shared latch has its own");
  assert.throws(() => new BootTimerPort(h, latch, 4), /latch slot/);
});

Deno.test("i8042: host key presses queue (bounded), one byte per read and interrupt, only with the keyboard's interrupt on", () => {
  let irqs = 0;
  const kbc = new I8042(() => {}, undefined, { trigger: () => void irqs++ });
  const read = (port: number) => {
    const d = new Uint8Array(1);
    kbc.read(port, d);
    return d[0];
  };
  // A flood of presses: the queue keeps KEY_QUEUE bytes plus the one in the output buffer.
  let taken = 0;
  for (let i = 0; i < 100; i++) taken += kbc.pressKeys(CTRL_ALT_DEL);
  assert.equal(taken, KEY_QUEUE + 1);
  const got: number[] = [];
  while (read(4) & 1) got.push(read(0));
  assert.equal(got.length, KEY_QUEUE + 1);
  assert.deepEqual(got.slice(0, 8), [...CTRL_ALT_DEL, ...CTRL_ALT_DEL]);
  assert.equal(irqs, KEY_QUEUE + 1, "one interrupt per byte");
  // With the keyboard interrupt off in the command byte: bytes, no interrupt.
  kbc.write(4, new Uint8Array([0x60]));
  kbc.write(0, new Uint8Array([0x04]));
  irqs = 0;
  kbc.pressKeys([0x14]);
  assert.equal(read(0), 0x14);
  assert.equal(irqs, 0);
});
