/**
 * A virtio driver written as a script of register and memory accesses,
 * run two ways: by a small guest that interprets it (the real path: MMIO
 * exits, ioeventfd, the I/O loop, irqfd), or in-process against the
 * transport and queue runner directly (no KVM, microseconds). Tests lay out
 * rings and buffers in guest memory themselves, well-formed or hostile.
 */
import assert from "node:assert/strict";
import { MMIO, STATUS, VRING } from "../ffi/virtio.ts";
import { VIRTIO_MMIO_BASE } from "../src/arch/x86_64/layout.ts";
import { DeviceLock, Serialized } from "../src/devices/lock.ts";
import { QueueRunner, type VirtioBackend } from "../src/devices/virtio/device.ts";
import { VirtioMmio } from "../src/devices/virtio/mmio.ts";
import { newVirtioState, S } from "../src/devices/virtio/mmio_state.ts";
import { GuestMemory } from "../src/memory/guest_memory.ts";
import type { VmConfig } from "../src/vmm/config.ts";
import { Machine } from "../src/vmm/machine.ts";
import { assembleElf } from "./asm.ts";

/** Where the guest interpreter finds its script. */
export const SCRIPT_ADDR = 0x400000;
/** The page directory the tests add to map 3–4 GiB (the virtio windows). */
const HIGH_PD_ADDR = 0x3000000;
/** Queue 0's rings and the data buffers, in guest RAM. */
export const RING = { desc: 0x1000000, avail: 0x1001000, used: 0x1002000, data: 0x1100000 };

const OP = { END: 0, W32: 1, R32: 2, WAIT16: 3, DUMP: 4, W16: 5, WAIT32NZ: 6 } as const;

/** One output of a script: a register read, or bytes dumped from memory. */
export type Output = number | Uint8Array;

/** A script of accesses, with helpers for the driver's usual steps. */
export class Script {
  /** Four words per op: op, address, value, spin bound (WAIT16). */
  private readonly ops: number[] = [];
  /** Bytes each output takes in the guest's serial stream. */
  private readonly outputs: number[] = [];

  constructor(public base: number = VIRTIO_MMIO_BASE) {}

  /** Drives the device at `base` from here on. */
  device(base: number): this {
    this.base = base;
    return this;
  }

  /** A device register's guest address. */
  reg(offset: number): number {
    return this.base + offset;
  }

  w32(addr: number, value: number): this {
    this.ops.push(OP.W32, addr, value >>> 0, 0);
    return this;
  }
  w16(addr: number, value: number): this {
    this.ops.push(OP.W16, addr, value & 0xffff, 0);
    return this;
  }
  r32(addr: number): this {
    this.ops.push(OP.R32, addr, 0, 0);
    this.outputs.push(-4);
    return this;
  }
  /** Waits until the u16 at `addr` is `value`, for `spins` pause loops at most. */
  wait16(addr: number, value: number, spins = 0x4000000): this {
    this.ops.push(OP.WAIT16, addr, value, spins);
    return this;
  }
  /** Waits until the u32 at `addr` (a register, say) is not zero, for `spins` reads at most. */
  wait32nz(addr: number, spins = 0x100000): this {
    this.ops.push(OP.WAIT32NZ, addr, 0, spins);
    return this;
  }
  dump(addr: number, len: number): this {
    this.ops.push(OP.DUMP, addr, len, 0);
    this.outputs.push(len);
    return this;
  }

  /** Reset, ACKNOWLEDGE, DRIVER, features (`VERSION_1` plus `lo`), FEATURES_OK; reads status back. */
  negotiate(lo = 0, hi = 1): this {
    return this.w32(this.reg(MMIO.STATUS), 0)
      .w32(this.reg(MMIO.STATUS), STATUS.ACKNOWLEDGE)
      .w32(this.reg(MMIO.STATUS), STATUS.ACKNOWLEDGE | STATUS.DRIVER)
      .w32(this.reg(MMIO.DRIVER_FEATURES_SEL), 1)
      .w32(this.reg(MMIO.DRIVER_FEATURES), hi)
      .w32(this.reg(MMIO.DRIVER_FEATURES_SEL), 0)
      .w32(this.reg(MMIO.DRIVER_FEATURES), lo)
      .w32(this.reg(MMIO.STATUS), STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK)
      .r32(this.reg(MMIO.STATUS));
  }

