import assert from "node:assert/strict";
import { VIRTIO_IRQS, VIRTIO_MMIO_BASE } from "../src/arch/x86_64/layout.ts";
import { decodePlan, encodePlan, parseDisk } from "../src/cli/plan.ts";
import { bareRootfs } from "../src/cli/run_cmd.ts";
import { resolveConfig } from "../src/vmm/config.ts";
import { DeviceManager } from "../src/vmm/device_manager.ts";
import { tmpDir } from "./helpers.ts";

const disk = (bytes = 1 << 20) => {
  const path = `${tmpDir()}/d.img`;
  Deno.writeFileSync(path, new Uint8Array(bytes));
  return path;
};

Deno.test("device manager: one window and line per virtio device, named on the command line", () => {
  const m = new DeviceManager();
  m.addLegacy();
  const a = m.addDisk({ path: disk(), root: true });
  const b = m.addEntropy();
  const c = m.addDisk({ path: disk(), readOnly: false, id: "data" });
  try {
    assert.deepEqual([a.base, b.base, c.base], [0, 1, 2].map((i) => VIRTIO_MMIO_BASE + i * 0x1000));
    assert.deepEqual([a.irq, b.irq, c.irq], VIRTIO_IRQS.slice(0, 3));
    assert.deepEqual(m.cmdline(), [
      "virtio_mmio.device=4K@0xd0000000:5",
      "virtio_mmio.device=4K@0xd0001000:6",
      "virtio_mmio.device=4K@0xd0002000:7",
      "root=/dev/vda",
      "ro",
    ]);
    assert.equal(a.backend.type === "block" && a.backend.readOnly, true, "read-only unless asked");
    assert.equal(c.backend.type === "block" && c.backend.readOnly, false);
    // Every spec crosses to a worker as it is.
    assert.doesNotThrow(() => structuredClone(m.specs));
  } finally {
    m.release();
  }
});

Deno.test("device manager: a root disk after another device, or past the lines, is refused", () => {
  const m = new DeviceManager();
  try {
    m.addEntropy();
    assert.throws(() => m.addDisk({ path: disk(), root: true }), /root disk must be the first/);
    for (let i = 1; i < VIRTIO_IRQS.length; i++) m.addEntropy();
    assert.throws(() => m.addEntropy(), /At most 10 virtio devices/);
  } finally {
    m.release();
  }
});

Deno.test("config: the root disk goes first; two root disks are refused", () => {
  const cfg = resolveConfig({ kernel: "k", disks: [{ path: "a" }, { path: "r", root: true }] });
  assert.deepEqual(cfg.disks.map((d) => d.path), ["r", "a"]);
  assert.equal(cfg.disks[1].readOnly, true);
  assert.throws(
    () =>
      resolveConfig({ kernel: "k", disks: [{ path: "a", root: true }, { path: "b", root: true }] }),
    /Only one disk can be the root disk/,
  );
  assert.throws(() => resolveConfig({ kernel: "k", disks: [{ path: "" }] }), /A disk needs a path/);
});

Deno.test("cli: --disk and --rootfs values, and the plan's round trip", () => {
  assert.deepEqual(parseDisk("x.img"), { path: "x.img", readOnly: true });
  assert.deepEqual(parseDisk("x.img,rw,id=a"), { path: "x.img", readOnly: false, id: "a" });
  assert.throws(() => parseDisk(",rw"), /needs a path first/);
  assert.throws(() => parseDisk("x,id="), /Unknown --disk option/);
  assert.deepEqual(bareRootfs(["--rootfs"]), ["--rootfs=default"]);
  assert.deepEqual(bareRootfs(["--rootfs", "--entropy"]), ["--rootfs=default", "--entropy"]);
  assert.deepEqual(bareRootfs(["--rootfs", "r.img"]), ["--rootfs", "r.img"]);
  const plan = {
    config: { kernel: "/k", disks: [{ path: "/d é", readOnly: false, fd: 5 }] },
    sandbox: {
      seccomp: true,
      landlock: true,
      require: false,
      seccompLog: false,
      landlockRequired: true,
    },
    logLevel: "info" as const,
  };
  assert.deepEqual(decodePlan(encodePlan(plan)), plan);
  assert.throws(() => decodePlan("not base64!"), /damaged/);
});
