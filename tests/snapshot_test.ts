/**
 * Snapshots: the state file refuses what is not a whole, current Volt
 * snapshot; a paused guest saved to disk restores in fresh VMs, two at
 * once, that go on with its work (an interrupt-driven serial echo, a count
 * in RAM), while the memory file stays as it was written.
 */
import assert from "node:assert/strict";
import { createVm, Machine, rebaseMemoryFile, type VmConfig, VoltError } from "../mod.ts";
import {
  decodeStateFile,
  encodeStateFile,
  readStateFile,
  type StateValue,
} from "../src/snapshot/state_file.ts";
import { readSnapshot } from "../src/vmm/snapshot.ts";
import * as g from "./guests.ts";
import { needsKvm, tmpDir } from "./helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();
const input = (re: RegExp) => (e: unknown) => e instanceof VoltError && re.test(e.message);

Deno.test("state file: a document with binary leaves round-trips", () => {
  const doc = {
    a: 1,
    list: [new Uint8Array([1, 2, 3]), { deep: new Uint8Array(0) }],
    s: "x",
    n: null,
  };
  assert.deepEqual(decodeStateFile(encodeStateFile(doc), "s"), doc);
});

Deno.test("state file: foreign, truncated, damaged and other-version files are one line each", () => {
  const good = encodeStateFile({ lapic: new Uint8Array(64).fill(7), n: 3 });
  const refuse = (bytes: Uint8Array, re: RegExp) =>
    assert.throws(() => decodeStateFile(bytes, "vm.snap"), input(re));
  refuse(enc.encode("{}"), /^Snapshot vm\.snap is not a Volt snapshot state file$/);
  refuse(good.subarray(0, 30), /^Snapshot vm\.snap is truncated$/);
  refuse(good.subarray(0, good.length - 1), /^Snapshot vm\.snap is truncated$/);
  for (const at of [30, good.length - 40, good.length - 1]) {
    const bad = good.slice();
    bad[at] ^= 0x40;
    refuse(bad, /^Snapshot vm\.snap is damaged \(its checksum does not match\)$/);
  }
  const v2 = good.slice();
  new DataView(v2.buffer).setUint32(8, 2, true);
  refuse(v2, /^Snapshot vm\.snap has format version 2; this Volt reads version 1$/);
  const longer = new Uint8Array(good.length + 1);
  longer.set(good);
  refuse(longer, /^Snapshot vm\.snap is damaged \(it has bytes past its end\)$/);
  const huge = good.slice();
  new DataView(huge.buffer).setUint32(12, 0xffffffff, true);
  refuse(huge, /lengths are wrong/);
});

