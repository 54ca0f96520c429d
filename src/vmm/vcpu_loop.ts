/**
 * The synchronous KVM_RUN loop of one vCPU. Exits are handled in place on
 * the vCPU's thread; nothing on the I/O path allocates or logs.
 *
 * @module
 */

import {
  EXIT,
  EXIT_IO_OUT,
  INTERNAL_ERROR,
  KVM,
  REGS,
  RUN,
  SIZE,
  SREGS,
  SYSTEM_EVENT,
} from "../../ffi/kvm.ts";
import { errno, libc } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";
import { translate } from "../arch/x86_64/paging.ts";
import type { Bus } from "../devices/bus.ts";
import { type VmExit, vmExit } from "./exit_reason.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";

const EINTR = 4;
const EAGAIN = 11;
const CR0_PG = 0x80000000n;
/** Exits a pausing vCPU handles while KVM completes its last access (a `rep ins` of a page). */
const MAX_COMPLETION_EXITS = 4096;

/**
 * Control words shared by the main thread and every vCPU: `stop` asks the
 * loops to end, `pause` to park until it is cleared.
 */
export const CTL = {
  stop: 0,
  /** Control sequences the console's safe mode dropped, over every vCPU. */
  consoleDropped: 2,
  /** Non-zero once raw console output set a terminal private mode. */
  privateModes: 3,
  /** Non-zero while the VM is paused: each vCPU parks before its next KVM_RUN. */
  pause: 4,
  /** vCPUs parked now. */
  parked: 5,
} as const;

/** Bytes of the control block. */
export const CTL_BYTES = 32;

/**
 * Per-vCPU counters, in a shared Float64Array of {@linkcode VCPU_STAT_SLOTS}
 * slots per vCPU (vCPU `id` at `id * VCPU_STAT_SLOTS`). Each vCPU thread is
 * the only writer of its own slots, so a plain increment suffices; the main
 * thread adds them up for the metrics.
 */
export const VCPU_STAT = {
  /** Port reads (KVM_EXIT_IO, in). */
  ioIn: 0,
  /** Port writes. */
  ioOut: 1,
  mmioRead: 2,
  mmioWrite: 3,
  /** Exits that end nothing (HLT, interrupt window, EINTR from a kick). */
  idle: 4,
  /** Bytes the guest's UART sent to the console. */
  serialOut: 5,
} as const;

/** Slots per vCPU in the counters. */
export const VCPU_STAT_SLOTS = 8;

/** What a vCPU loop needs. */
export interface VcpuLoopConfig {
  id: number;
  fd: number;
  /** The vCPU's `kvm_run` mapping. */
  run: Uint8Array;
  pio: Bus;
  mmio: Bus;
  /** Int32 control block ({@linkcode CTL}). */
  ctl: Int32Array;
  /** Guest RAM, for naming the instruction at a failure. */
  memory?: GuestMemory;
  /** This vCPU's counters ({@linkcode VCPU_STAT}), a view of its own slots. */
  stats?: Float64Array;
}

/**
 * Holds a vCPU outside KVM_RUN, its registers where the guest left them,
 * until the VM resumes or stops; counted in `parked` so the pauser knows
 * when every vCPU is still.
 */
function park(ctl: Int32Array): void {
  Atomics.add(ctl, CTL.parked, 1);
  Atomics.notify(ctl, CTL.parked);
  while (Atomics.load(ctl, CTL.pause) !== 0 && Atomics.load(ctl, CTL.stop) === 0) {
    Atomics.wait(ctl, CTL.pause, 1);
  }
  Atomics.sub(ctl, CTL.parked, 1);
  Atomics.notify(ctl, CTL.parked);
}

/**
 * Runs one vCPU.
 *
 * @example
 * ```ts ignore
 * const loop = new VcpuLoop(cfg);
 * const exit = loop.run(); // returns when the VM stops
 * ```
 */
export class VcpuLoop {
  private readonly c: VcpuLoopConfig;
  private readonly dv: DataView;
  private pending: VmExit | undefined;
  /** Reusable views for single port accesses of 1, 2 and 4 bytes. */
  private ioViews: Uint8Array[] = [];
  private ioViewOffset = -1;
  /** One element of a string access (`rep ins/outs`), by width, copied through. */
  private readonly ioScratch = [0, 1, 2, 3, 4].map((n) => new Uint8Array(n));
  private readonly stats: Float64Array;

  constructor(c: VcpuLoopConfig) {
    this.c = c;
    this.stats = c.stats ?? new Float64Array(VCPU_STAT_SLOTS);
    this.dv = new DataView(c.run.buffer, c.run.byteOffset, c.run.byteLength);
  }