  /** Queue `index` (0) at `ring` ({@linkcode RING}) with `size` entries; reads QUEUE_READY back. */
  queue(size: number, ring = RING, index = 0): this {
    const r = (o: number) => this.reg(o);
    return this.w32(r(MMIO.QUEUE_SEL), index)
      .w32(r(MMIO.QUEUE_NUM), size)
      .w32(r(MMIO.QUEUE_DESC_LOW), ring.desc)
      .w32(r(MMIO.QUEUE_DESC_HIGH), 0)
      .w32(r(MMIO.QUEUE_AVAIL_LOW), ring.avail)
      .w32(r(MMIO.QUEUE_AVAIL_HIGH), 0)
      .w32(r(MMIO.QUEUE_USED_LOW), ring.used)
      .w32(r(MMIO.QUEUE_USED_HIGH), 0)
      .w32(r(MMIO.QUEUE_READY), 1)
      .r32(r(MMIO.QUEUE_READY));
  }

  /** DRIVER_OK. */
  live(): this {
    return this.w32(
      this.reg(MMIO.STATUS),
      STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK,
    );
  }

  /**
   * Makes chains available up to avail idx `idx`, notifies, waits for an
   * interrupt status (a used ring, or a config change when the device
   * needs a reset) and for the used idx to reach `idx`, reads and acks the
   * interrupt status, then reads STATUS and the used idx.
   */
  kick(idx: number, ring = RING, index = 0): this {
    return this.w16(ring.avail + 2, idx)
      .w32(this.reg(MMIO.QUEUE_NOTIFY), index)
      .wait32nz(this.reg(MMIO.INTERRUPT_STATUS))
      .wait16(ring.used + 2, idx, 0x10000)
      .r32(this.reg(MMIO.INTERRUPT_STATUS))
      .w32(this.reg(MMIO.INTERRUPT_ACK), 3)
      .r32(this.reg(MMIO.STATUS))
      .dump(ring.used + 2, 2);
  }

  /** `then(this)`: steps written as a function, in line. */
  pipe(then: (s: this) => this): this {
    return then(this);
  }

  /** Writes descriptors and avail-ring heads from the script itself (no host pre-writes). */
  ring(descs: Desc[], heads: number[], ring = RING): this {
    descs.forEach((d, i) => {
      const at = ring.desc + VRING.DESC_SIZE * i;
      this.w32(at, d.addr).w32(at + 4, Math.floor(d.addr / 2 ** 32)).w32(at + 8, d.len)
        .w32(at + 12, (d.flags ?? 0) | ((d.next ?? 0) << 16));
    });
    heads.forEach((h, i) => this.w16(ring.avail + 4 + 2 * i, h));
    return this;
  }

  /**
   * Maps the first 2 MiB of virtio windows (0xd0000000) from the script
   * itself: PDPT entry 3 and one 2 MiB page in a fresh page directory.
   */
  mapWindows(): this {
    return this.w32(HIGH_PD_ADDR + 128 * 8, 0xd0000000 | 0x83).w32(HIGH_PD_ADDR + 128 * 8 + 4, 0)
      .w32(0xa000 + 3 * 8, HIGH_PD_ADDR | 3).w32(0xa000 + 3 * 8 + 4, 0);
  }

  /** The script as the guest interpreter reads it. */
  encode(): Uint8Array {
    return new Uint8Array(new Uint32Array([...this.ops, OP.END, 0, 0, 0]).buffer);
  }

