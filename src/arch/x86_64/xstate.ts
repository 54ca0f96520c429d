/**
 * CPUID leaf 0xD (the XSAVE state components) made consistent with the
 * rest of the table. KVM reports what the host saves, which need not match
 * what the table offers: PVM clears XSAVE in leaf 1 but leaves leaf 0xD
 * full, and a host may list AVX-512 state for a vCPU without AVX-512. Linux
 * warns at boot ("misordered xstate", "XSAVE consistency problem") on any
 * disagreement, and a warning ends a VM on PVM. So a component stays only
 * when its feature is offered and its sub-leaf describes it, and the sizes
 * in sub-leaf 0 are recomputed from what stays (Firecracker normalizes this
 * leaf the same way).
 *
 * @module
 */

import type { CpuidEntry } from "./cpuid.ts";

/** The legacy region (x87 + SSE, 512 bytes) and the XSAVE header (64 bytes). */
export const XSAVE_LEGACY_SIZE = 576;

/** x87 and SSE: always present with XSAVE, described by the legacy region. */
const LEGACY_MASK = 0x3;

/**
 * User state components Linux knows, with the CPUID feature each needs:
 * [leaf, subleaf, register, bit]. A component not listed is dropped.
 */
const COMPONENTS: Record<number, readonly [number, number, "ebx" | "ecx" | "edx", number]> = {
  2: [1, 0, "ecx", 28], // YMM: AVX
  3: [7, 0, "ebx", 14], // MPX bounds: MPX
  4: [7, 0, "ebx", 14], // MPX CSR: MPX
  5: [7, 0, "ebx", 16], // opmask: AVX-512F
  6: [7, 0, "ebx", 16], // ZMM_Hi256: AVX-512F
  7: [7, 0, "ebx", 16], // Hi16_ZMM: AVX-512F
  9: [7, 0, "ecx", 3], // PKRU: PKU
  17: [7, 0, "edx", 24], // AMX TILECFG: AMX-TILE
  18: [7, 0, "edx", 24], // AMX TILEDATA: AMX-TILE
};

function find(t: readonly CpuidEntry[], leaf: number, sub = 0): CpuidEntry | undefined {
  return t.find((e) => e.function === leaf && e.index === sub);
}

function has(t: readonly CpuidEntry[], f: readonly [number, number, string, number]): boolean {
  const e = find(t, f[0], f[1]);
  return e !== undefined && ((e[f[2] as "ecx"] >>> f[3]) & 1) === 1;
}

/** XSAVE (CPUID.1:ECX bit 26). */
const XSAVE: readonly [number, number, "ecx", number] = [1, 0, "ecx", 26];

/** Bits of a 64-bit mask given as its low and high halves. */
function bitsOf(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < 32; i++) if ((lo >>> i) & 1) out.push(i);
  for (let i = 0; i < 32; i++) if ((hi >>> i) & 1) out.push(32 + i);
  return out;
}

/**
 * Fixes leaf 0xD of `t` in place so that it agrees with the features the
 * table offers: without XSAVE every sub-leaf is zero; with it, each user
 * component needs its feature and a sub-leaf with a size and an offset past
 * the legacy region, and sub-leaf 0's sizes are those of what remains.
 *
 * @example
 * ```ts
 * import { normalizeXstate } from "./xstate.ts";
 * const t = [
 *   { function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 1 << 26, edx: 0 }, // XSAVE, no AVX
 *   { function: 0xd, index: 0, flags: 1, eax: 7, ebx: 832, ecx: 832, edx: 0 },
 *   { function: 0xd, index: 2, flags: 1, eax: 256, ebx: 576, ecx: 0, edx: 0 },
 * ];
 * normalizeXstate(t);
 * console.log(t[1].eax, t[1].ecx, t[2].eax); // 3 576 0: YMM went with AVX
 * ```
 */
export function normalizeXstate(t: CpuidEntry[]): void {
  const leaf0 = find(t, 0xd, 0);
  if (!leaf0) return;
  const zero = (e: CpuidEntry) => (e.eax =
    e.ebx =
    e.ecx =
    e.edx =
      0);
  if (!has(t, XSAVE)) {
    for (const e of t) if (e.function === 0xd) zero(e);
    return;
  }
  let lo = leaf0.eax & LEGACY_MASK;
  let size = XSAVE_LEGACY_SIZE;
  for (const i of bitsOf(leaf0.eax, leaf0.edx)) {
    if (i < 2) continue;
    const need = COMPONENTS[i];
    const sub = find(t, 0xd, i);
    const ok = need !== undefined && has(t, need) && sub !== undefined && sub.eax > 0 &&
      sub.ebx >= XSAVE_LEGACY_SIZE;
    if (!ok) {
      if (sub) zero(sub);
      continue;
    }
    lo |= 1 << i;
    size = Math.max(size, sub.ebx + sub.eax);
  }
  // Components 17 and 18 are the only ones above bit 9 kept; all fit in EAX.
  leaf0.eax = lo >>> 0;
  leaf0.edx = 0;
  leaf0.ebx = size;
  leaf0.ecx = size;
  // Sub-leaves of user components no longer offered describe nothing.
  const xss = find(t, 0xd, 1);
  const supervisor = xss ? bitsOf(xss.ecx, xss.edx) : [];
  for (const e of t) {
    if (e.function !== 0xd || e.index < 2) continue;
    if (((lo >>> e.index) & 1) === 0 && e.index < 32 && !supervisor.includes(e.index)) zero(e);
  }
}

/**
 * What is inconsistent in `t`'s leaf 0xD, one phrase a problem (empty when
 * none): the invariants {@linkcode normalizeXstate} establishes.
 *
 * @example
 * ```ts
 * import { xstateProblems } from "./xstate.ts";
 * const t = [
 *   { function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 },
 *   { function: 0xd, index: 0, flags: 1, eax: 7, ebx: 832, ecx: 832, edx: 0 },
 * ];
 * console.log(xstateProblems(t)); // ["leaf 0xD.0 is not empty without XSAVE"]
 * ```
 */
export function xstateProblems(t: readonly CpuidEntry[]): string[] {
  const leaf0 = find(t, 0xd, 0);
  if (!leaf0) return [];
  const out: string[] = [];
  if (!has(t, XSAVE)) {
    for (const e of t) {
      if (e.function === 0xd && (e.eax | e.ebx | e.ecx | e.edx) !== 0) {
        out.push(`leaf 0xD.${e.index} is not empty without XSAVE`);
      }
    }
    return out;
  }
  if ((leaf0.eax & LEGACY_MASK) !== LEGACY_MASK) out.push("x87 or SSE state missing");
  let size = XSAVE_LEGACY_SIZE;
  for (const i of bitsOf(leaf0.eax, leaf0.edx)) {
    if (i < 2) continue;
    const need = COMPONENTS[i];
    const sub = find(t, 0xd, i);
    if (!need) out.push(`component ${i} is not one Linux knows`);
    else if (!has(t, need)) out.push(`component ${i} offered without its CPU feature`);
    if (!sub || sub.eax === 0) out.push(`component ${i} has no size`);
    else if (sub.ebx < XSAVE_LEGACY_SIZE) out.push(`component ${i} overlaps the legacy region`);
    else size = Math.max(size, sub.ebx + sub.eax);
  }
  if (leaf0.ebx !== size || leaf0.ecx !== size) {
    out.push(`sizes ${leaf0.ebx}/${leaf0.ecx} != ${size} computed from the components`);
  }
  return out;
}
