/**
 * End to end: the default guest (the project's kernel and volt-init
 * initramfs), booted with `deno run -A mod.ts run` and no --kernel.
 * Where KVM runs guest userspace: VOLT VM READY, a guest command's output
 * and its exit status. On a PVM host: the kernel reaches init and the
 * monitor stops with one line saying userspace cannot run here.
 */
import assert from "node:assert/strict";
import { microvmKernelPaths } from "../src/guest/default_guest.ts";
import { isPvmHost } from "../src/vmm/host.ts";
import { needsKvm, ROOT, runCli } from "./helpers.ts";

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
    // Typed at the prompt, as a person would: bytes sent while init is still
    // setting up the console are flushed by the guest's tty layer.
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}/mod.ts`, "run"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
    const reader = child.stdout.getReader();
    const dec = new TextDecoder();
    let out = "";
    let typed = false;
    const writer = child.stdin.getWriter();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += dec.decode(value, { stream: true });
      // ash follows its prompt with a cursor-position query (ESC [6n).
      if (!typed && /[#$] $/.test(out.replace("\x1b[6n", ""))) {
        typed = true;
        await writer.write(new TextEncoder().encode("echo volt-$((40+2))\nexit 5\n"));
      }
    }
    await writer.close().catch(() => {});
    const status = await child.status;
    const stderr = await new Response(child.stderr).text();
    clearTimeout(timer);
    assert.match(out, /\nvolt-42\r?\n/, `${stderr}\n${out.slice(-2000)}`);
    assert.equal(status.code, 5, stderr);
  },
});
