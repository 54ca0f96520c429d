/**
 * virtio-mmio, the split queue, virtio-blk and virtio-rng, driven by
 * scripted drivers (tests/virtio_driver.ts): each case runs in-process
 * against the device models, then in a small guest through the whole path
 * (MMIO exits, KVM_IOEVENTFD, the I/O loop, KVM_IRQFD). Hostile cases
 * must leave the monitor running and the device failing the request or in
 * DEVICE_NEEDS_RESET.
 */
import assert from "node:assert/strict";
import { libc, O_RDONLY, O_RDWR, openPath } from "../ffi/libc.ts";
import { BLK, F, INT, MMIO, STATUS, VRING } from "../ffi/virtio.ts";
import { VIRTIO_MMIO_BASE } from "../src/arch/x86_64/layout.ts";
import { FdBlockFile, VirtioBlk } from "../src/devices/virtio/blk.ts";
import { QueueRunner, type VirtioBackend } from "../src/devices/virtio/device.ts";
import { VirtioMmio } from "../src/devices/virtio/mmio.ts";
import { newVirtioState } from "../src/devices/virtio/mmio_state.ts";
import { rngInfo, VirtioRng } from "../src/devices/virtio/rng.ts";
import { GuestMemory } from "../src/memory/guest_memory.ts";
import { needsKvm, runCli, tmpDir } from "./helpers.ts";
import {
  type Desc,
  type DriverRun,
  type Output,
  RING,
  runInGuest,
  runInProcess,
  Script,
  scriptGuest,
  writeRing,
} from "./virtio_driver.ts";

const MEMORY = 64 << 20;
const DISK_BYTES = 1 << 20;
const DATA = RING.data;
const NEXT = VRING.DESC_F_NEXT, WRITE = VRING.DESC_F_WRITE;
const LIVE = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK;
const NEGOTIATED = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK;

/** Byte `i` of a fresh test disk. */
const diskByte = (i: number) => (i * 7 + 3) & 0xff;

function makeDisk(): string {
  const path = `${tmpDir()}/disk.img`;
  Deno.writeFileSync(path, Uint8Array.from({ length: DISK_BYTES }, (_, i) => diskByte(i)));
  return path;
}

/** A block request's header at `at`. */
function header(mem: GuestMemory, at: number, type: number, sector: bigint): void {
  const v = mem.view(at, BLK.HEADER_SIZE);
  v.setUint32(0, type, true);
  v.setUint32(4, 0, true);
  v.setBigUint64(8, sector, true);
}

/** A three-part block request (header, data, status) from descriptor `first`. */
function blkChain(
  mem: GuestMemory,
  first: number,
  type: number,
  sector: bigint,
  data: { addr: number; len: number; write: boolean } | undefined,
): Desc[] {
  const at = DATA + first * 0x1000;
  header(mem, at, type, sector);
  const descs: Desc[] = [{ addr: at, len: BLK.HEADER_SIZE, flags: NEXT, next: first + 1 }];
  if (data) {
    descs.push({
      addr: data.addr,
      len: data.len,
      flags: NEXT | (data.write ? WRITE : 0),
      next: first + 2,
    });
  }
  mem.bytes(at + 0x800, 1)[0] = 0xee; // status, overwritten by the device
  descs.push({ addr: at + 0x800, len: 1, flags: WRITE });
  return descs;
}
const statusAt = (first: number) => DATA + first * 0x1000 + 0x800;

/** A discard or write-zeroes request from descriptor `first`: header, ranges, status. */
function rangeChain(
  mem: GuestMemory,
  first: number,
  type: number,
  ranges: Array<[sector: number, sectors: number, flags: number]>,
  rangeBytes = BLK.RANGE_SIZE * ranges.length,
): Desc[] {
  const at = DATA + first * 0x1000;
  header(mem, at, type, 0n);
  const v = mem.view(at + 0x100, 16 * ranges.length);
  ranges.forEach(([sector, sectors, flags], i) => {
    v.setBigUint64(16 * i, BigInt(sector), true);
    v.setUint32(16 * i + 8, sectors, true);
    v.setUint32(16 * i + 12, flags, true);
  });
  mem.bytes(at + 0x800, 1)[0] = 0xee;
  return [
    { addr: at, len: BLK.HEADER_SIZE, flags: NEXT, next: first + 1 },
    { addr: at + 0x100, len: rangeBytes, flags: NEXT, next: first + 2 },
    { addr: at + 0x800, len: 1, flags: WRITE },
  ];
}

const INDIRECT = VRING.DESC_F_INDIRECT;
/** Driver feature words: the ring features, low word. */
const WANT_INDIRECT = 1 << F.RING_INDIRECT_DESC, WANT_EVENT_IDX = 1 << F.RING_EVENT_IDX;
/** Where the tests put an indirect descriptor table. */
const TABLE = DATA + 0x50000;

/** Writes `descs` as an indirect table at `at`. */
function table(mem: GuestMemory, descs: Desc[], at = TABLE): void {
  writeRing(mem, descs, [], { ...RING, desc: at });
}

/** A queue of 8 whose only chain is one indirect descriptor over `entries` table entries. */
function viaTable(mem: GuestMemory, descs: Desc[], entries = descs.length) {
  table(mem, descs);
  return { descs: [{ addr: TABLE, len: 16 * entries, flags: INDIRECT }], heads: [0] };
}

/** negotiate (indirect) + queue + live + kick(1). */
const indirect = (s: Script) => s.negotiate(WANT_INDIRECT).queue(8).live().kick(1);

