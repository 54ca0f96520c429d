/**
 * Seccomp ABI for x86_64: include/uapi/linux/seccomp.h, the audit arch
 * from linux/audit.h and linux/elf-em.h, and the x32 marker from
 * asm/unistd.h.
 *
 * @module
 */

/** `seccomp(2)` operation: install a BPF filter. */
export const SECCOMP_SET_MODE_FILTER = 1;
/** `seccomp(2)` operation: ask whether an action is known. */
export const SECCOMP_GET_ACTION_AVAIL = 2;

/** Filter flag: apply to every thread of the process, or name the one that cannot. */
export const SECCOMP_FILTER_FLAG_TSYNC = 1 << 0;
/** Filter flag: log every action but ALLOW. */
export const SECCOMP_FILTER_FLAG_LOG = 1 << 1;

/** `seccomp` mode shown as `Seccomp:` in /proc/PID/status once a filter is on. */
export const SECCOMP_MODE_FILTER = 2;

/** Filter results, most severe first; `>>> 0` keeps them unsigned. */
export const SECCOMP_RET = {
  KILL_PROCESS: 0x80000000 >>> 0,
  KILL_THREAD: 0x00000000,
  TRAP: 0x00030000,
  ERRNO: 0x00050000,
  USER_NOTIF: 0x7fc00000,
  TRACE: 0x7ff00000,
  LOG: 0x7ffc0000,
  ALLOW: 0x7fff0000,
} as const;

/** `SECCOMP_RET_ACTION_FULL`: the action part of a result. */
export const SECCOMP_RET_ACTION_FULL = 0xffff0000 >>> 0;
/** `SECCOMP_RET_DATA`: the errno (or trap data) part of a result. */
export const SECCOMP_RET_DATA = 0x0000ffff;

/**
 * Byte offsets in `struct seccomp_data { int nr; __u32 arch; __u64
 * instruction_pointer; __u64 args[6]; }`, what a filter loads from.
 */
export const SECCOMP_DATA = {
  nr: 0,
  arch: 4,
  instruction_pointer: 8,
  args: 16,
  size: 64,
} as const;

/** `EM_X86_64` (linux/elf-em.h). */
export const EM_X86_64 = 62;
/** `EM_386` (linux/elf-em.h). */
export const EM_386 = 3;
/** `__AUDIT_ARCH_64BIT` (linux/audit.h). */
export const AUDIT_ARCH_64BIT = 0x80000000 >>> 0;
/** `__AUDIT_ARCH_LE` (linux/audit.h). */
export const AUDIT_ARCH_LE = 0x40000000;
/** `AUDIT_ARCH_X86_64`: the only arch the monitor's filter lets through. */
export const AUDIT_ARCH_X86_64 = (EM_X86_64 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE) >>> 0;
/** `AUDIT_ARCH_I386`: what `int 0x80` from a 64-bit process reports. */
export const AUDIT_ARCH_I386 = (EM_386 | AUDIT_ARCH_LE) >>> 0;

/**
 * `__X32_SYSCALL_BIT` (asm/unistd.h): x32 calls arrive with
 * AUDIT_ARCH_X86_64 and this bit in nr, so an arch check alone lets them in.
 */
export const X32_SYSCALL_BIT = 0x40000000;

/** `struct sock_fprog { unsigned short len; struct sock_filter *filter; }` on LP64. */
export const SOCK_FPROG = { len: 0, filter: 8, size: 16 } as const;
