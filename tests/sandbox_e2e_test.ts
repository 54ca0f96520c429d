/**
 * The sandbox on the real monitor (`volt run`, booting small guests on
 * KVM): every thread of the running monitor is jailed and filtered, the
 * allow-list survives every way a run ends, and a hostile guest cannot take
 * the monitor down.
 */
import assert from "node:assert/strict";
import { decodePlan } from "../src/cli/plan.ts";
import { readThreadStatus } from "../src/sandbox/caps.ts";
import { MONITOR_POLICY, VCPU_POLICY } from "../src/sandbox/seccomp.ts";
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
      // Each vCPU thread stacked its own filter on the process-wide one. (KVM's
      // own task in the process, kvm-nx-lpage-recovery, is made by a vCPU
      // thread at its first KVM_RUN and inherits that thread's filters.)
      // A vCPU stacks its filter right before its first KVM_RUN: the AP may
      // still be on its way there when the BSP prints.
      let own = threads.filter((t) => !t.name.startsWith("kvm-"));
      for (let i = 0; i < 100 && own.filter((t) => t.seccompFilters === 2).length < 2; i++) {
        await new Promise((r) => setTimeout(r, 50));
        own = readThreadStatus(run.child.pid).filter((t) => !t.name.startsWith("kvm-"));
      }
      const stacked = own.filter((t) => t.seccompFilters === 2);
      const names = own.map((t) => `${t.name}:${t.seccompFilters}`).join(" ");
      assert.equal(stacked.length, 2, names);
      assert.ok(stacked.every((t) => t.name.startsWith("worker-")), names);
      assert.ok(own.every((t) => t.seccompFilters === 1 || t.seccompFilters === 2), names);
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
          `Sandbox: seccomp ${MONITOR_POLICY.rules.length} syscalls, ${VCPU_POLICY.rules.length} on vCPU threads \\(kill otherwise\\), `,
        ),
      );
      assert.match(out.stderr, /no_new_privs, undumpable, Deno: FFI only \(reads revoked\)/);
    }
  },
});

