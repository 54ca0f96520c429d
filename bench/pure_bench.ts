/**
 * The hot pure code: image parsing, CPUID table build, the UART register
 * path and exit dispatch on the port bus, cpio writing.
 *
 * Run: deno bench -A bench/
 */
import { bytesImage } from "../src/boot/image.ts";
import { parseElf } from "../src/boot/elf.ts";
import { parseBzImage } from "../src/boot/bzimage.ts";
import { type CpuidEntry, TEMPLATES, vcpuCpuid } from "../src/arch/x86_64/cpuid.ts";
import { newSerialState, SharedSerial } from "../src/devices/serial.ts";
import { Bus } from "../src/devices/bus.ts";
import { I8042 } from "../src/devices/i8042.ts";
import { writeCpio } from "../src/guest/cpio.ts";
import { debianKernelPaths } from "../src/guest/kernels.ts";
import { makeBzImage, makeElf } from "../tests/images.ts";
import { buildFilter, MONITOR_POLICY } from "../src/sandbox/seccomp.ts";
import { run as runBpf } from "../src/sandbox/bpf.ts";
import { AUDIT_ARCH_X86_64 } from "../ffi/seccomp.ts";
import { SYSCALLS } from "../ffi/syscalls.ts";
import { EXIT, RUN } from "../ffi/kvm.ts";
import { VcpuLoop } from "../src/vmm/vcpu_loop.ts";

const deb = debianKernelPaths();
const vmlinux = deb
  ? Deno.readFileSync(deb.vmlinux)
  : makeElf({ code: new Uint8Array(1 << 20), pvhEntry: 0x1000000 });
const bz = deb ? Deno.readFileSync(deb.bzImage) : makeBzImage({ code: new Uint8Array(1 << 20) });

Deno.bench("parse vmlinux headers and PVH note", { group: "loaders" }, () => {
  parseElf(bytesImage("vmlinux", vmlinux));
});

Deno.bench("parse bzImage setup header", { group: "loaders" }, () => {
  parseBzImage(bytesImage("bzImage", bz));
});

const leaves: CpuidEntry[] = [];
for (let f = 0; f <= 0x1f; f++) {
  leaves.push({ function: f, index: 0, flags: 0, eax: f, ebx: 0, ecx: 0, edx: 0 });
}
for (let f = 0x80000000; f <= 0x80000008; f++) {
  leaves.push({ function: f, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 });
}

Deno.bench("CPUID table for one vCPU (PVM template)", () => {
  vcpuCpuid(leaves, { cpu: 1, cpus: 4, template: TEMPLATES.pvm });
});

const sink = { writeSync: (d: Uint8Array) => d.length };
const bus = new Bus();
bus.insert(0x3f8, 8, new SharedSerial(newSerialState(), sink, { trigger() {} }));
bus.insert(0x60, 5, new I8042(() => {}));
const byte = new Uint8Array([0x41]);
const lsr = new Uint8Array(1);

Deno.bench("port exit: UART THR write + LSR read via the bus", { group: "exit" }, () => {
  bus.write(0x3f8, byte);
  bus.read(0x3fd, lsr);
});

Deno.bench("port exit: unclaimed port read", { group: "exit" }, () => {
  bus.read(0x1234, lsr);
});

const files = Array.from({ length: 400 }, (_, i) => ({
  type: "file" as const,
  path: `bin/f${i}`,
  data: new Uint8Array(1024),
}));
Deno.bench("cpio: 400 files of 1 KiB", () => {
  writeCpio(files);
});

Deno.bench("seccomp: build the monitor's BPF program", { group: "sandbox" }, () => {
  buildFilter(MONITOR_POLICY);
});

const program = buildFilter(MONITOR_POLICY);
const futex = {
  nr: SYSCALLS.futex,
  arch: AUDIT_ARCH_X86_64,
  ip: 0n,
  args: [0n, 0n, 0n, 0n, 0n, 0n],
};
Deno.bench("seccomp: emulate the filter on futex (last plain entry)", { group: "sandbox" }, () => {
  runBpf(program, futex);
});

// A kvm_run page holding a 1-byte OUT to the UART, dispatched as the vCPU
// loop does after KVM_RUN returns (without the ioctl).
const runPage = new Uint8Array(4096);
const rv = new DataView(runPage.buffer);
rv.setUint32(RUN.exit_reason, EXIT.IO, true);
rv.setUint8(RUN.io_direction, 1);
rv.setUint8(RUN.io_size, 1);
rv.setUint16(RUN.io_port, 0x3f8, true);
rv.setUint32(RUN.io_count, 1, true);
rv.setBigUint64(RUN.io_data_offset, 2048n, true);
const loop = new VcpuLoop({
  id: 0,
  fd: -1,
  run: runPage,
  pio: bus,
  mmio: new Bus(),
  ctl: new Int32Array(new SharedArrayBuffer(16)),
});
Deno.bench("exit dispatch: kvm_run IO exit → UART THR", { group: "exit" }, () => {
  loop.dispatch();
});
