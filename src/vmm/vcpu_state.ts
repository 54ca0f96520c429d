/**
 * A vCPU's whole state as KVM keeps it, saved and put back for snapshots:
 * registers, segment registers, XSAVE (x87, SSE, AVX), XCRs, MSRs (TSC and
 * kvmclock among them), the local APIC, pending events, the MP state and
 * the debug registers. Each part stays in KVM's own layout: the monitor
 * reads none of it, and the same host's KVM takes it back as it gave it.
 *
 * @module
 */

import { KVM, SIZE } from "../../ffi/kvm.ts";
import { check, libc } from "../../ffi/libc.ts";
import { VoltError } from "../errors.ts";
import { encodeMsrs } from "./kvm.ts";

/** One vCPU's saved state, each field a KVM structure's bytes. */
export interface VcpuState {
  regs: Uint8Array;
  sregs: Uint8Array;
  xsave: Uint8Array;
  xcrs: Uint8Array;
  /** A `kvm_msrs` with every MSR that could be read. */
  msrs: Uint8Array;
  lapic: Uint8Array;
  events: Uint8Array;
  mpState: Uint8Array;
  debugregs: Uint8Array;
}

/** The parts of {@linkcode VcpuState}, in the order they are put back. */
export const VCPU_STATE_PARTS = [
  "mpState",
  "regs",
  "sregs",
  "xsave",
  "xcrs",
  "debugregs",
  "lapic",
  "msrs",
  "events",
] as const satisfies ReadonlyArray<keyof VcpuState>;

function get(fd: number, req: number, size: number, what: string): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(size);
  check(libc().ioctl_buf(fd, req, buf), what);
  return buf;
}

/**
 * Reads the MSRs in `indices` from vCPU `fd` into one `kvm_msrs`. KVM stops
 * at the first it cannot read (one the vCPU's CPUID does not offer), so
 * each such MSR is left out and the read goes on past it.
 */
function readMsrs(fd: number, indices: readonly number[]): Uint8Array<ArrayBuffer> {
  const entry = SIZE.kvm_msr_entry, head = SIZE.kvm_msrs;
  const got: Array<[number, bigint]> = [];
  let rest = [...indices];
  while (rest.length > 0) {
    const buf = new Uint8Array(head + rest.length * entry);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, rest.length, true);
    rest.forEach((index, i) => dv.setUint32(head + i * entry, index, true));
    const n = check(libc().ioctl_buf(fd, KVM.GET_MSRS, buf), "KVM_GET_MSRS");
    for (let i = 0; i < n; i++) {
      got.push([rest[i], dv.getBigUint64(head + i * entry + 8, true)]);
    }
    rest = rest.slice(n + 1);
  }
  return encodeMsrs(got);
}

/**
 * Saves vCPU `fd`'s state. The vCPU must be out of KVM_RUN, with any port
 * or MMIO access it exited on completed (a KVM_RUN with `immediate_exit`).
 *
 * @example
 * ```ts ignore
 * import { saveVcpu } from "./vcpu_state.ts";
 * const state = saveVcpu(cpu.fd, kvm.msrIndexList(), kvm.xsaveSize);
 * ```
 */
export function saveVcpu(fd: number, msrIndices: readonly number[], xsaveSize: number): VcpuState {
  return {
    regs: get(fd, KVM.GET_REGS, SIZE.kvm_regs, "KVM_GET_REGS"),
    sregs: get(fd, KVM.GET_SREGS, SIZE.kvm_sregs, "KVM_GET_SREGS"),
    xsave: xsaveSize > SIZE.kvm_xsave
      ? get(fd, KVM.GET_XSAVE2, xsaveSize, "KVM_GET_XSAVE2")
      : get(fd, KVM.GET_XSAVE, SIZE.kvm_xsave, "KVM_GET_XSAVE"),
    xcrs: get(fd, KVM.GET_XCRS, SIZE.kvm_xcrs, "KVM_GET_XCRS"),
    msrs: readMsrs(fd, msrIndices),
    lapic: get(fd, KVM.GET_LAPIC, SIZE.kvm_lapic_state, "KVM_GET_LAPIC"),
    events: get(fd, KVM.GET_VCPU_EVENTS, SIZE.kvm_vcpu_events, "KVM_GET_VCPU_EVENTS"),
    mpState: get(fd, KVM.GET_MP_STATE, SIZE.kvm_mp_state, "KVM_GET_MP_STATE"),
    debugregs: get(fd, KVM.GET_DEBUGREGS, SIZE.kvm_debugregs, "KVM_GET_DEBUGREGS"),
  };
}

