/**
 * `volt exec`'s host side against a stand-in for the VM's vsock socket
 * and volt-init's exec agent (a unix socket server here speaking the same
 * CONNECT/OK line and frames): streams kept apart, stdin passed, the exit
 * status, frames split anywhere, and one line for a VM that is not there
 * or a guest that does not answer. The real agent is exercised in
 * exec_e2e_test.ts.
 */
import assert from "node:assert/strict";
import { EXEC_PORT, execInGuest, frame, FrameReader } from "../src/guest/exec.ts";
import { parseExecArgs } from "../src/cli/exec_cmd.ts";
import { VoltError } from "../src/errors.ts";
import { runCli, tmpDir } from "./helpers.ts";

const enc = new TextEncoder(), dec = new TextDecoder();

/** A fake VM: answers CONNECT, reads the run frame and stdin, plays `script`. */
function fakeVm(
  uds: string,
  answer: string | undefined,
  script: (argv: string[], stdin: () => Promise<string>) => Uint8Array[] | Promise<Uint8Array[]>,
): { done: Promise<void>; close(): void } {
  const listener = Deno.listen({ transport: "unix", path: uds });
  const done = (async () => {
    const c = await listener.accept();
    const one = new Uint8Array(1);
    let line = "";
    while (await c.read(one) && one[0] !== 10) line += String.fromCharCode(one[0]);
    assert.equal(line, `CONNECT ${EXEC_PORT}`);
    if (answer === undefined) return c.close();
    await c.write(enc.encode(answer));
    const reader = new FrameReader();
    const buf = new Uint8Array(1 << 16);
    const frames: Array<{ type: string; payload: Uint8Array }> = [];
    const next = async () => {
      while (frames.length === 0) {
        const n = await c.read(buf);
        if (n === null) throw new Error("client went away");
        frames.push(...reader.push(buf.subarray(0, n)));
      }
      return frames.shift()!;
    };
    const run = await next();
    assert.equal(run.type, "R");
    const argv = dec.decode(run.payload.subarray(5)).split("\0").slice(0, -1);
    const stdin = async () => {
      let text = "";
      for (let f = await next(); f.type !== "E"; f = await next()) text += dec.decode(f.payload);
      return text;
    };
    for (const b of await script(argv, stdin)) {
      // A byte at a time: the client must put frames back together.
      for (let i = 0; i < b.length; i++) await c.write(b.subarray(i, i + 1));
    }
    c.close();
  })();
  return { done, close: () => listener.close() };
}

const status = (n: number) => {
  const p = new Uint8Array(4);
  new DataView(p.buffer).setInt32(0, n, true);
  return frame("X", p);
};

Deno.test("exec client: stdout and stderr apart, the exit status, frames split anywhere", async () => {
  const uds = `${tmpDir()}/v.sock`;
  const vm = fakeVm(uds, "OK 1073741824\n", (argv) => {
    assert.deepEqual(argv, ["sh", "-c", "echo hi; echo no >&2; exit 3"]);
    return [frame("O", enc.encode("hi\n")), frame("e", enc.encode("no\n")), status(3)];
  });
  try {
    let out = "", err = "";
    const code = await execInGuest(uds, ["sh", "-c", "echo hi; echo no >&2; exit 3"], {
      stdout: (b) => void (out += dec.decode(b)),
      stderr: (b) => void (err += dec.decode(b)),
    });
    await vm.done;
    assert.deepEqual([code, out, err], [3, "hi\n", "no\n"]);
  } finally {
    vm.close();
  }
});

Deno.test("exec client: stdin reaches the command, then its end", async () => {
  const uds = `${tmpDir()}/v.sock`;
  let text = "";
  const vm = fakeVm(uds, "OK 5\n", async (_argv, stdin) => {
    text = await stdin();
    return [];
  });
  try {
    const stdin = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode("abc"));
        c.enqueue(new Uint8Array(100_000).fill(0x61)); // split into frames of 64 KiB
        c.close();
      },
    });
    const run = execInGuest(uds, ["cat"], { stdin, stdout() {}, stderr() {} }).catch((e) => e);
    await vm.done;
    assert.equal(text.length, 100_003);
    assert.ok(text.startsWith("abcaaa"));
    // The fake VM left without a status: one clear error.
    const e = await run;
    assert.ok(e instanceof VoltError);
    assert.equal(e.message, "The VM went away before the command ended");
  } finally {
    vm.close();
  }
});

Deno.test("exec client: a VM that is not there, or a guest that does not answer: one line", async () => {
  const dir = tmpDir();
  await assert.rejects(
    execInGuest(`${dir}/none.sock`, ["true"], { stdout() {}, stderr() {} }),
    (e: Error) =>
      e instanceof VoltError && /^No VM at .*none\.sock \(no such socket\)/.test(e.message),
  );
  const uds = `${dir}/v.sock`;
  const vm = fakeVm(uds, undefined, () => []);
  try {
    await assert.rejects(
      execInGuest(uds, ["true"], { stdout() {}, stderr() {} }),
      (e: Error) => /does not answer on vsock port 10000/.test(e.message),
    );
  } finally {
    vm.close();
  }
});

Deno.test("exec client: a frame past 64 KiB from the guest is refused", () => {
  const bad = new Uint8Array(5);
  bad[0] = 0x4f;
  new DataView(bad.buffer).setUint32(1, 65537, true);
  assert.throws(() => new FrameReader().push(bad), /malformed frame/);
});

Deno.test("exec CLI: options stop at the command; bad uses are one line", async () => {
  assert.deepEqual(parseExecArgs(["--vsock", "s", "ls", "-la"]), {
    uds: "s",
    tty: false,
    argv: ["ls", "-la"],
  });
  assert.deepEqual(parseExecArgs(["-t", "--vsock=s", "--", "-x"]).argv, ["-x"]);
  for (
    const [args, re] of [
      [["exec"], /^volt: volt exec needs --vsock PATH/],
      [["exec", "--vsock", "s"], /^volt: volt exec needs a command/],
      [["exec", "--frob", "x"], /^volt: Unknown option '--frob'/],
    ] as const
  ) {
    const r = await runCli([...args]);
    assert.equal(r.code, 64);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  }
});