interface Case extends DriverRun {
  what: string;
  device: "rng" | "blk-ro" | "blk-rw";
  /** `irqs`: interrupts raised, counted in-process only. */
  check(out: Output[], disk?: Uint8Array, irqs?: number): void;
  /** The device's counters after the run (`vm.metrics()`), in the guest only. */
  stats?: Record<string, number>;
}

const word = (o: Output) => o as number;
const bytes = (o: Output) => o as Uint8Array;
const u16 = (o: Output) => new DataView(bytes(o).buffer).getUint16(0, true);
const u32at = (o: Output, at: number) => new DataView(bytes(o).buffer).getUint32(at, true);

/** A hostile case's expectations: the device asks for a reset, nothing is used. */
function needsReset(out: Output[], statusIndex: number, usedIndex: number): void {
  assert.equal(word(out[statusIndex]) & STATUS.DEVICE_NEEDS_RESET, STATUS.DEVICE_NEEDS_RESET);
  assert.equal(u16(out[usedIndex]), 0, "nothing used");
}

/** negotiate + queue + live + kick(1): outputs [status, ready, int, status, usedIdx]. */
const simple = (s: Script, size = 8) => s.negotiate().queue(size).live().kick(1);

const CASES: Case[] = [
  {
    what: "entropy: a read fills the guest's buffer with random bytes",
    device: "rng",
    prepare: () => ({ descs: [{ addr: DATA, len: 64, flags: WRITE }], heads: [0] }),
    script: (s) => simple(s).dump(RING.used + 4, 8).dump(DATA, 64),
    check: (o) => {
      assert.equal(word(o[0]), NEGOTIATED);
      assert.equal(word(o[1]), 1, "queue ready");
      assert.equal(word(o[2]) & INT.USED_RING, INT.USED_RING, "used-ring interrupt");
      assert.equal(word(o[3]), LIVE);
      assert.equal(u16(o[4]), 1);
      assert.equal(u32at(o[5], 0), 0, "used id");
      assert.equal(u32at(o[5], 4), 64, "used len");
      assert.ok(bytes(o[6]).some((b) => b !== 0), "random bytes arrived");
    },
  },
  {
    what: "block: reads sector 2 into the guest",
    device: "blk-ro",
    prepare: (mem) => ({
      descs: blkChain(mem, 0, BLK.T_IN, 2n, { addr: DATA + 0x10000, len: 512, write: true }),
      heads: [0],
    }),
    script: (s) => simple(s).dump(RING.used + 4, 8).dump(statusAt(0), 1).dump(DATA + 0x10000, 512),
    check: (o) => {
      assert.equal(u16(o[4]), 1);
      assert.equal(u32at(o[5], 4), 513, "data and status written");
      assert.equal(bytes(o[6])[0], BLK.S_OK);
      assert.deepEqual(bytes(o[7]), Uint8Array.from({ length: 512 }, (_, i) => diskByte(1024 + i)));
    },
  },
  {
    what: "block: a write, a flush and GET_ID on a rw disk",
    device: "blk-rw",
    // The metrics count what the guest asked: one 512-byte write, one flush.
    stats: { reads: 0, readBytes: 0, writes: 1, writeBytes: 512, flushes: 1, failures: 0 },
    prepare: (mem) => {
      mem.bytes(DATA + 0x10000, 512).fill(0xab);
      return {
        descs: [
          ...blkChain(mem, 0, BLK.T_OUT, 4n, { addr: DATA + 0x10000, len: 512, write: false }),
          ...blkChain(mem, 3, BLK.T_FLUSH, 0n, undefined),
          ...blkChain(mem, 5, BLK.T_GET_ID, 0n, { addr: DATA + 0x20000, len: 20, write: true }),
        ],
        heads: [0, 3, 5],
      };
    },
    script: (s) =>
      s.negotiate().queue(8).live().kick(3).dump(statusAt(0), 1).dump(statusAt(3), 1)
        .dump(statusAt(5), 1).dump(DATA + 0x20000, 20),
    check: (o, disk) => {
      assert.equal(u16(o[4]), 3);
      assert.deepEqual([bytes(o[5])[0], bytes(o[6])[0], bytes(o[7])[0]], [0, 0, 0]);
      assert.equal(new TextDecoder().decode(bytes(o[8])).replace(/\0+$/, ""), "test-disk");
      assert.ok(disk!.subarray(2048, 2560).every((b) => b === 0xab), "written in place");
      assert.equal(disk![2560], diskByte(2560), "and nothing past it");
    },
  },
  {
    what: "block: a write and a read spread over three buffers each (one vectored call)",
    device: "blk-rw",
    prepare: (mem) => {
      [0, 1, 2].forEach((i) => mem.bytes(DATA + 0x30000 + i * 0x2000, 512).fill(0x60 + i));
      const at = DATA, rd = DATA + 0x1000;
      header(mem, at, BLK.T_OUT, 16n);
      header(mem, rd, BLK.T_IN, 16n);
      const buf = (i: number) => DATA + 0x30000 + i * 0x2000;
      const out = (i: number) => DATA + 0x40000 + i * 0x3000;
      return {
        descs: [
          { addr: at, len: 16, flags: NEXT, next: 1 },
          { addr: buf(0), len: 512, flags: NEXT, next: 2 },
          { addr: buf(1), len: 512, flags: NEXT, next: 3 },
          { addr: buf(2), len: 512, flags: NEXT, next: 4 },
          { addr: at + 0x800, len: 1, flags: WRITE },
          { addr: rd, len: 16, flags: NEXT, next: 6 },
          { addr: out(0), len: 1024, flags: NEXT | WRITE, next: 7 },
          { addr: out(1), len: 256, flags: NEXT | WRITE, next: 8 },
          { addr: out(2), len: 256, flags: NEXT | WRITE, next: 9 },
          { addr: rd + 0x800, len: 1, flags: WRITE },
        ],
        heads: [0, 5],
      };
    },
    script: (s) =>
      s.negotiate().queue(16).live().kick(2).dump(DATA + 0x800, 1).dump(DATA + 0x1800, 1)
        .dump(RING.used + 12, 8).dump(DATA + 0x40000, 1024).dump(DATA + 0x43000, 256)
        .dump(DATA + 0x46000, 256),
    check: (o, disk) => {
      assert.equal(u16(o[4]), 2);
      assert.deepEqual([bytes(o[5])[0], bytes(o[6])[0]], [0, 0]);
      assert.equal(u32at(o[7], 4), 1537, "read: 1536 bytes and the status");
      const want = (i: number) => 0x60 + Math.floor(i / 512);
      assert.ok(disk!.subarray(8192, 8192 + 1536).every((b, i) => b === want(i)), "written");
      const got = new Uint8Array([...bytes(o[8]), ...bytes(o[9]), ...bytes(o[10])]);
      assert.ok(got.every((b, i) => b === want(i)), "read back across the buffers");
    },
  },
  {
    what: "block: a read-only disk offers VIRTIO_BLK_F_RO and fails writes, file untouched",
    device: "blk-ro",
    prepare: (mem) => ({
      descs: blkChain(mem, 0, BLK.T_OUT, 0n, { addr: DATA + 0x10000, len: 512, write: false }),
      heads: [0],
    }),
    script: (s) =>
      simple(s).w32(s.reg(MMIO.DEVICE_FEATURES_SEL), 0).r32(s.reg(MMIO.DEVICE_FEATURES))
        .dump(statusAt(0), 1),
    check: (o, disk) => {
      assert.equal(word(o[5]) & (1 << BLK.F_RO), 1 << BLK.F_RO);
      assert.equal(bytes(o[6])[0], BLK.S_IOERR);
      assert.ok(disk!.every((b, i) => b === diskByte(i)), "disk unchanged");
    },
  },
  {
    what: "block: a sector past the end (and one that overflows) fails the request only",
    device: "blk-ro",
    prepare: (mem) => ({
      descs: [
        ...blkChain(mem, 0, BLK.T_IN, BigInt(DISK_BYTES / 512), {
          addr: DATA + 0x10000,
          len: 512,
          write: true,
        }),
        ...blkChain(mem, 3, BLK.T_IN, 0xffffffffffffffffn, {
          addr: DATA + 0x10000,
          len: 512,
          write: true,
        }),
      ],
      heads: [0, 3],
    }),
    script: (s) => s.negotiate().queue(8).live().kick(2).dump(statusAt(0), 1).dump(statusAt(3), 1),
    check: (o) => {
      assert.equal(u16(o[4]), 2);
      assert.equal(word(o[3]), LIVE, "no reset needed");
      assert.deepEqual([bytes(o[5])[0], bytes(o[6])[0]], [BLK.S_IOERR, BLK.S_IOERR]);
    },
  },
  {
    what: "block: a data buffer of the wrong direction, and a chain with no status byte",
    device: "blk-ro",
    prepare: (mem) => ({
      descs: [
        ...blkChain(mem, 0, BLK.T_IN, 0n, { addr: DATA + 0x10000, len: 512, write: false }),
        { addr: DATA + 0x3000, len: 16 },
      ],
      heads: [0, 3],
    }),
    script: (s) =>
      s.negotiate().queue(8).live().kick(2).dump(statusAt(0), 1).dump(RING.used + 12, 8),
    check: (o) => {
      assert.equal(u16(o[4]), 2);
      assert.equal(bytes(o[5])[0], BLK.S_IOERR);
      assert.equal(u32at(o[6], 0), 3, "the headless chain comes back");
      assert.equal(u32at(o[6], 4), 0, "with nothing written");
    },
  },
  {
    what: "hostile: a descriptor outside guest RAM",
    device: "rng",
    prepare: () => ({ descs: [{ addr: 0x30000000, len: 64, flags: WRITE }], heads: [0] }),
    script: (s) => simple(s),
    check: (o) => {
      needsReset(o, 3, 4);
      assert.equal(word(o[2]) & INT.CONFIG_CHANGE, INT.CONFIG_CHANGE, "config-change interrupt");
    },
  },
  {
    what: "hostile: a descriptor into the MMIO gap (the device's own registers)",
    device: "rng",
    prepare: () => ({ descs: [{ addr: VIRTIO_MMIO_BASE, len: 64, flags: WRITE }], heads: [0] }),
    script: (s) => simple(s),
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "hostile: a length that runs past the end of RAM (address + length overflows)",
    device: "rng",
    prepare: () => ({ descs: [{ addr: MEMORY - 16, len: 0xffffffff, flags: WRITE }], heads: [0] }),
    script: (s) => simple(s),
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "hostile: a descriptor chain that loops",
    device: "rng",
    prepare: () => ({
      descs: [
        { addr: DATA, len: 8, flags: WRITE | NEXT, next: 1 },
        { addr: DATA, len: 8, flags: WRITE | NEXT, next: 0 },
      ],
      heads: [0],
    }),
    script: (s) => simple(s),
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "hostile: a chain longer than the queue (a descriptor that is its own next)",
    device: "blk-ro",
    prepare: () => ({ descs: [{ addr: DATA, len: 16, flags: NEXT, next: 0 }], heads: [0] }),
    script: (s) => simple(s, 4),
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "hostile: a next index past the queue, a head past the queue",
    device: "rng",
    prepare: () => ({
      descs: [{ addr: DATA, len: 8, flags: WRITE | NEXT, next: 9 }],
      heads: [0, 200],
    }),
    script: (s) => simple(s),
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "hostile: an indirect descriptor (not offered)",
    device: "rng",
    prepare: () => ({
      descs: [{ addr: DATA, len: 16, flags: VRING.DESC_F_INDIRECT }],
      heads: [0],
    }),
    script: (s) => simple(s),
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "block: write-zeroes (with and without unmap) and discard on a rw disk",
    device: "blk-rw",
    prepare: (mem) => ({
      descs: [
        ...rangeChain(mem, 0, BLK.T_WRITE_ZEROES, [[4, 2, 0], [16, 1, BLK.RANGE_F_UNMAP]]),
        ...rangeChain(mem, 3, BLK.T_DISCARD, [[64, 8, 0]]),
      ],
      heads: [0, 3],
    }),
    script: (s) =>
      s.negotiate(1 << BLK.F_DISCARD | 1 << BLK.F_WRITE_ZEROES).queue(8).live().kick(2)
        .dump(statusAt(0), 1).dump(statusAt(3), 1)
        .r32(s.reg(MMIO.CONFIG + BLK.CONFIG_MAX_DISCARD_SEG)),
    check: (o, disk) => {
      assert.equal(word(o[0]), NEGOTIATED, "DISCARD and WRITE_ZEROES offered");
      assert.equal(u16(o[4]), 2);
      assert.deepEqual([bytes(o[5])[0], bytes(o[6])[0]], [BLK.S_OK, BLK.S_OK]);
      assert.equal(word(o[7]), 16);
      const d = disk!;
      assert.ok(d.subarray(2048, 3072).every((b) => b === 0), "sectors 4-5 zeroed");
      assert.ok(d.subarray(8192, 8704).every((b) => b === 0), "sector 16 zeroed");
      assert.equal(d[2047], diskByte(2047), "nothing before");
      assert.equal(d[3072], diskByte(3072), "nothing after");
      assert.equal(d[8704], diskByte(8704));
      assert.equal(d.length, DISK_BYTES, "the image keeps its size");
    },
  },
  {
    what: "block: bad discard and write-zeroes requests fail alone",
    device: "blk-rw",
    prepare: (mem) => ({
      descs: [
        // Discard takes no unmap flag; a range past the end; 17 ranges; a torn range.
        ...rangeChain(mem, 0, BLK.T_DISCARD, [[0, 8, BLK.RANGE_F_UNMAP]]),
        ...rangeChain(mem, 3, BLK.T_WRITE_ZEROES, [[DISK_BYTES / 512 - 1, 2, 0]]),
        ...rangeChain(mem, 6, BLK.T_WRITE_ZEROES, Array(17).fill([0, 1, 0])),
        ...rangeChain(mem, 9, BLK.T_WRITE_ZEROES, [[0, 1, 0]], 12),
      ],
      heads: [0, 3, 6, 9],
    }),
    script: (s) =>
      s.negotiate().queue(16).live().kick(4).dump(statusAt(0), 1).dump(statusAt(3), 1)
        .dump(statusAt(6), 1).dump(statusAt(9), 1),
    check: (o, disk) => {
      assert.equal(word(o[3]), LIVE, "no reset needed");
      const got = [5, 6, 7, 8].map((i) => bytes(o[i])[0]);
      assert.deepEqual(got, [BLK.S_UNSUPP, BLK.S_IOERR, BLK.S_IOERR, BLK.S_IOERR]);
      assert.ok(disk!.every((b, i) => b === diskByte(i)), "disk unchanged");
    },
  },
  {
    what: "block: a read-only disk offers neither discard nor write-zeroes, and fails both",
    device: "blk-ro",
    prepare: (mem) => ({
      descs: [
        ...rangeChain(mem, 0, BLK.T_DISCARD, [[0, 8, 0]]),
        ...rangeChain(mem, 3, BLK.T_WRITE_ZEROES, [[0, 8, 0]]),
      ],
      heads: [0, 3],
    }),
    script: (s) =>
      s.negotiate().queue(8).live().kick(2).w32(s.reg(MMIO.DEVICE_FEATURES_SEL), 0)
        .r32(s.reg(MMIO.DEVICE_FEATURES)).dump(statusAt(0), 1).dump(statusAt(3), 1),
    check: (o, disk) => {
      const ranges = (1 << BLK.F_DISCARD) | (1 << BLK.F_WRITE_ZEROES);
      assert.equal(word(o[5]) & ranges, 0);
      assert.deepEqual([bytes(o[6])[0], bytes(o[7])[0]], [BLK.S_IOERR, BLK.S_IOERR]);
      assert.ok(disk!.every((b, i) => b === diskByte(i)), "disk unchanged");
    },
  },
  {
    what: "block: a read through an indirect table (header, two buffers, status)",
    device: "blk-ro",
    prepare: (mem) => {
      header(mem, DATA, BLK.T_IN, 3n);
      mem.bytes(DATA + 0x800, 1)[0] = 0xee;
      return viaTable(mem, [
        { addr: DATA, len: 16, flags: NEXT, next: 1 },
        { addr: DATA + 0x10000, len: 256, flags: NEXT | WRITE, next: 2 },
        { addr: DATA + 0x20000, len: 256, flags: NEXT | WRITE, next: 3 },
        { addr: DATA + 0x800, len: 1, flags: WRITE },
      ]);
    },
    script: (s) =>
      indirect(s).dump(RING.used + 4, 8).dump(DATA + 0x800, 1).dump(DATA + 0x10000, 256)
        .dump(DATA + 0x20000, 256),
    check: (o) => {
      assert.equal(word(o[3]), LIVE);
      assert.equal(u16(o[4]), 1);
      assert.equal(u32at(o[5], 4), 513, "data and status written");
      assert.equal(bytes(o[6])[0], BLK.S_OK);
      const got = new Uint8Array([...bytes(o[7]), ...bytes(o[8])]);
      assert.ok(got.every((b, i) => b === diskByte(1536 + i)), "sector 3 across both buffers");
    },
  },
  {
    what: "block: with EVENT_IDX, used_event holds the interrupt back and avail_event is kept",
    device: "blk-ro",
    prepare: (mem) => ({
      descs: [
        ...blkChain(mem, 0, BLK.T_IN, 0n, { addr: DATA + 0x10000, len: 512, write: true }),
        ...blkChain(mem, 3, BLK.T_IN, 1n, { addr: DATA + 0x20000, len: 512, write: true }),
      ],
      heads: [0, 3],
    }),
    script: (s) =>
      // used_event = 1: no interrupt for the first chain used, one for the second.
      s.negotiate(WANT_EVENT_IDX).queue(8).live().w16(RING.avail + 4 + 2 * 8, 1)
        .w16(RING.avail + 2, 1).w32(s.reg(MMIO.QUEUE_NOTIFY), 0).wait16(RING.used + 2, 1, 0x10000)
        // Time for an interrupt the device should not raise (a wait that never ends early).
        .wait16(RING.used + 2, 9, 0x40000).r32(s.reg(MMIO.INTERRUPT_STATUS))
        .dump(RING.used + 4 + 8 * 8, 2)
        .w16(RING.avail + 2, 2).w32(s.reg(MMIO.QUEUE_NOTIFY), 0)
        .wait32nz(s.reg(MMIO.INTERRUPT_STATUS)).wait16(RING.used + 2, 2, 0x10000)
        .r32(s.reg(MMIO.INTERRUPT_STATUS)).dump(RING.used + 2, 2).dump(RING.used + 4 + 8 * 8, 2)
        .dump(statusAt(0), 1).dump(statusAt(3), 1),
    check: (o, _disk, irqs) => {
      assert.equal(word(o[0]), NEGOTIATED, "EVENT_IDX offered");
      assert.equal(word(o[2]), 0, "no interrupt before used_event was passed");
      assert.equal(u16(o[3]), 1, "avail_event: notify for chain 1");
      assert.equal(word(o[4]) & INT.USED_RING, INT.USED_RING, "interrupt for the second");
      assert.equal(u16(o[5]), 2);
      assert.equal(u16(o[6]), 2, "avail_event: notify for chain 2");
      assert.deepEqual([bytes(o[7])[0], bytes(o[8])[0]], [BLK.S_OK, BLK.S_OK]);
      if (irqs !== undefined) assert.equal(irqs, 1, "one interrupt in all");
    },
  },
  {
    what: "hostile: an indirect table inside an indirect table",
    device: "blk-ro",
    prepare: (mem) => viaTable(mem, [{ addr: TABLE, len: 16, flags: INDIRECT }]),
    script: indirect,
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "hostile: an indirect table that is not a whole number of descriptors, or empty",
    device: "blk-ro",
    prepare: (mem) => {
      table(mem, [{ addr: DATA, len: 16 }]);
      return { descs: [{ addr: TABLE, len: 24, flags: INDIRECT }], heads: [0] };
    },
    script: (s) =>
      indirect(s).w32(RING.desc + 8, 0).w32(RING.used + 2, 0).w16(RING.avail + 2, 0).pipe(indirect),
    check: (o) => {
      needsReset(o, 3, 4);
      needsReset(o, 8, 9);
    },
  },
  {
    what: "hostile: an indirect table outside RAM, and one whose length overflows",
    device: "blk-ro",
    prepare: () => ({ descs: [{ addr: 0x30000000, len: 64, flags: INDIRECT }], heads: [0] }),
    script: (s) =>
      indirect(s).w32(RING.desc, MEMORY - 16).w32(RING.desc + 8, 0xfffffff0)
        .w32(RING.used + 2, 0).w16(RING.avail + 2, 0).pipe(indirect),
    check: (o) => {
      needsReset(o, 3, 4);
      needsReset(o, 8, 9);
    },
  },
  {
    what: "hostile: an indirect descriptor with a next, and a next past its table",
    device: "blk-ro",
    prepare: (mem) => {
      table(mem, [{ addr: DATA, len: 16, flags: NEXT, next: 2 }, { addr: DATA, len: 16 }]);
      return {
        descs: [{ addr: TABLE, len: 32, flags: INDIRECT | NEXT, next: 1 }, { addr: DATA, len: 1 }],
        heads: [0],
      };
    },
    script: (s) =>
      indirect(s).w32(RING.desc + 12, INDIRECT).w32(RING.used + 2, 0).w16(RING.avail + 2, 0)
        .pipe(indirect),
    check: (o) => {
      needsReset(o, 3, 4);
      needsReset(o, 8, 9);
    },
  },
  {
    what: "hostile: an indirect table whose chain loops",
    device: "blk-ro",
    prepare: (mem) =>
      viaTable(mem, [
        { addr: DATA, len: 16, flags: NEXT, next: 1 },
        { addr: DATA, len: 16, flags: NEXT, next: 0 },
      ]),
    script: indirect,
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "hostile: an indirect descriptor the driver did not negotiate",
    device: "blk-ro",
    prepare: (mem) => viaTable(mem, [{ addr: DATA, len: 16 }]),
    script: (s) => simple(s),
    check: (o) => needsReset(o, 3, 4),
  },
  {
    what: "hostile: a driver ring index that runs ahead of the queue",
    device: "rng",
    prepare: () => ({ descs: [{ addr: DATA, len: 8, flags: WRITE }], heads: [0] }),
    script: (s) =>
      s.negotiate().queue(8).live().w16(RING.avail + 2, 100).w32(s.reg(MMIO.QUEUE_NOTIFY), 0)
        .wait32nz(s.reg(MMIO.INTERRUPT_STATUS)).r32(s.reg(MMIO.STATUS)).dump(RING.used + 2, 2),
    check: (o) => needsReset(o, 2, 3),
  },
  {
    what: "hostile: queue sizes that are not a power of two, zero, or past the maximum",
    device: "rng",
    prepare: () => ({ descs: [], heads: [] }),
    script: (s) =>
      s.negotiate().queue(3).r32(s.reg(MMIO.STATUS)).negotiate().queue(0).negotiate()
        .queue(4096).r32(s.reg(MMIO.STATUS)),
    check: (o) => {
      assert.equal(word(o[1]), 0, "size 3 not ready");
      assert.equal(word(o[2]) & STATUS.DEVICE_NEEDS_RESET, STATUS.DEVICE_NEEDS_RESET);
      assert.equal(word(o[3]), NEGOTIATED, "a reset clears DEVICE_NEEDS_RESET");
      assert.equal(word(o[4]), 0, "size 0 not ready");
      assert.equal(word(o[6]), 0, "size 4096 not ready");
      assert.equal(word(o[7]) & STATUS.DEVICE_NEEDS_RESET, STATUS.DEVICE_NEEDS_RESET);
    },
  },
  {
    what: "hostile: a notify before DRIVER_OK does nothing; the same request after it is served",
    device: "rng",
    prepare: () => ({ descs: [{ addr: DATA, len: 32, flags: WRITE }], heads: [0] }),
    script: (s) =>
      s.negotiate().queue(8).w16(RING.avail + 2, 1).w32(s.reg(MMIO.QUEUE_NOTIFY), 0)
        .wait32nz(s.reg(MMIO.INTERRUPT_STATUS), 0x4000).dump(RING.used + 2, 2).live().kick(1),
    check: (o) => {
      assert.equal(u16(o[2]), 0, "not served before DRIVER_OK");
      assert.equal(u16(o[5]), 1, "served after");
    },
  },
  {
    what: "hostile: config reads past its end and misaligned register reads read zero",
    device: "blk-ro",
    prepare: () => ({ descs: [], heads: [] }),
    script: (s) =>
      s.r32(s.reg(MMIO.CONFIG + BLK.CONFIG_BYTES)).r32(s.reg(0xffc)).r32(s.reg(MMIO.CONFIG))
        .r32(s.reg(MMIO.MAGIC_VALUE + 2)).r32(s.reg(MMIO.MAGIC_VALUE)),
    check: (o) => {
      assert.equal(word(o[0]), 0);
      assert.equal(word(o[1]), 0);
      assert.equal(word(o[2]), DISK_BYTES / 512, "capacity, low word");
      assert.equal(word(o[3]), 0);
      assert.equal(word(o[4]), 0x74726976);
    },
  },
  {
    what: "hostile: features the device did not offer, or no VERSION_1, are refused",
    device: "rng",
    prepare: () => ({ descs: [], heads: [] }),
    script: (s) => s.negotiate(1 << 20).negotiate(0, 0).negotiate(),
    check: (o) => {
      assert.equal(word(o[0]), STATUS.ACKNOWLEDGE | STATUS.DRIVER, "unoffered feature");
      assert.equal(word(o[1]), STATUS.ACKNOWLEDGE | STATUS.DRIVER, "legacy driver");
      assert.equal(word(o[2]), NEGOTIATED);
    },
  },
  {
    what: "hostile: after DEVICE_NEEDS_RESET, a reset and a well-formed queue work again",
    device: "rng",
    prepare: () => ({ descs: [{ addr: 0x30000000, len: 64, flags: WRITE }], heads: [0] }),
    script: (s) =>
      simple(s)
        // The driver rewrites descriptor 0 and starts over with fresh rings.
        .w32(RING.desc, DATA).w32(RING.desc + 4, 0).w32(RING.desc + 8, 16)
        .w32(RING.used + 2, 0).w16(RING.avail + 2, 0)
        .negotiate().queue(8).live().kick(1),
    check: (o) => {
      needsReset(o, 3, 4);
      assert.equal(word(o[8]), LIVE);
      assert.equal(u16(o[9]), 1, "served after the reset");
    },
  },
];

