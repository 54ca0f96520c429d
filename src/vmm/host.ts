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