/** The size each part must have, `xsave` at least. */
function expectedSize(part: keyof VcpuState): number {
  return {
    regs: SIZE.kvm_regs,
    sregs: SIZE.kvm_sregs,
    xsave: SIZE.kvm_xsave,
    xcrs: SIZE.kvm_xcrs,
    msrs: SIZE.kvm_msrs,
    lapic: SIZE.kvm_lapic_state,
    events: SIZE.kvm_vcpu_events,
    mpState: SIZE.kvm_mp_state,
    debugregs: SIZE.kvm_debugregs,
  }[part];
}

/**
 * Why `s` cannot be a saved vCPU state (a part missing or of the wrong
 * size, an MSR count that overruns its bytes), or undefined.
 */
export function vcpuStateProblem(s: Partial<VcpuState>, xsaveSize: number): string | undefined {
  for (const part of VCPU_STATE_PARTS) {
    const b = s[part];
    if (!(b instanceof Uint8Array)) return `no ${part}`;
    const want = part === "xsave" ? xsaveSize : expectedSize(part);
    if (part === "msrs") {
      const n = b.length >= 4 ? new DataView(b.buffer, b.byteOffset).getUint32(0, true) : -1;
      if (b.length !== SIZE.kvm_msrs + n * SIZE.kvm_msr_entry) return "a damaged MSR list";
    } else if (b.length !== want) {
      return `${part} of ${b.length} bytes, not ${want}`;
    }
  }
  return undefined;
}

/**
 * Puts a saved state back into vCPU `fd`, whose CPUID is already set. The
 * order follows what each part depends on: the MP state and registers,
 * then the APIC before the MSRs (the TSC deadline needs the APIC's timer
 * mode), and pending events last.
 */
export function restoreVcpu(fd: number, s: VcpuState): void {
  const put = (req: number, b: Uint8Array, what: string) =>
    check(libc().ioctl_buf(fd, req, b.slice() as Uint8Array<ArrayBuffer>), what);
  put(KVM.SET_MP_STATE, s.mpState, "KVM_SET_MP_STATE");
  put(KVM.SET_REGS, s.regs, "KVM_SET_REGS");
  put(KVM.SET_SREGS, s.sregs, "KVM_SET_SREGS");
  put(KVM.SET_XSAVE, s.xsave, "KVM_SET_XSAVE");
  put(KVM.SET_XCRS, s.xcrs, "KVM_SET_XCRS");
  put(KVM.SET_DEBUGREGS, s.debugregs, "KVM_SET_DEBUGREGS");
  put(KVM.SET_LAPIC, s.lapic, "KVM_SET_LAPIC");
  const want = new DataView(s.msrs.buffer, s.msrs.byteOffset).getUint32(0, true);
  const n = put(KVM.SET_MSRS, s.msrs, "KVM_SET_MSRS");
  if (n !== want) {
    const index = new DataView(s.msrs.buffer, s.msrs.byteOffset)
      .getUint32(SIZE.kvm_msrs + n * SIZE.kvm_msr_entry, true);
    throw new VoltError(
      `This host's KVM refuses the snapshot's MSR 0x${index.toString(16)}`,
      "kvm",
    );
  }
  put(KVM.SET_VCPU_EVENTS, s.events, "KVM_SET_VCPU_EVENTS");
}