  /** Ends the loop after the current exit (device callbacks use this). */
  stopWith(exit: VmExit): void {
    this.pending ??= exit;
  }

  /** Runs until the VM stops; returns why. */
  run(): VmExit {
    const l = libc();
    const { fd, ctl, run } = this.c;
    for (;;) {
      if (Atomics.load(ctl, CTL.pause) !== 0) {
        const exit = this.completeExit();
        if (exit) return exit;
        park(ctl);
      }
      if (Atomics.load(ctl, CTL.stop) !== 0) {
        return vmExit("host-stop", "Stopped by the host", this.c.id);
      }
      const r = l.ioctl(fd, KVM.RUN, 0n);
      if (r < 0) {
        const e = errno();
        if (e === EINTR || e === EAGAIN) {
          this.stats[VCPU_STAT.idle]++;
          run[RUN.immediate_exit] = 0;
          continue;
        }
        return vmExit("monitor-error", `KVM_RUN failed: ${errnoName(e)}`, this.c.id);
      }
      const exit = this.dispatch();
      if (exit) return exit;
    }
  }

  /**
   * Lets KVM finish the access this vCPU last exited on (an `in`'s value
   * into RAX, the rest of a string access) without running another guest
   * instruction: KVM_RUN with `immediate_exit` set does that and returns
   * EINTR. Until then the vCPU's registers are not what the guest will see,
   * so a paused vCPU, whose state a snapshot saves, parks only after this.
   * A string access may take more exits to finish; each is handled here.
   */
  private completeExit(): VmExit | undefined {
    const l = libc();
    const { fd, run } = this.c;
    for (let i = 0; i < MAX_COMPLETION_EXITS; i++) {
      run[RUN.immediate_exit] = 1;
      const r = l.ioctl(fd, KVM.RUN, 0n);
      run[RUN.immediate_exit] = 0;
      if (r < 0) {
        const e = errno();
        if (e === EINTR || e === EAGAIN) return undefined;
        return vmExit("monitor-error", `KVM_RUN failed: ${errnoName(e)}`, this.c.id);
      }
      const exit = this.dispatch();
      if (exit) return exit;
    }
    return undefined;
  }

  /**
   * Handles the exit described in `kvm_run` (port and MMIO accesses in
   * place); returns why the VM stops, if it does.
   */
  dispatch(): VmExit | undefined {
    const reason = this.dv.getUint32(RUN.exit_reason, true);
    if (reason === EXIT.IO) this.io();
    else if (reason === EXIT.MMIO) this.mmio();
    else {
      const exit = this.other(reason);
      if (exit) return exit;
    }
    return this.pending;
  }

  private io(): void {
    const dv = this.dv;
    const size = dv.getUint8(RUN.io_size);
    const port = dv.getUint16(RUN.io_port, true);
    const count = dv.getUint32(RUN.io_count, true);
    // Two 32-bit halves: a BigInt read would allocate on every exit.
    const off = dv.getUint32(RUN.io_data_offset, true) +
      dv.getUint32(RUN.io_data_offset + 4, true) * 2 ** 32;
    const out = dv.getUint8(RUN.io_direction) === EXIT_IO_OUT;
    this.stats[out ? VCPU_STAT.ioOut : VCPU_STAT.ioIn]++;
    const bus = this.c.pio;
    const run = this.c.run;
    // KVM reports 1, 2 or 4 bytes and keeps the data inside kvm_run; anything
    // else is dropped rather than indexed.
    if ((size !== 1 && size !== 2 && size !== 4) || off + count * size > run.byteLength) return;
    if (count === 1) {
      if (off !== this.ioViewOffset) {
        this.ioViewOffset = off;
        this.ioViews = [];
        for (let s = 0; s <= 4; s++) this.ioViews.push(this.c.run.subarray(off, off + s));
      }
      const data = this.ioViews[size];
      if (out) bus.write(port, data);
      else bus.read(port, data);
      return;
    }
    // A string access carries up to a page of elements: copy each through
    // one scratch view rather than allocate a view per element.
    const data = this.ioScratch[size];
    for (let i = 0, at = off; i < count; i++, at += size) {
      if (out) {
        for (let b = 0; b < size; b++) data[b] = run[at + b];
        bus.write(port, data);
      } else {
        bus.read(port, data);
        for (let b = 0; b < size; b++) run[at + b] = data[b];
      }
    }
  }

