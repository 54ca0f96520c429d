/**
 * Messages between the main thread and the vCPU workers.
 *
 * @module
 */

import type { ConsoleMode } from "./console_filter.ts";
import type { DeviceSpec } from "./device_manager.ts";
import type { VmExit } from "./exit_reason.ts";

/** Where the guest console goes. */
export type ConsoleSink = "stdout" | "message" | "none";

/** Main → worker: everything a vCPU needs to run. */
export interface VcpuStart {
  type: "start";
  id: number;
  fd: number;
  vmFd: number;
  runAddr: bigint;
  runSize: number;
  memAddr: bigint;
  memSize: number;
  /** The VM's devices; this thread builds its view of each. */
  devices: DeviceSpec[];
  ctl: SharedArrayBuffer;
  /** Every vCPU's counters (see VCPU_STAT in vcpu_loop.ts). */
  stats: SharedArrayBuffer;
  console: ConsoleSink;
  /** Console bytes for `message` mode. */
  consoleRing: SharedArrayBuffer;
  /** How `stdout` console bytes reach a terminal (auto already resolved). */
  consoleMode: ConsoleMode;
  /** The host is PVM: watch for the userspace fault it causes. */
  pvm: boolean;
  /** A seccomp filter (`sock_filter` bytes) this thread stacks right before its first KVM_RUN. */
  vcpuFilter?: VcpuFilter;
}

/** The vCPU thread's own seccomp filter. */
export interface VcpuFilter {
  /** Encoded `sock_filter` instructions. */
  program: Uint8Array<ArrayBuffer>;
  /** Log instead of kill (calibration): the kernel logs every non-ALLOW verdict. */
  log: boolean;
}

/** Worker → main. */
export type VcpuEvent =
  | { type: "loaded" }
  /** Devices are wired; `at` (epoch ms) is right before the first KVM_RUN. */
  | { type: "running"; tid: number; at: number }
  | { type: "ready"; at: number }
  | { type: "exit"; exit: VmExit };
