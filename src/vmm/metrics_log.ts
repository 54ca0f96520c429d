/**
 * Firecracker-style metrics: one JSON line per flush to a descriptor the
 * outer step opened (`metrics.metrics_path`), every 60 s, on the API's
 * `FlushMetrics` and once more when the VM ends. Counters are totals since
 * the VM was made (Firecracker's reset at each flush; a reader takes the
 * difference of two lines).
 *
 * @module
 */

import { cstr, errno, libc } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";
import { O_APPEND, O_CREAT, O_WRONLY } from "../../ffi/fcntl.ts";
import { VoltError } from "../errors.ts";
import type { VmMetrics } from "./machine.ts";
import type { Mark } from "./trace.ts";

/** How often a line is written unless asked sooner (Firecracker's period). */
export const METRICS_PERIOD_MS = 60_000;

/**
 * Opens Firecracker's `metrics_path` for appending (a file made if
 * missing, or a FIFO someone reads), inheritable: the jailed monitor
 * writes through the descriptor.
 */
export function openMetricsLog(path: string): number {
  const fd = libc().open(cstr(path), O_WRONLY | O_CREAT | O_APPEND, 0o644);
  if (fd < 0) {
    throw new VoltError(
      `Cannot open the metrics file ${path}: ${errnoName(errno())}`,
      "cantCreate",
    );
  }
  return fd;
}

/** What one line is made from. */
export interface MetricsSources {
  vm(): VmMetrics;
  /** The boot phases so far. */
  phases(): readonly Mark[];
  /** The API server's counters, if there is one. */
  api?(): { requests: number; faults: number };
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const snakeKeys = (o: Record<string, number>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [snake(k), v]));

/**
 * One metrics line's object.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { metricsLine } from "./metrics_log.ts";
 * const line = metricsLine({
 *   vm: () => ({
 *     state: "running",
 *     vcpu: { exitIoIn: 1, exitIoOut: 2, exitMmioRead: 3, exitMmioWrite: 4, exitIdle: 5 },
 *     serialOutBytes: 6,
 *     devices: [{ kind: "block", id: "root", stats: { readBytes: 512 } }],
 *   }),
 *   phases: () => [{ phase: "first KVM_RUN", ms: 90 }],
 * }, 1000);
 * assert.equal((line.block_root as Record<string, number>).read_bytes, 512);
 * assert.equal((line.vcpu as Record<string, number>).exit_io_out, 2);
 * ```
 */
export function metricsLine(src: MetricsSources, now = Date.now()): Record<string, unknown> {
  const m = src.vm();
  const line: Record<string, unknown> = {
    utc_timestamp_ms: now,
    vmm: { state: m.state },
    vcpu: snakeKeys(m.vcpu),
    uart: { write_bytes: m.serialOutBytes },
  };
  const seen = new Map<string, number>();
  for (const d of m.devices) {
    // block_<id>, net_<tap>; a device without a name takes its index among its kind.
    const n = seen.get(d.kind) ?? 0;
    seen.set(d.kind, n + 1);
    const name = d.id === undefined ? (n === 0 ? d.kind : `${d.kind}${n}`) : `${d.kind}_${d.id}`;
    line[name] = snakeKeys(d.stats);
  }
  if (src.api) line.api_server = src.api();
  line.volt = {
    boot_phases_ms: Object.fromEntries(src.phases().map((p) => [p.phase, +p.ms.toFixed(3)])),
  };
  return line;
}

/**
 * Writes metrics lines to `fd` (owned from here on): every
 * {@linkcode METRICS_PERIOD_MS}, on {@linkcode flush}, and a last one on
 * {@linkcode close}. A write that fails (a full pipe, a closed FIFO) drops
 * that line rather than block or stop the VM; {@linkcode failures} counts
 * them.
 *
 * @example
 * ```ts ignore
 * const log = new MetricsLog(fd, { vm: () => machine.metrics(), phases: () => machine.trace.marks });
 * log.flush();
 * log.close();
 * ```
 */
export class MetricsLog {
  readonly #fd: number;
  readonly #src: MetricsSources;
  readonly #timer: ReturnType<typeof setInterval>;
  #closed = false;
  /** Lines that could not be written whole. */
  failures = 0;
  /** Why the last write failed, if one did. */
  lastError?: string;

  constructor(fd: number, src: MetricsSources, periodMs = METRICS_PERIOD_MS) {
    this.#fd = fd;
    this.#src = src;
    this.#timer = setInterval(() => this.flush(), periodMs);
    Deno.unrefTimer(this.#timer);
  }

  /** Writes one line now; false if it could not be written. */
  flush(): boolean {
    if (this.#closed) return false;
    const bytes = new TextEncoder().encode(`${JSON.stringify(metricsLine(this.#src))}\n`);
    const n = Number(libc().write(this.#fd, bytes, BigInt(bytes.length)));
    if (n === bytes.length) return true;
    this.failures++;
    this.lastError = n < 0 ? errnoName(errno()) : `${n} of ${bytes.length} bytes`;
    return false;
  }

  /** Writes the last line and closes the descriptor. */
  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
    clearInterval(this.#timer);
    libc().close(this.#fd);
  }
}
