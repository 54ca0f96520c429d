/**
 * Firecracker's REST API on a unix socket: the HTTP layer's bounds and
 * faults with raw socket I/O, and `volt run --api-sock` driven the way
 * firecracker-go-sdk drives Firecracker (poll, PUT the config, start,
 * pause, resume), with the monitor jailed after `InstanceStart`.
 */
import assert from "node:assert/strict";
import { parseHead, UnixHttpServer } from "../src/control/http.ts";
import { listenUnix } from "../src/vmm/vsock_listen.ts";
import { libc } from "../ffi/libc.ts";
import * as g from "./guests.ts";
import { inHelperVm, needsKvm, runCli, spawnVolt, tmpDir } from "./helpers.ts";

const dir = tmpDir();
const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends raw bytes on a new connection and reads until the server closes it (or `ms`). */
async function raw(path: string, bytes: Uint8Array, ms = 5000): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(bytes).catch(() => {});
    let out = "";
    const buf = new Uint8Array(65536);
    const end = performance.now() + ms;
    while (performance.now() < end) {
      const n = await Promise.race([
        // A reset after the answer ends the reading like an end of stream.
        conn.read(buf).catch(() => null),
        sleep(end - performance.now()).then(() => -1),
      ]);
      if (n === null || n === -1) break;
      out += dec.decode(buf.subarray(0, n as number));
    }
    return out;
  } finally {
    try {
      conn.close();
    } catch { /* closed by the server */ }
  }
}

Deno.test("http: request heads parse; bad ones are refused with a status", () => {
  const h = (s: string) => parseHead(enc.encode(s), enc.encode(s).length, 8192, 100);
  assert.equal(h("GET / HTTP/1.1\r\nHost: x\r\n"), undefined);
  assert.deepEqual(h("GET /vm/config?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n"), {
    ok: true,
    method: "GET",
    path: "/vm/config",
    length: 0,
    headEnd: 50,
    close: true,
  });
  assert.equal((h("garbage\r\n\r\n") as { status: number }).status, 400);
  assert.equal(
    (h("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n") as { status: number }).status,
    400,
  );
  assert.equal(
    (h("PUT / HTTP/1.1\r\nContent-Length: 101\r\n\r\n") as { status: number }).status,
    413,
  );
  assert.equal(
    (h("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") as { status: number }).status,
    501,
  );
  const long = parseHead(new Uint8Array(8192).fill(65), 8192, 8192, 100);
  assert.equal((long as { status: number }).status, 431);
});

Deno.test("http server: keep-alive, pipelining, faults for garbage and 100 MB bodies, and it keeps serving", async () => {
  const path = `${dir}/h.sock`;
  const fd = listenUnix(path, { what: "API socket" });
  let served = 0;
  const server = new UnixHttpServer(fd, (req) => {
    served++;
    return {
      status: 200,
      body: { method: req.method, path: req.path, body: dec.decode(req.body) },
    };
  });
  const done = server.serve();
  try {
    // Two requests in one write on one connection, answered in order.
    const two = await raw(
      path,
      enc.encode(
        "PUT /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
      ),
    );
    assert.match(
      two,
      /^HTTP\/1\.1 200 OK\r\n[^]*"path":"\/a","body":"\{\}"[^]*HTTP\/1\.1 200 OK[^]*"path":"\/b"/,
    );
    assert.match(
      await raw(path, enc.encode("NOT HTTP AT ALL\r\n\r\n")),
      /^HTTP\/1\.1 400 [^]*"fault_message":"Malformed request line"/,
    );
    // A 100 MB body: refused from its header, the connection closed, nothing buffered.
    const huge = await raw(
      path,
      enc.encode(
        `PUT /drives/x HTTP/1.1\r\nContent-Length: ${100 * 2 ** 20}\r\n\r\n${"x".repeat(65536)}`,
      ),
    );
    assert.match(huge, /^HTTP\/1\.1 413 [^]*exceeds the limit of 51200 bytes/);
    // Endless headers: bounded.
    assert.match(
      await raw(path, enc.encode("GET / HTTP/1.1\r\n" + "X: y\r\n".repeat(5000))),
      /^HTTP\/1\.1 431/,
    );
    // A client that connects and goes away, and one that sends half a request.
    (await Deno.connect({ transport: "unix", path })).close();
    assert.equal(await raw(path, enc.encode("GET / HT"), 300), "");
    const before = served;
    assert.match(
      await raw(path, enc.encode("GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n")),
      /"path":"\/ok"/,
    );
    assert.equal(served, before + 1);
  } finally {
    server.close();
    await done;
    libc().close(fd);
  }
});