  /** Splits the guest's serial bytes into this script's outputs. */
  parse(bytes: Uint8Array): Output[] {
    const out: Output[] = [];
    let at = 0;
    for (const n of this.outputs) {
      const len = Math.abs(n);
      if (at + len > bytes.length) {
        throw new Error(`Script output ended after ${out.length} of ${this.outputs.length} items`);
      }
      const b = bytes.slice(at, at + len);
      out.push(n < 0 ? new DataView(b.buffer).getUint32(0, true) : b);
      at += len;
    }
    return out;
  }

  /**
   * Runs the script in-process: register accesses go to `device`, memory
   * accesses to `mem`, and a notify runs `serve` synchronously.
   */
  runDirect(
    mem: GuestMemory,
    device: { read(o: number, d: Uint8Array): void; write(o: number, d: Uint8Array): void },
    size = 0x1000,
  ): Output[] {
    const out: Output[] = [];
    const word = new Uint8Array(4);
    const dv = new DataView(word.buffer);
    const inDevice = (a: number) => a >= this.base && a < this.base + size;
    for (let i = 0; i < this.ops.length; i += 4) {
      const [op, addr, value] = this.ops.slice(i, i + 3);
      if (op === OP.W32 || op === OP.W16) {
        if (inDevice(addr)) {
          dv.setUint32(0, value, true);
          device.write(addr - this.base, op === OP.W32 ? word : word.subarray(0, 2));
        } else if (op === OP.W32) mem.view(addr, 4).setUint32(0, value, true);
        else mem.view(addr, 2).setUint16(0, value, true);
      } else if (op === OP.R32) {
        if (inDevice(addr)) {
          device.read(addr - this.base, word);
          out.push(dv.getUint32(0, true));
        } else out.push(mem.view(addr, 4).getUint32(0, true));
      } else if (op === OP.DUMP) out.push(mem.bytes(addr, value).slice());
    }
    return out;
  }
}

/** One descriptor, as a test writes it. */
export interface Desc {
  addr: number;
  len: number;
  flags?: number;
  next?: number;
}

/** Writes descriptors at `ring.desc` (index = position) and puts `heads` in the avail ring. */
export function writeRing(mem: GuestMemory, descs: Desc[], heads: number[], ring = RING): void {
  descs.forEach((d, i) => {
    const v = mem.view(ring.desc + VRING.DESC_SIZE * i, VRING.DESC_SIZE);
    v.setBigUint64(0, BigInt(d.addr), true);
    v.setUint32(8, d.len >>> 0, true);
    v.setUint16(12, d.flags ?? 0, true);
    v.setUint16(14, d.next ?? 0, true);
  });
  heads.forEach((h, i) => mem.view(ring.avail + 4 + 2 * i, 2).setUint16(0, h, true));
}

/** Maps 3–4 GiB (the MMIO gap's virtio windows) into the boot page tables. */
export function mapMmioGap(mem: GuestMemory): void {
  const pd = mem.view(HIGH_PD_ADDR, 4096);
  for (let i = 0; i < 512; i++) {
    pd.setBigUint64(i * 8, (0xc0000000n + (BigInt(i) << 21n)) | 0x83n, true);
  }
  // PDPT (at 0xa000) entry 3 covers 3–4 GiB.
  mem.view(0xa000 + 3 * 8, 8).setBigUint64(0, BigInt(HIGH_PD_ADDR) | 3n, true);
}

/**
 * The interpreter guest: runs the script at {@linkcode SCRIPT_ADDR} (or
 * `embedded`, assembled into the guest; op, address, value, spin bound:
 * 16 bytes each), sending register reads and dumps out COM1 as raw bytes,
 * then exits 0.
 */
