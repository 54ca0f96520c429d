/**
 * `clone(2)` flags (include/uapi/linux/sched.h) the seccomp policy checks.
 *
 * @module
 */

/** Flags that create namespaces: a monitor never needs them after start-up. */
export const CLONE_NEW = {
  TIME: 0x00000080,
  NS: 0x00020000,
  CGROUP: 0x02000000,
  UTS: 0x04000000,
  IPC: 0x08000000,
  USER: 0x10000000,
  PID: 0x20000000,
  NET: 0x40000000,
} as const;

/** Every `CLONE_NEW*` bit at once. */
export const CLONE_NEW_MASK = Object.values(CLONE_NEW).reduce((a, b) => a | b, 0) >>> 0;

/** Share the address space: set for threads. */
export const CLONE_VM = 0x00000100;
/** Same thread group: what `pthread_create` asks for. */
export const CLONE_THREAD = 0x00010000;
/** Share signal handlers: `CLONE_THREAD` requires it. */
export const CLONE_SIGHAND = 0x00000800;
