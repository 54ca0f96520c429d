/**
 * A VM's host resources have one owner that releases them: many VMs made,
 * run and ended in one process (the library's way) leave no descriptor,
 * mapping, thread or memory behind, and neither does a VM whose build fails
 * half-way.
 */
import assert from "node:assert/strict";
import { createVm, VoltError } from "../mod.ts";
import { inHelperVm, needsKvm } from "./helpers.ts";
import * as g from "./guests.ts";

const count = (dir: string) => [...Deno.readDirSync(dir)].length;
const fds = () => count("/proc/self/fd");
const threads = () => count("/proc/self/task");
const mappings = () => Deno.readTextFileSync("/proc/self/maps").split("\n").length;
/** Mappings exactly the size of one guest's RAM (64 MiB here): each VM makes one. */
const guestRam = () =>
  Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(l);
    return m !== null && BigInt(`0x${m[2]}`) - BigInt(`0x${m[1]}`) === 64n << 20n;
  }).length;
const rssKiB = () =>
  Number(/^VmRSS:\s+(\d+) kB$/m.exec(Deno.readTextFileSync("/proc/self/status"))![1]);

/** Lets terminated workers' threads finish leaving. */
async function settle(want: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !want(); i++) await new Promise((r) => setTimeout(r, 20));
}

Deno.test({
  ...needsKvm,
  name:
    "lifecycle: VMs run one after another in one process release every descriptor, mapping and worker",
  async fn() {
    const n = inHelperVm ? 20 : 100;
    const kernel = g.hello();
    const one = async (cpus: number) => {
      const vm = await createVm({ kernel, console: "none", cpus, memory: "64M" });
      const exit = await vm.run(30_000);
      assert.equal(exit.code, 7, exit.message);
    };
    // Warm: modules, libc, the worker's code.
    await one(2);
    await settle(() => false);
    const before = {
      fds: fds(),
      maps: mappings(),
      ram: guestRam(),
      threads: threads(),
      rss: rssKiB(),
    };
    for (let i = 0; i < n; i++) await one(1 + (i % 2));
    await settle(() => threads() <= before.threads);
    const after = {
      fds: fds(),
      maps: mappings(),
      ram: guestRam(),
      threads: threads(),
      rss: rssKiB(),
    };
    // Each VM holds 3 to 4 descriptors and 2 to 3 mappings while it lives.
    assert.ok(after.fds <= before.fds, `descriptors ${before.fds} → ${after.fds} after ${n} VMs`);
    assert.equal(after.ram, before.ram, "a guest's RAM is still mapped");
    // The runtime's own mappings move a little; 100 leaked VMs would add hundreds.
    assert.ok(after.maps <= before.maps + 32, `mappings ${before.maps} → ${after.maps}`);
    assert.ok(after.threads <= before.threads + 2, `threads ${before.threads} → ${after.threads}`);
    const grown = after.rss - before.rss;
    assert.ok(grown < 96 * 1024, `RSS grew by ${grown} KiB over ${n} VMs`);
    console.log(
      `${n} VMs: fds ${before.fds} → ${after.fds}, mappings ${before.maps} → ${after.maps}, ` +
        `threads ${before.threads} → ${after.threads}, RSS +${grown} KiB`,
    );
  },
});

Deno.test({
  ...needsKvm,
  name: "lifecycle: a VM whose build fails after guest RAM is mapped leaves nothing behind",
  async fn() {
    const kernel = g.hello();
    // A "KVM device" that is not one: the build fails once RAM is mapped and the kernel loaded.
    const fail = async () => {
      await assert.rejects(
        createVm({ kernel, console: "none", memory: "64M", kvmDevice: "/dev/null" }),
        (e) => e instanceof VoltError,
      );
    };
    await fail();
    await settle(() => false);
    const before = { fds: fds(), ram: guestRam() };
    for (let i = 0; i < 20; i++) await fail();
    await settle(() => fds() <= before.fds);
    assert.ok(fds() <= before.fds, `descriptors ${before.fds} → ${fds()}`);
    assert.equal(guestRam(), before.ram, "a failed build's guest RAM is still mapped");
  },
});
