/**
 * `volt pool` and `volt run --pool`: monitors made ahead start their VM on
 * the client's stdin, stdout and stderr and report its status; a taken
 * monitor is replaced; a client that goes away stops its VM; bad requests
 * get an error line and leave the monitor waiting; flags a pool cannot
 * share are refused. Small guests, so they run on every kind of host.
 */
import assert from "node:assert/strict";
import * as g from "./guests.ts";
import { needsKvm, runCli, tmpDir } from "./helpers.ts";
import { startPool } from "../bench/boot/userspace.ts";
import { createVm } from "../mod.ts";
import { readLine, requestStart } from "../src/control/pool.ts";
import { libc, O_RDWR, openInheritable } from "../ffi/libc.ts";
import { AF_UNIX, SHUT_WR, SOCK_CLOEXEC, SOCK_STREAM, sockaddrUn } from "../ffi/socket.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A running `volt pool` on a socket in a directory of its own, resolved once it is ready. */
async function poolFor(args: string[], size = 1) {
  const dir = Deno.makeTempDirSync({ prefix: "volt-pool-test-" });
  const sock = `${dir}/pool.sock`;
  const p = await startPool(["--socket", sock, "--size", String(size), ...args], {
    timeoutMs: 120_000,
  });
  return {
    sock,
    child: p.child,
    get log() {
      return p.log();
    },
    async stop(): Promise<number> {
      try {
        p.child.kill("SIGTERM");
      } catch { /* gone */ }
      const s = await p.child.status;
      Deno.removeSync(dir, { recursive: true });
      return s.code;
    },
  };
}

/** pids of the processes whose parent is `ppid` (a pool's monitors). */
function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      // pid (comm) state ppid ...: comm may hold spaces, so count from its ')'.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === ppid) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

