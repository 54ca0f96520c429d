/**
 * A VM's host resources have one owner that releases them: many VMs made,
 * run and ended in one process (the library's way) leave no descriptor,
 * mapping, thread or memory behind, and neither does a VM whose build fails
 * half-way. The VMs run in a child process, whose counts are theirs alone.
 */
import assert from "node:assert/strict";
import { inHelperVm, needsKvm, ROOT } from "./helpers.ts";
import * as g from "./guests.ts";

interface Counts {
  fds: number;
  maps: number;
  ram: number;
  threads: number;
  rss: number;
}

async function child(mode: "run" | "fail", n: number): Promise<{ before: Counts; after: Counts }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/tests/fixtures/lifecycle_child.ts`, mode, g.hello(), String(n)],
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
}

Deno.test({
  ...needsKvm,
  name:
    "lifecycle: VMs run one after another in one process release every descriptor, mapping and worker",
  async fn() {
    const n = inHelperVm ? 20 : 100;
    const { before, after } = await child("run", n);
    // Each VM holds 3 to 4 descriptors, 2 to 3 mappings and a worker while it lives.
    assert.ok(after.fds <= before.fds, `descriptors ${before.fds} → ${after.fds} after ${n} VMs`);
    assert.equal(after.ram, before.ram, "a guest's RAM is still mapped");
    assert.ok(after.maps <= before.maps + 32, `mappings ${before.maps} → ${after.maps}`);
    assert.ok(after.threads <= before.threads + 2, `threads ${before.threads} → ${after.threads}`);
    const grown = after.rss - before.rss;
    assert.ok(grown < 96 * 1024, `RSS grew by ${grown} KiB over ${n} VMs`);
    console.log(
      `${n} VMs: fds ${before.fds} → ${after.fds}, mappings ${before.maps} → ${after.maps}, ` +
        `threads ${before.threads} → ${after.threads}, RSS ${grown >= 0 ? "+" : ""}${grown} KiB`,
    );
  },
});

Deno.test({
  ...needsKvm,
  name: "lifecycle: a VM whose build fails after guest RAM is mapped leaves nothing behind",
  async fn() {
    const { before, after } = await child("fail", 20);
    assert.ok(after.fds <= before.fds, `descriptors ${before.fds} → ${after.fds}`);
    assert.equal(after.ram, before.ram, "a failed build's guest RAM is still mapped");
  },
});
