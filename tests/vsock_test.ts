/**
 * virtio-vsock and its hybrid host side, with real unix sockets on the
 * host: a driver written here (rings in guest memory, registers through
 * the transport) talks to the device in-process, and host clients speak
 * Firecracker's protocol with raw socket I/O, the way its clients do.
 */
import assert from "node:assert/strict";
import { MMIO, STATUS, VRING, VSOCK } from "../ffi/virtio.ts";
import { QueueRunner } from "../src/devices/virtio/device.ts";
import { VirtioMmio } from "../src/devices/virtio/mmio.ts";
import { newVirtioState } from "../src/devices/virtio/mmio_state.ts";
import {
  VirtioVsock,
  VSOCK_BUF_ALLOC,
  VSOCK_HANDSHAKE_MS,
  VSOCK_LOCAL_PORT_BASE,
  VSOCK_MAX_CONNECTIONS,
} from "../src/devices/virtio/vsock.ts";
import { GuestMemory } from "../src/memory/guest_memory.ts";
import { listenVsock } from "../src/vmm/vsock_listen.ts";
import { libc } from "../ffi/libc.ts";
import { needsKvm, runCli, tmpDir } from "./helpers.ts";
import { Script, scriptGuest } from "./virtio_driver.ts";

const CID = 3;
const RX = { desc: 0x100000, avail: 0x101000, used: 0x102000 };
const TX = { desc: 0x110000, avail: 0x111000, used: 0x112000 };
const EV = { desc: 0x120000, avail: 0x121000, used: 0x122000 };
const RX_BUF = 0x200000, TX_BUF = 0x600000;
const SIZE = 64, BUF = VSOCK.HDR_SIZE + 4096;
const enc = new TextEncoder(), dec = new TextDecoder();

interface Packet {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
  type: number;
  payload: Uint8Array;
}

/** A vsock device with a driver and a clock the test moves. */
class Rig {
  readonly mem = GuestMemory.allocate(16 << 20);
  readonly uds = `${tmpDir()}/v.sock`;
  readonly listenFd = listenVsock(this.uds);
  clock = 0;
  readonly vsock = new VirtioVsock(this.mem, {
    cid: CID,
    listenFd: this.listenFd,
    udsPath: this.uds,
    now: () => this.clock,
  });
  private readonly state = newVirtioState(this.vsock.info);
  readonly runner = new QueueRunner(this.vsock, this.state, this.mem, { trigger() {} });
  private readonly mmio = new VirtioMmio(this.state, this.mem, { trigger() {} }, {
    notify: () => this.runner.notified(),
  });
  private rxPosted = 0;
  private rxSeen = 0;
  private txSent = 0;
  /** Guest credit the driver advertises. */
  bufAlloc = 1 << 20;
  fwdCnt = 0;

  constructor() {
    this.reg(MMIO.STATUS, STATUS.ACKNOWLEDGE | STATUS.DRIVER);
    this.reg(MMIO.DRIVER_FEATURES_SEL, 1);
    this.reg(MMIO.DRIVER_FEATURES, 1);
    this.reg(MMIO.STATUS, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK);
    [RX, TX, EV].forEach((r, q) => {
      this.reg(MMIO.QUEUE_SEL, q);
      this.reg(MMIO.QUEUE_NUM, SIZE);
      this.reg(MMIO.QUEUE_DESC_LOW, r.desc);
      this.reg(MMIO.QUEUE_AVAIL_LOW, r.avail);
      this.reg(MMIO.QUEUE_USED_LOW, r.used);
      this.reg(MMIO.QUEUE_READY, 1);
    });
    this.reg(MMIO.STATUS, 15);
    // Four event buffers: the device must keep them.
    for (let i = 0; i < 4; i++) this.desc(EV, i, 0x130000 + 8 * i, 8, VRING.DESC_F_WRITE, i);
    this.u16(EV.avail + 2, 4);
    this.postRx(16);
  }

