/**
 * The sandbox on the real monitor (`volt run`, booting small guests on
 * KVM): every thread of the running monitor is jailed and filtered, the
 * allow-list survives every way a run ends, and a hostile guest cannot take
 * the monitor down.
 */
import assert from "node:assert/strict";
import { readThreadStatus } from "../src/sandbox/caps.ts";
import { MONITOR_POLICY } from "../src/sandbox/seccomp.ts";
import { needsKvm, runCli, startCliUntil } from "./helpers.ts";
import * as g from "./guests.ts";

/** 128 + SIGSYS: the kernel killed the monitor for a syscall off the list. */
const KILLED_BY_SECCOMP = 128 + 31;

function cmdline(pid: number): string[] {
  return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter((s) => s);
}

Deno.test({
  ...needsKvm,
  name: "sandbox: every thread of the running monitor has no capabilities, NNP and seccomp",
  async fn() {
    const run = await startCliUntil(
      ["run", "--kernel", g.spin(), "--cpus", "2", "--log-level", "info"],
      "spinning\n",
    );
    try {
      const threads = readThreadStatus(run.child.pid);
      // The main thread, Deno's pool and two vCPU workers at least.
      assert.ok(threads.length >= 4, `only ${threads.length} threads`);
      for (const t of threads) {
        const where = `thread ${t.tid} (${t.name})`;
        assert.equal(t.capEff, 0n, `${where} CapEff`);
        assert.equal(t.capPrm, 0n, `${where} CapPrm`);
        assert.equal(t.capInh, 0n, `${where} CapInh`);
        assert.equal(t.capAmb, 0n, `${where} CapAmb`);
        if (Deno.uid() === 0) assert.equal(t.capBnd, 0n, `${where} CapBnd`);
        assert.equal(t.noNewPrivs, 1, `${where} NoNewPrivs`);
        assert.equal(t.seccomp, 2, `${where} Seccomp`);
      }
      // Deno's own layer: the jailed monitor runs with FFI and reads only.
      const args = cmdline(run.child.pid);
      assert.ok(args.includes("--allow-ffi"), args.join(" "));
      assert.ok(args.some((a) => a.startsWith("--allow-read=")), args.join(" "));
      for (const a of args) assert.doesNotMatch(a, /^(-A|--allow-all|--allow-(write|net|env|run))/);
    } finally {
      const out = await run.finish("SIGTERM");
      assert.equal(out.code, 143, out.stderr);
      assert.match(
        out.stderr,
        new RegExp(
          `Sandbox: seccomp ${MONITOR_POLICY.rules.length} syscalls \\(kill otherwise\\), `,
        ),
      );
      assert.match(out.stderr, /no_new_privs, Deno: FFI only \(reads revoked\)/);
    }
  },
});

Deno.test({
  ...needsKvm,
  name: "sandbox: --no-seccomp --no-landlock leave the filter off, capabilities still dropped",
  async fn() {
    const run = await startCliUntil(
      ["run", "--kernel", g.spin(), "--no-seccomp", "--no-landlock", "--log-level", "info"],
      "spinning\n",
    );
    try {
      const threads = readThreadStatus(run.child.pid);
      for (const t of threads) {
        assert.equal(t.seccomp, 0, `thread ${t.tid} Seccomp`);
        assert.equal(t.capEff, 0n, `thread ${t.tid} CapEff`);
        assert.equal(t.noNewPrivs, 1, `thread ${t.tid} NoNewPrivs`);
      }
    } finally {
      const out = await run.finish("SIGTERM");
      assert.equal(out.code, 143, out.stderr);
      assert.match(out.stderr, /Sandbox: seccomp off, Landlock off, /);
    }
  },
});

/** Runs that end every way a run can end, each under the full sandbox. */
const endings: Array<{ what: string; args: () => string[]; code: number; stdin?: string }> = [
  { what: "guest exit status", args: () => ["--kernel", g.hello()], code: 7 },
  { what: "i8042 reset", args: () => ["--kernel", g.i8042Reset()], code: 0 },
  { what: "triple fault", args: () => ["--kernel", g.tripleFault()], code: 80 },
  { what: "emulation failure", args: () => ["--kernel", g.emulationFailure()], code: 82 },
  { what: "2 vCPUs, APs started", args: () => ["--kernel", g.smp(), "--cpus", "2"], code: 0 },
  { what: "unclaimed ports", args: () => ["--kernel", g.unclaimedPorts()], code: 0 },
  { what: "serial input", args: () => ["--kernel", g.serialEcho()], code: 0, stdin: "hi q" },
];

Deno.test({
  ...needsKvm,
  name: "sandbox: many boots under kill-on-violation end as they should, never by SIGSYS",
  async fn() {
    const seen: string[] = [];
    for (let round = 0; round < 2; round++) {
      for (const e of endings) {
        const r = await runCli(["run", ...e.args()], { stdin: e.stdin, timeout: 120_000 });
        assert.notEqual(r.code, KILLED_BY_SECCOMP, `${e.what}: killed by seccomp`);
        assert.equal(r.code, e.code, `${e.what}: ${r.stderr}`);
        seen.push(`${e.what}: ${r.code}`);
      }
      for (const signal of ["SIGTERM", "SIGINT"] as const) {
        const run = await startCliUntil(["run", "--kernel", g.spin()], "spinning\n");
        const r = await run.finish(signal);
        assert.equal(r.code, signal === "SIGTERM" ? 143 : 130, `${signal}: ${r.stderr}`);
        seen.push(`${signal}: ${r.code}`);
      }
    }
    assert.equal(seen.length, 2 * (endings.length + 2));
  },
});

Deno.test({
  ...needsKvm,
  name: "sandbox: a hostile guest (port and MMIO floods, endless loop) stops on SIGTERM",
  async fn() {
    const run = await startCliUntil(["run", "--kernel", g.hostile()], "hostile\n");
    assert.ok(
      run.seen.includes("hostile\n"),
      `the guest did not get through its floods: ${run.seen}`,
    );
    // Let it flood for a while under the filter before stopping it.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(readThreadStatus(run.child.pid)[0].seccomp, 2);
    const out = await run.finish("SIGTERM");
    assert.equal(out.code, 143);
    assert.equal(out.stderr, "volt: Stopped by SIGTERM\n");
  },
});
