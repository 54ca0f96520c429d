/**
 * The state KVM keeps per VM rather than per vCPU, saved and put back for
 * snapshots: the in-kernel interrupt controllers (both 8259s and the I/O
 * APIC), the PIT and the kvmclock. Like the vCPUs' parts, each stays in
 * KVM's own layout.
 *
 * @module
 */

import { IRQCHIP, KVM, SIZE } from "../../ffi/kvm.ts";
import { check, libc } from "../../ffi/libc.ts";

/** A VM's saved state, each field a KVM structure's bytes. */
export interface VmState {
  /** `kvm_irqchip` for the master PIC, the slave PIC and the I/O APIC. */
  irqchips: Uint8Array[];
  pit: Uint8Array;
  clock: Uint8Array;
}

const CHIPS = [IRQCHIP.PIC_MASTER, IRQCHIP.PIC_SLAVE, IRQCHIP.IOAPIC];
/** Offset of `kvm_clock_data.flags`. */
const CLOCK_FLAGS = 8;

/**
 * Saves VM `fd`'s interrupt controllers, PIT and clock (every vCPU stopped).
 *
 * @example
 * ```ts ignore
 * import { saveVmState } from "./vm_state.ts";
 * const state = saveVmState(vm.fd);
 * ```
 */
export function saveVmState(fd: number): VmState {
  const irqchips = CHIPS.map((id) => {
    const b = new Uint8Array(SIZE.kvm_irqchip);
    new DataView(b.buffer).setUint32(0, id, true);
    check(libc().ioctl_buf(fd, KVM.GET_IRQCHIP, b), "KVM_GET_IRQCHIP");
    return b;
  });
  const pit = new Uint8Array(SIZE.kvm_pit_state2);
  check(libc().ioctl_buf(fd, KVM.GET_PIT2, pit), "KVM_GET_PIT2");
  const clock = new Uint8Array(SIZE.kvm_clock_data);
  check(libc().ioctl_buf(fd, KVM.GET_CLOCK, clock), "KVM_GET_CLOCK");
  return { irqchips, pit, clock };
}

/** Why `s` cannot be a saved VM state, or undefined. */
export function vmStateProblem(s: Partial<VmState>): string | undefined {
  if (!Array.isArray(s.irqchips) || s.irqchips.length !== CHIPS.length) return "no irqchips";
  for (const [i, b] of s.irqchips.entries()) {
    if (!(b instanceof Uint8Array) || b.length !== SIZE.kvm_irqchip) return "a damaged irqchip";
    if (new DataView(b.buffer, b.byteOffset).getUint32(0, true) !== CHIPS[i]) {
      return "irqchips out of order";
    }
  }
  if (!(s.pit instanceof Uint8Array) || s.pit.length !== SIZE.kvm_pit_state2) return "no PIT";
  if (!(s.clock instanceof Uint8Array) || s.clock.length !== SIZE.kvm_clock_data) return "no clock";
  return undefined;
}

/**
 * Puts a saved state back into VM `fd` (made with its IRQCHIP and PIT2).
 * The clock goes on from the saved value: the guest sees no time pass
 * while it was saved, and never sees its clock go back.
 */
export function restoreVmState(fd: number, s: VmState): void {
  for (const b of s.irqchips) {
    check(libc().ioctl_buf(fd, KVM.SET_IRQCHIP, b.slice()), "KVM_SET_IRQCHIP");
  }
  check(libc().ioctl_buf(fd, KVM.SET_PIT2, s.pit.slice()), "KVM_SET_PIT2");
  const clock = s.clock.slice();
  // Only the clock value: the other fields (realtime, host TSC) are KVM's report.
  new DataView(clock.buffer).setUint32(CLOCK_FLAGS, 0, true);
  check(libc().ioctl_buf(fd, KVM.SET_CLOCK, clock), "KVM_SET_CLOCK");
}
