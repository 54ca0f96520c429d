/**
 * Linux on virtio: the default guest booted from its ext4 root image
 * (`--rootfs`), a rw data disk written by the guest and read back on the
 * host and by a second boot, a read-only disk the guest cannot change, the
 * disk serial (GET_ID), and /dev/hwrng from `--entropy`. Natively on PVM
 * the kernel mounts the root disk and reaches init (which PVM cannot run);
 * the rest needs guest userspace and runs in the helper VM there.
 */
import assert from "node:assert/strict";
import { microvmKernelPaths } from "../src/guest/default_guest.ts";
import {
  assertNoKernelWarning,
  needsFullKvm,
  needsKvm,
  pvmHost,
  retryHelperVmTripleFault,
  runCli,
  sbin,
  tmpDir,
} from "./helpers.ts";

const built = await microvmKernelPaths();

/** A fresh ext4 image of `mib` MiB made on the host. */
function ext4Image(mib: number): string {
  const path = `${tmpDir()}/data.ext4`;
  const r = new Deno.Command(sbin("mkfs.ext4"), { args: ["-q", "-F", path, `${mib}M`] })
    .outputSync();
  assert.ok(r.success, new TextDecoder().decode(r.stderr));
  return path;
}

/** `debugfs -R "cat PATH"` on an image: a file's bytes as the host reads them. */
function debugfsCat(image: string, path: string): string {
  const r = new Deno.Command(sbin("debugfs"), {
    args: ["-R", `cat ${path}`, image],
    stderr: "null",
  })
    .outputSync();
  return new TextDecoder().decode(r.stdout);
}

const boot = (args: string[]) =>
  retryHelperVmTripleFault(
    () => runCli(["run", ...args], { timeout: 300_000 }),
    (r) => r.code === 80,
  );

Deno.test({
  ...needsKvm,
  ignore: needsKvm.ignore || !built,
  name: "--rootfs: the kernel mounts the ext4 root image read-only from /dev/vda and runs its init",
  async fn() {
    const r = await boot(["--rootfs", "--append", "volt.cmd=\"grep ' / ' /proc/mounts\""]);
    const out = `${r.stderr}\n${r.stdout.slice(-3000)}`;
    assert.match(r.stdout, /virtio_blk virtio0: \[vda\] 131072 512-byte logical blocks/, out);
    assert.match(r.stdout, /VFS: Mounted root \(ext4 filesystem\) readonly on device 254:0/, out);
    assert.match(r.stdout, /Run \/sbin\/init as init process/, out);
    assertNoKernelWarning(r.stdout);
    if (pvmHost) {
      assert.equal(r.code, 85, r.stderr);
    } else {
      assert.match(r.stdout, /^VOLT VM READY uptime=/m);
      assert.match(r.stdout, /^\/dev\/root \/ ext4 ro,/m);
      assert.equal(r.code, 0, r.stderr);
    }
  },
});

Deno.test({
  ...needsFullKvm,
  ignore: needsFullKvm.ignore || !built,
  name:
    "disks: the guest writes a rw disk (read back by the host and a second boot), cannot write a ro one, reads its serial and /dev/hwrng",
  async fn() {
    const data = ext4Image(16);
    const ro = `${tmpDir()}/ro.img`;
    Deno.writeFileSync(ro, Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 13) & 0xff));
    const roBefore = Deno.readFileSync(ro);
    const cmd = [
      "cat /sys/block/vdb/serial; echo",
      "echo vdc-ro=$(cat /sys/block/vdc/ro)",
      "echo discard-max=$(cat /sys/block/vdb/queue/discard_max_bytes)",
      "mount -t ext4 /dev/vdb /mnt && echo persisted > /mnt/hello && sync && fstrim -v /mnt",
      "umount /mnt && echo wrote-ok",
      "dd if=/dev/zero of=/dev/vdc bs=512 count=1 conv=fsync 2>/dev/null; echo ro-write=$?",
      "echo rng=$(cat /sys/class/misc/hw_random/rng_current)",
      "echo random=$(head -c 16 /dev/hwrng | od -An -tx1)",
    ].join("; ");
    const r = await boot([
      "--rootfs",
      "--disk",
      `${data},rw,id=volt-data`,
      "--disk",
      ro,
      "--entropy",
      "--append",
      `volt.cmd="${cmd}"`,
    ]);
    const out = `${r.stderr}\n${r.stdout.slice(-3000)}`;
    assert.equal(r.code, 0, out);
    assert.match(r.stdout, /^volt-data\r?$/m, out);
    assert.match(r.stdout, /^vdc-ro=1\r?$/m, out);
    assert.match(r.stdout, /^wrote-ok\r?$/m, out);
    // Discard reaches the disk: the file system trims its free space through it.
    assert.match(r.stdout, /^discard-max=2147483648\r?$/m, out);
    assert.match(r.stdout, /^\/mnt: [1-9]\d* bytes trimmed/m, out);
    assert.match(r.stdout, /^ro-write=[1-9]\d*\r?$/m, out);
    assert.match(r.stdout, /^rng=virtio_rng\.0\r?$/m, out);
    const random = /^random=((?: ?[0-9a-f]{2}){16})\r?$/m.exec(r.stdout);
    assert.ok(random && !/^( ?00)+$/.test(random[1]), out);
    assertNoKernelWarning(r.stdout);
    assert.equal(debugfsCat(data, "/hello"), "persisted\n");
    assert.deepEqual(Deno.readFileSync(ro), roBefore, "the read-only disk is unchanged");

    // A second boot finds the file where the first left it.
    const again = await boot([
      "--rootfs",
      "--disk",
      data,
      "--append",
      'volt.cmd="mount -o ro -t ext4 /dev/vdb /mnt && cat /mnt/hello"',
    ]);
    assert.equal(again.code, 0, `${again.stderr}\n${again.stdout.slice(-2000)}`);
    assert.match(again.stdout, /^persisted\r?$/m);
  },
});
