/**
 * vCPU set-up: CPUID, MSRs, registers, FPU, segment registers and the local
 * APIC, in the order KVM needs them (CPUID first: it decides what MSRs and
 * sregs are valid).
 *
 * @module
 */

import { APIC_REG, DTABLE, FPU, KVM, REGS, SEGMENT, SIZE, SREGS } from "../../ffi/kvm.ts";
import { check, libc, MAP_SHARED, mmap, PROT_READ, PROT_WRITE } from "../../ffi/libc.ts";
import type { CpuidEntry } from "../arch/x86_64/cpuid.ts";
import type { Segment } from "../arch/x86_64/gdt.ts";
import { type BootRegs, type BootSregs, FPU_FCW, FPU_MXCSR } from "../arch/x86_64/regs.ts";
import { encodeCpuid, encodeMsrs } from "./kvm.ts";

/** LVT delivery modes. */
const APIC_MODE_NMI = 0x4;
const APIC_MODE_EXTINT = 0x7;

/**
 * A vCPU fd with its `kvm_run` mapping.
 *
 * @example
 * ```ts ignore
 * import { Vcpu } from "./vcpu.ts";
 * const cpu = new Vcpu(fd, 0, mmapSize);
 * cpu.setRegs({ rip: 0x100000, rsp: 0, rbp: 0, rsi: 0, rbx: 0, rflags: 2 });
 * ```
 */
export class Vcpu {
  /** vCPU fd. */
  readonly fd: number;
  /** vCPU index (its APIC id). */
  readonly id: number;
  /** Host address of the `kvm_run` mapping. */
  readonly runAddr: bigint;
  /** Length of the `kvm_run` mapping. */
  readonly runSize: number;

  #run?: Deno.PointerObject;