  reg(offset: number, value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, true);
    this.mmio.write(offset, b);
  }
  readReg(offset: number): number {
    const b = new Uint8Array(4);
    this.mmio.read(offset, b);
    return new DataView(b.buffer).getUint32(0, true);
  }
  private u16(at: number, v?: number): number {
    const view = this.mem.view(at, 2);
    if (v !== undefined) view.setUint16(0, v, true);
    return view.getUint16(0, true);
  }
  private desc(r: typeof RX, i: number, addr: number, len: number, flags: number, head: number) {
    const v = this.mem.view(r.desc + 16 * i, 16);
    v.setBigUint64(0, BigInt(addr), true);
    v.setUint32(8, len, true);
    v.setUint16(12, flags, true);
    this.mem.view(r.avail + 4 + 2 * (head % SIZE), 2).setUint16(0, i, true);
  }

  /** Posts `n` receive buffers (one descriptor each) and notifies. */
  postRx(n: number): void {
    for (let k = 0; k < n; k++, this.rxPosted++) {
      const i = this.rxPosted % SIZE;
      this.desc(RX, i, RX_BUF + i * 0x2000, BUF, VRING.DESC_F_WRITE, this.rxPosted);
    }
    this.u16(RX.avail + 2, this.rxPosted & 0xffff);
    this.reg(MMIO.QUEUE_NOTIFY, VSOCK.RX);
  }

  /** Serves the device as the I/O loop would when a host socket fires. */
  poll(): void {
    this.runner.notified();
  }

  /** The packets the device put in the receive queue since the last call. */
  received(): Packet[] {
    const out: Packet[] = [];
    const usedIdx = this.u16(RX.used + 2);
    for (; this.rxSeen !== usedIdx; this.rxSeen = (this.rxSeen + 1) & 0xffff) {
      const e = this.mem.view(RX.used + 4 + 8 * (this.rxSeen % SIZE), 8);
      const id = e.getUint32(0, true), len = e.getUint32(4, true);
      const at = RX_BUF + id * 0x2000;
      const h = this.mem.view(at, VSOCK.HDR_SIZE);
      const n = h.getUint32(VSOCK.HDR_LEN, true);
      assert.equal(len, VSOCK.HDR_SIZE + n, "used length is header plus payload");
      out.push({
        srcCid: Number(h.getBigUint64(VSOCK.HDR_SRC_CID, true)),
        dstCid: Number(h.getBigUint64(VSOCK.HDR_DST_CID, true)),
        srcPort: h.getUint32(VSOCK.HDR_SRC_PORT, true),
        dstPort: h.getUint32(VSOCK.HDR_DST_PORT, true),
        type: h.getUint16(VSOCK.HDR_TYPE, true),
        op: h.getUint16(VSOCK.HDR_OP, true),
        flags: h.getUint32(VSOCK.HDR_FLAGS, true),
        bufAlloc: h.getUint32(VSOCK.HDR_BUF_ALLOC, true),
        fwdCnt: h.getUint32(VSOCK.HDR_FWD_CNT, true),
        payload: this.mem.bytes(at + VSOCK.HDR_SIZE, n).slice(),
      });
    }
    // Keep the ring full, as a driver does.
    if (out.length) this.postRx(out.length);
    return out;
  }

  /** The guest sends a packet (header and payload in one buffer). */
  send(p: Partial<Packet> & { srcPort: number; dstPort: number; op: number }): void {
    const payload = p.payload ?? new Uint8Array();
    const i = this.txSent % SIZE;
    const at = TX_BUF + i * 0x11000;
    const h = this.mem.view(at, VSOCK.HDR_SIZE);
    h.setBigUint64(VSOCK.HDR_SRC_CID, BigInt(p.srcCid ?? CID), true);
    h.setBigUint64(VSOCK.HDR_DST_CID, BigInt(p.dstCid ?? VSOCK.HOST_CID), true);
    h.setUint32(VSOCK.HDR_SRC_PORT, p.srcPort, true);
    h.setUint32(VSOCK.HDR_DST_PORT, p.dstPort, true);
    h.setUint32(VSOCK.HDR_LEN, (p as { len?: number }).len ?? payload.length, true);
    h.setUint16(VSOCK.HDR_TYPE, p.type ?? VSOCK.TYPE_STREAM, true);
    h.setUint16(VSOCK.HDR_OP, p.op, true);
    h.setUint32(VSOCK.HDR_FLAGS, p.flags ?? 0, true);
    h.setUint32(VSOCK.HDR_BUF_ALLOC, p.bufAlloc ?? this.bufAlloc, true);
    h.setUint32(VSOCK.HDR_FWD_CNT, p.fwdCnt ?? this.fwdCnt, true);
    this.mem.write(at + VSOCK.HDR_SIZE, payload);
    this.desc(TX, i, at, VSOCK.HDR_SIZE + payload.length, 0, this.txSent);
    this.txSent++;
    this.u16(TX.avail + 2, this.txSent & 0xffff);
    this.reg(MMIO.QUEUE_NOTIFY, VSOCK.TX);
  }

  close(): void {
    this.vsock.close();
    libc().close(this.listenFd);
    this.mem.release();
  }
}