/** Whether process `pid` still exists (a zombie counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

Deno.test({
  ...needsKvm,
  name:
    "volt pool: each client gets a VM on its stdout with its status; taken monitors are replaced",
  async fn() {
    const pool = await poolFor(["--kernel", g.exitWith(7)]);
    try {
      assert.match(pool.log, /Pool ready: 1 monitors on /);
      assert.equal(Deno.statSync(pool.sock).mode! & 0o777, 0o600, "others may connect");
      // Three in a row from a pool of one: each needs the one made after the last was taken.
      for (let i = 0; i < 3; i++) {
        const r = await runCli(["run", "--pool", pool.sock], { timeout: 60_000 });
        assert.equal(r.code, 7, r.stderr);
        assert.match(r.stdout, /^exiting\n/);
      }
    } finally {
      assert.equal(await pool.stop(), 0);
    }
  },
});

Deno.test({
  ...needsKvm,
  name: "volt pool: the client's stdin reaches the guest, its stderr gets the monitor's lines",
  async fn() {
    const pool = await poolFor(["--kernel", g.serialEcho(), "--log-level", "info"]);
    try {
      const r = await runCli(["run", "--pool", pool.sock], { stdin: "pool\nq", timeout: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /pool\n/, r.stderr);
      assert.match(r.stderr, /Booting .* 128 MiB, 1 vCPU/);
    } finally {
      await pool.stop();
    }
  },
});

Deno.test({
  ...needsKvm,
  name: "volt pool: a client that goes away stops its VM; stopping the pool ends idle monitors",
  async fn() {
    const pool = await poolFor(["--kernel", g.spin()]);
    let idle: number[] = [];
    try {
      const nul = openInheritable("/dev/null", O_RDWR);
      const conn = requestStart(pool.sock, [nul, nul, nul]);
      libc().close(nul);
      const answer = JSON.parse(readLine(conn, 30_000)!);
      assert.equal(answer.accepted, true);
      assert.ok(Number.isInteger(answer.pid));
      await sleep(300);
      assert.ok(alive(answer.pid), "the VM is not running");
      // Half-closed: the monitor stops the VM and still sends the status.
      libc().shutdown(conn, SHUT_WR);
      const result = JSON.parse(readLine(conn, 30_000)!);
      libc().close(conn);
      assert.equal(result.exit_code, 129);
      assert.match(result.message, /client went away/);
      assert.ok(result.first_run_at >= result.accepted_at, JSON.stringify(result));
      for (let i = 0; i < 100 && alive(answer.pid); i++) await sleep(50);
      assert.ok(!alive(answer.pid), "the monitor outlived its client");
      // Its replacement, made meanwhile.
      for (let i = 0; i < 200 && !childrenOf(pool.child.pid).filter(alive).length; i++) {
        await sleep(50);
      }
      idle = childrenOf(pool.child.pid).filter(alive);
      assert.equal(idle.length, 1, "no monitor took the place of the one taken");
    } finally {
      assert.equal(await pool.stop(), 0);
    }
    for (let i = 0; i < 100 && idle.some(alive); i++) await sleep(50);
    assert.deepEqual(idle.filter(alive), [], "idle monitors outlived the pool");
    assert.throws(() => Deno.statSync(pool.sock), Deno.errors.NotFound);
  },
});

Deno.test({
  ...needsKvm,
  name: "volt pool --restore: clones of one snapshot, restored ahead, each go on from it at once",
  async fn() {
    const dir = tmpDir();
    const vm = await createVm({ kernel: g.serialEcho(), console: "message", memory: "64M" });
    let out = "";
    vm.onConsole = (b) => void (out += new TextDecoder().decode(b));
    vm.start();
    for (let i = 0; i < 1000 && !out.includes("echo ready"); i++) await sleep(10);
    assert.match(out, /echo ready/);
    await vm.pause();
    const snap = `${dir}/vm.snap`, mem = `${dir}/vm.mem`;
    vm.snapshot({ snapshotPath: snap, memFilePath: mem });
    vm.stop();
    await vm.wait();
    await vm.settled();
    vm.cleanup();
    const memBefore = Deno.readFileSync(mem);
    const pool = await poolFor(["--restore", snap, "--mem-file", mem], 2);
    try {
      for (let i = 0; i < 3; i++) {
        const r = await runCli(["run", "--pool", pool.sock], {
          stdin: `clone-${i}q`,
          timeout: 60_000,
        });
        assert.equal(r.code, 0, r.stderr);
        // No "echo ready": the clone starts where the snapshot was taken, after it.
        assert.equal(r.stdout, `clone-${i}\nbye\n`);
      }
    } finally {
      await pool.stop();
    }
    assert.deepEqual(Deno.readFileSync(mem), memBefore, "a clone wrote the memory file");
  },
});

/** Connects and sends `bytes` with no descriptors. */
function rawRequest(sock: string, bytes: Uint8Array): number {
  const l = libc();
  const fd = l.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const addr = sockaddrUn(sock);
  assert.equal(l.connect(fd, addr, addr.length), 0);
  if (bytes.length) l.send(fd, bytes, BigInt(bytes.length), 0);
  return fd;
}

