/**
 * Warm start against cold starts, side by side, rounds alternating:
 *
 * - QEMU microvm, cold: spawn → first KVM_RUN (its `kvm_vcpu_ioctl` trace);
 * - Volt, cold: `volt run` (the bundle, every sandbox layer) spawn → first
 *   KVM_RUN (its trace);
 * - Volt, warm (`volt pool`): the client's start request → the first
 *   KVM_RUN of the pool monitor that took it, and accept → first KVM_RUN;
 * - the library, warm: `Machine.start()` on a VM `Machine.create` made
 *   ahead in this process → its first KVM_RUN.
 *
 * Same kernel, initramfs, memory and vCPUs for all. Only the monitors' own
 * work is timed, so it runs here on every host with /dev/kvm (PVM included);
 * without /dev/kvm, in the helper VM. Issue 15's warm-start goal: at most a
 * quarter of QEMU's cold start.
 *
 * Usage: deno task bench:pool [--runs N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ensureDefaultGuest } from "../src/guest/default_guest.ts";
import { hostKind } from "../src/vmm/host.ts";
import { Machine } from "../src/vmm/machine.ts";
import { FIRST_RUN_PHASE } from "../src/vmm/trace.ts";
import { libc, O_RDWR, openInheritable } from "../ffi/libc.ts";
import { SHUT_WR } from "../ffi/socket.ts";
import { type PoolResult, readLine, requestStart, wallClockMs } from "../src/control/pool.ts";
import { firstKvmRunEpoch, QEMU, qemuArgs, qemuCpu } from "./boot/qemu.ts";
import { guestCmdline } from "./boot/plan.ts";
import { runUntil } from "./boot/process.ts";
import { publish, summarize } from "./boot/stats.ts";
import {
  buildBundle,
  monitorSideHere,
  parseRuns,
  PoolConsole,
  startPool,
  userspaceHere,
} from "./boot/userspace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const VOLT = `${ROOT}/dist/volt`;
const say = (s: string) => console.error(`bench:pool: ${s}`);
const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "10" },
    "to-ready": { type: "boolean" },
    nested: { type: "boolean" },
  },
  strict: true,
});
const runs = parseRuns("bench:pool", values.runs);
const kind = hostKind();
// --to-ready times the boot to the guest's READY, which needs guest userspace.
const toReady = values["to-ready"] === true;
const where = toReady
  ? await userspaceHere("bench:pool", "pool.ts", Deno.args, values.nested)
  : await monitorSideHere("bench:pool", "pool.ts", Deno.args, values.nested);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

buildBundle();
const guest = await ensureDefaultGuest(say);
const vmFlags = ["--kernel", guest.kernel, "--initrd", guest.initrd, "--memory", "128M"];
const dir = Deno.makeTempDirSync({ prefix: "volt-bench-pool-" });
/** QEMU's side of every figure: the same guest, memory and vCPUs as `vmFlags`. */
const qemuGuest = (traceVcpuIoctls: boolean) =>
  qemuArgs({
    kernel: guest.kernel,
    initrd: guest.initrd,
    memoryMiB: 128,
    cpus: 1,
    cmdline: guestCmdline(kind),
    cpu: qemuCpu(kind),
    traceVcpuIoctls,
  });

async function qemuCold(): Promise<number | undefined> {
  const r = await runUntil(QEMU, qemuGuest(true), "", {
    timeoutMs: 60_000,
    killAtMarker: true,
    stderrMarker: "type 0xae80",
  });
  const first = firstKvmRunEpoch(r.stderr);
  return first === undefined ? undefined : first - r.spawnEpoch;
}

async function voltCold(): Promise<number | undefined> {
  const file = `${dir}/metrics.json`;
  const r = await runUntil(
    VOLT,
    ["run", "--native", ...vmFlags, "--log-level", "trace", "--metrics-json", file],
    "",
    {
      timeoutMs: 60_000,
      killAtMarker: true,
      stopSignal: "SIGTERM",
      stderrMarker: ` ms ${FIRST_RUN_PHASE}`,
    },
  );
  const text = Deno.readTextFileSync(file);
  if (!text) return undefined;
  const m = JSON.parse(text) as { origin: number; vmmInitMs?: number };
  return m.vmmInitMs === undefined ? undefined : m.origin + m.vmmInitMs - r.spawnEpoch;
}

/** One start from the pool; the VM is stopped (the client shuts its end) once it ran. */
async function voltWarm(sock: string): Promise<{ request: number; accept: number } | undefined> {
  const nul = openInheritable("/dev/null", O_RDWR);
  try {
    const sent = wallClockMs();
    const conn = requestStart(sock, [nul, nul, nul]);
    try {
      const first = JSON.parse(readLine(conn, 30_000) ?? "{}");
      if (!first.accepted) throw new Error(`pool: ${JSON.stringify(first)}`);
      await sleep(200);
      libc().shutdown(conn, SHUT_WR);
      const line = readLine(conn, 30_000);
      const r = line === undefined ? undefined : JSON.parse(line) as PoolResult;
      if (r?.first_run_at === undefined) return undefined;
      return { request: r.first_run_at - sent, accept: r.first_run_at - r.accepted_at };
    } finally {
      libc().close(conn);
    }
  } finally {
    libc().close(nul);
  }
}

/** The library: a VM made ahead in this process, then started. */
async function libraryWarm(): Promise<number | undefined> {
  const vm = await Machine.create({
    kernel: guest.kernel,
    initrd: guest.initrd,
    memory: "128M",
    console: "message",
  });
  try {
    const t = performance.now();
    vm.start();
    for (let i = 0; i < 500; i++) {
      const m = vm.trace.marks.find((m) => m.phase === FIRST_RUN_PHASE);
      if (m) return m.ms - t;
      await sleep(2);
    }
    return undefined;
  } finally {
    vm.stop();
    await vm.wait();
    await vm.settled();
    vm.cleanup();
  }
}