/** A host client, as Firecracker's clients are: a unix stream and raw bytes. */
async function client(uds: string): Promise<Deno.UnixConn> {
  return await Deno.connect({ transport: "unix", path: uds });
}

/** A read left waiting when `drain` stopped: the next `drain` of that stream takes it up. */
const inFlight = new WeakMap<Deno.Conn, { buf: Uint8Array; read: Promise<number | null> }>();

/** Everything readable on `conn` within `ms` (until EOF, or quiet for that long). */
async function drain(conn: Deno.Conn, ms = 200): Promise<{ text: string; eof: boolean }> {
  let text = "";
  for (;;) {
    let r = inFlight.get(conn);
    if (!r) {
      const buf = new Uint8Array(1 << 16);
      // A reset is a closed stream too (the device closed with our bytes unread).
      const read = conn.read(buf).catch((e) => {
        if (e instanceof Deno.errors.ConnectionReset) return null;
        throw e;
      });
      r = { buf, read };
      inFlight.set(conn, r);
    }
    const timer = new Promise<"quiet">((res) => setTimeout(() => res("quiet"), ms));
    const got = await Promise.race([r.read, timer]);
    if (got === "quiet") return { text, eof: false };
    inFlight.delete(conn);
    if (got === null) return { text, eof: true };
    text += dec.decode(r.buf.subarray(0, got));
  }
}

/** Lets the host socket I/O settle, then serves the device. */
async function settle(rig: Rig): Promise<void> {
  await new Promise((r) => setTimeout(r, 20));
  rig.poll();
}

const LOCAL = VSOCK_LOCAL_PORT_BASE;

Deno.test("vsock: host CONNECT (in two writes) → REQUEST, RESPONSE → OK, data both ways, close", async () => {
  const rig = new Rig();
  try {
    const c = await client(rig.uds);
    await c.write(enc.encode("CONN"));
    await settle(rig);
    assert.deepEqual(rig.received(), [], "nothing before the line is whole");
    await c.write(enc.encode("ECT 52\n"));
    await settle(rig);
    const [req] = rig.received();
    assert.equal(req.op, VSOCK.OP_REQUEST);
    assert.deepEqual([req.srcCid, req.dstCid, req.srcPort, req.dstPort], [2, CID, LOCAL, 52]);
    assert.equal(req.type, VSOCK.TYPE_STREAM);
    assert.equal(req.bufAlloc, VSOCK_BUF_ALLOC);
    rig.send({ srcPort: 52, dstPort: LOCAL, op: VSOCK.OP_RESPONSE });
    assert.equal((await drain(c)).text, `OK ${LOCAL}\n`);
    await c.write(enc.encode("hello"));
    await settle(rig);
    const [rw] = rig.received();
    assert.equal(rw.op, VSOCK.OP_RW);
    assert.equal(dec.decode(rw.payload), "hello");
    rig.send({ srcPort: 52, dstPort: LOCAL, op: VSOCK.OP_RW, payload: enc.encode("world") });
    assert.equal((await drain(c)).text, "world");
    rig.send({ srcPort: 52, dstPort: LOCAL, op: VSOCK.OP_SHUTDOWN, flags: 3 });
    assert.ok((await drain(c)).eof, "the guest's close closes the host stream");
    assert.deepEqual(rig.received().map((p) => p.op), [VSOCK.OP_RST]);
    c.close();
  } finally {
    rig.close();
  }
});

