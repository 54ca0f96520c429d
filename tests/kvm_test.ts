/**
 * The monitor against a real KVM, with small guests: console output and
 * input with interrupts, every entry path, and every way a guest can stop.
 */
import assert from "node:assert/strict";
import { createVm, type VmConfig } from "../mod.ts";
import { needsKvm, runCli, startCliUntil } from "./helpers.ts";
import * as g from "./guests.ts";

async function boot(config: VmConfig, input?: string, timeoutMs = 60_000) {
  const vm = await createVm({ console: "message", ...config });
  let out = "";
  const dec = new TextDecoder();
  vm.onConsole = (b) => {
    out += dec.decode(b, { stream: true });
    if (input !== undefined && out.includes("ready\n") && input.length) {
      vm.sendInput(new TextEncoder().encode(input));
      input = "";
    }
  };
  const exit = await vm.run(timeoutMs);
  return { exit, out };
}

Deno.test({
  ...needsKvm,
  name: "KVM: a 64-bit ELF guest prints on the UART and its exit status reaches the monitor",
  async fn() {
    const { exit, out } = await boot({ kernel: g.hello() });
    assert.equal(out, "Hello from a volt guest\n");
    assert.deepEqual([exit.cause, exit.code], ["guest-exit", 7]);
  },
});

Deno.test({
  ...needsKvm,
  name: "KVM: serial input reaches the guest through the RX interrupt",
  async fn() {
    const { exit, out } = await boot({ kernel: g.serialEcho() }, "volt!q");
    assert.equal(out, "echo ready\nvolt!\nbye\n");
    assert.equal(exit.code, 0);
  },
});

Deno.test({
  ...needsKvm,
  name: "KVM: PVH entry gets EBX pointing at the start info",
  async fn() {
    const { exit, out } = await boot({ kernel: g.pvhKernel() });
    assert.equal(out, "PVH entry, start info ok\n");
    assert.equal(exit.code, 0);
  },
});

Deno.test({
  ...needsKvm,
  name: "KVM: bzImage 64-bit entry gets RSI pointing at the zero page",
  async fn() {
    const { exit, out } = await boot({ kernel: g.bzImageKernel() });
    assert.equal(out, "bzImage 64-bit entry, zero page ok\n");
    assert.equal(exit.code, 0);
  },
});

Deno.test({
  ...needsKvm,
  name: "KVM: unclaimed ports read all-ones and floods stay silent",
  async fn() {
    const r = await runCli(["run", "--kernel", g.unclaimedPorts(), "--log-level", "info"]);
    assert.equal(r.stdout, "unclaimed reads all-ones\n");
    assert.equal(r.code, 0);
    assert.ok(r.stderr.split("\n").length < 6, `log flood: ${r.stderr.length} bytes`);
  },
});

Deno.test({
  ...needsKvm,
  name: "KVM: the i8042 reset command is a clean stop (exit 0)",
  async fn() {
    const r = await runCli(["run", "--kernel", g.i8042Reset()]);
    assert.equal(r.stdout, "resetting\n");
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0);
  },
});

Deno.test({
  ...needsKvm,
  name: "KVM: a triple fault ends the monitor with code 80 and one line",
  async fn() {
    const r = await runCli(["run", "--kernel", g.tripleFault()]);
    assert.equal(r.code, 80);
    assert.equal(r.stdout, "faulting\n");
    assert.match(r.stderr, /^volt: Guest triple fault \(KVM_EXIT_SHUTDOWN\) at rip 0x[0-9a-f]+\n$/);
  },
});

Deno.test({
  ...needsKvm,
  name: "KVM: an emulation failure ends the monitor with code 82 and the instruction",
  async fn() {
    const r = await runCli(["run", "--kernel", g.emulationFailure()]);
    assert.equal(r.stdout, "jumping\n");
    assert.equal(r.code, 82, r.stderr);
    assert.match(
      r.stderr,
      /^volt: KVM could not emulate the guest instruction at rip 0x30000000: .+\n$/,
    );
  },
});

Deno.test({
  ...needsKvm,
  name: "KVM SMP: the BSP starts every AP with INIT-SIPI-SIPI; each reports its APIC id",
  async fn() {
    for (const cpus of [2, 4]) {
      const { exit, out } = await boot({ kernel: g.smp(), cpus });
      const aps = [...out.matchAll(/^AP (\d+)$/gm)].map((m) => Number(m[1])).sort((a, b) => a - b);
      assert.deepEqual(aps, Array.from({ length: cpus - 1 }, (_, i) => i + 1), out);
      assert.match(out, /all APs up\n$/);
      assert.equal(exit.code, 0, exit.message);
    }
  },
});

for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
  Deno.test({
    ...needsKvm,
    name: `KVM: ${signal} stops a spinning guest with exit ${code}`,
    async fn() {
      const run = await startCliUntil(["run", "--kernel", g.spin()], "spinning\n");
      const out = await run.finish(signal, 20_000);
      assert.equal(out.code, code);
      assert.equal(out.stderr, `volt: Stopped by ${signal}\n`);
    },
  });
}