  private mmio(): void {
    const dv = this.dv;
    const addr = Number(dv.getBigUint64(RUN.mmio_phys_addr, true));
    const len = dv.getUint32(RUN.mmio_len, true);
    const data = this.c.run.subarray(RUN.mmio_data, RUN.mmio_data + Math.min(len, 8));
    if (dv.getUint8(RUN.mmio_is_write)) {
      this.stats[VCPU_STAT.mmioWrite]++;
      this.c.mmio.write(addr, data);
    } else {
      this.stats[VCPU_STAT.mmioRead]++;
      this.c.mmio.read(addr, data);
    }
  }

  private other(reason: number): VmExit | undefined {
    const dv = this.dv;
    const id = this.c.id;
    switch (reason) {
      case EXIT.HLT:
      case EXIT.IRQ_WINDOW_OPEN:
      case EXIT.INTR:
        this.stats[VCPU_STAT.idle]++;
        return undefined;
      case EXIT.SHUTDOWN:
        return vmExit(
          "triple-fault",
          `Guest triple fault (KVM_EXIT_SHUTDOWN) at ${this.where()}`,
          id,
        );
      case EXIT.FAIL_ENTRY: {
        const hw = dv.getBigUint64(RUN.fail_entry_reason, true);
        return vmExit(
          "fail-entry",
          `KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason 0x${
            hw.toString(16)
          })`,
          id,
        );
      }
      case EXIT.INTERNAL_ERROR: {
        const sub = dv.getUint32(RUN.internal_suberror, true);
        if (sub === INTERNAL_ERROR.EMULATION) {
          return vmExit(
            "internal-error",
            `KVM could not emulate the guest instruction at ${this.where()}: ${this.instruction()}`,
            id,
          );
        }
        return vmExit(
          "internal-error",
          `KVM internal error (suberror ${sub}) at ${this.where()}`,
          id,
        );
      }
      case EXIT.SYSTEM_EVENT: {
        const type = dv.getUint32(RUN.system_event_type, true);
        if (type === SYSTEM_EVENT.SHUTDOWN) return vmExit("power-off", "Guest powered off", id);
        if (type === SYSTEM_EVENT.RESET) return vmExit("reset", "Guest reset", id);
        if (type === SYSTEM_EVENT.CRASH) return vmExit("guest-crash", "Guest crashed", id);
        return vmExit("unexpected-exit", `Unexpected system event ${type}`, id);
      }
      default:
        return vmExit(
          "unexpected-exit",
          `Unexpected KVM exit reason ${reason} at ${this.where()}`,
          id,
        );
    }
  }

  private regs(): { rip: bigint; cr0: bigint; cr3: bigint } | undefined {
    const regs = new BigUint64Array(SIZE.kvm_regs / 8);
    const sregs = new Uint8Array(SIZE.kvm_sregs);
    const l = libc();
    if (l.ioctl_buf(this.c.fd, KVM.GET_REGS, new Uint8Array(regs.buffer)) < 0) return undefined;
    if (l.ioctl_buf(this.c.fd, KVM.GET_SREGS, sregs) < 0) return undefined;
    const sv = new DataView(sregs.buffer);
    return {
      rip: regs[REGS.rip],
      cr0: sv.getBigUint64(SREGS.cr0, true),
      cr3: sv.getBigUint64(SREGS.cr3, true),
    };
  }

  private where(): string {
    const r = this.regs();
    return r ? `rip 0x${r.rip.toString(16)}` : "an unknown rip";
  }

  /** The bytes at RIP: from KVM when it reports them, else read from guest RAM. */
  private instruction(): string {
    const dv = this.dv;
    const ndata = dv.getUint32(RUN.internal_ndata, true);
    const hex = (b: ArrayLike<number>) =>
      Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
    if (ndata >= 3) {
      // data[0] flags, data[1] length, data[2..] bytes (KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)
      const len = Math.min(Number(dv.getBigUint64(RUN.internal_data + 8, true)), 15);
      if (len > 0) {
        return hex(this.c.run.subarray(RUN.internal_data + 16, RUN.internal_data + 16 + len));
      }
    }
    const r = this.regs();
    const mem = this.c.memory;
    if (!r || !mem) return "instruction bytes unavailable";
    const phys = r.cr0 & CR0_PG ? translate(mem, Number(r.cr3), r.rip) : Number(r.rip);
    if (phys === undefined) return "instruction at an unmapped address";
    try {
      return `bytes ${hex(mem.bytes(phys, 8))}`;
    } catch {
      return `instruction outside guest RAM (0x${phys.toString(16)})`;
    }
  }
}