Deno.test("vsock: a host CONNECT to a port nobody listens on in the guest gets a closed stream", async () => {
  const rig = new Rig();
  try {
    const c = await client(rig.uds);
    await c.write(enc.encode("CONNECT 99\n"));
    await settle(rig);
    const [req] = rig.received();
    rig.send({ srcPort: 99, dstPort: req.srcPort, op: VSOCK.OP_RST });
    const r = await drain(c);
    assert.deepEqual(r, { text: "", eof: true });
    c.close();
  } finally {
    rig.close();
  }
});

Deno.test("vsock: a wrong keyword, a line too long, or no line in time: closed, nothing to the guest", async () => {
  const rig = new Rig();
  try {
    const bad = await client(rig.uds);
    await bad.write(enc.encode("HELLO 52\n"));
    const long = await client(rig.uds);
    await long.write(enc.encode("CONNECT " + "1".repeat(40) + "\n"));
    const big = await client(rig.uds);
    await big.write(enc.encode("CONNECT 99999999999\n"));
    const slow = await client(rig.uds);
    await slow.write(enc.encode("CONNECT 5"));
    await settle(rig);
    for (const c of [bad, long, big]) assert.ok((await drain(c)).eof);
    assert.equal((await drain(slow, 50)).eof, false, "still waiting for its line");
    rig.clock += VSOCK_HANDSHAKE_MS + 1;
    rig.poll();
    assert.ok((await drain(slow)).eof, "no line within the handshake time");
    assert.deepEqual(rig.received(), []);
    assert.equal(rig.vsock.stats.refused, 4);
    for (const c of [bad, long, big, slow]) c.close();
  } finally {
    rig.close();
  }
});

Deno.test("vsock: a guest that never answers a REQUEST: the host stream closes, the guest gets a reset", async () => {
  const rig = new Rig();
  try {
    const c = await client(rig.uds);
    await c.write(enc.encode("CONNECT 7\n"));
    await settle(rig);
    assert.equal(rig.received()[0].op, VSOCK.OP_REQUEST);
    rig.clock += VSOCK_HANDSHAKE_MS + 1;
    assert.ok(rig.vsock.nextDeadline() === 0, "a deadline is due");
    rig.poll();
    assert.ok((await drain(c)).eof);
    const [rst] = rig.received();
    assert.deepEqual([rst.op, rst.srcPort, rst.dstPort], [VSOCK.OP_RST, LOCAL, 7]);
    c.close();
  } finally {
    rig.close();
  }
});

Deno.test("vsock: the guest connects to <uds>_P; data both ways; the host's close reaches it", async () => {
  const rig = new Rig();
  const listener = Deno.listen({ transport: "unix", path: `${rig.uds}_52` });
  try {
    rig.send({ srcPort: 1234, dstPort: 52, op: VSOCK.OP_REQUEST });
    const [resp] = rig.received();
    assert.deepEqual([resp.op, resp.srcPort, resp.dstPort], [VSOCK.OP_RESPONSE, 52, 1234]);
    const h = await listener.accept();
    rig.send({ srcPort: 1234, dstPort: 52, op: VSOCK.OP_RW, payload: enc.encode("to host") });
    assert.equal((await drain(h)).text, "to host");
    await h.write(enc.encode("to guest"));
    await settle(rig);
    const [rw] = rig.received();
    assert.equal(dec.decode(rw.payload), "to guest");
    h.close();
    await settle(rig);
    const [shut] = rig.received();
    assert.deepEqual([shut.op, shut.flags], [VSOCK.OP_SHUTDOWN, 3]);
    rig.send({ srcPort: 1234, dstPort: 52, op: VSOCK.OP_RST });
    assert.equal(rig.vsock.nextDeadline(), Infinity, "no connection left waiting");
  } finally {
    listener.close();
    rig.close();
  }
});

