import assert from "node:assert/strict";
import {
  type CpuidEntry,
  FEATURES,
  formatCpuid,
  TEMPLATES,
  vcpuCpuid,
} from "../src/arch/x86_64/cpuid.ts";
import { selectTemplate } from "../src/vmm/builder.ts";

const all = 0xffffffff;
const host: CpuidEntry[] = [
  { function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69 },
  { function: 1, index: 0, flags: 0, eax: 0x906ea, ebx: 0x00010800, ecx: all, edx: all },
  { function: 4, index: 0, flags: 1, eax: 0x121, ebx: 0, ecx: 0, edx: 0 },
  { function: 4, index: 3, flags: 1, eax: 0x163, ebx: 0, ecx: 0, edx: 0 },
  { function: 6, index: 0, flags: 0, eax: 7, ebx: 2, ecx: 9, edx: 0 },
  { function: 7, index: 0, flags: 1, eax: 0, ebx: all, ecx: all, edx: all },
  { function: 0xa, index: 0, flags: 0, eax: 0x7300404, ebx: 0, ecx: 0, edx: 0x603 },
  { function: 0xb, index: 0, flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 5 },
  { function: 0xb, index: 1, flags: 1, eax: 4, ebx: 8, ecx: 0x201, edx: 5 },
  { function: 0xd, index: 0, flags: 1, eax: 7, ebx: 0x340, ecx: 0x340, edx: 0 },
  { function: 0xd, index: 1, flags: 1, eax: 0xf, ebx: 0, ecx: 0, edx: 0 },
  { function: 0x80000001, index: 0, flags: 0, eax: 0, ebx: 0, ecx: all, edx: all },
];

const bit = (t: CpuidEntry[], name: string) => {
  const [leaf, sub, reg, b] = FEATURES[name];
  const e = t.find((x) => x.function === leaf && x.index === sub);
  return e ? (e[reg] >>> b) & 1 : undefined;
};

Deno.test("CPUID: virtualization, TSX, MPX and MONITOR hidden; hypervisor bit set", () => {
  const t = vcpuCpuid(host, { cpu: 0, cpus: 1 });
  for (const f of ["vmx", "svm", "hle", "rtm", "mpx", "monitor"]) assert.equal(bit(t, f), 0, f);
  assert.equal(bit(t, "hypervisor"), 1);
  assert.equal(bit(t, "cx16"), 1, "kept without a template");
  assert.equal(bit(t, "htt"), 0, "one vCPU: no HTT");
});

Deno.test("CPUID: thermal/power (0x6) and PMU (0xA) leaves blanked", () => {
  const t = vcpuCpuid(host, { cpu: 0, cpus: 1 });
  for (const leaf of [6, 0xa]) {
    const e = t.find((x) => x.function === leaf)!;
    assert.deepEqual([e.eax, e.ebx, e.ecx, e.edx], [0, 0, 0, 0]);
  }
});

Deno.test("CPUID: APIC id and topology per vCPU", () => {
  const t = vcpuCpuid(host, { cpu: 3, cpus: 4 });
  const l1 = t.find((x) => x.function === 1)!;
  assert.equal(l1.ebx >>> 24, 3);
  assert.equal((l1.ebx >>> 16) & 0xff, 4);
  assert.equal(bit(t, "htt"), 1);
  const l4 = t.find((x) => x.function === 4 && x.index === 0)!;
  assert.equal(l4.eax >>> 26, 3);
  const [smt, core] = t.filter((x) => x.function === 0xb);
  assert.deepEqual([smt.ebx, smt.edx, (smt.ecx >> 8) & 0xff], [1, 3, 1]);
  assert.deepEqual([core.eax, core.ebx, core.edx, (core.ecx >> 8) & 0xff], [2, 4, 3, 2]);
  assert.equal(host[1].ebx, 0x00010800, "input untouched");
});

Deno.test("CPUID: the PVM template hides what PVM's emulator lacks and the xsave leaf", () => {
  const t = vcpuCpuid(host, { cpu: 0, cpus: 1, template: TEMPLATES.pvm });
  for (
    const f of [
      "cx16",
      "popcnt",
      "xsave",
      "osxsave",
      "avx",
      "fsgsbase",
      "smep",
      "smap",
      "rdrand",
      "la57",
      "erms",
    ]
  ) {
    assert.equal(bit(t, f), 0, f);
  }
  const d = t.filter((x) => x.function === 0xd);
  assert.equal(d.length, 1);
  assert.deepEqual([d[0].eax, d[0].ebx], [0, 0]);
  assert.match(formatCpuid(t), /^leaf/);
});

Deno.test("CPU template selection: auto follows the host, unknown names refused", () => {
  assert.equal(selectTemplate("auto", true).name, "pvm");
  assert.equal(selectTemplate("auto", false).name, "none");
  assert.equal(selectTemplate("pvm", false).name, "pvm");
  assert.throws(() => selectTemplate("epyc"), /Unknown CPU template: epyc/);
});
