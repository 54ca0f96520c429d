/**
 * The VM's life: not started, running, paused, halted. Pause parks every
 * vCPU (a guest counting in RAM stands still) and resume goes on where it
 * stopped; a transition from the wrong state is a usage error; a stop
 * while paused ends the VM.
 */
import assert from "node:assert/strict";
import { createVm, type Machine, VoltError } from "../mod.ts";
import * as g from "./guests.ts";
import { needsKvm } from "./helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The guest's count, read from its RAM. */
const count = (vm: Machine) =>
  new DataView(vm.built.memory.bytes(g.COUNTER_ADDR, 8).slice().buffer).getBigUint64(0, true);

/** Waits until the count moves past `from`, for up to 10 s. */
async function advances(vm: Machine, from: bigint): Promise<bigint> {
  const end = performance.now() + 10_000;
  for (;;) {
    const now = count(vm);
    if (now > from) return now;
    if (performance.now() > end) throw new Error(`The count stayed at ${from}`);
    await sleep(2);
  }
}

const usage = (re: RegExp) => (e: unknown) => e instanceof VoltError && re.test(e.message);

for (const cpus of [1, 2]) {
  Deno.test({
    ...needsKvm,
    name:
      `lifecycle (${cpus} vCPU): pause stills a counting guest, resume goes on, stop from paused halts`,
    async fn() {
      const vm = await createVm({ kernel: g.counter(), console: "message", cpus, memory: "64M" });
      assert.equal(vm.state, "not-started");
      await assert.rejects(() => vm.pause(), usage(/^Cannot pause a VM that is not started$/));
      vm.start();
      assert.equal(vm.state, "running");
      assert.throws(() => vm.resume(), usage(/^Cannot resume a VM that is running$/));
      assert.throws(() => vm.start(), usage(/^Cannot start a VM that is running$/));
      let c = await advances(vm, 0n);
      for (let round = 0; round < 3; round++) {
        await vm.pause();
        assert.equal(vm.state, "paused");
        const held = count(vm);
        await sleep(50);
        assert.equal(count(vm), held, "the guest ran while paused");
        await assert.rejects(() => vm.pause(), usage(/^Cannot pause a VM that is paused$/));
        vm.resume();
        assert.equal(vm.state, "running");
        c = await advances(vm, held);
      }
      assert.ok(c > 0n);
      await vm.pause();
      vm.stop();
      const exit = await vm.wait();
      assert.equal(exit.cause, "host-stop");
      assert.equal(vm.state, "halted");
      assert.ok(await vm.settled(), "a parked vCPU did not leave");
      vm.cleanup();
      assert.throws(() => vm.resume(), usage(/^Cannot resume a VM that is halted$/));
    },
  });
}

Deno.test({
  ...needsKvm,
  name: "lifecycle: a guest that exits while running is halted, and cannot be paused",
  async fn() {
    const vm = await createVm({ kernel: g.exitWith(3), console: "message", memory: "64M" });
    const exit = await vm.run(20_000);
    assert.equal(exit.code, 3);
    assert.equal(vm.state, "halted");
    await assert.rejects(() => vm.pause(), usage(/^Cannot pause a VM that is halted$/));
  },
});

Deno.test({
  ...needsKvm,
  name: "metrics: vCPU exits by kind and the console's bytes, counted as the guest runs",
  async fn() {
    const vm = await createVm({ kernel: g.hello(), console: "message", memory: "64M" });
    let out = "";
    vm.onConsole = (b) => void (out += new TextDecoder().decode(b));
    assert.deepEqual(vm.metrics().vcpu, {
      exitIoIn: 0,
      exitIoOut: 0,
      exitMmioRead: 0,
      exitMmioWrite: 0,
      exitIdle: 0,
    });
    const exit = await vm.run(20_000);
    assert.equal(exit.code, 7);
    const m = vm.metrics();
    const line = "Hello from a volt guest\n";
    assert.equal(out, line);
    assert.equal(m.serialOutBytes, line.length);
    // One OUT per character and one to the exit port, at least (the UART's status reads are INs).
    assert.ok(m.vcpu.exitIoOut >= line.length + 1, JSON.stringify(m));
    assert.equal(m.state, "halted");
    assert.deepEqual(m.devices, []);
  },
});

Deno.test({
  ...needsKvm,
  name:
    "Ctrl-Alt-Del: the guest reads Ctrl, Alt and Delete (set 2) from the i8042, one byte at a time",
  async fn() {
    const vm = await createVm({ kernel: g.keyReader(8), console: "message", memory: "64M" });
    assert.throws(
      () => vm.sendCtrlAltDel(),
      usage(/^Cannot send Ctrl-Alt-Del to a VM that is not started$/),
    );
    let out = "";
    vm.onConsole = (b) => void (out += new TextDecoder().decode(b));
    const run = vm.run(20_000);
    const end = performance.now() + 10_000;
    while (!out.includes("keys?")) {
      if (performance.now() > end) throw new Error(`no prompt: ${out}`);
      await sleep(5);
    }
    vm.sendCtrlAltDel();
    await sleep(20);
    vm.sendCtrlAltDel();
    const exit = await run;
    assert.equal(exit.code, 0, exit.message);
    assert.equal(out, "keys?\n14 11 e0 71 14 11 e0 71 ");
    assert.throws(
      () => vm.sendCtrlAltDel(),
      usage(/^Cannot send Ctrl-Alt-Del to a VM that is halted$/),
    );
  },
});
