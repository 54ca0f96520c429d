/**
 * The metrics log: a JSON line per period, per flush and at the close;
 * Firecracker's layout from the VM's counters; a write that fails costs
 * a line, never the VM.
 */
import assert from "node:assert/strict";
import { metricsLine, MetricsLog, openMetricsLog } from "../src/vmm/metrics_log.ts";
import type { VmMetrics } from "../src/vmm/machine.ts";
import { VoltError } from "../src/errors.ts";
import { tmpDir } from "./helpers.ts";

const vm = (exits: number): VmMetrics => ({
  state: "running",
  vcpu: { exitIoIn: 1, exitIoOut: exits, exitMmioRead: 0, exitMmioWrite: 0, exitIdle: 2 },
  serialOutBytes: 9,
  devices: [
    { kind: "block", id: "root", stats: { reads: 1, readBytes: 4096 } },
    { kind: "block", stats: { reads: 0 } },
    { kind: "net", id: "tap0", stats: { rxFrames: 3 } },
    { kind: "entropy", stats: {} },
  ],
});

Deno.test("metrics line: Firecracker's sections and snake_case names, devices by id", () => {
  const line = metricsLine({
    vm: () => vm(5),
    phases: () => [{ phase: "first KVM_RUN", ms: 91.23456 }],
    api: () => ({ requests: 4, faults: 1 }),
  }, 123);
  assert.deepEqual(line, {
    utc_timestamp_ms: 123,
    vmm: { state: "running" },
    vcpu: { exit_io_in: 1, exit_io_out: 5, exit_mmio_read: 0, exit_mmio_write: 0, exit_idle: 2 },
    uart: { write_bytes: 9 },
    block_root: { reads: 1, read_bytes: 4096 },
    block1: { reads: 0 },
    net_tap0: { rx_frames: 3 },
    entropy: {},
    api_server: { requests: 4, faults: 1 },
    volt: { boot_phases_ms: { "first KVM_RUN": 91.235 } },
  });
});

Deno.test("metrics log: a line each period, on flush and at the close, appended", async () => {
  const path = `${tmpDir()}/m.jsonl`;
  Deno.writeTextFileSync(path, "earlier line\n");
  let exits = 0;
  const log = new MetricsLog(openMetricsLog(path), { vm: () => vm(++exits), phases: () => [] }, 40);
  await new Promise((r) => setTimeout(r, 150));
  assert.ok(log.flush());
  log.close();
  assert.equal(log.flush(), false, "a closed log writes nothing");
  const lines = Deno.readTextFileSync(path).trim().split("\n");
  assert.equal(lines[0], "earlier line");
  const json = lines.slice(1).map((l) => JSON.parse(l));
  // At least two periods passed, then the flush and the close.
  assert.ok(json.length >= 4, `${json.length} lines`);
  assert.deepEqual(json.map((j) => j.vcpu.exit_io_out), json.map((_, i) => i + 1));
  assert.equal(log.failures, 0);
});

Deno.test("metrics log: a path that cannot be opened is one line; a failed write is counted", () => {
  assert.throws(
    () => openMetricsLog(`${tmpDir()}/no/such/dir/m`),
    (e: unknown) =>
      e instanceof VoltError && /^Cannot open the metrics file .*: ENOENT$/.test(e.message),
  );
  // A device that takes nothing (/dev/full): the write fails, the log goes on.
  const fd = openMetricsLog("/dev/full");
  const log = new MetricsLog(fd, { vm: () => vm(1), phases: () => [] });
  assert.equal(log.flush(), false);
  assert.equal(log.failures, 1);
  assert.equal(log.lastError, "ENOSPC");
  log.close();
});
