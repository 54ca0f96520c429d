/**
 * Linux on virtio-net, over a real TAP in a namespace the test makes: the
 * kernel configures eth0 from `ip=`, the guest pings the host side,
 * fetches a file of several MiB over HTTP from it and hashes it, then
 * serves one the host fetches and hashes. Needs guest userspace: in the
 * helper VM on PVM and without /dev/kvm.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ensureDefaultGuest, microvmKernelPaths } from "../src/guest/default_guest.ts";
import {
  assertNoKernelWarning,
  needsFullKvm,
  retryHelperVmTripleFault,
  startCliUntil,
  tmpDir,
} from "./helpers.ts";
import { EXIT_CODE } from "../mod.ts";
import { makeNetns, netnsIgnore } from "../tools/netns.ts";
import { DEFAULT_CMDLINE } from "../src/boot/cmdline.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const built = await microvmKernelPaths();
const GUEST_IP = "10.99.0.2", HOST_IP = "10.99.0.1", HOST_MAC = "02:56:4f:4c:54:01";
const decoder = new TextDecoder();
const dec = (b: Uint8Array) => decoder.decode(b);
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

Deno.test({
  ...needsFullKvm,
  ignore: needsFullKvm.ignore || !built || netnsIgnore,
  name: "net: over a TAP, the guest (ip=) pings the host, fetches 8 MiB over HTTP with its hash " +
    "right, and serves 4 MiB the host fetches with its hash right",
  async fn() {
    const ns = makeNetns(HOST_IP);
    const blob = new Uint8Array(8 << 20);
    for (let i = 0; i < blob.length; i += 65536) {
      crypto.getRandomValues(blob.subarray(i, i + 65536));
    }
    const file = `${tmpDir()}/blob`;
    Deno.writeFileSync(file, blob);
    const server = ns.deno(`${ROOT}tests/fixtures/http_serve.ts`, [HOST_IP, "8080", file], {
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    let vm: Awaited<ReturnType<typeof startCliUntil>> | undefined;
    try {
      const reader = server.stdout.getReader();
      let said = "";
      while (!said.includes("listening")) {
        const { value, done } = await reader.read();
        assert.ok(!done, "the HTTP server did not start");
        said += dec(value);
      }
      reader.releaseLock();
      const cmd = [
        `ping -c 3 -W 5 ${HOST_IP} >/dev/null && echo ping-ok`,
        `echo fetched=$(wget -q -O - http://${HOST_IP}:8080/blob | sha256sum)`,
        "mkdir -p /tmp/www && head -c 4194304 /dev/urandom > /tmp/www/g",
        "echo served=$(sha256sum /tmp/www/g)",
        // The kernel echoes its command line: the marker is what only the shell prints.
        "echo serving-$((6*7))",
        "httpd -f -p 8080 -h /tmp/www",
      ].join("; ");
      vm = await startCliUntil(
        [
          "run",
          "--net",
          `tap=${ns.tap}`,
          "--append",
          `ip=${GUEST_IP}::${HOST_IP}:255.255.255.0::eth0:off volt.cmd="${cmd}"`,
        ],
        "serving-42",
        { wrap: ns.wrap },
      );
      const seen = vm.seen;
      assert.match(seen, /IP-Config: Complete:/, seen.slice(-3000));
      assert.match(seen, /^ping-ok\r?$/m, seen.slice(-3000));
      assert.match(seen, new RegExp(`^fetched=${sha256(blob)}\\s+-\\r?$`, "m"), seen.slice(-3000));
      const served = /^served=([0-9a-f]{64})\s/m.exec(seen);
      assert.ok(served, seen.slice(-3000));
      const fetched = ns.deno(`${ROOT}tests/fixtures/http_fetch.ts`, [
        `http://${GUEST_IP}:8080/g`,
      ], { stdout: "piped", stderr: "piped" }).outputSync();
      assert.ok(fetched.success, dec(fetched.stderr));
      assert.equal(dec(fetched.stdout).trim(), `${served[1]} ${4 << 20}`);
      assertNoKernelWarning(seen);
    } finally {
      const end = await vm?.finish("SIGTERM");
      if (end && !end.stdout.includes("serving-42")) console.error(end.stderr);
      await server.stdin.close();
      await server.status;
      ns.close();
    }
  },
});

/** `volt ARGS` inside `ns`, its console read as it comes. */
function voltIn(ns: { wrap: string[] }, args: string[]) {
  const child = new Deno.Command(ns.wrap[0], {
    args: [...ns.wrap.slice(1), Deno.execPath(), "run", "-A", `${ROOT}mod.ts`, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).spawn();
  let out = "";
  const done = (async () => {
    for await (const b of child.stdout) out += decoder.decode(b, { stream: true });
  })();
  const err = new Response(child.stderr).text();
  let exited = false;
  child.status.then(() => (exited = true));
  return {
    out: () => out,
    async until(re: RegExp) {
      const end = performance.now() + 280_000;
      while (!re.test(out)) {
        if (performance.now() > end || exited) {
          throw new Error(`No ${re}${exited ? " before the exit" : ""}: ${out.slice(-2000)}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await done;
      return { code: (await child.status).code, err: await err };
    },
  };
}

/** The highest `pong-N` on a console. */
const lastPong = (out: string) =>
  Math.max(0, ...[...out.matchAll(/^pong-(\d+)\r?$/gm)].map((m) => Number(m[1])));

Deno.test({
  ...needsFullKvm,
  ignore: needsFullKvm.ignore || !built || netnsIgnore,
  name: "net snapshot: a guest pinging its host is saved, and two clones at once, one on another " +
    "TAP (--net-tap), go on pinging",
  async fn() {
    // One MAC for both TAPs: a clone's ARP cache holds the source's host side, and a TAP of
    // another address drops the frames sent to it until that entry goes stale (tens of seconds).
    const nets = [makeNetns(HOST_IP, "vt0", HOST_MAC), makeNetns(HOST_IP, "vt1", HOST_MAC)];
    const dir = tmpDir();
    const snaps = `${dir}/snaps`;
    Deno.mkdirSync(snaps);
    try {
      const { kernel, initrd } = await ensureDefaultGuest();
      const work = `i=0; while :; do i=$((i+1)); ping -c 1 -W 2 ${HOST_IP} >/dev/null && ` +
        "echo pong-$i; sleep 0.3; done";
      const file = `${dir}/vm.json`;
      Deno.writeTextFileSync(
        file,
        JSON.stringify({
          "boot-source": {
            kernel_image_path: kernel,
            initrd_path: initrd,
            boot_args: `${DEFAULT_CMDLINE} ip=${GUEST_IP}::${HOST_IP}:255.255.255.0::eth0:off ` +
              `volt.cmd="${work}"`,
          },
          "machine-config": { vcpu_count: 1, mem_size_mib: 256 },
          "network-interfaces": [{ iface_id: "eth0", host_dev_name: "vt0" }],
        }),
      );
      const sock = `${dir}/api.sock`;
      const src = voltIn(nets[0], [
        "run",
        "--config-file",
        file,
        "--api-sock",
        sock,
        "--snapshot-dir",
        snaps,
      ]);
      await src.until(/^pong-3\r?$/m);
      const client = Deno.createHttpClient({ proxy: { transport: "unix", path: sock } });
      const call = async (method: string, path: string, body: unknown) => {
        const r = await fetch(`http://localhost${path}`, {
          method,
          client,
          body: JSON.stringify(body),
        });
        return { status: r.status, text: await r.text() };
      };
      assert.equal((await call("PATCH", "/vm", { state: "Paused" })).status, 204);
      const made = await call("PUT", "/snapshot/create", {
        snapshot_path: "vm.snap",
        mem_file_path: "vm.mem",
      });
      assert.equal(made.status, 204, made.text);
      client.close();
      await new Promise((r) => setTimeout(r, 300));
      const saved = lastPong(src.out());
      assert.equal((await src.stop()).code, 143);
      const restore = ["run", "--restore", `${snaps}/vm.snap`, "--mem-file", `${snaps}/vm.mem`];
      // Two clones at once; a helper-VM triple fault (TCG's emulated SVM) gets one more try.
      const attempt = async () => {
        const clones = [
          voltIn(nets[0], restore),
          voltIn(nets[1], [...restore, "--net-tap", "eth0=vt1"]),
        ];
        let failed: unknown;
        await Promise.all(clones.map((c) => c.until(new RegExp(`^pong-${saved + 3}\\r?$`, "m"))))
          .catch((e) => (failed = e));
        const ends = [];
        for (const c of clones) ends.push(await c.stop());
        return { clones, ends, failed };
      };
      const { clones, ends, failed } = await retryHelperVmTripleFault(
        attempt,
        (r) => r.ends.some((e) => e.code === EXIT_CODE.tripleFault),
      );
      ends.forEach((r, i) =>
        assert.equal(r.code, 143, `clone ${i}: ${r.err}\n${clones[i].out().slice(-3000)}`)
      );
      if (failed) throw failed;
      for (const c of clones) {
        assert.doesNotMatch(c.out(), /VOLT VM READY/, "a restore booted the guest again");
        assert.ok(lastPong(c.out()) > saved);
      }
    } finally {
      for (const ns of nets) ns.close();
    }
  },
});
