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
import { newSerialState, Serial } from "../src/devices/serial.ts";
import { Bus } from "../src/devices/bus.ts";
import { I8042 } from "../src/devices/i8042.ts";
import { writeCpio } from "../src/guest/cpio.ts";
import { debianKernelPaths } from "../src/guest/kernels.ts";
import { makeBzImage, makeElf } from "../tests/images.ts";

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
bus.insert(0x3f8, 8, new Serial(newSerialState(), sink, { trigger() {} }));
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
