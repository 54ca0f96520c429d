/**
 * Facts about the host's KVM that change how a guest is set up.
 *
 * @module
 */

/** Present when the host's KVM is PVM (a software nested hypervisor). */
export const PVM_MODULE_PATH = "/sys/module/kvm_pvm";

/**
 * True when `/dev/kvm` is served by PVM, whose instruction emulator lacks
 * some instructions (DESIGN.md §5).
 *
 * @example
 * ```ts
 * import { isPvmHost } from "./host.ts";
 * console.log(isPvmHost());
 * ```
 */
export function isPvmHost(path = PVM_MODULE_PATH): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/**
 * True when this host's CPU is QEMU's TCG emulator (the nested helper VM):
 * its KVM does not see a guest's XSETBV (DESIGN.md §5). Unknown (no read
 * permission) counts as not.
 *
 * @example
 * ```ts
 * import { isTcgHost } from "./host.ts";
 * console.log(isTcgHost("model name\t: QEMU TCG CPU version 2.5+\n")); // true
 * ```
 */
export function isTcgHost(cpuinfo?: string): boolean {
  try {
    cpuinfo ??= Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    return false;
  }
  return /^model name\s*:\s*QEMU TCG CPU/m.test(cpuinfo);
}

/**
 * The three kinds of host Volt runs on (DESIGN.md §5): hardware KVM (guests
 * run natively, userspace included), PVM (the kernel of a guest runs, its
 * userspace cannot), and none (no usable /dev/kvm: only the nested helper
 * VM has a KVM).
 *
 * @example
 * ```ts
 * import type { HostKind } from "./host.ts";
 * const kind: HostKind = "pvm";
 * ```
 */
export type HostKind = "hardware" | "pvm" | "none";

/**
 * This host's kind: `none` when `kvm` does not open for reading and
 * writing, `pvm` when PVM serves it, else `hardware`.
 *
 * @example
 * ```ts
 * import { hostKind } from "./host.ts";
 * console.log(["hardware", "pvm", "none"].includes(hostKind())); // true
 * ```
 */
export function hostKind(kvm = "/dev/kvm", pvmPath = PVM_MODULE_PATH): HostKind {
  try {
    Deno.openSync(kvm, { read: true, write: true }).close();
  } catch {
    return "none";
  }
  return isPvmHost(pvmPath) ? "pvm" : "hardware";
}

/**
 * How a kind is named to users.
 *
 * @example
 * ```ts
 * import { hostKindLabel } from "./host.ts";
 * console.log(hostKindLabel("pvm")); // "PVM"
 * ```
 */
export function hostKindLabel(kind: HostKind): string {
  return { hardware: "hardware KVM", pvm: "PVM", none: "no /dev/kvm" }[kind];
}