Deno.test("vsock: the guest connecting to a host port nobody listens on gets a reset", () => {
  const rig = new Rig();
  try {
    rig.send({ srcPort: 1234, dstPort: 4000, op: VSOCK.OP_REQUEST });
    const [rst] = rig.received();
    assert.deepEqual([rst.op, rst.srcPort, rst.dstPort], [VSOCK.OP_RST, 4000, 1234]);
  } finally {
    rig.close();
  }
});

Deno.test("vsock: hostile packets get resets and leave the device serving", async () => {
  const rig = new Rig();
  const listener = Deno.listen({ transport: "unix", path: `${rig.uds}_52` });
  try {
    const base = { srcPort: 1, dstPort: 52 };
    rig.send({ ...base, op: VSOCK.OP_REQUEST, srcCid: 9 }); // not the guest's CID
    rig.send({ ...base, op: VSOCK.OP_REQUEST, type: 2 }); // seqpacket, not offered
    rig.send({ ...base, op: VSOCK.OP_RW, payload: enc.encode("x") }); // no such connection
    rig.send({ ...base, op: VSOCK.OP_REQUEST, dstCid: 7 }); // not to the host
    rig.send({ ...base, op: 77 }); // no such operation
    rig.send({ ...base, op: VSOCK.OP_RST }); // a stray reset: no answer
    const len = { ...base, op: VSOCK.OP_RW, len: 1 << 20 } as Parameters<Rig["send"]>[0];
    rig.send(len); // a length past the buffer
    const got = rig.received();
    assert.deepEqual(got.map((p) => p.op), Array(6).fill(VSOCK.OP_RST));
    assert.equal(rig.readReg(MMIO.STATUS) & STATUS.DEVICE_NEEDS_RESET, 0);
    // Still serving: a good connection works.
    rig.send({ srcPort: 5, dstPort: 52, op: VSOCK.OP_REQUEST });
    assert.equal(rig.received()[0].op, VSOCK.OP_RESPONSE);
    (await listener.accept()).close();
    // A second REQUEST on a live connection resets it.
    rig.send({ srcPort: 5, dstPort: 52, op: VSOCK.OP_REQUEST });
    assert.equal(rig.received()[0].op, VSOCK.OP_RST);
    // The event queue's buffers stay with the device.
    assert.equal(rig.mem.view(EV.used + 2, 2).getUint16(0, true), 0);
  } finally {
    listener.close();
    rig.close();
  }
});

Deno.test("vsock: the device sends the guest no more than its credit, and more once it grants it", async () => {
  const rig = new Rig();
  const listener = Deno.listen({ transport: "unix", path: `${rig.uds}_52` });
  try {
    rig.bufAlloc = 6000;
    rig.send({ srcPort: 1, dstPort: 52, op: VSOCK.OP_REQUEST });
    rig.received();
    const h = await listener.accept();
    await h.write(new Uint8Array(20000).fill(7));
    await settle(rig);
    const first = rig.received().reduce((n, p) => n + p.payload.length, 0);
    assert.equal(first, 6000, "one credit's worth");
    await settle(rig);
    assert.deepEqual(rig.received(), [], "nothing more without credit");
    rig.fwdCnt = 6000;
    rig.send({ srcPort: 1, dstPort: 52, op: VSOCK.OP_CREDIT_UPDATE });
    const second = rig.received().reduce((n, p) => n + p.payload.length, 0);
    assert.equal(second, 6000);
    // The guest asks for our credit: an update comes back.
    rig.send({ srcPort: 1, dstPort: 52, op: VSOCK.OP_CREDIT_REQUEST });
    const upd = rig.received().find((p) => p.op === VSOCK.OP_CREDIT_UPDATE);
    assert.ok(upd, "a credit update");
    assert.equal(upd.bufAlloc, VSOCK_BUF_ALLOC);
    h.close();
  } finally {
    listener.close();
    rig.close();
  }
});

