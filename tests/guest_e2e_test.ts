/**
 * End to end: the default guest (the project's kernel and volt-init
 * initramfs), booted with `deno run -A mod.ts run` and no --kernel: VOLT VM
 * READY, a guest command's output and its exit status, the interactive
 * shell. These need guest userspace, so on a PVM host `./volt test` runs
 * them in the helper VM; natively there, the project's kernel with an
 * init-only initramfs must reach init, warn nowhere, and stop with exit 85
 * and one line.
 */
import assert from "node:assert/strict";
import {
  buildVoltInit,
  ensureDefaultGuest,
  microvmKernelPaths,
} from "../src/guest/default_guest.ts";
import { writeCpio } from "../src/guest/cpio.ts";
import { landlockAbi } from "../src/sandbox/landlock.ts";
import {
  assertNoKernelWarning,
  needsFullKvm,
  needsKvm,
  pvmHost,
  retryHelperVmTripleFault,
  ROOT,
  runCli,
  spawnVolt,
  tmpDir,
  typeAtShellPrompt,
} from "./helpers.ts";

const built = await microvmKernelPaths();
if (!built && Deno.env.get("CI") === "true") {
  throw new Error("CI must build the default guest first (volt guest build)");
}
const opts = { ...needsFullKvm, ignore: needsFullKvm.ignore || !built };

Deno.test({
  ...needsKvm,
  ignore: needsKvm.ignore || !built,
  name:
    "default kernel, init-only initramfs: init starts, no kernel warning (PVM: exit 85, one line)",
  async fn() {
    // volt-init alone: no busybox to unpack, which takes 90 s under PVM.
    const initrd = `${tmpDir()}/init-only.cpio`;
    Deno.writeFileSync(
      initrd,
      writeCpio([
        { type: "file", path: "init", data: Deno.readFileSync(await buildVoltInit()), mode: 0o755 },
        { type: "chardev", path: "dev/console", major: 5, minor: 1, mode: 0o600 },
      ]),
    );
    const r = await retryHelperVmTripleFault(
      () =>
        runCli(
          ["run", "--kernel", built!.vmlinux, "--initrd", initrd, "--append", "volt.exit"],
          { timeout: 300_000 },
        ),
      (r) => r.code === 80,
    );
    assert.match(r.stdout, /Run \/init as init process/, `${r.stderr}\n${r.stdout.slice(-3000)}`);
    assertNoKernelWarning(r.stdout);
    if (pvmHost) {
      assert.equal(r.code, 85, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, /cannot run guest userspace/);
    } else {
      assert.match(r.stdout, /^VOLT VM READY uptime=\d+\.\d+s\r?$/m);
      assert.equal(r.code, 0, r.stderr);
    }
  },
});

Deno.test({
  ...opts,
  name: "default guest: VOLT VM READY, `echo $((6*7))` prints 42, exit 0, no kernel warning",
  async fn() {
    const r = await retryHelperVmTripleFault(
      () => runCli(["run", "--append", 'volt.cmd="echo $((6*7))"'], { timeout: 300_000 }),
      (r) => r.code === 80,
    );
    assert.match(r.stdout, /^VOLT VM READY uptime=\d+\.\d+s\r?$/m);
    assert.match(r.stdout, /^42\r?$/m);
    assertNoKernelWarning(r.stdout);
    assert.equal(r.code, 0, r.stderr);
  },
});

Deno.test({
  ...opts,
  name: "default guest: a failing command's status is volt's; --metrics-json has the boot time",
  async fn() {
    const metrics = `${tmpDir()}/boot.json`;
    const r = await retryHelperVmTripleFault(
      () =>
        runCli(
          [
            "run",
            "--append",
            'volt.cmd="exit 3"',
            "--metrics-json",
            metrics,
            "--log-level",
            "info",
          ],
          { timeout: 300_000 },
        ),
      (r) => r.code === 80,
    );
    assert.match(r.stdout, /VOLT VM READY/, `${r.stderr}\n${r.stdout.slice(-2000)}`);
    assert.equal(r.code, 3, r.stderr);
    const m = JSON.parse(Deno.readTextFileSync(metrics));
    assert.deepEqual(m.exit, {
      cause: "guest-exit",
      code: 3,
      message: "Guest exited with status 3",
    });
    const phases = m.phases.map((p: { phase: string }) => p.phase);
    for (
      const p of [
        "runtime up",
        "no_new_privs set",
        ...(typeof landlockAbi() === "number" ? ["landlock applied"] : []),
        "capabilities dropped",
        "jail entered",
        "jailed runtime up",
        "kvm opened",
        "cpuid configured",
        "devices ready",
        "deno reads revoked",
        "seccomp installed",
        "first KVM_RUN",
        "guest ready",
      ]
    ) {
      assert.ok(phases.includes(p), `no "${p}" in ${phases.join(", ")}`);
    }
    // Phases are in order, and the guest's boot-timer write comes last.
    const times = m.phases.map((p: { ms: number }) => p.ms);
    assert.deepEqual(times, [...times].sort((a: number, b: number) => a - b));
    assert.ok(m.vmmInitMs > 0 && m.guestBootMs > m.vmmInitMs, JSON.stringify(m));
    assert.equal(m.guestKernelMs, m.guestBootMs - m.vmmInitMs);
    assert.equal(m.guest.memoryMiB, 128);
    // The same moment in the info log, from the boot-timer port.
    assert.match(r.stderr, new RegExp(`Guest boot time: ${m.guestBootMs.toFixed(1)} ms`));
  },
});

