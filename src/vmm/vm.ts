/**
 * A KVM VM: memory slots, the in-kernel interrupt controllers and PIT, and
 * interrupt lines. Every method is safe to call from any thread (the VM fd
 * is process-wide).
 *
 * @module
 */

import { KVM, KVM_MEM_LOG_DIRTY_PAGES, SIZE } from "../../ffi/kvm.ts";
import { check, libc } from "../../ffi/libc.ts";
import { KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR } from "../arch/x86_64/layout.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";

/** `kvm_pit_config.flags`: the PIT speaker port is a dummy. */
const KVM_PIT_SPEAKER_DUMMY = 1;

/**
 * A VM file descriptor.
 *
 * @example
 * ```ts ignore
 * import { Kvm } from "./kvm.ts";
 * import { Vm } from "./vm.ts";
 * const vm = Vm.create(Kvm.open());
 * vm.setIrqLine(4, true);
 * ```
 */
export class Vm {
  /** VM fd. */
  readonly fd: number;
  private readonly irqBuf = new Uint8Array(SIZE.kvm_irq_level);
  private readonly irqView = new DataView(this.irqBuf.buffer);

  constructor(fd: number) {
    this.fd = fd;
  }

  /** Creates a VM with TSS, identity map, IRQCHIP and PIT2 in place. */
  static create(kvm: { createVm(): number }): Vm {
    const vm = new Vm(kvm.createVm());
    vm.setup();
    return vm;
  }

  private setup(): void {
    const l = libc();
    check(l.ioctl(this.fd, KVM.SET_TSS_ADDR, BigInt(KVM_TSS_ADDR)), "KVM_SET_TSS_ADDR");
    const id = new BigUint64Array([BigInt(KVM_IDENTITY_MAP_ADDR)]);
    check(
      l.ioctl_buf(this.fd, KVM.SET_IDENTITY_MAP_ADDR, new Uint8Array(id.buffer)),
      "KVM_SET_IDENTITY_MAP_ADDR",
    );
    check(l.ioctl(this.fd, KVM.CREATE_IRQCHIP, 0n), "KVM_CREATE_IRQCHIP");
    const pit = new Uint8Array(SIZE.kvm_pit_config);
    new DataView(pit.buffer).setUint32(0, KVM_PIT_SPEAKER_DUMMY, true);
    check(l.ioctl_buf(this.fd, KVM.CREATE_PIT2, pit), "KVM_CREATE_PIT2");
  }

  /**
   * Registers every RAM region of `mem` as a memory slot; with `logDirty`,
   * KVM logs the pages the guest writes ({@linkcode mergeDirtyLog}).
   */
  mapMemory(mem: GuestMemory, logDirty = false): void {
    const buf = new Uint8Array(SIZE.kvm_userspace_memory_region);
    const dv = new DataView(buf.buffer);
    mem.regions.forEach((r, slot) => {
      dv.setUint32(0, slot, true);
      dv.setUint32(4, logDirty ? KVM_MEM_LOG_DIRTY_PAGES : 0, true);
      dv.setBigUint64(8, BigInt(r.guestAddr), true);
      dv.setBigUint64(16, BigInt(r.size), true);
      dv.setBigUint64(24, mem.hostAddr + BigInt(r.hostOffset), true);
      check(
        libc().ioctl_buf(this.fd, KVM.SET_USER_MEMORY_REGION, buf),
        "KVM_SET_USER_MEMORY_REGION",
      );
    });
  }

  /**
   * Takes KVM's log of the pages the guest wrote since the last call (or
   * since {@linkcode mapMemory} asked for it), clearing it, and ORs it into
   * `mem`'s record of written pages, which is by host offset. The vCPUs
   * should be stopped, or pages they write meanwhile land in the next log.
   */
  mergeDirtyLog(mem: GuestMemory): void {
    const into = mem.dirtyPages;
    const arg = new Uint8Array(SIZE.kvm_dirty_log);
    const dv = new DataView(arg.buffer);
    mem.regions.forEach((r, slot) => {
      const pages = Math.ceil(r.size / 4096);
      // KVM fills whole 64-bit words.
      const bitmap = new Uint32Array(Math.ceil(pages / 64) * 2);
      dv.setUint32(0, slot, true);
      dv.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(bitmap))), true);
      check(libc().ioctl_buf(this.fd, KVM.GET_DIRTY_LOG, arg), "KVM_GET_DIRTY_LOG");
      const first = r.hostOffset / 4096;
      for (let w = 0; w < bitmap.length; w++) {
        for (let bits = bitmap[w]; bits !== 0; bits &= bits - 1) {
          const p = first + w * 32 + (31 - Math.clz32(bits & -bits));
          if (p < first + pages) into[p >>> 5] |= 1 << (p & 31);
        }
      }
    });
  }

  /** Drives an interrupt line of the in-kernel PIC and I/O APIC. */
  setIrqLine(irq: number, level: boolean): void {
    this.irqView.setUint32(0, irq, true);
    this.irqView.setUint32(4, level ? 1 : 0, true);
    check(libc().ioctl_buf(this.fd, KVM.IRQ_LINE, this.irqBuf), "KVM_IRQ_LINE");
  }

  /** KVM_CREATE_VCPU; returns the vCPU fd. */
  createVcpu(id: number): number {
    return check(libc().ioctl(this.fd, KVM.CREATE_VCPU, BigInt(id)), "KVM_CREATE_VCPU");
  }

  #closed = false;

  /** Closes the VM fd (once). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().close(this.fd);
  }
}