export const scriptGuest = (embedded?: Script) =>
  assembleElf(`
  ${embedded ? "lea rsi, [rip + script]" : `mov rsi, ${SCRIPT_ADDR}`}
  mov dx, 0x3f8
1: mov eax, dword ptr [rsi]
  mov edi, dword ptr [rsi + 4]
  mov ecx, dword ptr [rsi + 8]
  add rsi, 16
  cmp eax, 1
  je 10f
  cmp eax, 2
  je 20f
  cmp eax, 3
  je 30f
  cmp eax, 4
  je 40f
  cmp eax, 5
  je 50f
  cmp eax, 6
  je 60f
  mov dx, 0xf4
  xor eax, eax
  out dx, eax
  hlt
10: mov dword ptr [rdi], ecx
  jmp 1b
50: mov word ptr [rdi], cx
  jmp 1b
20: mov ebx, dword ptr [rdi]
  mov ecx, 4
21: mov al, bl
  out dx, al
  shr ebx, 8
  loop 21b
  jmp 1b
30: mov r8d, dword ptr [rsi - 4]
31: movzx eax, word ptr [rdi]
  cmp eax, ecx
  je 1b
  pause
  dec r8d
  jnz 31b
  jmp 1b
60: mov r8d, dword ptr [rsi - 4]
61: mov eax, dword ptr [rdi]
  test eax, eax
  jnz 1b
  dec r8d
  jnz 61b
  jmp 1b
40: test ecx, ecx
  jz 1b
  mov al, byte ptr [rdi]
  out dx, al
  inc rdi
  dec ecx
  jmp 40b
.balign 16
script:
${embedded ? `.long ${[...new Uint32Array(embedded.encode().buffer)].join(",")}` : ""}`);

/** A scripted driver's run: rings and buffers laid out first, then the script. */
export interface DriverRun {
  /** Rings and buffers, before the driver runs; returns the descriptors (index 0 up) and heads. */
  prepare(mem: GuestMemory): { descs: Desc[]; heads: number[] };
  script(s: Script): Script;
}

/**
 * Runs `run` in-process against `backend` (made over fresh guest memory
 * of `memory` bytes) behind its transport; returns the outputs and the
 * interrupts raised.
 */
export function runInProcess(
  memory: number,
  makeBackend: (mem: GuestMemory) => VirtioBackend,
  run: DriverRun,
): { out: Output[]; irqs: number } {
  const mem = GuestMemory.allocate(memory);
  try {
    const backend = makeBackend(mem);
    const state = newVirtioState(backend.info);
    let irqs = 0;
    const irq = { trigger: () => void irqs++ };
    const runner = new QueueRunner(backend, state, mem, irq);
    const dev = new Serialized(
      new VirtioMmio(state, mem, irq, { notify: () => runner.notified() }),
      new DeviceLock(new Int32Array(state)),
    );
    const { descs, heads } = run.prepare(mem);
    writeRing(mem, descs, heads);
    return { out: run.script(new Script()).runDirect(mem, dev), irqs };
  } finally {
    mem.release();
  }
}

/**
 * Runs `run` in the script guest, a VM made from `config` (its devices),
 * through the whole path; checks that every notify went to KVM's
 * ioeventfd, none through an exit to the monitor.
 */
export async function runInGuest(
  memory: number,
  config: Partial<VmConfig>,
  run: DriverRun,
  after?: (vm: Machine) => void,
): Promise<Output[]> {
  const vm = await Machine.create({
    kernel: scriptGuest(),
    memory,
    console: "message",
    ...config,
  });
  const mem = vm.built.memory;
  mapMmioGap(mem);
  const script = run.script(new Script());
  mem.write(SCRIPT_ADDR, script.encode());
  const { descs, heads } = run.prepare(mem);
  writeRing(mem, descs, heads);
  const chunks: Uint8Array[] = [];
  vm.onConsole = (b) => chunks.push(b.slice());
  const exit = await vm.run(60_000);
  assert.equal(exit.cause, "guest-exit", exit.message);
  const all = new Uint8Array(chunks.reduce((n, b) => n + b.length, 0));
  chunks.reduce((at, b) => (all.set(b, at), at + b.length), 0);
  const state = new Int32Array(vm.built.devices.virtio[0].state);
  assert.equal(state[S.NOTIFY_EXITS], 0, "notifies that exited to the monitor");
  after?.(vm);
  return script.parse(all);
}
