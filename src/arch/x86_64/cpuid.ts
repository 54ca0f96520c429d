/**
 * The CPUID table each vCPU sees: KVM's supported set, filtered for a
 * microVM (no nested virtualization, TSX, MPX, MONITOR/MWAIT, power or PMU
 * leaves), given per-vCPU APIC ids and topology, and optionally narrowed by a
 * CPU template.
 *
 * @module
 */

import { normalizeXstate } from "./xstate.ts";

/** One `kvm_cpuid_entry2`. */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** Named feature bits: [leaf, subleaf, register, bit]. */
type Reg = "eax" | "ebx" | "ecx" | "edx";
type Feature = readonly [number, number, Reg, number];

/** Features the filter or templates touch, by Linux's /proc/cpuinfo name. */
export const FEATURES: Record<string, Feature> = {
  monitor: [1, 0, "ecx", 3],
  vmx: [1, 0, "ecx", 5],
  fma: [1, 0, "ecx", 12],
  cx16: [1, 0, "ecx", 13],
  pdcm: [1, 0, "ecx", 15],
  pcid: [1, 0, "ecx", 17],
  movbe: [1, 0, "ecx", 22],
  popcnt: [1, 0, "ecx", 23],
  xsave: [1, 0, "ecx", 26],
  osxsave: [1, 0, "ecx", 27],
  avx: [1, 0, "ecx", 28],
  f16c: [1, 0, "ecx", 29],
  rdrand: [1, 0, "ecx", 30],
  hypervisor: [1, 0, "ecx", 31],
  htt: [1, 0, "edx", 28],
  fsgsbase: [7, 0, "ebx", 0],
  hle: [7, 0, "ebx", 4],
  avx2: [7, 0, "ebx", 5],
  smep: [7, 0, "ebx", 7],
  erms: [7, 0, "ebx", 9],
  invpcid: [7, 0, "ebx", 10],
  rtm: [7, 0, "ebx", 11],
  mpx: [7, 0, "ebx", 14],
  avx512f: [7, 0, "ebx", 16],
  rdseed: [7, 0, "ebx", 18],
  smap: [7, 0, "ebx", 20],
  clflushopt: [7, 0, "ebx", 23],
  clwb: [7, 0, "ebx", 24],
  umip: [7, 0, "ecx", 2],
  pku: [7, 0, "ecx", 3],
  ospke: [7, 0, "ecx", 4],
  waitpkg: [7, 0, "ecx", 5],
  la57: [7, 0, "ecx", 16],
  rdpid: [7, 0, "ecx", 22],
  fsrm: [7, 0, "edx", 4],
  xsaveopt: [0xd, 1, "eax", 0],
  xsavec: [0xd, 1, "eax", 1],
  xsaves: [0xd, 1, "eax", 3],
  svm: [0x80000001, 0, "ecx", 2],
  abm: [0x80000001, 0, "ecx", 5],
  rdtscp: [0x80000001, 0, "edx", 27],
};

/** What every microVM hides, whatever the host offers. */
const ALWAYS_HIDDEN = ["vmx", "svm", "hle", "rtm", "mpx", "monitor", "pdcm", "waitpkg"];

/** A CPU template: features to hide and whole leaves to blank. */
export interface CpuTemplate {
  name: string;
  description: string;
  hide: string[];
  blankLeaves: number[];
  /**
   * Kernel command-line words that hide features from the guest kernel
   * itself, for hosts where the guest's `cpuid` does not read the table
   * (PVM: it executes natively and sees the host's CPU).
   */
  cmdline: string[];
}

/**
 * What a guest kernel on PVM needs on its command line (DESIGN.md §5): the
 * guest's `cpuid` runs natively and reports the host's CPU whatever the
 * table says, and an instruction PVM's emulator lacks ends the VM, so the
 * kernel itself is told to leave those alone: XSAVE (its xstate setup also
 * warns, and a warning's `ud2` ends the VM), POPCNT (`hweight`) and SMAP
 * (`clac` at every interrupt entry). The minimal set, found by booting our
 * kernel to init on PVM with each of the 20 `clearcpuid=` features of the
 * first list that worked left out in turn: only POPCNT and SMAP could not
 * be.
 */
