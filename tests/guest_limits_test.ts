/**
 * What a guest, or the host's input, can make the monitor spend, with small
 * guests on KVM: the boot-timer port counts once, host input waits for the
 * guest instead of piling up, the guest's exit status cannot pose as one
 * of the monitor's own codes, and the UART ignores accesses wider than a
 * byte.
 */
import assert from "node:assert/strict";
import { createVm, EXIT_CODE, type Machine, type VmConfig } from "../mod.ts";
import { GUEST_STATUS_MAX, guestExit } from "../src/vmm/exit_reason.ts";
import { INPUT_QUEUE_BYTES } from "../src/vmm/machine.ts";
import { terminalReset } from "../src/vmm/console_filter.ts";
import { GUEST_READY_PHASE } from "../src/vmm/trace.ts";
import { hasScript, inHelperVm, needsKvm, ROOT, runCli, tmpDir } from "./helpers.ts";
import * as g from "./guests.ts";

const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A VM with its console collected; `until` resolves once the console shows `marker`. */
async function started(config: VmConfig) {
  const vm = await createVm({ console: "message", ...config });
  let out = "";
  const dec = new TextDecoder();
  vm.onConsole = (b) => void (out += dec.decode(b, { stream: true }));
  const run = vm.run(RUN_MS);
  const until = async (marker: string) => {
    const end = performance.now() + 20_000;
    while (!out.includes(marker)) {
      if (performance.now() > end) throw new Error(`No "${marker}" on the console: ${out}`);
      await sleep(5);
    }
  };
  return { vm, run, until, out: () => out };
}

/** Feeds `data` to the guest as fast as the monitor takes it. */
async function feed(vm: Machine, data: Uint8Array): Promise<void> {
  while (data.length) {
    const n = vm.sendInput(data);
    assert.ok(n <= INPUT_QUEUE_BYTES, `accepted ${n} bytes at once`);
    data = data.subarray(n);
    if (data.length) await vm.waitInputSpace();
  }
}

/**
 * How many input queues' worth the echo guest gets: five natively; two in
 * the helper VM, where each byte costs several emulated exits (five took
 * past the run's minute there).
 */
const ECHO_QUEUES = inHelperVm ? 2 : 5;
/** The longest a test VM runs before the host stops it. */
const RUN_MS = inHelperVm ? 240_000 : 60_000;

/** Text without 'q' (serialEcho's end marker), `n` bytes long. */
function text(n: number): string {
  const line = "0123456789 abcdefghijklmnoprstuvwxyz ABCDEFGHIJKLMNOPRSTUVWXYZ\n";
  return line.repeat(Math.ceil(n / line.length)).slice(0, n);
}

function rssKiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmRSS:\s+(\d+) kB$/m);
  return Number(m![1]);
}

