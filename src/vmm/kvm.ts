/**
 * The KVM system handle: `/dev/kvm`, API checks, supported CPUID.
 *
 * @module
 */

import { CAP, CPUID_ENTRY, KVM, KVM_API_VERSION, SIZE } from "../../ffi/kvm.ts";
import { check, errno, libc, O_RDWR, openPath, SysError } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";
import type { CpuidEntry } from "../arch/x86_64/cpuid.ts";
import { VoltError } from "../errors.ts";

/** Where KVM lives. */
export const KVM_PATH = "/dev/kvm";

/** Most CPUID entries we ask KVM for. */
const MAX_CPUID_ENTRIES = 256;

/** Capabilities every VM needs. */
const REQUIRED_CAPS: Array<[keyof typeof CAP, string]> = [
  ["IRQCHIP", "in-kernel interrupt controller"],
  ["USER_MEMORY", "user memory regions"],
  ["SET_TSS_ADDR", "TSS address"],
  ["EXT_CPUID", "KVM_GET_SUPPORTED_CPUID"],
  ["PIT2", "in-kernel PIT"],
  ["IMMEDIATE_EXIT", "immediate exit"],
];

/**
 * An open `/dev/kvm`.
 *
 * @example
 * ```ts ignore
 * import { Kvm } from "./kvm.ts";
 * const kvm = Kvm.open();
 * console.log(kvm.vcpuMmapSize);
 * ```
 */
export class Kvm {
  /** The system fd. */
  readonly fd: number;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Opens KVM (or takes over `inherited`, a descriptor already open on it)
   * and checks its API version and the capabilities we use.
   */
  static open(path = KVM_PATH, inherited?: number): Kvm {
    let fd: number;
    try {
      fd = inherited ?? openPath(path, O_RDWR);
    } catch (e) {
      if (e instanceof SysError) {
        const why = e.code === "ENOENT"
          ? "it does not exist (no KVM on this host, or the kvm module is not loaded)"
          : e.code === "EACCES" || e.code === "EPERM"
          ? "permission denied (add yourself to the kvm group, or run as root)"
          : e.code === "ENODEV" || e.code === "ENXIO"
          ? "no KVM driver is bound to it"
          : e.code;
        throw new VoltError(`Cannot open ${path}: ${why}`, "kvm");
      }
      throw e;
    }
    const kvm = new Kvm(fd);
    const version = libc().ioctl(fd, KVM.GET_API_VERSION, 0n);
    if (version < 0) {
      const code = errnoName(errno());
      libc().close(fd);
      throw new VoltError(
        `${path} is not a KVM device (KVM_GET_API_VERSION failed: ${code})`,
        "kvm",
      );
    }
    if (version !== KVM_API_VERSION) {
      libc().close(fd);
      throw new VoltError(
        `KVM API version ${version} is not supported (need ${KVM_API_VERSION})`,
        "kvm",
      );
    }
    for (const [cap, what] of REQUIRED_CAPS) {
      if (kvm.checkExtension(CAP[cap]) <= 0) {
        libc().close(fd);
        throw new VoltError(`KVM lacks a required capability: ${what}`, "kvm");
      }
    }
    return kvm;
  }

  /** KVM_CHECK_EXTENSION. */
  checkExtension(cap: number): number {
    return libc().ioctl(this.fd, KVM.CHECK_EXTENSION, BigInt(cap));
  }

  /** Size of each vCPU's `kvm_run` mapping. */
  get vcpuMmapSize(): number {
    return check(libc().ioctl(this.fd, KVM.GET_VCPU_MMAP_SIZE, 0n), "KVM_GET_VCPU_MMAP_SIZE");
  }

  /** Largest vCPU count per VM. */
  get maxVcpus(): number {
    const n = this.checkExtension(CAP.MAX_VCPUS);
    return n > 0 ? n : Math.max(this.checkExtension(CAP.NR_VCPUS), 4);
  }

  /** KVM_CREATE_VM; returns the VM fd. */
  createVm(): number {
    return check(libc().ioctl(this.fd, KVM.CREATE_VM, 0n), "KVM_CREATE_VM");
  }

