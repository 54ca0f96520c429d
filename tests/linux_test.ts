/**
 * A real Linux kernel booted by the monitor: its console must prove that it
 * read what we gave it (command line, e820 map, initrd address, ACPI
 * tables) and never warn, then the VM is stopped. On PVM, Debian's kernel stops at its int3
 * self-test (only our kernel's patch skips it), after the xstate setup that
 * used to warn; Linux SMP runs in the helper VM there.
 */
import assert from "node:assert/strict";
import { createVm } from "../mod.ts";
import { e820Map } from "../src/arch/x86_64/e820.ts";
import { E820_RAM } from "../ffi/bootparam.ts";
import { writeCpio } from "../src/guest/cpio.ts";
import {
  assertNoKernelWarning,
  needsFullKvm,
  needsKvm,
  pvmHost,
  retryHelperVmTripleFault,
  tmpDir,
} from "./helpers.ts";
import { debianKernel } from "./kernels.ts";
import { microvmKernelPaths } from "../src/guest/default_guest.ts";

const hex = (n: number) => `0x${n.toString(16).padStart(16, "0")}`;

/** Boots until every pattern matched (or the kernel reached init), then stops. */
function bootLinux(kernel: string, initrd: string, done: RegExp, timeoutMs: number, cpus = 1) {
  return retryHelperVmTripleFault(
    () => bootOnce(kernel, initrd, done, timeoutMs, cpus),
    (r) => r.exit.cause === "triple-fault",
  );
}

async function bootOnce(
  kernel: string,
  initrd: string,
  done: RegExp,
  timeoutMs: number,
  cpus: number,
) {
  const vm = await createVm({
    kernel,
    initrd,
    cpus,
    memory: "256M",
    console: "message",
    append: "ignore_loglevel",
  });
  let out = "";
  const dec = new TextDecoder();
  vm.onConsole = (b) => {
    out += dec.decode(b, { stream: true });
    if (done.test(out)) vm.stop();
  };
  const exit = await vm.run(timeoutMs);
  return { vm, out, exit };
}

Deno.test({
  ...needsKvm,
  name: "Linux (Debian cloud kernel, PVH entry): command line, e820 and initrd as we set them",
  async fn() {
    const kernel = debianKernel()!;
    const initrd = `${tmpDir()}/initrd.cpio`;
    Deno.writeFileSync(
      initrd,
      writeCpio([{ type: "file", path: "init", data: new Uint8Array(64), mode: 0o755 }]),
    );
    const { vm, out, exit } = await bootLinux(
      kernel.vmlinux,
      initrd,
      /Run \/init as init process|Kernel panic/,
      240_000,
    );
    assert.match(out, /Linux version 6\.\d+/);
    const cmd = /Command line: (.*)\r?\n/.exec(out);
    assert.equal(cmd?.[1], vm.built.cmdline);
    const e820 = [...out.matchAll(/BIOS-e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (\w+)/g)].map((
      m,
    ) => m.slice(1));
    const ours = e820Map(vm.built.memory).map((e) => [
      hex(e.addr),
      hex(e.addr + e.size - 1),
      e.type === E820_RAM ? "usable" : "reserved",
    ]);
    assert.deepEqual(e820, ours);
    const rd = /RAMDISK: \[mem (0x[0-9a-f]+)-/.exec(out);
    assert.ok(rd, "no RAMDISK line");
    assert.equal(Number(rd[1]), vm.built.initrd!.addr);
    assertNoKernelWarning(out);
    // ACPI: our tables where we put them, read without complaint; the MADT gives the CPUs.
    assert.match(out, /ACPI: RSDP 0x00000000000E0000 000024 \(v02 VOLT {2}\)/);
    for (const sig of ["XSDT", "FACP", "DSDT", "APIC"]) {
      assert.match(out, new RegExp(`ACPI: ${sig} 0x00000000000E[0-9A-F]{4} `), sig);
    }
    assert.match(out, /ACPI: Using ACPI \(MADT\) for SMP configuration information/);
    assert.doesNotMatch(
      out,
      /ACPI (BIOS )?(Error|Warning)|\[Firmware Bug\]: ACPI|ACPI: .*invalid/i,
    );
    if (pvmHost && exit.cause !== "host-stop") {
      // As far as PVM goes: past the xstate setup, which the command line
      // keeps to FXSAVE, into the int3 self-test that PVM cannot deliver.
      assert.match(out, /x86\/fpu: x87 FPU will use FXSAVE/, out.slice(-3000));
      assert.equal(exit.cause, "internal-error", exit.message);
      return;
    }
    assert.match(out, /Run \/init as init process/, `${exit.message}\n${out.slice(-3000)}`);
  },
});

const microvm = await microvmKernelPaths();

Deno.test({
  ...needsFullKvm,
  ignore: needsFullKvm.ignore || (!microvm && Deno.env.get("CI") !== "true"),
  name: "Linux (the project's kernel, 2 vCPUs): the MP table is found and both CPUs come up",
  async fn() {
    assert.ok(microvm, "CI must build the microVM kernel first");
    const initrd = `${tmpDir()}/initrd.cpio`;
    Deno.writeFileSync(
      initrd,
      writeCpio([{ type: "file", path: "init", data: new Uint8Array(64), mode: 0o755 }]),
    );
    const { vm, out } = await bootLinux(
      microvm.vmlinux,
      initrd,
      /Run \/init as init process|Kernel panic/,
      240_000,
      2,
    );
    assert.equal(/Command line: (.*)\r?\n/.exec(out)?.[1], vm.built.cmdline);
    assert.match(out, /found SMP MP-table at \[mem 0x0009fc00-0x0009fc0f\]/);
    assert.match(out, /smp: Brought up 1 node, 2 CPUs/);
    assertNoKernelWarning(out);
    assert.equal(Number(/RAMDISK: \[mem (0x[0-9a-f]+)-/.exec(out)?.[1]), vm.built.initrd!.addr);
  },
});
