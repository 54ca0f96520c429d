/**
 * MSR values a vCPU starts with (as Firecracker and QEMU set them).
 *
 * @module
 */

/** MSR indices (arch/x86/include/asm/msr-index.h). */
export const MSR = {
  IA32_SYSENTER_CS: 0x174,
  IA32_SYSENTER_ESP: 0x175,
  IA32_SYSENTER_EIP: 0x176,
  IA32_TSC: 0x10,
  IA32_MISC_ENABLE: 0x1a0,
  MTRR_DEF_TYPE: 0x2ff,
  STAR: 0xc0000081,
  LSTAR: 0xc0000082,
  CSTAR: 0xc0000083,
  SYSCALL_MASK: 0xc0000084,
  KERNEL_GS_BASE: 0xc0000102,
} as const;

const MISC_ENABLE_FAST_STRING = 1n;
const MTRR_ENABLE = 0x800n;
const MTRR_TYPE_WRBACK = 6n;

/**
 * The boot MSR list.
 *
 * @example
 * ```ts
 * import { bootMsrs } from "./msr.ts";
 * bootMsrs().length; // 11
 * ```
 */
export function bootMsrs(): Array<[number, bigint]> {
  return [
    [MSR.IA32_SYSENTER_CS, 0n],
    [MSR.IA32_SYSENTER_ESP, 0n],
    [MSR.IA32_SYSENTER_EIP, 0n],
    [MSR.STAR, 0n],
    [MSR.CSTAR, 0n],
    [MSR.KERNEL_GS_BASE, 0n],
    [MSR.SYSCALL_MASK, 0n],
    [MSR.LSTAR, 0n],
    [MSR.IA32_TSC, 0n],
    [MSR.IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING],
    [MSR.MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRBACK],
  ];
}