export const PVM_UNEMULATED = ["xsave", "popcnt", "smap"];

/**
 * The kernel command-line words that hide `features` from a Linux guest:
 * `noxsave` for XSAVE (and all that needs it), `clearcpuid=` for the rest.
 *
 * @example
 * ```ts
 * import { maskCmdline } from "./cpuid.ts";
 * console.log(maskCmdline(["xsave", "popcnt", "smap"])); // ["noxsave", "clearcpuid=popcnt,smap"]
 * ```
 */
export function maskCmdline(features: readonly string[]): string[] {
  const rest = features.filter((f) => f !== "xsave");
  return [
    ...(features.includes("xsave") ? ["noxsave"] : []),
    ...(rest.length ? [`clearcpuid=${rest.join(",")}`] : []),
  ];
}

/**
 * The features `cmdline` hides from a Linux guest (the inverse of
 * {@linkcode maskCmdline}).
 *
 * @example
 * ```ts
 * import { cmdlineMasks } from "./cpuid.ts";
 * console.log([...cmdlineMasks("console=ttyS0 noxsave clearcpuid=popcnt,smap")]);
 * // ["xsave", "popcnt", "smap"]
 * ```
 */
export function cmdlineMasks(cmdline: string): Set<string> {
  const out = new Set<string>();
  for (const w of cmdline.split(/\s+/)) {
    if (w === "noxsave") out.add("xsave");
    else if (w.startsWith("clearcpuid=")) {
      for (const f of w.slice("clearcpuid=".length).split(",")) if (f) out.add(f);
    }
  }
  return out;
}

/**
 * The PVM template's command line: {@linkcode PVM_UNEMULATED} masked, and
 * `noint3selftest` (our kernel's patch; others ignore it) skipping a boot
 * self-test whose int3 PVM cannot deliver.
 */
export const PVM_CMDLINE: string[] = ["noint3selftest", ...maskCmdline(PVM_UNEMULATED)];

/** XSAVE and every feature that needs it. */
const XSAVE_FAMILY = [
  "xsave",
  "osxsave",
  "xsaveopt",
  "xsavec",
  "xsaves",
  "avx",
  "avx2",
  "fma",
  "f16c",
  "avx512f",
];

/** Templates by name. */
export const TEMPLATES: Record<string, CpuTemplate> = {
  none: {
    name: "none",
    description: "KVM's supported CPUID, filtered",
    hide: [],
    blankLeaves: [],
    cmdline: [],
  },
  pvm: {
    name: "pvm",
    description: "hides what the PVM hypervisor's instruction emulator lacks",
    // The set that took a kernel to `Run /init` under PVM (DESIGN.md §5); the
    // xsave family goes with leaf 0xD and everything needing it (AVX*).
    hide: [
      "cx16",
      "popcnt",
      "fsgsbase",
      "pcid",
      "invpcid",
      "smap",
      "smep",
      "umip",
      "rdrand",
      "rdseed",
      "rdpid",
      "pku",
      "ospke",
      "la57",
      ...XSAVE_FAMILY,
      "erms",
      "fsrm",
      "clflushopt",
      "clwb",
      "movbe",
      "abm",
    ],
    blankLeaves: [0xd],
    cmdline: PVM_CMDLINE,
  },
  "nested-tcg": {
    name: "nested-tcg",
    description: "hides XSAVE, whose XCR0 a KVM nested in QEMU's TCG does not track",
    // TCG's SVM runs a guest's XSETBV without the intercept: the nested
    // KVM keeps XCR0=1, reports its sizes ("XSAVE consistency problem"
    // at every boot) and reloads it on every entry. FXSAVE needs no XCR0.
    hide: XSAVE_FAMILY,
    blankLeaves: [0xd],
    cmdline: [],
  },
};

function setBit(e: CpuidEntry, reg: Reg, bit: number, on: boolean): void {
  e[reg] = on ? (e[reg] | (1 << bit)) >>> 0 : (e[reg] & ~(1 << bit)) >>> 0;
}

