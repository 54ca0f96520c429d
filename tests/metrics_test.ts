/**
 * Boot figures: trace times across the jail's re-execution, the
 * --metrics-json document, and the boot benchmark's parsers and reports.
 */
import assert from "node:assert/strict";
import { BootTrace } from "../src/vmm/trace.ts";
import { bootMetrics } from "../src/vmm/metrics.ts";
import { vmExit } from "../src/vmm/exit_reason.ts";
import { summarize } from "../bench/boot/stats.ts";
import { parseSmaps } from "../bench/boot/smaps.ts";
import { firstKvmRunEpoch, qemuArgs } from "../bench/boot/qemu.ts";
import { compareTable, phaseTable, timelineSvg } from "../bench/boot/report.ts";

Deno.test("trace: times count from the given origin (the first runtime's start)", () => {
  const earlier = performance.timeOrigin - 500;
  const marks: string[] = [];
  const t = new BootTrace((m) => marks.push(m.phase), earlier);
  const m = t.mark("runtime up", 0);
  assert.equal(m.ms, 500);
  assert.ok(t.mark("later").ms >= 500);
  assert.deepEqual(marks, ["runtime up", "later"]);
  assert.equal(new BootTrace().mark("x", 7).ms, 7);
});

Deno.test("metrics: VMM init, guest boot time and the guest's share come from the phases", () => {
  const m = bootMetrics({
    origin: 1000,
    phases: [
      { phase: "runtime up", ms: 0 },
      { phase: "first KVM_RUN", ms: 42 },
      { phase: "guest ready", ms: 142.5 },
    ],
    guest: { kernel: "k", memoryMiB: 128, cpus: 1 },
    exit: vmExit("guest-exit", "Guest exited with status 0", 0, 0),
  });
  assert.equal(m.vmmInitMs, 42);
  assert.equal(m.guestBootMs, 142.5);
  assert.equal(m.guestKernelMs, 100.5);
  assert.deepEqual(m.exit, { cause: "guest-exit", code: 0, message: "Guest exited with status 0" });
  const none = bootMetrics({ ...m, phases: [{ phase: "first KVM_RUN", ms: 9 }] });
  assert.equal(none.guestBootMs, undefined);
  assert.equal(none.guestKernelMs, undefined);
});

Deno.test("bench: summaries, smaps and QEMU's KVM_RUN trace", () => {
  assert.deepEqual(summarize([4, 1, 3, 2]), { n: 4, min: 1, median: 2.5, max: 4, spread: 3 });
  assert.throws(() => summarize([]), /No measurements/);
  const smaps = [
    "55d0-55e0 r-xp 00000000 08:01 42 /usr/bin/deno",
    "Size:                 64 kB",
    "Rss:                  60 kB",
    "7f00-8f00 rw-p 00000000 00:00 0 ",
    "Size:             131072 kB",
    "Rss:                9000 kB",
    "VmFlags: rd wr mr mw me ac",
  ].join("\n");
  const maps = parseSmaps(smaps);
  assert.deepEqual(maps.map((m) => [m.name, m.sizeKiB, m.rssKiB]), [
    ["/usr/bin/deno", 64, 60],
    ["", 131072, 9000],
  ]);
  const trace = [
    "77@1700000000.100000:kvm_vcpu_ioctl cpu_index 0, type 0xae9a, arg 0x7ffd",
    "77@1700000000.250500:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)",
  ].join("\n");
  assert.equal(firstKvmRunEpoch(trace), 1700000000250.5);
  assert.equal(firstKvmRunEpoch("no trace here"), undefined);
  const args = qemuArgs({ kernel: "k", initrd: "i", memoryMiB: 256, cpus: 2, cmdline: "c" });
  assert.deepEqual(args.slice(0, 2), ["-M", "microvm"]);
  assert.ok(args.join(" ").includes("-m 256M -smp 2"));
  assert.ok(args.join(" ").includes("-kernel k -append c -initrd i"));
});

Deno.test("bench: the report's tables and timeline", () => {
  const s = summarize([10, 20, 30]);
  const q = summarize([40]);
  const table = compareTable([{ what: "boot", volt: s, qemu: q }]);
  assert.match(
    table,
    /\| boot \| 20\.0 ms \(10\.0 ms – 30\.0 ms, n=3\) \| 40\.0 ms .* \| 0\.50× \|/,
  );
  const phases = [{ phase: "runtime up", ms: 0 }, { phase: "first KVM_RUN", ms: 40 }, {
    phase: "guest ready",
    ms: 90,
  }];
  assert.match(phaseTable(phases), /\| guest ready \| 90\.0 ms \| 50\.0 ms \|/);
  const svg = timelineSvg(phases, "guest ready");
  assert.match(svg, /^<svg /);
  assert.equal(svg.match(/<rect x=/g)?.length, 3);
  assert.equal(svg.match(/fill="#e07b39"/g)?.length, 1, "one guest bar");
});
