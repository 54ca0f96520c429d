/**
 * The register state a vCPU enters the kernel with, for each entry path.
 *
 * @module
 */

import { bootGdt, type Segment, segmentFromEntry, SELECTOR } from "./gdt.ts";
import { BOOT_STACK_ADDR, GDT_ADDR, IDT_ADDR } from "./layout.ts";

/** General-purpose registers that differ from zero at entry. */
export interface BootRegs {
  rip: number;
  rsp: number;
  rbp: number;
  rsi: number;
  rbx: number;
  rflags: number;
}

/** A descriptor-table register. */
export interface DTable {
  base: number;
  limit: number;
}

/** Segment and control registers at entry. */
export interface BootSregs {
  cs: Segment;
  ds: Segment;
  es: Segment;
  fs: Segment;
  gs: Segment;
  ss: Segment;
  tr: Segment;
  gdt: DTable;
  idt: DTable;
  cr0: number;
  cr3: number;
  cr4: number;
  efer: number;
}

/** How the kernel is entered. */
export type EntryMode = "linux64" | "pvh" | "real";

const CR0_PE = 0x1;
const CR0_ET = 0x10;
const CR0_PG = 0x80000000;
const CR4_PAE = 0x20;
const EFER_LME = 0x100;
const EFER_LMA = 0x400;
/** Bit 1 of RFLAGS is reserved and always set. */
export const RFLAGS_RESERVED = 0x2;

/**
 * Registers for the 64-bit boot protocol (RSI = zero page) or PVH (EBX =
 * start info).
 *
 * @example
 * ```ts
 * import { bootRegs } from "./regs.ts";
 * bootRegs("linux64", 0x1000000, 0x7000).rsi; // 0x7000
 * ```
 */
export function bootRegs(mode: EntryMode, entry: number, bootInfo: number): BootRegs {
  return {
    rip: entry,
    rsp: mode === "real" ? 0 : BOOT_STACK_ADDR,
    rbp: mode === "real" ? 0 : BOOT_STACK_ADDR,
    rsi: mode === "linux64" ? bootInfo : 0,
    rbx: mode === "pvh" ? bootInfo : 0,
    rflags: RFLAGS_RESERVED,
  };
}

/**
 * Segment and control registers: long mode with paging for `linux64`,
 * flat 32-bit protected mode without paging for `pvh`.
 */
export function bootSregs(mode: "linux64" | "pvh", cr3: number): BootSregs {
  const gdt = bootGdt();
  const seg = (sel: number) => segmentFromEntry(gdt[sel / 8], sel);
  const code = seg(mode === "linux64" ? SELECTOR.code64 : SELECTOR.code32);
  const data = seg(SELECTOR.data);
  const long = mode === "linux64";
  return {
    cs: code,
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    tr: seg(SELECTOR.tss),
    gdt: { base: GDT_ADDR, limit: gdt.length * 8 - 1 },
    idt: { base: IDT_ADDR, limit: 7 },
    cr0: long ? (CR0_PE | CR0_ET | CR0_PG) >>> 0 : CR0_PE | CR0_ET,
    cr3: long ? cr3 : 0,
    cr4: long ? CR4_PAE : 0,
    efer: long ? EFER_LME | EFER_LMA : 0,
  };
}

/** FPU control word and MXCSR at reset. */
export const FPU_FCW = 0x37f;
/** MXCSR at reset: every exception masked. */
export const FPU_MXCSR = 0x1f80;
