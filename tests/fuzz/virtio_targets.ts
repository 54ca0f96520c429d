/**
 * Fuzz target of a hostile virtio driver: any register write sequence,
 * queue setup and descriptor tables full of garbage, against the
 * virtio-mmio transport and the block and entropy devices. The monitor
 * must never throw; the device stays within the spec's observable rules.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { F, INT, MMIO, STATUS } from "../../ffi/virtio.ts";
import { libc, O_RDWR, openPath } from "../../ffi/libc.ts";
import { FdBlockFile, VirtioBlk } from "../../src/devices/virtio/blk.ts";
import { QueueRunner, type VirtioBackend } from "../../src/devices/virtio/device.ts";
import { VirtioMmio } from "../../src/devices/virtio/mmio.ts";
import { newVirtioState } from "../../src/devices/virtio/mmio_state.ts";
import { VirtioRng } from "../../src/devices/virtio/rng.ts";
import { GuestMemory } from "../../src/memory/guest_memory.ts";
import { defineTarget, type Target } from "./target.ts";

const RAM = 1 << 20;
const DISK = 64 << 10;
const REGS = Object.values(MMIO).filter((o) => o < MMIO.CONFIG);

type Op =
  | { op: "w"; offset: number; value: number; width: number }
  | { op: "r"; offset: number; width: number }
  | { op: "ram"; at: number; bytes: Uint8Array }
  | { op: "notify" };

const u32 = fc.oneof(
  fc.nat({ max: 0xffffffff }),
  fc.constantFrom(0, 1, 2, 3, 4, 8, 11, 15, 16, 64, 128, 256, 0x1000, 0x2000, 0x3000, 0xffffffff),
);
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({
      op: fc.constant("w" as const),
      offset: fc.oneof(fc.constantFrom(...REGS), fc.nat({ max: 0x1000 })),
      value: u32,
      width: fc.constantFrom(4, 4, 4, 1, 2, 8),
    }),
    weight: 5,
  },
  fc.record({
    op: fc.constant("r" as const),
    offset: fc.oneof(fc.constantFrom(...REGS), fc.nat({ max: 0x1000 })),
    width: fc.constantFrom(4, 1, 2, 8),
  }),
  {
    // Garbage into the descriptor table and rings the driver set up (or anywhere).
    arbitrary: fc.record({
      op: fc.constant("ram" as const),
      at: fc.oneof(fc.constantFrom(0x1000, 0x2000, 0x3000), fc.nat({ max: RAM - 64 })),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
    }),
    weight: 3,
  },
  { arbitrary: fc.constant({ op: "notify" as const }), weight: 2 },
);

/** A well-formed bring-up the ops then perturb: features, queue 0 at 0x1000/0x2000/0x3000, DRIVER_OK. */
const BRING_UP: Array<[number, number]> = [
  [MMIO.STATUS, 1],
  [MMIO.STATUS, 3],
  [MMIO.DRIVER_FEATURES_SEL, 1],
  [MMIO.DRIVER_FEATURES, 1],
  [MMIO.STATUS, 11],
  [MMIO.QUEUE_NUM, 8],
  [MMIO.QUEUE_DESC_LOW, 0x1000],
  [MMIO.QUEUE_AVAIL_LOW, 0x2000],
  [MMIO.QUEUE_USED_LOW, 0x3000],
  [MMIO.QUEUE_READY, 1],
  [MMIO.STATUS, 15],
];

let disk: string | undefined;

function checkDriver(
  input: { device: "blk" | "rng"; bringUp: boolean; ringFeatures: boolean; ops: Op[] },
): void {
  const mem = GuestMemory.allocate(RAM);
  let fd = -1;
  try {
    let backend: VirtioBackend;
    if (input.device === "rng") backend = new VirtioRng(mem);
    else {
      if (!disk) {
        disk = Deno.makeTempFileSync({ suffix: ".img" });
        Deno.truncateSync(disk, DISK);
      }
      fd = openPath(disk, O_RDWR);
      backend = new VirtioBlk(new FdBlockFile(fd, DISK), mem, { readOnly: false });
    }
    const state = newVirtioState(backend.info);
    let irqs = 0;
    const irq = { trigger: () => void irqs++ };
    const runner = new QueueRunner(backend, state, mem, irq);
    const dev = new VirtioMmio(state, mem, irq, { notify: () => runner.notified() });
    const word = new Uint8Array(8);
    const dv = new DataView(word.buffer);
    const write = (offset: number, value: number, width = 4) => {
      dv.setUint32(0, value, true);
      dev.write(offset, word.subarray(0, width));
    };
    const read = (offset: number, width = 4) => {
      dev.read(offset, word.subarray(0, width));
      return dv.getUint32(0, true);
    };
    if (input.bringUp) {
      // The block device also offers indirect descriptors and EVENT_IDX.
      const ring = input.device === "blk" && input.ringFeatures
        ? (1 << F.RING_INDIRECT_DESC) | (1 << F.RING_EVENT_IDX)
        : 0;
      for (const [o, v] of BRING_UP) {
        if (o === MMIO.STATUS && v === 11) {
          write(MMIO.DRIVER_FEATURES_SEL, 0), write(MMIO.DRIVER_FEATURES, ring);
        }
        write(o, v);
      }
    }
    let driverBits = input.bringUp ? 15 : 0;
    input.ops.forEach((o, i) => {
      const at = `op ${i} ${JSON.stringify(o)}`;
      const servedBefore = runner.served;
      if (o.op === "w") {
        write(o.offset, o.value, o.width);
        if (o.offset === MMIO.STATUS && o.width === 4) {
          driverBits = o.value === 0 ? 0 : driverBits | o.value;
        }
      } else if (o.op === "r") read(o.offset, o.width);
      else if (o.op === "ram") mem.write(o.at, o.bytes);
      else runner.notified();
      // A notify serves at most a queue's worth of chains. (Counted by the runner: the used
      // index is the device's to write, and a driver that scribbles on it is overwritten.)
      const used = runner.served - servedBefore;
      if (o.op === "notify") assert.ok(used <= 256, `${at}: ${used} chains used at once`);
      const status = read(MMIO.STATUS);
      // The device adds only DEVICE_NEEDS_RESET to what the driver wrote.
      assert.equal(
        status & ~(driverBits | STATUS.DEVICE_NEEDS_RESET) & 0xff,
        0,
        `${at}: status ${status}`,
      );
      assert.equal(read(MMIO.INTERRUPT_STATUS) & ~(INT.USED_RING | INT.CONFIG_CHANGE), 0, at);
      assert.equal(read(MMIO.MAGIC_VALUE), 0x74726976, at);
      assert.ok(read(MMIO.QUEUE_NUM_MAX) <= 256, at);
    });
  } finally {
    if (fd >= 0) libc().close(fd);
    mem.release();
  }
}

/** The virtio targets. */
export const VIRTIO_TARGETS: Target[] = [
  defineTarget({
    name: "virtio-driver",
    about:
      "a hostile virtio driver (registers, queue setup, garbage rings, notifies) against virtio-mmio, blk and rng",
    arbitrary: fc.record({
      device: fc.constantFrom("blk" as const, "rng" as const),
      bringUp: fc.boolean(),
      ringFeatures: fc.boolean(),
      ops: fc.array(op, { maxLength: 60, size: "medium" }),
    }),
    check: checkDriver,
  }),
];