Deno.test("virtio (in-process): a driver that keeps adding chains gets a queue's worth per turn", () => {
  const mem = GuestMemory.allocate(MEMORY);
  try {
    let handled = 0;
    // Every request served makes the same chain available again, as a
    // driver racing the device on another vCPU could, without end.
    const backend: VirtioBackend = {
      info: rngInfo(),
      handle: () => {
        handled++;
        const idx = mem.view(RING.avail + 2, 2);
        idx.setUint16(0, idx.getUint16(0, true) + 1, true);
        mem.view(RING.avail + 4 + 2 * (handled % 8), 2).setUint16(0, 0, true);
        return 0;
      },
    };
    const state = newVirtioState(backend.info);
    const runner = new QueueRunner(backend, state, mem, { trigger() {} });
    const dev = new VirtioMmio(state, mem, { trigger() {} }, { notify() {} });
    writeRing(mem, [{ addr: DATA, len: 8, flags: WRITE }], [0]);
    new Script().negotiate().queue(8).live().w16(RING.avail + 2, 1).runDirect(mem, dev);
    assert.equal(runner.notified(), true, "more work waiting");
    assert.equal(handled, 8, "one queue's worth");
    assert.equal(runner.notified(), true);
    assert.equal(handled, 16);
  } finally {
    mem.release();
  }
});

