/**
 * `volt exec` into a running default guest over its vsock socket: the
 * real exec agent in volt-init (streams apart, stdin, status, a command
 * that does not exist, a terminal, several at once, a VM that is gone),
 * and the vsock device's host side under the whole sandbox. Needs guest
 * userspace: in the helper VM on PVM and without /dev/kvm.
 */
import assert from "node:assert/strict";
import { microvmKernelPaths } from "../src/guest/default_guest.ts";
import { needsFullKvm, runCli, startCliUntil, tmpDir } from "./helpers.ts";

const built = await microvmKernelPaths();

Deno.test({
  ...needsFullKvm,
  ignore: needsFullKvm.ignore || !built,
  name: "volt exec: stdout and stderr apart, stdin, the status, a missing command, -t, " +
    "four at once, and one line once the VM is gone",
  async fn() {
    const uds = `${tmpDir()}/v.sock`;
    const vm = await startCliUntil([
      "run",
      "--vsock",
      `cid=3,uds=${uds}`,
      "--append",
      'volt.cmd="echo exec-ready-$((6*7)); sleep 600"',
      // The kernel echoes its command line: the marker is what only the shell prints.
    ], "exec-ready-42");
    try {
      assert.match(vm.seen, /^exec-ready-42/m, vm.seen.slice(-2000));
      const exec = (args: string[], stdin?: string) =>
        runCli(["exec", "--vsock", uds, ...args], { stdin, timeout: 120_000 });

      const a = await exec(["--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
      assert.deepEqual([a.code, a.stdout, a.stderr], [7, "out\n", "err\n"]);

      const b = await exec(["cat"], "piped through\n");
      assert.deepEqual([b.code, b.stdout], [0, "piped through\n"]);

      const c = await exec(["/no/such/program"]);
      assert.equal(c.code, 127);
      assert.match(c.stderr, /^volt exec: cannot run \/no\/such\/program: No such file/);
      assert.equal(c.stderr.trim().split("\n").length, 1);

      const t = await exec(["-t", "--", "tty"]);
      assert.equal(t.code, 0, t.stderr);
      assert.match(t.stdout, /^\/dev\/pts\/\d+\r?\n$/);

      const many = await Promise.all(
        [1, 2, 3, 4].map((n) => exec(["sh", "-c", `sleep 1; echo run-${n}`])),
      );
      assert.deepEqual(
        many.map((r) => [r.code, r.stdout]),
        [1, 2, 3, 4].map((n) => [0, `run-${n}\n`]),
      );
    } catch (e) {
      const end = await vm.finish("SIGTERM");
      console.error(`The VM's stderr ended:\n${end.stderr.slice(-3000)}`);
      throw e;
    }
    await vm.finish("SIGTERM");
    const gone = await runCli(["exec", "--vsock", uds, "true"]);
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /^volt: No VM at .*v\.sock/);
    assert.equal(gone.stderr.trim().split("\n").length, 1);
  },
});
