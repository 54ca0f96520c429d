/**
 * Linux on virtio-net, over a real TAP in a namespace the test makes: the
 * kernel configures eth0 from `ip=`, the guest pings the host side,
 * fetches a file of several MiB over HTTP from it and hashes it, then
 * serves one the host fetches and hashes. Needs guest userspace: in the
 * helper VM on PVM and without /dev/kvm.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { microvmKernelPaths } from "../src/guest/default_guest.ts";
import { assertNoKernelWarning, needsFullKvm, startCliUntil, tmpDir } from "./helpers.ts";
import { makeNetns, netnsIgnore } from "../tools/netns.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const built = await microvmKernelPaths();
const GUEST_IP = "10.99.0.2", HOST_IP = "10.99.0.1";
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