Deno.test("virtio (in-process): with writes tracked, the pages a device writes are recorded, and what it may still write", () => {
  const mem = GuestMemory.allocate(MEMORY);
  try {
    mem.trackWrites();
    const page = (addr: number) => addr >>> 12;
    const marked = (addr: number) =>
      (mem.dirtyPages[page(addr) >>> 5] & (1 << (page(addr) & 31))) !== 0;
    const backend = new VirtioRng(mem);
    const state = newVirtioState(backend.info);
    const runner = new QueueRunner(backend, state, mem, { trigger() {} });
    const dev = new VirtioMmio(state, mem, { trigger() {} }, { notify() {} });
    // Chain 0 takes 3 pages of entropy at DATA + 0x1800; chain 1 (posted, not
    // yet made available) offers a page at DATA + 0x10000.
    writeRing(mem, [
      { addr: DATA + 0x1800, len: 0x2000, flags: WRITE },
      { addr: DATA + 0x10000, len: 16, flags: WRITE },
    ], [0]);
    new Script().negotiate().queue(8).live().w16(RING.avail + 2, 1).runDirect(mem, dev);
    mem.clearDirty();
    runner.notified();
    for (const a of [DATA + 0x1800, DATA + 0x2800, DATA + 0x3800, RING.used]) {
      assert.ok(marked(a), `0x${a.toString(16)} was written and is not recorded`);
    }
    for (const a of [DATA + 0x4800, DATA + 0x10000, RING.desc, RING.avail]) {
      assert.ok(!marked(a), `0x${a.toString(16)} was not written and is recorded`);
    }
    mem.clearDirty();
    runner.markPosted();
    assert.ok(marked(DATA + 0x10000), "a buffer the device may fill later is not recorded");
    assert.ok(!marked(RING.desc));
    // A garbage descriptor (outside RAM) is skipped, not a crash.
    writeRing(mem, [{ addr: 2 ** 40, len: 4096, flags: WRITE }], [0]);
    runner.markPosted();
  } finally {
    mem.release();
  }
});

