/**
 * The Intel MP table (MP spec 1.4): how a kernel without ACPI finds its CPUs,
 * the I/O APIC and the ISA interrupt routing.
 *
 * @module
 */

import { MP } from "../../../ffi/bootparam.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import { APIC_ADDR, EBDA_START, HIMEM_START, IOAPIC_ADDR, MPTABLE_ADDR } from "./layout.ts";

/** ISA interrupts routed 1:1 to I/O APIC pins. */
const ISA_IRQS = 16;
/** Most vCPUs one table can describe inside the reserved EBDA range. */
export const MAX_MP_CPUS = 254;

function checksum(b: Uint8Array): number {
  let sum = 0;
  for (const x of b) sum = (sum + x) & 0xff;
  return (0x100 - sum) & 0xff;
}

/** Bytes the table takes for `cpus` processors. */
export function mptableSize(cpus: number): number {
  return MP.floating_size + MP.config_header_size + cpus * MP.processor_size + MP.bus_size +
    MP.ioapic_size + ISA_IRQS * MP.intsrc_size + 2 * MP.lintsrc_size;
}

/**
 * Builds the floating pointer followed by the configuration table, to be
 * placed at `addr`.
 *
 * @example
 * ```ts
 * import { buildMptable } from "./mptable.ts";
 * const t = buildMptable(2, 0x9fc00);
 * new TextDecoder().decode(t.subarray(0, 4)); // "_MP_"
 * ```
 */
export function buildMptable(cpus: number, addr: number): Uint8Array {
  if (cpus < 1 || cpus > MAX_MP_CPUS) throw new RangeError(`MP table cannot list ${cpus} CPUs`);
  const out = new Uint8Array(mptableSize(cpus));
  const dv = new DataView(out.buffer);
  const ascii = (off: number, s: string) => {
    for (let i = 0; i < s.length; i++) out[off + i] = s.charCodeAt(i);
  };
  const ioapicId = cpus; // after the last local APIC id
  const cfgAddr = addr + MP.floating_size;

  // Floating pointer.
  ascii(0, "_MP_");
  dv.setUint32(4, cfgAddr, true);
  out[8] = 1; // length in 16-byte units
  out[9] = MP.spec_rev;

  // Entries after the header.
  let off = MP.floating_size + MP.config_header_size;
  let count = 0;
  for (let id = 0; id < cpus; id++) {
    out[off] = MP.type_processor;
    out[off + 1] = id;
    out[off + 2] = MP.apic_version;
    out[off + 3] = MP.cpu_enabled | (id === 0 ? MP.cpu_bootprocessor : 0);
    dv.setUint32(off + 4, 0x600, true); // family 6 signature
    dv.setUint32(off + 8, 0x201, true); // FPU | APIC
    off += MP.processor_size;
    count++;
  }
  out[off] = MP.type_bus;
  out[off + 1] = 0;
  ascii(off + 2, "ISA   ");
  off += MP.bus_size;
  count++;
  out[off] = MP.type_ioapic;
  out[off + 1] = ioapicId;
  out[off + 2] = MP.ioapic_version;
  out[off + 3] = 1; // enabled
  dv.setUint32(off + 4, IOAPIC_ADDR, true);
  off += MP.ioapic_size;
  count++;
  for (let irq = 0; irq < ISA_IRQS; irq++) {
    out[off] = MP.type_intsrc;
    out[off + 1] = MP.irq_int;
    out[off + 4] = 0; // source bus
    out[off + 5] = irq;
    out[off + 6] = ioapicId;
    out[off + 7] = irq;
    off += MP.intsrc_size;
    count++;
  }
  for (const [type, lint] of [[MP.irq_extint, 0], [MP.irq_nmi, 1]]) {
    out[off] = MP.type_lintsrc;
    out[off + 1] = type;
    out[off + 4] = 0;
    out[off + 5] = 0;
    out[off + 6] = 0xff; // every local APIC
    out[off + 7] = lint;
    off += MP.lintsrc_size;
    count++;
  }

  // Configuration table header.
  const h = MP.floating_size;
  ascii(h, "PCMP");
  dv.setUint16(h + 4, out.length - MP.floating_size, true);
  out[h + 6] = MP.spec_rev;
  ascii(h + 8, "VOLT    ");
  ascii(h + 16, "MICROVM     ");
  dv.setUint16(h + 34, count, true);
  dv.setUint32(h + 36, APIC_ADDR, true);
  out[h + 7] = checksum(out.subarray(h));
  out[10] = checksum(out.subarray(0, MP.floating_size));
  return out;
}

/** Writes the MP table into the reserved EBDA range. */
export function writeMptable(mem: GuestMemory, cpus: number): number {
  if (mptableSize(cpus) > HIMEM_START - EBDA_START) {
    throw new RangeError(`MP table for ${cpus} CPUs does not fit`);
  }
  mem.write(MPTABLE_ADDR, buildMptable(cpus, MPTABLE_ADDR));
  return MPTABLE_ADDR;
}