/** A client the way Firecracker's SDK is one: fetch over the unix socket. */
function apiClient(path: string) {
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
  const call = async (method: string, route: string, body?: unknown) => {
    const r = await fetch(`http://localhost${route}`, {
      method,
      client,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : undefined };
  };
  return { call, close: () => client.close() };
}

const START_MS = inHelperVm ? 120_000 : 30_000;

/** Polls `GET /machine-config` until the API answers, as the SDK does (every 10 ms). */
async function waitApi(api: ReturnType<typeof apiClient>, child: Deno.ChildProcess) {
  const end = performance.now() + START_MS;
  let exited = false;
  child.status.then(() => (exited = true));
  while (performance.now() < end && !exited) {
    try {
      const r = await api.call("GET", "/machine-config");
      if (r.status === 200) return r;
    } catch { /* not listening yet */ }
    await sleep(10);
  }
  throw new Error("The API socket never answered");
}

/** /proc/PID/status lines the sandbox sets. */
function jailFacts(pid: number): { seccomp: string; nnp: string } {
  const s = Deno.readTextFileSync(`/proc/${pid}/status`);
  return {
    seccomp: /^Seccomp:\s+(\d)/m.exec(s)?.[1] ?? "?",
    nnp: /^NoNewPrivs:\s+(\d)/m.exec(s)?.[1] ?? "?",
  };
}

Deno.test({
  ...needsKvm,
  name:
    "api: configure, start, pause, resume and read back a VM over the socket; jailed after InstanceStart",
  async fn() {
    const sock = `${dir}/api.sock`;
    const disk = `${dir}/api-disk.img`;
    Deno.writeFileSync(disk, new Uint8Array(8192));
    const child = spawnVolt(["run", "--api-sock", sock, "--id", "vm-7"]);
    const output = child.output();
    const api = apiClient(sock);
    try {
      const first = await waitApi(api, child);
      assert.deepEqual(first.body, {
        vcpu_count: 1,
        mem_size_mib: 128,
        smt: false,
        track_dirty_pages: false,
        huge_pages: "None",
      });
      assert.deepEqual((await api.call("GET", "/")).body, {
        id: "vm-7",
        state: "Not started",
        vmm_version: (await api.call("GET", "/version")).body.firecracker_version,
        app_name: "Volt",
      });
      // Not jailed yet: the outer step serves the configuration.
      assert.equal(jailFacts(child.pid).seccomp, "0");
      const put = async (route: string, body: unknown, status = 204) => {
        const r = await api.call("PUT", route, body);
        assert.equal(r.status, status, `${route}: ${JSON.stringify(r.body)}`);
        return r;
      };
      await put("/machine-config", { vcpu_count: 2, mem_size_mib: 64 });
      // Bad requests: a fault each, and the server goes on.
      const bad = await api.call("PUT", "/machine-config", "{not json");
      assert.equal(bad.status, 400);
      assert.match(bad.body.fault_message, /^Invalid JSON body/);
      assert.match(
        (await put("/machine-config", { vcpu_count: "2", mem_size_mib: 64 }, 400)).body
          .fault_message,
        /vcpu_count: expected number, got "2"/,
      );
      assert.match(
        (await put("/drives/a", { drive_id: "b", path_on_host: disk, is_root_device: false }, 400))
          .body.fault_message,
        /does not match/,
      );
      assert.match(
        (await put("/balloon", {}, 400)).body.fault_message,
        /Invalid request method and\/or path/,
      );
      assert.match(
        (await api.call("PATCH", "/vm", { state: "Paused" })).body.fault_message,
        /not running/,
      );
      // A start with a kernel that is not there: a fault, and still not started.
      await put("/boot-source", { kernel_image_path: `${dir}/missing-kernel` });
      const failed = await api.call("PUT", "/actions", { action_type: "InstanceStart" });
      assert.equal(failed.status, 400);
      assert.match(failed.body.fault_message, /Kernel not found/);
      assert.equal((await api.call("GET", "/")).body.state, "Not started");
      await put("/boot-source", { kernel_image_path: g.counter() });
      await put("/drives/data", {
        drive_id: "data",
        path_on_host: disk,
        is_root_device: false,
        is_read_only: true,
      });
      const patched = await api.call("PATCH", "/drives/data", {
        drive_id: "data",
        is_read_only: false,
      });
      assert.equal(patched.status, 204);
      await put("/entropy", {});
      const metricsFile = `${dir}/metrics.jsonl`;
      await put("/metrics", { metrics_path: metricsFile });
      assert.match(
        (await put("/actions", { action_type: "FlushMetrics" }, 400)).body.fault_message,
        /not running/,
      );
      await put("/actions", { action_type: "InstanceStart" });
      // From here the jailed monitor answers on the same socket.
      const running = await api.call("GET", "/");
      assert.equal(running.body.state, "Running");
      const facts = jailFacts(child.pid);
      assert.deepEqual(facts, { seccomp: "2", nnp: "1" });
      const config = (await api.call("GET", "/vm/config")).body;
      assert.deepEqual(config["machine-config"], { vcpu_count: 2, mem_size_mib: 64 });
      assert.equal(config.drives[0].is_read_only, false);
      assert.equal((await api.call("GET", "/machine-config")).body.vcpu_count, 2);
      for (let i = 0; i < 3; i++) {
        assert.equal((await api.call("PATCH", "/vm", { state: "Paused" })).status, 204);
        assert.equal((await api.call("GET", "/")).body.state, "Paused");
        assert.equal((await api.call("PATCH", "/vm", { state: "Resumed" })).status, 204);
        assert.equal((await api.call("GET", "/")).body.state, "Running");
      }
      // Metrics: a line on FlushMetrics, with the exits, the console and the API's own counts.
      // The jailed monitor counts its own requests: one fault here, on purpose.
      assert.equal((await api.call("PATCH", "/vm", { state: "Sleeping" })).status, 400);
      await put("/actions", { action_type: "FlushMetrics" });
      const lines = Deno.readTextFileSync(metricsFile).trim().split("\n").map((l) => JSON.parse(l));
      assert.equal(lines.length, 1);
      const m = lines[0];
      assert.ok(m.utc_timestamp_ms > 0);
      assert.ok(m.vcpu.exit_io_out >= "counting\n".length, JSON.stringify(m.vcpu));
      assert.equal(m.uart.write_bytes, "counting\n".length);
      assert.ok(
        m.api_server.requests > 5 && m.api_server.faults === 1,
        JSON.stringify(m.api_server),
      );
      assert.deepEqual(Object.keys(m.block_data), [
        "reads",
        "read_bytes",
        "writes",
        "write_bytes",
        "flushes",
        "failures",
      ]);
      assert.ok(m.volt.boot_phases_ms["first KVM_RUN"] > 0);
      const again = await api.call("PUT", "/actions", { action_type: "InstanceStart" });
      assert.equal(again.status, 400);
      assert.match(again.body.fault_message, /already running/);
      const late = await api.call("PUT", "/boot-source", { kernel_image_path: "/x" });
      assert.match(late.body.fault_message, /not supported after starting the microVM/);
      assert.equal((await api.call("PATCH", "/vm", { state: "Sleeping" })).status, 400);
      // After all that, the VM still runs.
      assert.equal((await api.call("GET", "/")).body.state, "Running");
    } finally {
      api.close();
      child.kill("SIGTERM");
    }
    const out = await output;
    assert.match(dec.decode(out.stdout), /counting/);
    assert.equal(out.code, 143, dec.decode(out.stderr));
    // And a last line as the VM ended.
    const last = Deno.readTextFileSync(`${dir}/metrics.jsonl`).trim().split("\n");
    assert.equal(last.length, 2);
    assert.equal(JSON.parse(last[1]).vmm.state, "halted");
  },
});

Deno.test({
  ...needsKvm,
  name:
    "api with --config-file: the file's VM starts at once; the jailed monitor serves its config, pause and resume",
  async fn() {
    const sock = `${dir}/api2.sock`;
    const doc = {
      "boot-source": { kernel_image_path: g.counter() },
      "machine-config": { vcpu_count: 1, mem_size_mib: 64 },
    };
    const file = `${dir}/api2.json`;
    Deno.writeTextFileSync(file, JSON.stringify(doc));
    const child = spawnVolt(["run", "--config-file", file, "--api-sock", sock]);
    const output = child.output();
    const api = apiClient(sock);
    try {
      await waitApi(api, child);
      const info = (await api.call("GET", "/")).body;
      assert.equal(info.state, "Running");
      assert.equal(info.id, "anonymous-instance");
      assert.deepEqual((await api.call("GET", "/vm/config")).body, doc);
      assert.deepEqual(jailFacts(child.pid), { seccomp: "2", nnp: "1" });
      assert.equal((await api.call("PATCH", "/vm", { state: "Paused" })).status, 204);
      assert.equal((await api.call("GET", "/")).body.state, "Paused");
      assert.equal((await api.call("PATCH", "/vm", { state: "Resumed" })).status, 204);
      const noFile = await api.call("PUT", "/actions", { action_type: "FlushMetrics" });
      assert.match(noFile.body.fault_message, /No metrics file/);
    } finally {
      api.close();
      child.kill("SIGTERM");
    }
    const out = await output;
    assert.equal(out.code, 143, dec.decode(out.stderr));
  },
});

Deno.test({
  ...needsKvm,
  name:
    "api: an InstanceStart that fails on a missing TAP is a fault, closes what it opened, and the API goes on",
  async fn() {
    const sock = `${dir}/api3.sock`;
    const disk = `${dir}/api3.img`;
    Deno.writeFileSync(disk, new Uint8Array(4096));
    const child = spawnVolt(["run", "--api-sock", sock], { stdout: "null" });
    const output = child.output();
    const api = apiClient(sock);
    const fds = () => [...Deno.readDirSync(`/proc/${child.pid}/fd`)].length;
    try {
      await waitApi(api, child);
      await api.call("PUT", "/boot-source", { kernel_image_path: g.counter() });
      await api.call("PUT", "/drives/d", {
        drive_id: "d",
        path_on_host: disk,
        is_root_device: false,
      });
      await api.call("PUT", "/network-interfaces/eth0", {
        iface_id: "eth0",
        host_dev_name: "voltnotap9",
      });
      const before = fds();
      for (let i = 0; i < 3; i++) {
        const r = await api.call("PUT", "/actions", { action_type: "InstanceStart" });
        assert.equal(r.status, 400);
        assert.match(r.body.fault_message, /voltnotap9/);
      }
      assert.equal(fds(), before, "a failed start left descriptors open");
      assert.equal((await api.call("GET", "/")).body.state, "Not started");
    } finally {
      api.close();
      child.kill("SIGTERM");
    }
    await output;
  },
});

/** Reads `child`'s stdout until `marker`; the rest goes on being read into the result. */
function stdoutUntil(child: Deno.ChildProcess) {
  let out = "";
  const done = (async () => {
    for await (const b of child.stdout) out += dec.decode(b, { stream: true });
  })();
  const until = async (marker: string) => {
    const end = performance.now() + START_MS;
    while (!out.includes(marker)) {
      if (performance.now() > end) throw new Error(`No "${marker}" on the console: ${out}`);
      await sleep(10);
    }
  };
  return { until, done };
}

Deno.test({
  ...needsKvm,
  name:
    "api snapshots: create from a paused, jailed VM into --snapshot-dir; two `--restore` processes at once go on; " +
    "PUT /snapshot/load starts one paused; bad requests are faults",
  async fn() {
    const snaps = `${dir}/snaps`;
    Deno.mkdirSync(snaps);
    const sock = `${dir}/snap.sock`;
    const file = `${dir}/snap.json`;
    Deno.writeTextFileSync(
      file,
      JSON.stringify({
        "boot-source": { kernel_image_path: g.serialEcho() },
        "machine-config": { vcpu_count: 1, mem_size_mib: 64, track_dirty_pages: true },
      }),
    );
    const child = spawnVolt([
      "run",
      "--config-file",
      file,
      "--api-sock",
      sock,
      "--snapshot-dir",
      snaps,
    ]);
    const screen = stdoutUntil(child);
    const errP = new Response(child.stderr).text();
    const api = apiClient(sock);
    const create = (body: unknown) => api.call("PUT", "/snapshot/create", body);
    try {
      await waitApi(api, child);
      await screen.until("echo ready");
      const running = await create({ snapshot_path: "vm.snap", mem_file_path: "vm.mem" });
      assert.equal(running.status, 400);
      assert.match(running.body.fault_message, /pause the microVM first/);
      assert.equal((await api.call("PATCH", "/vm", { state: "Paused" })).status, 204);
      const outside = await create({ snapshot_path: "/tmp/x.snap", mem_file_path: "vm.mem" });
      assert.match(
        outside.body.fault_message,
        /snapshot_path \/tmp\/x\.snap is outside --snapshot-dir/,
      );
      const diffReq = {
        snapshot_path: "diff.snap",
        mem_file_path: "diff.mem",
        snapshot_type: "Diff",
      };
      const early = await create(diffReq);
      assert.equal(early.status, 400);
      assert.match(early.body.fault_message, /^Cannot take a diff snapshot before a full one/);
      const ok = await create({ snapshot_path: "vm.snap", mem_file_path: "vm.mem" });
      assert.equal(ok.status, 204, JSON.stringify(ok.body));
      assert.equal((await api.call("GET", "/")).body.state, "Paused");
      // Under the jail's seccomp filter: KVM's log is read, and the diff is small.
      const diff = await create(diffReq);
      assert.equal(diff.status, 204, JSON.stringify(diff.body));
      const held = (Deno.statSync(`${snaps}/diff.mem`).blocks ?? 0) * 512;
      assert.ok(
        held < (Deno.statSync(`${snaps}/vm.mem`).blocks ?? 0) * 512,
        `diff of ${held} bytes`,
      );
    } finally {
      api.close();
      child.kill("SIGTERM");
    }
    assert.equal((await child.status).code, 143, await errP);
    await screen.done;
    const snap = `${snaps}/vm.snap`, mem = `${snaps}/vm.mem`;
    assert.equal(Deno.statSync(mem).size, 64 << 20);

    // Two processes from the one snapshot, side by side: each echoes its own input.
    const clones = await Promise.all(
      [0, 1].map((i) =>
        runCli(["run", "--restore", snap, "--mem-file", mem], {
          stdin: `clone-${i}q`,
          timeout: START_MS,
        })
      ),
    );
    clones.forEach((r, i) => {
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`clone-${i}\\r?\\nbye`), r.stdout);
      assert.doesNotMatch(r.stdout, /echo ready/, "a restore booted the guest again");
    });

    // The API's load, into a monitor that waits for its configuration.
    const sock2 = `${dir}/load.sock`;
    const loader = spawnVolt(["run", "--api-sock", sock2], { stdout: "null" });
    const loaderErr = new Response(loader.stderr).text();
    const api2 = apiClient(sock2);
    try {
      await waitApi(api2, loader);
      const bad = await api2.call("PUT", "/snapshot/load", {
        snapshot_path: `${dir}/nope.snap`,
        mem_backend: { backend_type: "File", backend_path: mem },
      });
      assert.equal(bad.status, 400);
      assert.match(bad.body.fault_message, /^Snapshot not found: .*nope\.snap$/);
      const uffd = await api2.call("PUT", "/snapshot/load", {
        snapshot_path: snap,
        mem_backend: { backend_type: "Uffd", backend_path: "/x" },
      });
      assert.match(uffd.body.fault_message, /Uffd memory backend is not supported/);
      const load = await api2.call("PUT", "/snapshot/load", {
        snapshot_path: snap,
        mem_backend: { backend_type: "File", backend_path: mem },
        resume_vm: false,
      });
      assert.equal(load.status, 204, JSON.stringify(load.body));
      // The jailed monitor answers from here on: restored, paused until resumed.
      const end = performance.now() + START_MS;
      let state = "";
      while (performance.now() < end) {
        state = await api2.call("GET", "/").then((r) => r.body.state, () => "");
        if (state === "Paused") break;
        await sleep(20);
      }
      assert.equal(state, "Paused");
      assert.deepEqual(jailFacts(loader.pid), { seccomp: "2", nnp: "1" });
      assert.equal((await api2.call("PATCH", "/vm", { state: "Resumed" })).status, 204);
      assert.equal((await api2.call("GET", "/")).body.state, "Running");
    } finally {
      api2.close();
      loader.kill("SIGTERM");
    }
    assert.equal((await loader.status).code, 143, await loaderErr);
  },
});

Deno.test({
  ...needsKvm,
  name:
    "volt run --restore: VM flags, a missing --mem-file or snapshot, and a damaged one are one line",
  async fn() {
    const bad = `${dir}/damaged.snap`;
    Deno.writeTextFileSync(bad, "VOLTSNAP but not really");
    for (
      const [args, re] of [
        [["--restore", bad, "--kernel", "x"], /^volt: --kernel conflicts with --restore/],
        [["--restore", bad], /^volt: --restore needs --mem-file/],
        [["--mem-file", bad], /^volt: --mem-file is the memory of a snapshot: it needs --restore/],
        [["--restore", `${dir}/none.snap`, "--mem-file", bad], /^volt: Snapshot not found: /],
        [["--restore", bad, "--mem-file", bad], /^volt: Snapshot .*damaged\.snap is truncated/],
      ] as const
    ) {
      const r = await runCli(["run", ...args]);
      assert.notEqual(r.code, 0);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, re);
    }
  },
});