const sock = `${dir}/pool.sock`;
const pool = await startPool(["--socket", sock, "--size", "2", ...vmFlags], {
  program: [VOLT],
  timeoutMs: 300_000,
});
if (toReady) {
  await bootToReady();
  Deno.exit(0);
}

/** Boot to READY: QEMU and Volt cold, and Volt from the pool (the request → READY). */
async function bootToReady(): Promise<void> {
  const READY = "VOLT VM READY";
  const qemuArgv = qemuGuest(false);
  const t: Record<string, number[]> = { qemu: [], cold: [], pool: [] };
  try {
    for (let i = 1; i <= runs; i++) {
      say(`boot to READY, round ${i}/${runs}`);
      const order = i % 2 ? ["qemu", "volt"] : ["volt", "qemu"];
      for (const who of order) {
        if (who === "qemu") {
          const r = await runUntil(QEMU, qemuArgv, READY, {
            timeoutMs: 300_000,
            killAtMarker: true,
          });
          if (r.markerMs !== undefined) t.qemu.push(r.markerMs);
          continue;
        }
        const c = await runUntil(VOLT, ["run", "--native", ...vmFlags], READY, {
          timeoutMs: 300_000,
          killAtMarker: true,
        });
        if (c.markerMs !== undefined) t.cold.push(c.markerMs);
        const p = new PoolConsole(sock, 300_000);
        try {
          t.pool.push(await p.until(READY));
        } finally {
          await p.kill();
        }
        say(
          `QEMU ${t.qemu.at(-1)?.toFixed(0)}, Volt cold ${c.markerMs?.toFixed(0)}, pool ${
            t.pool.at(-1)?.toFixed(0)
          } ms`,
        );
      }
    }
  } finally {
    pool.child.kill("SIGTERM");
    await pool.child.status;
  }
  const q = summarize(t.qemu).median;
  const row = (label: string, xs: number[]) => {
    const m = summarize(xs).median;
    return `| ${label} | ${m.toFixed(0)} | ${q.toFixed(0)} | ${(m / q).toFixed(2)} |`;
  };
  publish("pool-ready", [
    `# Boot to READY, cold and from the pool (ms, median of ${runs}; ${where}, ${
      new Date().toISOString().slice(0, 10)
    })`,
    "",
    "| figure | Volt | QEMU microvm cold | Volt / QEMU |",
    "| --- | ---: | ---: | ---: |",
    row("cold: spawn → VOLT VM READY", t.cold),
    row("`volt pool`: request → VOLT VM READY", t.pool),
    "",
    `Runs: QEMU ${t.qemu.length}, Volt cold ${t.cold.length}, pool ${t.pool.length}.`,
    `Goal (boot to READY at most QEMU's): cold ${
      summarize(t.cold).median <= q ? "met" : "not met"
    }, from the pool ${summarize(t.pool).median <= q ? "met" : "not met"}.`,
    "",
    `Command: \`deno task bench:pool --to-ready --runs ${runs}\``,
  ]);
}

const v: Record<string, number[]> = { cold: [], warm: [], accept: [], library: [] };
const q: Record<string, number[]> = { cold: [], warm: [], accept: [], library: [] };
try {
  for (let i = 1; i <= runs; i++) {
    say(`round ${i}/${runs}`);
    const order = i % 2 ? ["qemu", "volt"] : ["volt", "qemu"];
    for (const who of order) {
      if (who === "qemu") {
        const c = await qemuCold();
        if (c !== undefined) q.cold.push(c);
        continue;
      }
      const c = await voltCold();
      if (c !== undefined) v.cold.push(c);
      // The pool refills while the cold runs go on.
      const w = await voltWarm(sock);
      if (w) v.warm.push(w.request), v.accept.push(w.accept);
      const l = await libraryWarm();
      if (l !== undefined) v.library.push(l);
    }
  }
} finally {
  pool.child.kill("SIGTERM");
  await pool.child.status;
}
const qCold = summarize(q.cold).median;
const warm = summarize(v.warm).median;
const lines = [
  `# Cold and warm start to the first KVM_RUN (ms, median of ${runs}; ${where}, ${
    new Date().toISOString().slice(0, 10)
  })`,
  "",
  "| figure | Volt | QEMU microvm cold | Volt / QEMU cold |",
  "| --- | ---: | ---: | ---: |",
  ...[
    ["cold", "cold: spawn → first KVM_RUN"],
    ["warm", "warm, `volt pool`: request → first KVM_RUN"],
    ["accept", "warm, `volt pool`: accept → first KVM_RUN"],
    ["library", "warm, library: `start()` → first KVM_RUN"],
  ].map(([k, label]) => {
    const x = summarize(v[k]).median;
    return `| ${label} | ${x.toFixed(2)} | ${qCold.toFixed(1)} | ${(x / qCold).toFixed(3)} |`;
  }),
  "",
  `Runs: Volt cold ${v.cold.length}, warm ${v.warm.length}, library ${v.library.length}; QEMU ${q.cold.length}.`,
  `Goal (warm start at most a quarter of QEMU's cold start): ${
    warm <= qCold / 4 ? "met" : "not met"
  } (${(warm / qCold).toFixed(3)}). Cold start at most QEMU's: ${
    summarize(v.cold).median <= qCold ? "met" : "not met"
  }.`,
  "",
  `Command: \`deno task bench:pool --runs ${runs}\``,
];
publish("pool", lines);
Deno.removeSync(dir, { recursive: true });
