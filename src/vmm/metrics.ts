/**
 * `--metrics-json`: the boot phases and the figures derived from them, as
 * one JSON document written when the VM stops.
 *
 * The jailed monitor may open no file, so the outer step opens the output
 * and the monitor inherits the descriptor across `execve`.
 *
 * @module
 */

import meta from "../../deno.json" with { type: "json" };
import { errnoName } from "../../ffi/errno.ts";
import { O_CREAT, O_TRUNC, O_WRONLY } from "../../ffi/fcntl.ts";
import { cstr, errno, libc } from "../../ffi/libc.ts";
import { VoltError } from "../errors.ts";
import type { VmExit } from "./exit_reason.ts";
import { FIRST_RUN_PHASE, GUEST_READY_PHASE, type Mark } from "./trace.ts";

/** What `--metrics-json` writes. */
export interface BootMetrics {
  /** Volt's version. */
  volt: string;
  /** Epoch ms of time zero: the start of the first runtime of the run. */
  origin: number;
  /** Every phase, in ms since `origin`. */
  phases: Mark[];
  /** Time zero to the first KVM_RUN. */
  vmmInitMs?: number;
  /** Time zero to volt-init's write to the boot-timer port: the guest boot time. */
  guestBootMs?: number;
  /** The guest's own share: first KVM_RUN to the boot-timer write. */
  guestKernelMs?: number;
  /** The VM that ran. */
  guest: { kernel: string; initrd?: string; memoryMiB: number; cpus: number };
  /** How it ended. */
  exit: { cause: string; code: number; message: string };
  /** The VM's counters as it stopped (vCPU exits, devices and their queues' indices). */
  vm?: unknown;
}

/**
 * Collects the metrics of a finished run.
 *
 * @example
 * ```ts
 * import { bootMetrics } from "./metrics.ts";
 * const m = bootMetrics({
 *   origin: 0,
 *   phases: [{ phase: "first KVM_RUN", ms: 40 }, { phase: "guest ready", ms: 140 }],
 *   guest: { kernel: "vmlinux", memoryMiB: 128, cpus: 1 },
 *   exit: { cause: "guest-exit", code: 0, message: "Guest exited with status 0" },
 * });
 * m.guestKernelMs; // 100
 * ```
 */
export function bootMetrics(
  run: Pick<BootMetrics, "origin" | "phases" | "guest" | "vm"> & {
    exit: VmExit | BootMetrics["exit"];
  },
): BootMetrics {
  const at = (phase: string) => run.phases.find((m) => m.phase === phase)?.ms;
  const first = at(FIRST_RUN_PHASE);
  const ready = at(GUEST_READY_PHASE);
  return {
    volt: meta.version,
    origin: run.origin,
    phases: run.phases,
    vmmInitMs: first,
    guestBootMs: ready,
    guestKernelMs: first !== undefined && ready !== undefined ? ready - first : undefined,
    guest: run.guest,
    exit: { cause: run.exit.cause, code: run.exit.code, message: run.exit.message },
    ...(run.vm === undefined ? {} : { vm: run.vm }),
  };
}

/**
 * Opens (creating or truncating) the metrics file for a descriptor that
 * survives `execve`, before the jail takes file access away.
 *
 * @example
 * ```ts ignore
 * import { openMetricsFile } from "./metrics.ts";
 * const fd = openMetricsFile("boot.json");
 * ```
 */
export function openMetricsFile(path: string): number {
  // No O_CLOEXEC: the jailed monitor writes through this descriptor.
  const fd = libc().open(cstr(path), O_WRONLY | O_CREAT | O_TRUNC, 0o644);
  if (fd < 0) {
    throw new VoltError(`Cannot write metrics to ${path}: ${errnoName(errno())}`, "cantCreate");
  }
  return fd;
}

/**
 * Writes `metrics` as JSON to `fd` and closes it.
 *
 * @example
 * ```ts ignore
 * import { bootMetrics, writeMetrics } from "./metrics.ts";
 * writeMetrics(fd, bootMetrics(run));
 * ```
 */
export function writeMetrics(fd: number, metrics: BootMetrics): void {
  const l = libc();
  let bytes = new TextEncoder().encode(`${JSON.stringify(metrics, null, 2)}\n`);
  try {
    while (bytes.length) {
      const n = Number(l.write(fd, bytes, BigInt(bytes.length)));
      if (n <= 0) {
        throw new VoltError(`Writing the metrics failed: ${errnoName(errno())}`, "cantCreate");
      }
      bytes = bytes.subarray(n);
    }
  } finally {
    l.close(fd);
  }
}