/** Starts `volt run ...args` with piped stdin; resolves once its stdout shows `marker`. */
async function cliWithStdin(args: string[], marker: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/mod.ts`, "run", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).spawn();
  const killer = setTimeout(() => child.kill("SIGKILL"), RUN_MS + 60_000);
  let stdout = "";
  const dec = new TextDecoder();
  const reading = (async () => {
    for await (const b of child.stdout) stdout += dec.decode(b, { stream: true });
  })();
  const stderr = new Response(child.stderr).text();
  while (!stdout.includes(marker)) {
    const status = await Promise.race([child.status, sleep(5)]);
    if (status) throw new Error(`volt ended before "${marker}": ${await stderr}`);
  }
  return {
    child,
    writer: child.stdin.getWriter(),
    async finish(signal?: Deno.Signal) {
      if (signal) child.kill(signal);
      const status = await child.status;
      await reading;
      clearTimeout(killer);
      return { code: status.code, stdout, stderr: await stderr };
    },
  };
}

Deno.test({
  ...needsKvm,
  name: "boot timer: thousands of writes (rep outsb too) make one ready mark and one log line",
  async fn() {
    const kernel = g.bootTimerFlood();
    const vm = await createVm({ kernel, console: "message" });
    let readies = 0;
    vm.onReady = () => void readies++;
    const exit = await vm.run(60_000);
    assert.equal(exit.code, 0, exit.message);
    assert.equal(readies, 1);
    assert.equal(vm.trace.marks.filter((m) => m.phase === GUEST_READY_PHASE).length, 1);

    // Through the CLI: one "Guest boot time" line, one phase in the metrics.
    const metrics = `${tmpDir()}/boot.json`;
    const r = await runCli([
      "run",
      "--kernel",
      kernel,
      "--log-level",
      "info",
      "--metrics-json",
      metrics,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "flooded\n");
    assert.equal(r.stderr.match(/Guest boot time: /g)?.length, 1, r.stderr);
    const m = JSON.parse(Deno.readTextFileSync(metrics));
    const phases = m.phases.map((p: { phase: string }) => p.phase);
    assert.equal(phases.filter((p: string) => p === GUEST_READY_PHASE).length, 1);
    assert.ok(phases.length < 40, `${phases.length} phases`);
  },
});

Deno.test({
  ...needsKvm,
  name: "sendInput: refuses input past the bound for a guest that never reads; echo gets it all",
  async fn() {
    // The spinning guest never enables RX: the monitor holds at most the bound.
    const spin = await started({ kernel: g.spin() });
    await spin.until("spinning\n");
    let accepted = 0;
    const chunk = new Uint8Array(64 * 1024).fill(0x79);
    for (let i = 0; i < 256; i++) accepted += spin.vm.sendInput(chunk);
    assert.equal(accepted, INPUT_QUEUE_BYTES);
    assert.equal(spin.vm.pendingInputBytes, INPUT_QUEUE_BYTES);
    await sleep(100);
    assert.equal(spin.vm.sendInput(chunk), 0, "the guest read nothing: no room");
    spin.vm.stop();
    assert.equal((await spin.run).cause, "host-stop");
    assert.equal(spin.vm.sendInput(chunk), 0, "nothing is accepted once the VM stopped");
    // A send loop ends: waiting for room in a stopped VM rejects instead of spinning.
    await assert.rejects(spin.vm.waitInputSpace(), /The VM has stopped and takes no more input/);

    // A guest that reads gets every byte, in order, through the bound.
    const echo = await started({ kernel: g.serialEcho() });
    await echo.until("echo ready\n");
    const input = text(ECHO_QUEUES * INPUT_QUEUE_BYTES);
    await feed(echo.vm, enc.encode(`${input}q`));
    const exit = await echo.run;
    assert.equal(exit.code, 0, exit.message);
    assert.equal(echo.out(), `echo ready\n${input}\nbye\n`);
  },
});

Deno.test({
  ...needsKvm,
  name: "volt run stdin: a guest that never reads holds the writer back; echo gets it all",
  async fn() {
    const run = await cliWithStdin(["--kernel", g.spin()], "spinning\n");
    const before = rssKiB(run.child.pid);
    // `yes | volt run`: write for 3 s, or until the pipe stays full for 500 ms.
    const chunk = new Uint8Array(64 * 1024).fill(0x79);
    let written = 0;
    const end = performance.now() + 3000;
    let pending: Promise<void> | undefined;
    while (performance.now() < end) {
      pending = run.writer.write(chunk);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = await Promise.race([
        pending.then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 500))),
      ]);
      clearTimeout(timer);
      if (!done) break;
      pending = undefined;
      written += chunk.length;
    }
    const grown = rssKiB(run.child.pid) - before;
    const out = await run.finish("SIGTERM");
    await pending?.catch(() => {});
    await run.writer.close().catch(() => {});
    assert.equal(out.code, EXIT_CODE.sigterm, out.stderr);
    // The pipe's 64 KiB and the monitor's bound, not whatever the writer has.
    assert.ok(written <= 1024 * 1024, `the monitor took ${written} bytes from stdin`);
    assert.ok(grown < 16 * 1024, `the monitor grew by ${grown} KiB`);

    // A guest that reads gets all of a pipe's input, in order.
    const echo = await cliWithStdin(["--kernel", g.serialEcho()], "echo ready\n");
    const input = text(ECHO_QUEUES * INPUT_QUEUE_BYTES);
    await echo.writer.write(enc.encode(`${input}q`));
    await echo.writer.close();
    const r = await echo.finish();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `echo ready\n${input}\nbye\n`);
  },
});

Deno.test({
  ...needsKvm,
  ignore: needsKvm.ignore || !hasScript,
  name:
    "volt run on a terminal: Ctrl-A x gets past a guest that never reads; a paste arrives whole",
  async fn() {
    const q = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
    const spawn = (kernel: string) => {
      const volt = [Deno.execPath(), "run", "-A", `${ROOT}/mod.ts`, "run", "--kernel", kernel];
      const child = new Deno.Command("script", {
        args: ["-qfec", volt.map(q).join(" "), "/dev/null"],
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
        env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      }).spawn();
      const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      let out = "";
      const dec = new TextDecoder();
      const reading = (async () => {
        for await (const b of child.stdout) out += dec.decode(b, { stream: true });
      })();
      return {
        child,
        writer: child.stdin.getWriter(),
        // The terminal turns each "\n" into "\r\n".
        out: () => out.replaceAll("\r", ""),
        until: async (marker: string) => {
          const end = performance.now() + 20_000;
          while (!out.replaceAll("\r", "").includes(marker)) {
            if (performance.now() > end) throw new Error(`No "${marker}" on the terminal: ${out}`);
            await sleep(5);
          }
        },
        async end() {
          const status = await child.status;
          await reading;
          clearTimeout(killer);
          return status.code;
        },
      };
    };

    // 256 KiB typed at a guest that never reads, then Ctrl-A x.
    const spin = spawn(g.spin());
    await spin.until("spinning\n");
    // script's child is volt: the monitor after its execve.
    const pgrep = new Deno.Command("pgrep", { args: ["-P", `${spin.child.pid}`], stdout: "piped" });
    const pid = Number(new TextDecoder().decode(pgrep.outputSync().stdout).trim());
    const before = rssKiB(pid);
    const started = performance.now();
    for (let i = 0; i < 64; i++) await spin.writer.write(new Uint8Array(4096).fill(0x79));
    await spin.writer.write(new Uint8Array([0x01, 0x78]));
    const grown = rssKiB(pid) - before;
    const code = await spin.end();
    await spin.writer.close().catch(() => {});
    assert.equal(code, 0, spin.out());
    assert.ok(performance.now() - started < 20_000, "Ctrl-A x took too long");
    assert.ok(grown < 16 * 1024, `the monitor grew by ${grown} KiB`);

    // A paste of five queues' worth into a guest that reads: none of it dropped.
    const echo = spawn(g.serialEcho());
    await echo.until("echo ready\n");
    const input = text(ECHO_QUEUES * INPUT_QUEUE_BYTES);
    await echo.writer.write(enc.encode(`${input}q`));
    assert.equal(await echo.end(), 0, echo.out());
    await echo.writer.close().catch(() => {});
    // Then volt's terminal reset (attributes, charset, cursor).
    assert.equal(
      echo.out(),
      `echo ready\n${input}\nbye\n${new TextDecoder().decode(terminalReset(false))}`,
    );
  },
});

Deno.test("exit status: guest statuses 0 to 63 pass through, any other maps to one code", () => {
  assert.equal(GUEST_STATUS_MAX, 63);
  for (const s of [0, 3, 63]) {
    const e = guestExit(s, 0);
    assert.deepEqual([e.code, e.status, e.message], [s, s, `Guest exited with status ${s}`]);
  }
  for (const s of [64, 80, 86, 130, 143, 159, 200, 255]) {
    const e = guestExit(s, 0);
    assert.deepEqual([e.code, e.status], [EXIT_CODE.guestStatus, s]);
    assert.equal(e.message, `Guest exited with status ${s}: outside 0 to 63, volt exits with 86`);
  }
  // The monitor's own codes are none a guest can have.
  const own = Object.values(EXIT_CODE).filter((c) => c !== 0);
  assert.ok(own.every((c) => c > GUEST_STATUS_MAX), own.join(" "));
});

Deno.test({
  ...needsKvm,
  name: "exit status: a guest cannot fake SIGTERM (143) or a triple fault (80); 3 passes as 3",
  async fn() {
    for (const status of [143, 80, 200, 86, 3]) {
      const r = await runCli(["run", "--kernel", g.exitWith(status)]);
      assert.equal(r.stdout, "exiting\n");
      if (status <= GUEST_STATUS_MAX) {
        assert.equal(r.code, status, r.stderr);
        assert.equal(r.stderr, "");
      } else {
        assert.equal(r.code, EXIT_CODE.guestStatus, `status ${status}: ${r.stderr}`);
        assert.equal(
          r.stderr,
          `volt: Guest exited with status ${status}: outside 0 to 63, volt exits with ${EXIT_CODE.guestStatus}\n`,
        );
      }
    }
    // From code: the real status stays on the exit.
    const vm = await createVm({ kernel: g.exitWith(143), console: "none" });
    const exit = await vm.run(60_000);
    assert.deepEqual([exit.cause, exit.code, exit.status], [
      "guest-exit",
      EXIT_CODE.guestStatus,
      143,
    ]);
  },
});

Deno.test({
  ...needsKvm,
  name: "serial: 16- and 32-bit accesses from a guest read all-ones and change nothing",
  async fn() {
    const vm = await createVm({ kernel: g.serialWidths(), console: "message" });
    let out = "";
    vm.onConsole = (b) => void (out += new TextDecoder().decode(b));
    const exit = await vm.run(60_000);
    assert.equal(exit.code, 0, `failed check ${exit.code}: ${out}`);
    assert.equal(out, "serial widths ok\n");
  },
});