Deno.test("vsock: a guest sending 256 KiB to a host that reads it gets credit updates as it goes", async () => {
  const rig = new Rig();
  const listener = Deno.listen({ transport: "unix", path: `${rig.uds}_52` });
  try {
    rig.send({ srcPort: 1, dstPort: 52, op: VSOCK.OP_REQUEST });
    rig.received();
    const h = await listener.accept();
    let told = 0;
    const chunk = new Uint8Array(4096).fill(3);
    const reading = drain(h, 300);
    for (let sent = 0; sent < 256 << 10; sent += chunk.length) {
      rig.send({ srcPort: 1, dstPort: 52, op: VSOCK.OP_RW, payload: chunk });
      for (const p of rig.received()) if (p.op === VSOCK.OP_CREDIT_UPDATE) told = p.fwdCnt;
      // Within our credit, always.
      assert.ok(
        sent + chunk.length - told <= VSOCK_BUF_ALLOC,
        `in flight past the credit at ${sent}`,
      );
      await new Promise((r) => setTimeout(r, 0));
    }
    assert.equal((await reading).text.length, 256 << 10);
    h.close();
  } finally {
    listener.close();
    rig.close();
  }
});

Deno.test("vsock: at most 1023 connections; the next host client is turned away", async () => {
  const rig = new Rig();
  const clients: Deno.UnixConn[] = [];
  try {
    for (let i = 0; i <= VSOCK_MAX_CONNECTIONS; i++) {
      const c = await client(rig.uds);
      await c.write(enc.encode(`CONNECT ${i}\n`));
      clients.push(c);
      if (i % 100 === 99) await settle(rig);
    }
    await settle(rig);
    for (let k = 0; k < 40; k++) rig.received(); // keep buffers coming
    const last = clients.at(-1)!;
    assert.ok((await drain(last)).eof, "the 1024th is closed");
    assert.equal((await drain(clients[0], 50)).eof, false, "the first is still waiting");
  } finally {
    for (const c of clients) c.close();
    rig.close();
  }
});

/** A packet as the guest writes it: header, then payload. */
function packetBytes(p: { srcPort: number; dstPort: number; op: number; payload?: string }) {
  const payload = enc.encode(p.payload ?? "");
  const b = new Uint8Array(VSOCK.HDR_SIZE + payload.length + 3 & ~3);
  const h = new DataView(b.buffer);
  h.setBigUint64(VSOCK.HDR_SRC_CID, BigInt(CID), true);
  h.setBigUint64(VSOCK.HDR_DST_CID, BigInt(VSOCK.HOST_CID), true);
  h.setUint32(VSOCK.HDR_SRC_PORT, p.srcPort, true);
  h.setUint32(VSOCK.HDR_DST_PORT, p.dstPort, true);
  h.setUint32(VSOCK.HDR_LEN, payload.length, true);
  h.setUint16(VSOCK.HDR_TYPE, VSOCK.TYPE_STREAM, true);
  h.setUint16(VSOCK.HDR_OP, p.op, true);
  h.setUint32(VSOCK.HDR_BUF_ALLOC, 1 << 20, true);
  b.set(payload, VSOCK.HDR_SIZE);
  return { bytes: b, len: VSOCK.HDR_SIZE + payload.length };
}