  /** KVM_GET_SUPPORTED_CPUID. */
  supportedCpuid(): CpuidEntry[] {
    const buf = new Uint8Array(SIZE.kvm_cpuid2 + MAX_CPUID_ENTRIES * SIZE.kvm_cpuid_entry2);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, MAX_CPUID_ENTRIES, true);
    check(libc().ioctl_buf(this.fd, KVM.GET_SUPPORTED_CPUID, buf), "KVM_GET_SUPPORTED_CPUID");
    return decodeCpuid(buf);
  }

  /**
   * KVM_GET_MSR_INDEX_LIST: the MSRs KVM keeps per vCPU and can save and
   * restore (what a snapshot holds).
   */
  msrIndexList(): number[] {
    const head = new Uint32Array(1);
    // Asked with room for none, KVM fails with E2BIG and says how many.
    libc().ioctl_buf(this.fd, KVM.GET_MSR_INDEX_LIST, new Uint8Array(head.buffer));
    const list = new Uint32Array(1 + head[0]);
    list[0] = head[0];
    check(
      libc().ioctl_buf(this.fd, KVM.GET_MSR_INDEX_LIST, new Uint8Array(list.buffer)),
      "KVM_GET_MSR_INDEX_LIST",
    );
    return [...list.subarray(1, 1 + list[0])];
  }

  /** Bytes of a vCPU's XSAVE state: KVM_CAP_XSAVE2's size where larger than `kvm_xsave`. */
  get xsaveSize(): number {
    return Math.max(SIZE.kvm_xsave, this.checkExtension(CAP.XSAVE2));
  }

  #closed = false;

  /** Closes the system fd (once; VMs stay valid). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().close(this.fd);
  }
}

/** Decodes a `kvm_cpuid2` buffer. */
export function decodeCpuid(buf: Uint8Array): CpuidEntry[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = dv.getUint32(0, true);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = SIZE.kvm_cpuid2 + i * SIZE.kvm_cpuid_entry2;
    out.push({
      function: dv.getUint32(o + CPUID_ENTRY.function, true),
      index: dv.getUint32(o + CPUID_ENTRY.index, true),
      flags: dv.getUint32(o + CPUID_ENTRY.flags, true),
      eax: dv.getUint32(o + CPUID_ENTRY.eax, true),
      ebx: dv.getUint32(o + CPUID_ENTRY.ebx, true),
      ecx: dv.getUint32(o + CPUID_ENTRY.ecx, true),
      edx: dv.getUint32(o + CPUID_ENTRY.edx, true),
    });
  }
  return out;
}

/** Encodes `[index, value]` pairs as a `kvm_msrs` buffer. */
export function encodeMsrs(
  msrs: ReadonlyArray<readonly [number, bigint]>,
): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(SIZE.kvm_msrs + msrs.length * SIZE.kvm_msr_entry);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, msrs.length, true);
  msrs.forEach(([index, value], i) => {
    const o = SIZE.kvm_msrs + i * SIZE.kvm_msr_entry;
    dv.setUint32(o, index, true);
    dv.setBigUint64(o + 8, value, true);
  });
  return buf;
}

/** Encodes entries as a `kvm_cpuid2` buffer. */
export function encodeCpuid(entries: readonly CpuidEntry[]): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(SIZE.kvm_cpuid2 + entries.length * SIZE.kvm_cpuid_entry2);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const o = SIZE.kvm_cpuid2 + i * SIZE.kvm_cpuid_entry2;
    dv.setUint32(o + CPUID_ENTRY.function, e.function, true);
    dv.setUint32(o + CPUID_ENTRY.index, e.index, true);
    dv.setUint32(o + CPUID_ENTRY.flags, e.flags, true);
    dv.setUint32(o + CPUID_ENTRY.eax, e.eax, true);
    dv.setUint32(o + CPUID_ENTRY.ebx, e.ebx, true);
    dv.setUint32(o + CPUID_ENTRY.ecx, e.ecx, true);
    dv.setUint32(o + CPUID_ENTRY.edx, e.edx, true);
  });
  return buf;
}