function clone(entries: readonly CpuidEntry[]): CpuidEntry[] {
  return entries.map((e) => ({ ...e }));
}

function hide(entries: CpuidEntry[], name: string): void {
  const f = FEATURES[name];
  if (!f) throw new Error(`Unknown CPU feature: ${name}`);
  for (const e of entries) {
    if (e.function === f[0] && e.index === f[1]) setBit(e, f[2], f[3], false);
  }
}

/** Bits needed to number `n` things. */
function bitsFor(n: number): number {
  return n <= 1 ? 0 : Math.ceil(Math.log2(n));
}

/** Options of {@linkcode vcpuCpuid}. */
export interface CpuidOptions {
  /** Index of this vCPU, its APIC id. */
  cpu: number;
  /** vCPUs in the VM. */
  cpus: number;
  /** Template to apply. */
  template?: CpuTemplate;
}

/**
 * The table for one vCPU, from KVM_GET_SUPPORTED_CPUID's entries. One core
 * per vCPU, one thread per core, one package.
 *
 * @example
 * ```ts
 * import { vcpuCpuid } from "./cpuid.ts";
 * const t = vcpuCpuid([{ function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0x20, edx: 0 }],
 *   { cpu: 1, cpus: 2 });
 * t[0].ebx >>> 24; // 1: the APIC id
 * ```
 */
export function vcpuCpuid(supported: readonly CpuidEntry[], opts: CpuidOptions): CpuidEntry[] {
  const { cpu, cpus } = opts;
  const template = opts.template ?? TEMPLATES.none;
  const blank = new Set([0x6, 0xa, ...template.blankLeaves]);
  const out = clone(supported).filter((e) => !blank.has(e.function) || e.index === 0);
  for (const e of out) {
    if (blank.has(e.function)) {
      e.eax =
        e.ebx =
        e.ecx =
        e.edx =
          0;
      continue;
    }
    switch (e.function) {
      case 1:
        // APIC id, logical processors per package, CLFLUSH line size 64.
        e.ebx = ((cpu << 24) | ((cpus & 0xff) << 16) | (8 << 8) | (e.ebx & 0xff)) >>> 0;
        setBit(e, "ecx", FEATURES.hypervisor[3], true);
        setBit(e, "edx", FEATURES.htt[3], cpus > 1);
        break;
      case 4: {
        // Cores per package - 1 in 31:26; threads sharing the cache - 1 in 25:14.
        const level = (e.eax >> 5) & 7;
        const sharing = level >= 3 ? cpus - 1 : 0;
        e.eax = ((e.eax & 0x3fff) | (sharing << 14) | ((cpus - 1) << 26)) >>> 0;
        break;
      }
      case 0xb:
      case 0x1f: {
        // Leaf 0xB: level 0 = SMT (1 thread), level 1 = core (all vCPUs).
        e.edx = cpu;
        if (e.index === 0) {
          e.eax = 0;
          e.ebx = 1;
          e.ecx = (1 << 8) | 0;
        } else if (e.index === 1) {
          e.eax = bitsFor(cpus);
          e.ebx = cpus;
          e.ecx = (2 << 8) | 1;
        } else {
          e.eax = e.ebx = 0;
          e.ecx = e.index;
        }
        break;
      }
      case 0x80000008:
        // Cores per package - 1 (AMD's NC field).
        e.ecx = ((e.ecx & ~0xff) | (cpus - 1)) >>> 0;
        break;
    }
  }
  for (const name of [...ALWAYS_HIDDEN, ...template.hide]) hide(out, name);
  normalizeXstate(out);
  return out;
}

/** Formats a table for `volt cpuid`. */
export function formatCpuid(entries: readonly CpuidEntry[]): string {
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  const lines = ["leaf     sub  eax      ebx      ecx      edx"];
  for (const e of entries) {
    lines.push(
      `${hex(e.function)} ${e.index.toString(16).padStart(3)}  ${hex(e.eax)} ${hex(e.ebx)} ${
        hex(e.ecx)
      } ${hex(e.edx)}`,
    );
  }
  return lines.join("\n");
}