  constructor(fd: number, id: number, runSize: number) {
    this.fd = fd;
    this.id = id;
    this.runSize = runSize;
    let p: Deno.PointerObject;
    try {
      p = mmap(runSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
    } catch (e) {
      libc().close(fd);
      throw e;
    }
    this.#run = p;
    this.runAddr = BigInt(Deno.UnsafePointer.value(p));
  }

  /** Unmaps `kvm_run` and closes the vCPU fd (once): the vCPU's thread must be done with both. */
  close(): void {
    if (!this.#run) return;
    libc().munmap(this.#run, BigInt(this.runSize));
    libc().close(this.fd);
    this.#run = undefined;
  }

  private ioctl(req: number, buf: Uint8Array<ArrayBuffer>, what: string): void {
    check(libc().ioctl_buf(this.fd, req, buf), what);
  }

  /** KVM_SET_CPUID2. */
  setCpuid(entries: readonly CpuidEntry[]): void {
    this.ioctl(KVM.SET_CPUID2, encodeCpuid(entries), "KVM_SET_CPUID2");
  }

  /** KVM_SET_MSRS; every entry must be accepted. */
  setMsrs(msrs: ReadonlyArray<[number, bigint]>): void {
    const n = check(libc().ioctl_buf(this.fd, KVM.SET_MSRS, encodeMsrs(msrs)), "KVM_SET_MSRS");
    if (n !== msrs.length) {
      throw new Error(`KVM_SET_MSRS failed: MSR 0x${msrs[n][0].toString(16)} rejected`);
    }
  }

  /** KVM_SET_REGS. */
  setRegs(r: BootRegs): void {
    const regs = new BigUint64Array(SIZE.kvm_regs / 8);
    regs[REGS.rip] = BigInt(r.rip);
    regs[REGS.rsp] = BigInt(r.rsp);
    regs[REGS.rbp] = BigInt(r.rbp);
    regs[REGS.rsi] = BigInt(r.rsi);
    regs[REGS.rbx] = BigInt(r.rbx);
    regs[REGS.rflags] = BigInt(r.rflags);
    this.ioctl(KVM.SET_REGS, new Uint8Array(regs.buffer), "KVM_SET_REGS");
  }

  /** KVM_GET_REGS, as u64 values indexed by {@linkcode REGS}. */
  getRegs(): BigUint64Array {
    const regs = new BigUint64Array(SIZE.kvm_regs / 8);
    this.ioctl(KVM.GET_REGS, new Uint8Array(regs.buffer), "KVM_GET_REGS");
    return regs;
  }

  /** KVM_SET_FPU with the reset control words. */
  setFpu(): void {
    const buf = new Uint8Array(SIZE.kvm_fpu);
    const dv = new DataView(buf.buffer);
    dv.setUint16(FPU.fcw, FPU_FCW, true);
    dv.setUint32(FPU.mxcsr, FPU_MXCSR, true);
    this.ioctl(KVM.SET_FPU, buf, "KVM_SET_FPU");
  }

  /** Reads sregs, applies `s` over them, writes them back. */
  setSregs(s: BootSregs): void {
    const buf = new Uint8Array(SIZE.kvm_sregs);
    this.ioctl(KVM.GET_SREGS, buf, "KVM_GET_SREGS");
    const dv = new DataView(buf.buffer);
    const seg = (off: number, v: Segment) => {
      dv.setBigUint64(off + SEGMENT.base, BigInt(v.base), true);
      dv.setUint32(off + SEGMENT.limit, v.limit, true);
      dv.setUint16(off + SEGMENT.selector, v.selector, true);
      dv.setUint8(off + SEGMENT.type, v.type);
      dv.setUint8(off + SEGMENT.present, v.present);
      dv.setUint8(off + SEGMENT.dpl, v.dpl);
      dv.setUint8(off + SEGMENT.db, v.db);
      dv.setUint8(off + SEGMENT.s, v.s);
      dv.setUint8(off + SEGMENT.l, v.l);
      dv.setUint8(off + SEGMENT.g, v.g);
      dv.setUint8(off + SEGMENT.avl, v.avl);
      dv.setUint8(off + SEGMENT.unusable, 0);
    };
    seg(SREGS.cs, s.cs);
    seg(SREGS.ds, s.ds);
    seg(SREGS.es, s.es);
    seg(SREGS.fs, s.fs);
    seg(SREGS.gs, s.gs);
    seg(SREGS.ss, s.ss);
    seg(SREGS.tr, s.tr);
    dv.setBigUint64(SREGS.gdt + DTABLE.base, BigInt(s.gdt.base), true);
    dv.setUint16(SREGS.gdt + DTABLE.limit, s.gdt.limit, true);
    dv.setBigUint64(SREGS.idt + DTABLE.base, BigInt(s.idt.base), true);
    dv.setUint16(SREGS.idt + DTABLE.limit, s.idt.limit, true);
    dv.setBigUint64(SREGS.cr0, BigInt(s.cr0), true);
    dv.setBigUint64(SREGS.cr3, BigInt(s.cr3), true);
    dv.setBigUint64(SREGS.cr4, BigInt(s.cr4), true);
    dv.setBigUint64(SREGS.efer, BigInt(s.efer), true);
    this.ioctl(KVM.SET_SREGS, buf, "KVM_SET_SREGS");
  }

  /** KVM_GET_TSC_KHZ: the guest TSC's rate (negative where KVM cannot tell). */
  tscKhz(): number {
    return libc().ioctl(this.fd, KVM.GET_TSC_KHZ, 0n);
  }

  /** KVM_SET_TSC_KHZ: false where this host's KVM cannot run the guest's TSC at `khz`. */
  setTscKhz(khz: number): boolean {
    return libc().ioctl(this.fd, KVM.SET_TSC_KHZ, BigInt(khz)) === 0;
  }

  /** LINT0 as ExtINT (the PIC), LINT1 as NMI. */
  setLapic(): void {
    const buf = new Uint8Array(SIZE.kvm_lapic_state);
    this.ioctl(KVM.GET_LAPIC, buf, "KVM_GET_LAPIC");
    const dv = new DataView(buf.buffer);
    const mode = (off: number, m: number) =>
      dv.setUint32(off, (dv.getUint32(off, true) & ~0x700) | (m << 8), true);
    mode(APIC_REG.lvt0, APIC_MODE_EXTINT);
    mode(APIC_REG.lvt1, APIC_MODE_NMI);
    this.ioctl(KVM.SET_LAPIC, buf, "KVM_SET_LAPIC");
  }
}