for (const c of CASES) {
  Deno.test(`virtio (in-process): ${c.what}`, () => {
    const disk = c.device === "rng" ? undefined : makeDisk();
    const fd = disk ? openPath(disk, c.device === "blk-rw" ? O_RDWR : O_RDONLY) : -1;
    try {
      const { out, irqs } = runInProcess(
        MEMORY,
        (mem) =>
          c.device === "rng"
            ? new VirtioRng(mem)
            : new VirtioBlk(new FdBlockFile(fd, DISK_BYTES), mem, {
              readOnly: c.device === "blk-ro",
              id: "test-disk",
            }),
        c,
      );
      c.check(out, disk ? Deno.readFileSync(disk) : undefined, irqs);
    } finally {
      if (fd >= 0) libc().close(fd);
    }
  });
}

for (const c of CASES) {
  Deno.test({
    name: `virtio (guest): ${c.what}`,
    ...needsKvm,
    fn: async () => {
      const disk = c.device === "rng" ? undefined : makeDisk();
      let stats: Record<string, number> | undefined;
      const out = await runInGuest(
        MEMORY,
        {
          entropy: c.device === "rng",
          disks: disk ? [{ path: disk, readOnly: c.device === "blk-ro", id: "test-disk" }] : [],
        },
        c,
        (vm) => (stats = vm.metrics().devices[0]?.stats),
      );
      if (c.stats) assert.deepEqual(stats, c.stats);
      c.check(out, disk ? Deno.readFileSync(disk) : undefined);
    },
  });
}