Deno.test({
  name: "vsock (volt run, whole sandbox): the guest connects to <uds>_52 and a host client " +
    "CONNECTs to the guest, data both ways, under seccomp and Landlock",
  ...needsKvm,
  fn: async () => {
    const dir = tmpDir();
    const uds = `${dir}/v.sock`;
    const RXR = { desc: 0x1000000, avail: 0x1001000, used: 0x1002000 };
    const TXR = { desc: 0x1010000, avail: 0x1011000, used: 0x1012000 };
    const EVR = { desc: 0x1020000, avail: 0x1021000, used: 0x1022000 };
    const rxBuf = (i: number) => 0x1100000 + i * 0x2000;
    const s = new Script().mapWindows();
    const tx = [
      packetBytes({ srcPort: 1234, dstPort: 52, op: VSOCK.OP_REQUEST }),
      packetBytes({ srcPort: 1234, dstPort: 52, op: VSOCK.OP_RW, payload: "hello host" }),
      packetBytes({ srcPort: 60, dstPort: LOCAL, op: VSOCK.OP_RESPONSE }),
    ];
    tx.forEach((p, i) => {
      const at = 0x1200000 + i * 0x1000;
      const v = new DataView(p.bytes.buffer);
      for (let k = 0; k < p.bytes.length; k += 4) s.w32(at + k, v.getUint32(k, true));
    });
    s.ring(
      Array.from(
        { length: 8 },
        (_, i) => ({ addr: rxBuf(i), len: BUF, flags: VRING.DESC_F_WRITE }),
      ),
      [0, 1, 2, 3, 4, 5, 6, 7],
      { ...RXR, data: 0 },
    )
      .ring(tx.map((p, i) => ({ addr: 0x1200000 + i * 0x1000, len: p.len })), [0, 1, 2], {
        ...TXR,
        data: 0,
      })
      .ring([{ addr: 0x1300000, len: 8, flags: VRING.DESC_F_WRITE }], [0], { ...EVR, data: 0 });
    const notify = (q: number) => s.w32(s.reg(MMIO.QUEUE_NOTIFY), q);
    s.negotiate().queue(8, { ...RXR, data: 0 }, 0).queue(8, { ...TXR, data: 0 }, 1)
      .queue(4, { ...EVR, data: 0 }, 2).live()
      .w16(RXR.avail + 2, 8).w16(EVR.avail + 2, 1).pipe(() => notify(0));
    // REQUEST to the host's port 52, then wait for its RESPONSE; then data.
    s.w16(TXR.avail + 2, 1).pipe(() => notify(1)).wait16(RXR.used + 2, 1);
    s.w16(TXR.avail + 2, 2).pipe(() => notify(1));
    // The host answers "hi" on it, and a host client CONNECTs to port 60: two packets more.
    s.wait16(RXR.used + 2, 3).w16(TXR.avail + 2, 3).pipe(() => notify(1));
    // The client's "bye" after its OK.
    s.wait16(RXR.used + 2, 4).dump(RXR.used + 4, 32);
    for (let i = 0; i < 4; i++) s.dump(rxBuf(i), VSOCK.HDR_SIZE + 16);

    const listener = Deno.listen({ transport: "unix", path: `${uds}_52` });
    const hostSide = (async () => {
      const h = await listener.accept();
      const got = await drain(h, 2000);
      await h.write(enc.encode("hi"));
      // Now a host client, as Firecracker's clients connect.
      const c = await client(uds);
      await c.write(enc.encode("CONNECT 60\n"));
      const ok = await drain(c, 5000);
      await c.write(enc.encode("bye"));
      return { fromGuest: got.text, ok: ok.text, h, c };
    })();
    const r = await runCli([
      "run",
      "--kernel",
      scriptGuest(s),
      "--vsock",
      `cid=${CID},uds=${uds}`,
      "--console-mode",
      "raw",
      "--require-sandbox",
    ], { timeout: 120_000 });
    listener.close();
    assert.equal(r.code, 0, r.stderr);
    const host = await hostSide;
    host.h.close();
    host.c.close();
    assert.equal(host.fromGuest, "hello host");
    assert.equal(host.ok, `OK ${LOCAL}\n`);
    const o = s.parse(r.stdoutBytes!);
    const packets = o.slice(-4).map((b) => {
      const v = new DataView((b as Uint8Array).buffer);
      const n = v.getUint32(VSOCK.HDR_LEN, true);
      return {
        op: v.getUint16(VSOCK.HDR_OP, true),
        ports: [v.getUint32(VSOCK.HDR_SRC_PORT, true), v.getUint32(VSOCK.HDR_DST_PORT, true)],
        text: dec.decode((b as Uint8Array).subarray(VSOCK.HDR_SIZE, VSOCK.HDR_SIZE + n)),
      };
    });
    assert.deepEqual(packets[0], { op: VSOCK.OP_RESPONSE, ports: [52, 1234], text: "" });
    const rest = packets.slice(1).sort((a, b) => a.op - b.op);
    assert.deepEqual(rest, [
      { op: VSOCK.OP_REQUEST, ports: [LOCAL, 60], text: "" },
      { op: VSOCK.OP_RW, ports: [52, 1234], text: "hi" },
      { op: VSOCK.OP_RW, ports: [LOCAL, 60], text: "bye" },
    ]);
  },
});
