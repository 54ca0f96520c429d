/**
 * The hostile-guest suite: small guests that attack every device and the
 * monitor's bounds, each run by `volt run` under the whole sandbox. Each
 * must end within its time bound, exit as documented (never SIGSYS, never
 * a monitor error), and leave the monitor's memory bounded.
 */
import assert from "node:assert/strict";
import { EXIT_CODE } from "../mod.ts";
import { inHelperVm, needsKvm, ROOT } from "./helpers.ts";
import * as g from "./guests.ts";

const dec = new TextDecoder();
/** vCPUs contending for the UART: 32 natively, 4 under TCG in the helper VM. */
const FLOOD_CPUS = inHelperVm ? 4 : 32;
const PER_AP = 1000;
/** Every guest here ends well within this; past it the test fails. */
const BOUND_MS = inHelperVm ? 240_000 : 60_000;

interface Hostile {
  what: string;
  kernel: () => string;
  args?: string[];
  /** Bytes written to the monitor's stdin meanwhile. */
  stdin?: number;
  code: number;
  check?: (out: { stdout: string; stderr: string }) => void;
}

const HOSTILE: Hostile[] = [
  {
    what: "every UART register written and read with garbage (DLAB, FIFO resets, loopback)",
    kernel: () => g.serialGarbage(3000),
    code: 0,
    check: (o) => assert.match(o.stdout, /serial garbage survived\n$/),
  },
  {
    what: "i8042 command and data ports flooded with garbage",
    kernel: () => g.i8042Garbage(20000),
    code: 0,
  },
  {
    what: "boot-timer port flood (5000 writes, rep outsb)",
    kernel: g.bootTimerFlood,
    code: 0,
    check: (o) => assert.match(o.stdout, /flooded\n$/),
  },
  {
    what: "exit port garbage at its other offsets, then a status out of range",
    kernel: g.exitPortGarbage,
    code: EXIT_CODE.guestStatus,
    check: (o) => assert.match(o.stderr, /200/),
  },
  {
    what: "triple fault in the middle of a port, serial and MMIO flood",
    kernel: g.tripleFaultMidFlood,
    code: EXIT_CODE.tripleFault,
    check: (o) => {
      assert.match(o.stderr, /triple fault/i);
      assert.equal(o.stdout, ".".repeat(10001));
    },
  },
  {
    what:
      `serial contention from ${FLOOD_CPUS} vCPUs at once, with host input the guest never reads`,
    kernel: () => g.smpSerialFlood(PER_AP),
    args: ["--cpus", String(FLOOD_CPUS), "--memory", "256M"],
    stdin: 256 * 1024,
    code: 0,
    check: (o) => {
      // No byte lost or doubled under contention.
      const xs = o.stdout.split("").filter((c) => c === "x").length;
      assert.equal(xs, (FLOOD_CPUS - 1) * PER_AP);
      assert.match(o.stdout, /all APs flooded\n$/);
    },
  },
];

for (const h of HOSTILE) {
  Deno.test({
    ...needsKvm,
    name: `hostile guest: ${h.what}`,
    async fn() {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}/mod.ts`, "run", "--kernel", h.kernel(), ...(h.args ?? [])],
        stdin: h.stdin ? "piped" : "null",
        stdout: "piped",
        stderr: "piped",
        env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      }).spawn();
      const t0 = performance.now();
      let killed = false;
      const killer = setTimeout(() => {
        killed = true;
        child.kill("SIGKILL");
      }, BOUND_MS);
      if (h.stdin) {
        // `yes`-like input: written until the monitor stops taking it.
        const w = child.stdin.getWriter();
        w.write(new Uint8Array(h.stdin).fill(0x79)).catch(() => {});
        w.close().catch(() => {});
      }
      const out = await child.output();
      clearTimeout(killer);
      const took = performance.now() - t0;
      const o = { stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
      assert.ok(!killed, `still running after ${BOUND_MS} ms: ${o.stderr}`);
      assert.notEqual(out.code, 128 + 31, `killed by seccomp: ${o.stderr}`);
      assert.equal(out.code, h.code, `${o.stderr}\n${o.stdout.slice(-500)}`);
      assert.doesNotMatch(o.stderr, /Internal error|monitor-error|worker failed/);
      h.check?.(o);
      console.log(`${h.what}: exit ${out.code} in ${took.toFixed(0)} ms`);
    },
  });
}
