/**
 * QEMU's `microvm` machine, the peer Volt is measured against: same
 * kernel, initramfs, memory, vCPUs and command line.
 *
 * @module
 */

import type { HostKind } from "./plan.ts";
import { isTcgHost } from "../../src/vmm/host.ts";

/** The QEMU binary (Debian's qemu-system-x86). */
export const QEMU = "qemu-system-x86_64";

/** What to boot. */
export interface QemuGuest {
  kernel: string;
  initrd?: string;
  memoryMiB: number;
  cpus: number;
  cmdline: string;
  /** The `-cpu` model (default `host`); see {@linkcode qemuCpu}. */
  cpu?: string;
  /** Log every vCPU ioctl with a wall-clock timestamp (for exec → first KVM_RUN). */
  traceVcpuIoctls?: boolean;
}

/**
 * The command line of a microvm boot with the console on stdout and no
 * other device.
 *
 * @example
 * ```ts
 * import { qemuArgs } from "./qemu.ts";
 * qemuArgs({ kernel: "vmlinux", memoryMiB: 128, cpus: 1, cmdline: "console=ttyS0" });
 * ```
 */
export function qemuArgs(g: QemuGuest): string[] {
  const args = [
    "-M",
    "microvm",
    "-enable-kvm",
    "-cpu",
    g.cpu ?? "host",
    "-m",
    `${g.memoryMiB}M`,
    "-smp",
    String(g.cpus),
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-serial",
    "stdio",
    "-no-reboot",
    "-kernel",
    g.kernel,
    "-append",
    g.cmdline,
  ];
  if (g.initrd) args.push("-initrd", g.initrd);
  if (g.traceVcpuIoctls) args.push("-trace", "kvm_vcpu_ioctl", "-msg", "timestamp=on");
  return args;
}

/**
 * The `-cpu` model that starts on a host of `kind`. On PVM, QEMU's `host`
 * model fails to set IA32_ARCH_CAPABILITIES (`failed to set MSR 0x10a`),
 * so that feature goes. Masking more here would not help: PVM guests see
 * the host's CPUID whatever QEMU sets (DESIGN.md §5), which is why the
 * guest's command line carries the masks instead.
 *
 * Under QEMU's TCG (the helper VM) XSAVE goes, as Volt's `nested-tcg`
 * template hides it: that KVM does not track a nested guest's XCR0.
 *
 * @example
 * ```ts
 * import { qemuCpu } from "./qemu.ts";
 * qemuCpu("pvm"); // "host,-arch-capabilities"
 * qemuCpu("hardware", true); // "host,-xsave"
 * ```
 */
export function qemuCpu(kind: HostKind, tcg = kind === "hardware" && isTcgHost()): string {
  if (kind === "pvm") return "host,-arch-capabilities";
  return tcg ? "host,-xsave" : "host";
}

/** KVM_RUN = _IO(KVMIO, 0x80), as QEMU's trace prints it. */
const KVM_RUN_TYPE = "0xae80";

/**
 * The wall-clock time (epoch ms) of QEMU's first KVM_RUN, from its
 * `kvm_vcpu_ioctl` trace with timestamps (`PID@SEC.USEC:kvm_vcpu_ioctl
 * cpu_index 0, type 0xae80, ...`).
 *
 * @example
 * ```ts
 * import { firstKvmRunEpoch } from "./qemu.ts";
 * firstKvmRunEpoch("12@1700000000.250000:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)");
 * // 1700000000250
 * ```
 */
export function firstKvmRunEpoch(trace: string): number | undefined {
  for (const line of trace.split("\n")) {
    const m = /^\d+@(\d+)\.(\d+):kvm_vcpu_ioctl .*type (0x[0-9a-f]+)/.exec(line);
    if (m && m[3] === KVM_RUN_TYPE) return Number(m[1]) * 1000 + Number(m[2]) / 1000;
  }
  return undefined;
}