Deno.test({
  ...needsKvm,
  name: "sandbox: --no-seccomp --no-landlock leave the filter off, capabilities still dropped",
  async fn() {
    const run = await startCliUntil(
      [
        "run",
        "--kernel",
        g.spin(),
        "--no-seccomp",
        "--no-landlock",
        "--allow-root-without-landlock",
        "--log-level",
        "info",
      ],
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
      // Each signal that would end the process stops the VM, with its own code and line.
      const signals = { SIGHUP: 129, SIGINT: 130, SIGQUIT: 131, SIGTERM: 143 } as const;
      for (const [signal, code] of Object.entries(signals) as [Deno.Signal, number][]) {
        const run = await startCliUntil(["run", "--kernel", g.spin()], "spinning\n");
        const r = await run.finish(signal);
        assert.equal(r.code, code, `${signal}: ${r.stderr}`);
        assert.equal(r.stderr, `volt: Stopped by ${signal}\n`);
        seen.push(`${signal}: ${r.code}`);
      }
    }
    assert.equal(seen.length, 2 * (endings.length + 4));
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

/** One `/proc/<pid>/limits` row: [soft, hard]. */
function procLimit(pid: number, name: string): [string, string] {
  const row = Deno.readTextFileSync(`/proc/${pid}/limits`).split("\n").find((l) =>
    l.startsWith(name)
  );
  assert.ok(row, `no ${name} in /proc/${pid}/limits`);
  const [soft, hard] = row.slice(name.length).trim().split(/\s+/);
  return [soft, hard];
}

Deno.test({
  ...needsKvm,
  name:
    "sandbox: the jailed monitor has none of the caller's descriptors or environment, low limits, no dump",
  async fn() {
    const secret = "volt-test-secret-4d1f";
    // Shell redirections the caller forgot: fds 200 and 201 open on a file, not close-on-exec.
    const run = await startCliUntil(
      ["run", "--kernel", g.spin(), "--memory", "72M", "--log-level", "debug"],
      "spinning\n",
      {
        wrap: ["bash", "-c", 'exec 200</etc/hostname 201</etc/hostname; exec "$@"', "bash"],
        env: { VOLT_TEST_SECRET: secret },
      },
    );
    const pid = run.child.pid;
    try {
      const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => Number(e.name));
      for (const fd of fds) {
        let target = "";
        try {
          target = Deno.readLinkSync(`/proc/${pid}/fd/${fd}`);
        } catch { /* closed meanwhile */ }
        assert.notEqual(target, "/etc/hostname", `fd ${fd} reached the monitor`);
      }
      assert.ok(!fds.includes(200) && !fds.includes(201), fds.join(" "));

      // KVM arrives as a descriptor the outer step opened: no path rule at all,
      // so Landlock leaves the monitor nothing it can write.
      const plan = cmdline(pid).find((a) => a.startsWith("--monitor-plan="))?.slice(15);
      assert.ok(plan, cmdline(pid).join(" "));
      const kvmFd = decodePlan(plan).config.kvmFd;
      assert.ok(kvmFd !== undefined, "the plan carries the KVM descriptor");
      assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/${kvmFd}`), "/dev/kvm");

      const env = Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0").filter((e) => e);
      assert.ok(!env.some((e) => e.includes(secret)), env.join(" "));
      assert.deepEqual(
        env.map((e) => e.slice(0, e.indexOf("="))).sort(),
        ["DENO_DIR", "DENO_NO_UPDATE_CHECK", "NO_COLOR"],
      );

      assert.deepEqual(procLimit(pid, "Max core file size"), ["0", "0"]);
      assert.deepEqual(procLimit(pid, "Max open files"), ["1024", "1024"]);

      // Guest RAM (72 MiB, one mapping) is left out of core dumps.
      const smaps = Deno.readTextFileSync(`/proc/${pid}/smaps`).split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/);
      const ram = smaps.filter((m) => /\nSize:\s+73728 kB\n/.test(m));
      assert.equal(ram.length, 1, `${ram.length} mappings of 72 MiB`);
      assert.match(ram[0], /\nVmFlags:.* dd\b/);
    } finally {
      const out = await run.finish("SIGTERM");
      assert.equal(out.code, 143, out.stderr);
      assert.match(out.stderr, /, no_new_privs, undumpable, /);
      assert.match(out.stderr, /Landlock: read /);
      assert.doesNotMatch(out.stderr, /Landlock: readwrite /);
    }
  },
});

const hasSetpriv = new Deno.Command("sh", { args: ["-c", "command -v setpriv"] }).outputSync()
  .success;

Deno.test({
  ...needsKvm,
  ignore: needsKvm.ignore || !hasSetpriv || Deno.uid() !== 0,
  name: "sandbox: a forged --jail-state under an outside no_new_privs cannot claim Landlock",
  async fn() {
    // What systemd's NoNewPrivileges= or Kubernetes gives: NNP, no capabilities.
    const forged = btoa(JSON.stringify({
      origin: Date.now(),
      marks: [],
      landlock: { abi: 6, rules: 9 },
      bounding: true,
    }));
    const jailed = (extra: string[]) =>
      runCli(["run", "--kernel", g.hello(), `--jail-state=${forged}`, ...extra], {
        wrap: ["setpriv", "--nnp", "--inh-caps=-all", "--bounding-set=-all", "--"],
      });
    const r = await jailed([]);
    assert.equal(r.code, 70, r.stderr);
    // One line naming each layer the state claimed and the process lacks.
    assert.match(
      r.stderr,
      /^volt: The monitor is not jailed as planned: Landlock is not enforced, the resource limits are not set\n$/,
    );
    // Claiming no Landlock does not pass --require-sandbox either.
    const skipped = btoa(JSON.stringify({
      origin: Date.now(),
      marks: [],
      landlock: { skipped: "off" },
      bounding: true,
    }));
    const r2 = await runCli(
      ["run", "--kernel", g.hello(), `--jail-state=${skipped}`, "--require-sandbox"],
      { wrap: ["setpriv", "--nnp", "--inh-caps=-all", "--bounding-set=-all", "--"] },
    );
    assert.equal(r2.code, 70, r2.stderr);
    assert.match(r2.stderr, /Landlock is not enforced/);
  },
});