Deno.test("snapshot reader: a valid state file that is not a VM's state, or a missing one", () => {
  const dir = tmpDir();
  Deno.writeFileSync(`${dir}/other.snap`, encodeStateFile({ hello: "world" }));
  assert.throws(
    () => readSnapshot(`${dir}/other.snap`),
    input(/^Snapshot .*other\.snap is not a VM's state \(host: /),
  );
  assert.throws(
    () => readStateFile(`${dir}/none.snap`),
    input(/^Cannot read snapshot .*none\.snap: /),
  );
});

/** Stops `vm` and releases it once every vCPU has left. */
async function halt(vm: Machine): Promise<void> {
  vm.stop();
  await vm.wait();
  assert.ok(await vm.settled(), "a vCPU did not leave");
  vm.cleanup();
}

/** A VM of `config` on a console this test reads. */
async function consoleVm(make: () => Promise<Machine>) {
  const vm = await make();
  let out = "";
  const dec = new TextDecoder();
  vm.onConsole = (b) => void (out += dec.decode(b, { stream: true }));
  const until = async (marker: string) => {
    const end = performance.now() + 20_000;
    while (!out.includes(marker)) {
      if (performance.now() > end) throw new Error(`No "${marker}" on the console: ${out}`);
      await sleep(5);
    }
  };
  return { vm, until, out: () => out };
}

/**
 * Boots `config`, waits for `marker` (and for `ready`, when given), pauses
 * and saves it in `dir`; the VM is left paused.
 */
async function saved(
  config: VmConfig,
  marker: string,
  dir: string,
  ready: (vm: Machine) => boolean = () => true,
) {
  const src = await consoleVm(() => createVm({ console: "message", memory: "64M", ...config }));
  src.vm.start();
  await src.until(marker);
  // The console line comes before the work: under load the pause can land between them.
  const end = performance.now() + 20_000;
  while (!ready(src.vm)) {
    if (performance.now() > end) throw new Error("The guest did not start its work");
    await sleep(2);
  }
  await src.vm.pause();
  const paths = { snapshotPath: `${dir}/vm.snap`, memFilePath: `${dir}/vm.mem` };
  src.vm.snapshot(paths);
  return { src, paths };
}

Deno.test({
  ...needsKvm,
  name:
    "snapshot: a paused echo guest (PIC, IDT, UART interrupts) restores twice at once; both echo and exit 0",
  async fn() {
    const dir = tmpDir();
    const { src, paths } = await saved({ kernel: g.serialEcho() }, "echo ready\n", dir);
    assert.equal(src.vm.state, "paused", "a snapshot leaves the VM paused");
    await halt(src.vm);
    const memBefore = Deno.readFileSync(paths.memFilePath);
    assert.equal(memBefore.length, 64 << 20);
    const clones = await Promise.all(
      [0, 1].map(() => consoleVm(() => Machine.restore(paths, { console: "message" }))),
    );
    for (const c of clones) {
      assert.equal(c.vm.trace.marks.some((m) => m.phase === "vcpus restored"), true);
    }
    const runs = clones.map((c) => c.vm.run(20_000));
    await Promise.all(clones.map(async (c, i) => {
      c.vm.sendInput(enc.encode(`clone-${i}`));
      await c.until(`clone-${i}`);
      c.vm.sendInput(enc.encode("q"));
    }));
    const exits = await Promise.all(runs);
    exits.forEach((e, i) => {
      assert.equal(e.code, 0, e.message);
      assert.equal(clones[i].out(), `clone-${i}\nbye\n`);
    });
    assert.deepEqual(
      Deno.readFileSync(paths.memFilePath),
      memBefore,
      "a clone wrote its memory file",
    );
  },
});

/** The counter guest's count in `vm`'s RAM. */
const count = (vm: Machine) =>
  new DataView(vm.built.memory.bytes(g.COUNTER_ADDR, 8).slice().buffer).getBigUint64(0, true);

Deno.test({
  ...needsKvm,
  name:
    "snapshot: a counting guest (2 vCPUs) restores at its saved count and counts on; the source resumes too",
  async fn() {
    const dir = tmpDir();
    const { src, paths } = await saved(
      { kernel: g.counter(), cpus: 2 },
      "counting\n",
      dir,
      (vm) => count(vm) > 0n,
    );
    const atSave = count(src.vm);
    assert.ok(atSave > 0n);
    src.vm.resume();
    const clone = await Machine.restore(paths, { console: "message" });
    assert.equal(clone.built.vcpus.length, 2);
    assert.equal(count(clone), atSave, "the restored RAM is not the saved RAM");
    clone.start();
    const end = performance.now() + 10_000;
    while (count(clone) <= atSave) {
      if (performance.now() > end) throw new Error("The restored guest does not count");
      await sleep(2);
    }
    assert.equal(clone.state, "running");
    // The source went on by itself: its count is its own, past the saved one.
    await sleep(20);
    assert.ok(count(src.vm) > atSave);
    for (const vm of [clone, src.vm]) await halt(vm);
  },
});

Deno.test({
  ...needsKvm,
  name: "snapshot: a restore started paused parks until resumed",
  async fn() {
    const dir = tmpDir();
    const { src, paths } = await saved({ kernel: g.counter() }, "counting\n", dir);
    await halt(src.vm);
    const clone = await Machine.restore(paths, { console: "message" });
    const atSave = count(clone);
    clone.start({ paused: true });
    assert.equal(clone.state, "paused");
    await sleep(50);
    assert.equal(count(clone), atSave, "a paused restore ran");
    clone.resume();
    const end = performance.now() + 10_000;
    while (count(clone) <= atSave) {
      if (performance.now() > end) throw new Error("The resumed guest does not count");
      await sleep(2);
    }
    await halt(clone);
  },
});

Deno.test({
  ...needsKvm,
  name:
    "snapshot: refused while running, for a script's device, from a wrong memory file, and from another CPU",
  async fn() {
    const dir = tmpDir();
    const running = await createVm({ kernel: g.counter(), console: "message", memory: "64M" });
    running.start();
    const paths = { snapshotPath: `${dir}/vm.snap`, memFilePath: `${dir}/vm.mem` };
    assert.throws(
      () => running.snapshot(paths),
      input(/^Cannot snapshot a VM that is running$/),
    );
    await running.pause();
    running.snapshot(paths);
    await halt(running);

    const scripted = await createVm({ kernel: g.counter(), console: "message", memory: "64M" }, {
      devices: [{ bus: "pio", base: 0x500, size: 1, device: { read() {}, write() {} } }],
    });
    scripted.start();
    await scripted.pause();
    assert.throws(
      () => scripted.snapshot({ snapshotPath: `${dir}/s.snap`, memFilePath: `${dir}/s.mem` }),
      input(/^Cannot snapshot a VM with a device written in TypeScript by the script yet$/),
    );
    await halt(scripted);

    // A memory file of another size.
    Deno.writeFileSync(`${dir}/short.mem`, new Uint8Array(4096));
    await assert.rejects(
      () => Machine.restore({ snapshotPath: paths.snapshotPath, memFilePath: `${dir}/short.mem` }),
      input(/^The memory file has 4096 bytes; the snapshot's guest has 67108864$/),
    );
    await assert.rejects(
      () => Machine.restore({ snapshotPath: paths.snapshotPath, memFilePath: `${dir}/nope.mem` }),
      input(/^Cannot open memory file .*nope\.mem: /),
    );

    // What the guest saw of its CPU, changed: as a snapshot from another host looks.
    const doc = readStateFile(paths.snapshotPath) as { host: { cpuid: number[][][] } };
    const leaf1 = doc.host.cpuid[0].find((e) => e[0] === 1 && e[1] === 0)!;
    leaf1[5] = (leaf1[5] ^ 1) >>> 0; // ECX bit 0: SSE3
    Deno.writeFileSync(`${dir}/other.snap`, encodeStateFile(doc as unknown as StateValue));
    await assert.rejects(
      () => Machine.restore({ snapshotPath: `${dir}/other.snap`, memFilePath: paths.memFilePath }),
      input(/^This host's CPU or KVM differs from the snapshot's \(vCPU 0: leaf 0x1\.0 ecx is /),
    );
  },
});

/** The bytes of `path` that hold data, not holes (what a sparse file costs on disk). */
const allocated = (path: string) => (Deno.statSync(path).blocks ?? 0) * 512;

/** The counter guest's count as the memory file at `path` holds it. */
const countIn = (path: string) =>
  new DataView(Deno.readFileSync(path).buffer).getBigUint64(g.COUNTER_ADDR, true);

Deno.test({
  ...needsKvm,
  name:
    "diff snapshot: only the pages written since the full one; rebased onto it (a clone of the base keeps its pages), it restores at the diff's count and counts on",
  async fn() {
    const dir = tmpDir();
    const { src, paths: full } = await saved(
      { kernel: g.counter(), trackDirtyPages: true },
      "counting\n",
      dir,
      (vm) => count(vm) > 0n,
    );
    const atFull = count(src.vm);
    src.vm.resume();
    while (count(src.vm) <= atFull) await sleep(2);
    await src.vm.pause();
    const atDiff = count(src.vm);
    const diff = { snapshotPath: `${dir}/diff.snap`, memFilePath: `${dir}/diff.mem` };
    src.vm.snapshot({ ...diff, type: "diff" });
    assert.equal(Deno.statSync(diff.memFilePath).size, 64 << 20);
    // The guest wrote one page (its counter) since the full snapshot.
    const size = allocated(diff.memFilePath);
    assert.ok(size > 0 && size <= 16 << 10, `the diff holds ${size} bytes`);
    assert.ok(allocated(full.memFilePath) > size, "the full file holds no more than the diff");
    assert.equal(countIn(diff.memFilePath), atDiff);
    assert.equal(countIn(full.memFilePath), atFull);
    await halt(src.vm);

    const fullBefore = Deno.readFileSync(full.memFilePath);
    // A clone of the full snapshot, restored before the rebase and not yet run: the rebase
    // renames a new file over the base, so the pages it has still to load are the old ones.
    const early = await Machine.restore(full, { console: "message" });
    early.start({ paused: true });
    rebaseMemoryFile(full.memFilePath, diff.memFilePath);
    assert.equal(count(early), atFull, "the rebase changed the memory of a clone of the base");
    await halt(early);
    const rebased = Deno.readFileSync(full.memFilePath);
    assert.equal(countIn(full.memFilePath), atDiff);
    // Everything but the counter's page is the full snapshot's.
    const page = g.COUNTER_ADDR & ~0xfff;
    assert.deepEqual(rebased.subarray(0, page), fullBefore.subarray(0, page));
    assert.deepEqual(rebased.subarray(page + 4096), fullBefore.subarray(page + 4096));

    const clone = await Machine.restore(
      { snapshotPath: diff.snapshotPath, memFilePath: full.memFilePath },
      { console: "message", trackDirtyPages: true },
    );
    assert.equal(count(clone), atDiff);
    clone.start();
    const end = performance.now() + 10_000;
    while (count(clone) <= atDiff) {
      if (performance.now() > end) throw new Error("The restored guest does not count");
      await sleep(2);
    }
    // A restored VM's diff is against the file it was restored from.
    await clone.pause();
    const again = { snapshotPath: `${dir}/again.snap`, memFilePath: `${dir}/again.mem` };
    clone.snapshot({ ...again, type: "diff" });
    assert.equal(countIn(again.memFilePath), count(clone));
    assert.ok(allocated(again.memFilePath) <= 16 << 10);
    await halt(clone);
  },
});

Deno.test({
  ...needsKvm,
  name:
    "diff snapshot: refused without tracking and before a full one; a rebase of another size is refused and leaves the base",
  async fn() {
    const dir = tmpDir();
    const to = {
      snapshotPath: `${dir}/d.snap`,
      memFilePath: `${dir}/d.mem`,
      type: "diff",
    } as const;
    const plain = await createVm({ kernel: g.counter(), console: "message", memory: "64M" });
    plain.start();
    await plain.pause();
    assert.throws(
      () => plain.snapshot(to),
      input(/^Cannot take a diff snapshot of a VM that does not track dirty pages/),
    );
    await halt(plain);
    const tracked = await createVm({
      kernel: g.counter(),
      console: "message",
      memory: "64M",
      trackDirtyPages: true,
    });
    tracked.start();
    await tracked.pause();
    assert.throws(
      () => tracked.snapshot(to),
      input(/^Cannot take a diff snapshot before a full one/),
    );
    assert.throws(() => Deno.statSync(to.memFilePath), Deno.errors.NotFound);
    await halt(tracked);

    Deno.writeFileSync(`${dir}/base.mem`, new Uint8Array(8192).fill(7));
    Deno.writeFileSync(`${dir}/small.mem`, new Uint8Array(4096));
    assert.throws(
      () => rebaseMemoryFile(`${dir}/base.mem`, `${dir}/small.mem`),
      input(
        /^The diff .*small\.mem has 4096 bytes, the base .*base\.mem 8192: not the same VM's memory$/,
      ),
    );
    assert.throws(
      () => rebaseMemoryFile(`${dir}/base.mem`, `${dir}/none.mem`),
      input(/^Cannot open diff memory file .*none\.mem: /),
    );
    assert.deepEqual(Deno.readFileSync(`${dir}/base.mem`), new Uint8Array(8192).fill(7));
  },
});