Deno.test({
  ...needsKvm,
  name: "volt pool: malformed requests get one error line and the monitor serves the next client",
  async fn() {
    const pool = await poolFor(["--kernel", g.exitWith(3)]);
    const enc = new TextEncoder();
    try {
      const cases: [Uint8Array, RegExp][] = [
        [enc.encode('{"version": 1}\n'), /carried 0 descriptors/],
        [enc.encode('{"version": 2}\n'), /version is 2/],
        [enc.encode("not json\n"), /not valid JSON/],
        [enc.encode("[1]\n"), /not a JSON object/],
        [enc.encode('{"version": 1, "kernel": "/etc/shadow"}\n'), /unknown field "kernel"/],
        [enc.encode('{"version": 1}'), /not one line/],
        [new Uint8Array(0), /No start request in time/],
      ];
      for (const [bytes, re] of cases) {
        const fd = rawRequest(pool.sock, bytes);
        const line = readLine(fd, 30_000);
        libc().close(fd);
        assert.ok(line, `no answer to ${new TextDecoder().decode(bytes)}`);
        assert.match(JSON.parse(line).error, re);
      }
      // Too many descriptors: refused, and every one it sent closed by the monitor.
      const nul = openInheritable("/dev/null", O_RDWR);
      const conn = requestStart(pool.sock, [nul, nul, nul, nul]);
      libc().close(nul);
      assert.match(JSON.parse(readLine(conn, 30_000)!).error, /carried 4 descriptors/);
      libc().close(conn);
      // The same monitor still serves a good client.
      const r = await runCli(["run", "--pool", pool.sock], { timeout: 60_000 });
      assert.equal(r.code, 3, r.stderr);
    } finally {
      await pool.stop();
    }
  },
});

Deno.test("run --pool: a socket that answers garbage is one line and exit 65", async () => {
  const dir = tmpDir();
  const path = `${dir}/fake.sock`;
  const server = Deno.listen({ transport: "unix", path });
  const serving = (async () => {
    for await (const c of server) {
      // After the request, so that the client's send does not meet a closed socket.
      await c.read(new Uint8Array(4096));
      await c.write(new TextEncoder().encode("HTTP/1.1 200 OK\n"));
      c.close();
    }
  })();
  try {
    const r = await runCli(["run", "--pool", path], { timeout: 30_000 });
    assert.equal(r.code, 65, r.stderr);
    assert.equal(r.stderr, "volt: The pool answered what is not its protocol: HTTP/1.1 200 OK\n");
  } finally {
    server.close();
    await serving.catch(() => {});
  }
});

Deno.test({
  ...needsKvm,
  name: "volt pool and run --pool: bad flags and a missing pool are one line and a usage code",
  async fn() {
    const elf = g.exitWith(0);
    const dir = Deno.makeTempDirSync({ prefix: "volt-pool-flags-" });
    const disk = `${dir}/disk.img`;
    Deno.writeFileSync(disk, new Uint8Array(4096));
    const cases: [string[], number, RegExp][] = [
      [["pool", "--kernel", elf], 64, /^volt: volt pool needs --socket PATH$/],
      [["pool", "--socket", `${dir}/s`, "--size", "0", "--kernel", elf], 64, /--size must be 1/],
      [
        ["pool", "--socket", `${dir}/s`, "--net", "tap=t0", "--kernel", elf],
        64,
        /--net would be shared/,
      ],
      [["pool", "--socket", `${dir}/s`, "--disk", `${disk},rw`, "--kernel", elf], 64, /read-only/],
      [["pool", "--socket", `${dir}/s`, "--kernel", `${dir}/missing`], 66, /not found|No such/i],
      [["pool", "--socket", `${dir}/s`, "--frobnicate"], 64, /Unknown option '--frobnicate'/],
      [["run", "--pool", `${dir}/none.sock`], 66, /^volt: No pool is listening on /],
      [
        ["pool", "--socket", `${dir}/s`, "--restore", disk, "--mem-file", disk, "--paused"],
        64,
        /--paused/,
      ],
      [["run", "--pool", `${dir}/s`, "--kernel", elf], 64, /--kernel conflicts with --pool/],
      [["run", "--pool-member", "--kernel", elf], 64, /internal to volt pool/],
    ];
    try {
      for (const [args, code, re] of cases) {
        const r = await runCli(args, { timeout: 60_000 });
        assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
        const lines = r.stderr.trim().split("\n");
        assert.equal(lines.length, 1, `${args.join(" ")}: ${r.stderr}`);
        assert.match(lines[0], re);
      }
      // The rw disk was not opened for writing, let alone written.
      assert.deepEqual(Deno.readFileSync(disk), new Uint8Array(4096));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
