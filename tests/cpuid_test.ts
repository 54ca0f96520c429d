import assert from "node:assert/strict";
import {
  type CpuidEntry,
  FEATURES,
  formatCpuid,
  TEMPLATES,
  vcpuCpuid,
} from "../src/arch/x86_64/cpuid.ts";
import { selectTemplate } from "../src/vmm/builder.ts";
import {
  cmdlineMasks,
  maskCmdline,
  PVM_CMDLINE,
  PVM_UNEMULATED,
} from "../src/arch/x86_64/cpuid.ts";
import { normalizeXstate, xstateProblems } from "../src/arch/x86_64/xstate.ts";
import { isTcgHost } from "../src/vmm/host.ts";

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
  assert.equal(selectTemplate("auto", false, false).name, "none");
  assert.equal(selectTemplate("auto", false, true).name, "nested-tcg");
  assert.equal(selectTemplate("none", false, true).name, "none");
  assert.equal(selectTemplate("pvm", false).name, "pvm");
  assert.throws(() => selectTemplate("epyc"), /Unknown CPU template: epyc/);
});

/** KVM_GET_SUPPORTED_CPUID as recorded on each kind of host this project met. */
const recorded: Record<string, CpuidEntry[]> = {
  // PVM (AMD EPYC): XSAVE clear in leaf 1, yet leaf 0xD lists AVX and AVX-512 state.
  pvm: JSON.parse(
    Deno.readTextFileSync(new URL("fixtures/cpuid/pvm_amd_epyc.json", import.meta.url)),
  ),
  // KVM nested in QEMU TCG (-cpu max): XSAVE with AVX and PKRU.
  "helper VM": JSON.parse(
    Deno.readTextFileSync(new URL("fixtures/cpuid/helper_vm_tcg_svm.json", import.meta.url)),
  ),
  synthetic: host,
};

Deno.test("CPUID: leaf 0xD agrees with the table for every recorded host and template", () => {
  assert.ok(xstateProblems(recorded.pvm).length > 0, "the raw PVM table is inconsistent");
  for (const [where, supported] of Object.entries(recorded)) {
    for (const template of Object.values(TEMPLATES)) {
      for (const cpus of [1, 3]) {
        const t = vcpuCpuid(supported, { cpu: 0, cpus, template });
        assert.deepEqual(xstateProblems(t), [], `${where}, ${template.name}`);
      }
    }
  }
});

Deno.test("CPUID: xstate normalization keeps what is consistent and drops the rest", () => {
  const t = recorded["helper VM"].map((e) => ({ ...e }));
  normalizeXstate(t);
  const d0 = t.find((e) => e.function === 0xd && e.index === 0)!;
  // x87, SSE, AVX (offered) and PKRU (PKU offered): 0xa80 + 8 bytes.
  assert.deepEqual([d0.eax, d0.ebx, d0.ecx], [0x207, 0xa88, 0xa88]);
  const pvm = vcpuCpuid(recorded.pvm, { cpu: 0, cpus: 1, template: TEMPLATES.none });
  for (const e of pvm.filter((e) => e.function === 0xd)) {
    assert.deepEqual([e.eax, e.ebx, e.ecx, e.edx], [0, 0, 0, 0], "XSAVE is off: 0xD is empty");
  }
  // XSAVE on, AVX-512 state listed without AVX-512F: the ZMM components go.
  const avx512 = [
    { function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: (1 << 26) | (1 << 28), edx: 0 },
    { function: 7, index: 0, flags: 1, eax: 0, ebx: 0, ecx: 0, edx: 0 },
    { function: 0xd, index: 0, flags: 1, eax: 0xe7, ebx: 0x980, ecx: 0x980, edx: 0 },
    { function: 0xd, index: 2, flags: 1, eax: 0x100, ebx: 0x240, ecx: 0, edx: 0 },
    { function: 0xd, index: 5, flags: 1, eax: 0x40, ebx: 0x340, ecx: 0, edx: 0 },
    { function: 0xd, index: 6, flags: 1, eax: 0x200, ebx: 0x380, ecx: 0, edx: 0 },
    { function: 0xd, index: 7, flags: 1, eax: 0x400, ebx: 0x580, ecx: 0, edx: 0 },
  ];
  assert.ok(xstateProblems(avx512).includes("component 5 offered without its CPU feature"));
  normalizeXstate(avx512);
  assert.deepEqual([avx512[2].eax, avx512[2].ebx, avx512[2].ecx], [7, 0x340, 0x340]);
  assert.deepEqual(avx512.slice(4).map((e) => e.eax), [0, 0, 0]);
  assert.deepEqual(xstateProblems(avx512), []);
});

Deno.test("CPUID: PVM's command line masks what its emulator lacks, and the table agrees", () => {
  assert.deepEqual(maskCmdline(["xsave", "popcnt"]), ["noxsave", "clearcpuid=popcnt"]);
  assert.deepEqual(maskCmdline([]), []);
  const masked = cmdlineMasks(PVM_CMDLINE.join(" "));
  assert.deepEqual([...masked].sort(), [...PVM_UNEMULATED].sort());
  assert.ok(PVM_CMDLINE.includes("noint3selftest"));
  assert.deepEqual(TEMPLATES.pvm.cmdline, PVM_CMDLINE);
  const t = vcpuCpuid(host, { cpu: 0, cpus: 1, template: TEMPLATES.pvm });
  for (const f of masked) {
    assert.equal(bit(t, f), 0, `${f} masked on the command line but not in the table`);
  }
  assert.deepEqual(TEMPLATES.none.cmdline, []);
});

Deno.test("CPUID: the nested-tcg template hides XSAVE and all that needs it", () => {
  const t = vcpuCpuid(recorded["helper VM"], {
    cpu: 0,
    cpus: 1,
    template: TEMPLATES["nested-tcg"],
  });
  for (const f of ["xsave", "osxsave", "avx", "avx2", "xsaveopt"]) assert.notEqual(bit(t, f), 1, f);
  assert.equal(t.filter((e) => e.function === 0xd && (e.eax | e.ebx | e.ecx | e.edx)).length, 0);
  assert.equal(bit(t, "popcnt"), 1, "nothing else is hidden");
  assert.ok(isTcgHost("processor\t: 0\nmodel name\t: QEMU TCG CPU version 2.5+\n"));
  assert.ok(!isTcgHost("model name\t: AMD EPYC 7B13 64-Core Processor\n"));
});
