/**
 * End to end: the default guest (the project's kernel and volt-init
 * initramfs), booted with `deno run -A mod.ts run` and no --kernel.
 * Where KVM runs guest userspace: VOLT VM READY, a guest command's output
 * and its exit status. On a PVM host: the kernel reaches init and the
 * monitor stops with one line saying userspace cannot run here.
 */
import assert from "node:assert/strict";
import { buildDefaultInitramfs, microvmKernelPaths } from "../src/guest/default_guest.ts";
import { createVm } from "../mod.ts";
import { isPvmHost } from "../src/vmm/host.ts";
import { needsKvm, runCli } from "./helpers.ts";

const built = await microvmKernelPaths();
if (!built && Deno.env.get("CI") === "true") {
  throw new Error("CI must build the default guest first (volt guest build)");
}
const opts = { ...needsKvm, ignore: needsKvm.ignore || !built };
const pvm = isPvmHost();

Deno.test({
  ...opts,
  name: "default guest: VOLT VM READY, `echo $((6*7))` prints 42, exit 0",
  async fn() {
    const r = await runCli(["run", "--append", 'volt.cmd="echo $((6*7))"'], { timeout: 300_000 });
    if (pvm) {
      assert.match(r.stdout, /Run \/init as init process/);
      assert.equal(r.code, 85, r.stderr);
      assert.match(r.stderr, /cannot run guest userspace/);
      return;
    }
    assert.match(r.stdout, /^VOLT VM READY uptime=\d+\.\d+s\r?$/m);
    assert.match(r.stdout, /^42\r?$/m);
    assert.equal(r.code, 0, r.stderr);
  },
});

Deno.test({
  ...opts,
  ignore: opts.ignore || pvm,
  name: "default guest: a failing guest command's status is the monitor's exit code",
  async fn() {
    const r = await runCli(["run", "--append", 'volt.cmd="exit 3"'], { timeout: 300_000 });
    assert.match(r.stdout, /VOLT VM READY/, `${r.stderr}\n${r.stdout.slice(-2000)}`);
    assert.equal(r.code, 3, r.stderr);
  },
});

Deno.test({
  ...opts,
  ignore: opts.ignore || pvm,
  name: "default guest: the interactive shell reads host input over the UART",
  async fn() {
    // Input is typed at the prompt, as a person would: bytes sent while init
    // is still setting up the console are flushed by the guest's tty layer.
    const vm = await createVm({
      kernel: built!.vmlinux,
      initrd: await buildDefaultInitramfs(),
      console: "message",
    });
    let out = "";
    let typed = false;
    const dec = new TextDecoder();
    vm.onConsole = (b) => {
      out += dec.decode(b, { stream: true });
      // ash follows its prompt with a cursor-position query (ESC [6n).
      if (!typed && /[#$] $/.test(out.replace("\x1b[6n", ""))) {
        typed = true;
        vm.sendInput(new TextEncoder().encode("echo volt-$((40+2))\nexit 5\n"));
      }
    };
    const exit = await vm.run(120_000);
    assert.match(out, /\nvolt-42\r?\n/, `${exit.message}\n${out.slice(-2000)}`);
    assert.equal(exit.code, 5, exit.message);
  },
});