Deno.test({
  ...opts,
  name: "default guest: the interactive shell reads host input over the UART",
  async fn() {
    const { out, status, stderr } = await retryHelperVmTripleFault(
      () => typeAtShellPrompt(`${ROOT}/mod.ts`, ["run"], "echo volt-$((40+2))\nexit 5\n"),
      (r) => r.status.code === 80,
    );
    assert.match(out, /\nvolt-42\r?\n/, `${stderr}\n${out.slice(-2000)}`);
    assert.equal(status.code, 5, stderr);
  },
});

/** Spawns `volt run` with a config file and an API socket; resolves once `marker` is on stdout. */
async function apiVm(doc: unknown, marker: RegExp) {
  const dir = tmpDir();
  const file = `${dir}/vm.json`, sock = `${dir}/api.sock`;
  Deno.writeTextFileSync(file, JSON.stringify(doc));
  const child = spawnVolt(["run", "--config-file", file, "--api-sock", sock]);
  const dec = new TextDecoder();
  let out = "";
  const stdout = (async () => {
    for await (const b of child.stdout) out += dec.decode(b, { stream: true });
  })();
  const stderr = new Response(child.stderr).text();
  const end = performance.now() + 280_000;
  while (!marker.test(out)) {
    if (performance.now() > end) {
      child.kill("SIGKILL");
      throw new Error(`No ${marker} on the console: ${out.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path: sock } });
  const action = async (action_type: string) => {
    const r = await fetch("http://localhost/actions", {
      method: "PUT",
      client,
      body: JSON.stringify({ action_type }),
    });
    await r.body?.cancel();
    return r.status;
  };
  const finish = async (ms = 120_000) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    const status = await child.status;
    clearTimeout(timer);
    await stdout;
    client.close();
    return { code: status.code, out, err: await stderr };
  };
  return { action, finish };
}

Deno.test({
  ...opts,
  name: "SendCtrlAltDel: the guest's keyboard gets it and volt-init powers off cleanly, exit 0",
  async fn() {
    const { kernel, initrd } = await ensureDefaultGuest();
    const vm = await apiVm({
      "boot-source": { kernel_image_path: kernel, initrd_path: initrd },
      volt: { append: 'volt.cmd="echo cad-ready-$((6*7)); sleep 600"' },
    }, /^cad-ready-42\r?$/m);
    assert.equal(await vm.action("SendCtrlAltDel"), 204);
    const r = await vm.finish();
    assert.match(r.out, /volt-init: Ctrl-Alt-Del: powering off/, r.out.slice(-2000));
    assert.equal(r.code, 0, r.err);
  },
});

Deno.test({
  ...needsKvm,
  ignore: needsKvm.ignore || !built || !pvmHost,
  name:
    "SendCtrlAltDel on PVM: the kernel's keyboard takes it before init, and the reboot ends the VM (exit 0)",
  async fn() {
    // No init to ask: with Ctrl-Alt-Del not handed to init, the kernel restarts, reboot=k resets.
    const vm = await apiVm({
      "boot-source": { kernel_image_path: built!.vmlinux },
      volt: { append: "rdinit=/none" },
    }, /input: AT Raw Set 2 keyboard/);
    assert.equal(await vm.action("SendCtrlAltDel"), 204);
    const r = await vm.finish(240_000);
    assert.doesNotMatch(r.out, /Kernel panic/, r.out.slice(-2000));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /reboot|restart/i, r.out.slice(-2000));
  },
});