/** Queue 0 of the second device (the entropy device after a disk). */
const RING2 = { desc: 0x1010000, avail: 0x1011000, used: 0x1012000, data: 0x1200000 };

Deno.test({
  name: "virtio (volt run, whole sandbox): the I/O loop reads, writes, flushes and zeroes a " +
    "rw disk and serves entropy under seccomp",
  ...needsKvm,
  fn: async () => {
    const disk = makeDisk();
    const blk = VIRTIO_MMIO_BASE, rng = VIRTIO_MMIO_BASE + 0x1000;
    const s = new Script(blk).mapWindows();
    // The guest writes its own requests: a header per request, 512 bytes of 0x5a to write.
    const hdr = (at: number, type: number, sector: number) =>
      s.w32(at, type).w32(at + 4, 0).w32(at + 8, sector).w32(at + 12, 0).w32(at + 0x800, 0xee);
    hdr(DATA, BLK.T_IN, 2);
    hdr(DATA + 0x1000, BLK.T_OUT, 8);
    hdr(DATA + 0x2000, BLK.T_FLUSH, 0);
    hdr(DATA + 0x3000, BLK.T_WRITE_ZEROES, 0);
    // One range: sector 16, one sector, no flags (fallocate, under seccomp).
    s.w32(DATA + 0x3100, 16).w32(DATA + 0x3104, 0).w32(DATA + 0x3108, 1).w32(DATA + 0x310c, 0);
    for (let i = 0; i < 512; i += 4) s.w32(DATA + 0x20000 + i, 0x5a5a5a5a);
    // Two buffers each, as Linux sends them: one preadv/pwritev per request.
    s.ring([
      { addr: DATA, len: 16, flags: NEXT, next: 1 },
      { addr: DATA + 0x10000, len: 256, flags: NEXT | WRITE, next: 8 },
      { addr: DATA + 0x800, len: 1, flags: WRITE },
      { addr: DATA + 0x1000, len: 16, flags: NEXT, next: 4 },
      { addr: DATA + 0x20000, len: 256, flags: NEXT, next: 9 },
      { addr: DATA + 0x1800, len: 1, flags: WRITE },
      { addr: DATA + 0x2000, len: 16, flags: NEXT, next: 7 },
      { addr: DATA + 0x2800, len: 1, flags: WRITE },
      { addr: DATA + 0x10100, len: 256, flags: NEXT | WRITE, next: 2 },
      { addr: DATA + 0x20100, len: 256, flags: NEXT, next: 5 },
      { addr: DATA + 0x3000, len: 16, flags: NEXT, next: 11 },
      { addr: DATA + 0x3100, len: 16, flags: NEXT, next: 12 },
      { addr: DATA + 0x3800, len: 1, flags: WRITE },
    ], [0, 3, 6, 10]);
    s.negotiate().queue(16).live().kick(4).dump(DATA + 0x800, 1).dump(DATA + 0x1800, 1)
      .dump(DATA + 0x2800, 1).dump(DATA + 0x10000, 512).dump(DATA + 0x3800, 1);
    s.device(rng).ring([{ addr: RING2.data, len: 16, flags: WRITE }], [0], RING2)
      .negotiate().queue(8, RING2).live().kick(1, RING2).dump(RING2.data, 16);
    const r = await runCli([
      "run",
      "--kernel",
      scriptGuest(s),
      "--disk",
      `${disk},rw`,
      "--entropy",
      "--console-mode",
      "raw",
      "--require-sandbox",
      "--log-level",
      "info",
    ], { timeout: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Sandbox: seccomp \d+ syscalls, \d+ on vCPU threads \(kill otherwise\)/);
    const o = s.parse(r.stdoutBytes!);
    assert.equal(word(o[0]), NEGOTIATED);
    assert.equal(u16(o[4]), 4, "four requests used");
    assert.deepEqual([5, 6, 7, 9].map((i) => bytes(o[i])[0]), [0, 0, 0, 0]);
    assert.deepEqual(bytes(o[8]), Uint8Array.from({ length: 512 }, (_, i) => diskByte(1024 + i)));
    const after = Deno.readFileSync(disk);
    assert.ok(after.subarray(4096, 4608).every((b) => b === 0x5a), "written in place");
    assert.ok(after.subarray(8192, 8704).every((b) => b === 0), "zeroed in place");
    assert.equal(after[8704], diskByte(8704));
    assert.equal(u16(o[14]), 1, "entropy used");
    assert.ok(bytes(o[15]).some((b) => b !== 0));
  },
});

Deno.test({
  name: "virtio (volt run, whole sandbox): 3000 reads in a row, each notified and waited for " +
    "(the data path's addresses stay good through garbage collections)",
  ...needsKvm,
  fn: async () => {
    const disk = makeDisk();
    const n = 3000;
    const s = new Script().mapWindows();
    s.ring([
      { addr: DATA, len: 16, flags: NEXT, next: 1 },
      { addr: DATA + 0x10000, len: 4096, flags: NEXT | WRITE, next: 2 },
      { addr: DATA + 0x800, len: 1, flags: WRITE },
    ], []);
    s.w32(DATA, BLK.T_IN).w32(DATA + 4, 0).w32(DATA + 12, 0).negotiate().queue(8).live();
    for (let k = 1; k <= n; k++) {
      s.w32(DATA + 8, ((k * 7919) % 256) * 8).w16(RING.avail + 4 + 2 * ((k - 1) % 8), 0)
        .w16(RING.avail + 2, k).w32(s.reg(MMIO.QUEUE_NOTIFY), 0).wait16(RING.used + 2, k);
    }
    s.dump(RING.used + 2, 2).dump(DATA + 0x800, 1).dump(DATA + 0x10000, 16);
    const r = await runCli(
      ["run", "--kernel", scriptGuest(s), "--disk", disk, "--console-mode", "raw"],
      { timeout: 300_000 },
    );
    // A stale scratch address here once corrupted the heap: glibc aborted (SIGSYS on its writev).
    assert.equal(r.code, 0, r.stderr);
    const o = s.parse(r.stdoutBytes!);
    assert.equal(u16(o[2]), n, "every read used");
    assert.equal(bytes(o[3])[0], BLK.S_OK);
    const last = ((n * 7919) % 256) * 8 * 512;
    assert.deepEqual(bytes(o[4]), Uint8Array.from({ length: 16 }, (_, i) => diskByte(last + i)));
  },
});
