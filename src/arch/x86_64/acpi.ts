/**
 * ACPI tables for a hardware-reduced microVM (ACPI 6.5 §5.2): the RSDP,
 * an XSDT naming the FADT and the MADT, and a DSDT. The FADT points at the
 * sleep control, sleep status and reset registers (layout.ts); the MADT
 * lists every local APIC, the I/O APIC and the ISA lines' routing; the
 * DSDT describes each virtio-mmio device (`LNRO0005`, its window and
 * line) and the soft-off state, so a kernel that reads ACPI finds CPUs,
 * devices and power-off without the MP table or the command line.
 *
 * @module
 */

import {
  ACCESS_BYTE,
  ADR_SPACE_SYSTEM_IO,
  FADT,
  FADT_BOOT,
  FADT_FLAGS,
  GAS,
  MADT,
  MADT_ENTRY,
  RSDP,
  S5_SLEEP_TYPE,
  SDT,
} from "../../../ffi/acpi.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import * as aml from "./aml.ts";
import {
  ACPI_RESET_PORT,
  ACPI_RESET_VALUE,
  ACPI_RSDP_ADDR,
  ACPI_SLEEP_CONTROL_PORT,
  ACPI_SLEEP_STATUS_PORT,
  ACPI_TABLES_ADDR,
  ACPI_TABLES_END,
  APIC_ADDR,
  I8042_CMD_PORT,
  I8042_DATA_PORT,
  I8042_IRQ,
  IOAPIC_ADDR,
  SERIAL_IRQ,
  SERIAL_PORT,
} from "./layout.ts";

/** A virtio-mmio device as the DSDT describes it. */
export interface AcpiMmioDevice {
  base: number;
  size: number;
  irq: number;
}

/** What the tables describe. */
export interface AcpiConfig {
  cpus: number;
  devices: readonly AcpiMmioDevice[];
}

/** Most vCPUs the MADT lists (8-bit APIC IDs; the I/O APIC takes the next). */
export const MAX_ACPI_CPUS = 254;
/** ISA lines the machine uses, stated as identity overrides (edge, active high). */
const ISA_OVERRIDES = [0, I8042_IRQ, SERIAL_IRQ];
const OEM_ID = "VOLT  ";
const OEM_TABLE_ID = "VOLTVM  ";

/** The byte that makes `b` sum to zero. */
export function acpiChecksum(b: Uint8Array): number {
  let sum = 0;
  for (const x of b) sum = (sum + x) & 0xff;
  return (0x100 - sum) & 0xff;
}

function ascii(out: Uint8Array, off: number, s: string): void {
  for (let i = 0; i < s.length; i++) out[off + i] = s.charCodeAt(i);
}

/** A table of `length` bytes with its header filled in (checksum last, by {@linkcode seal}). */
function table(signature: string, length: number, revision: number): Uint8Array {
  const out = new Uint8Array(length);
  const dv = new DataView(out.buffer);
  ascii(out, SDT.signature, signature);
  dv.setUint32(SDT.length, length, true);
  out[SDT.revision] = revision;
  ascii(out, SDT.oem_id, OEM_ID);
  ascii(out, SDT.oem_table_id, OEM_TABLE_ID);
  dv.setUint32(SDT.oem_revision, 1, true);
  ascii(out, SDT.asl_compiler_id, "VOLT");
  dv.setUint32(SDT.asl_compiler_revision, 1, true);
  return out;
}

function seal(t: Uint8Array): Uint8Array {
  t[SDT.checksum] = 0;
  t[SDT.checksum] = acpiChecksum(t);
  return t;
}

/** A byte-wide I/O port register, as a generic address. */
function ioRegister(dv: DataView, off: number, port: number): void {
  dv.setUint8(off + GAS.space_id, ADR_SPACE_SYSTEM_IO);
  dv.setUint8(off + GAS.bit_width, 8);
  dv.setUint8(off + GAS.bit_offset, 0);
  dv.setUint8(off + GAS.access_width, ACCESS_BYTE);
  dv.setBigUint64(off + GAS.address, BigInt(port), true);
}

/**
 * The DSDT: the soft-off state, COM1 and the i8042 (a hardware-reduced
 * kernel has no legacy ISA lines: it maps theirs from these), and one
 * `LNRO0005` device per virtio-mmio window.
 */
export function buildDsdt(devices: readonly AcpiMmioDevice[]): Uint8Array {
  if (devices.length > 0x100) throw new RangeError("Too many virtio devices for the DSDT");
  const legacy = [
    aml.device("COM1", [
      aml.name("_HID", aml.eisaId("PNP0501")),
      aml.name("_UID", aml.integer(0)),
      aml.name(
        "_CRS",
        aml.resourceTemplate([aml.ioPorts(SERIAL_PORT, 8), aml.edgeInterrupt(SERIAL_IRQ)]),
      ),
    ]),
    aml.device("PS2K", [
      aml.name("_HID", aml.eisaId("PNP0303")),
      aml.name(
        "_CRS",
        aml.resourceTemplate([
          aml.ioPorts(I8042_DATA_PORT, 1),
          aml.ioPorts(I8042_CMD_PORT, 1),
          aml.edgeInterrupt(I8042_IRQ),
        ]),
      ),
    ]),
  ];
  const body = aml.terms([
    aml.name("_S5_", aml.pkg([aml.integer(S5_SLEEP_TYPE), aml.integer(0)])),
    aml.rootScope(
      "_SB_",
      [
        ...legacy,
        ...devices.map((d, i) =>
          aml.device(`V${i.toString(16).toUpperCase().padStart(3, "0")}`, [
            aml.name("_HID", aml.string("LNRO0005")),
            aml.name("_UID", aml.integer(i)),
            aml.name(
              "_CRS",
              aml.resourceTemplate([aml.memory32Fixed(d.base, d.size), aml.edgeInterrupt(d.irq)]),
            ),
          ])
        ),
      ],
    ),
  ]);
  const t = table("DSDT", SDT.size + body.length, 2);
  t.set(body, SDT.size);
  return seal(t);
}

/** The FADT: hardware-reduced, with the sleep and reset registers and `dsdt`'s address. */
export function buildFadt(dsdt: number): Uint8Array {
  const t = table("FACP", FADT.size, FADT.revision);
  const dv = new DataView(t.buffer);
  t[FADT.minor_revision] = FADT.minor_revision_value;
  dv.setUint32(
    FADT.flags,
    FADT_FLAGS.HW_REDUCED | FADT_FLAGS.RESET_REGISTER | FADT_FLAGS.POWER_BUTTON |
      FADT_FLAGS.SLEEP_BUTTON,
    true,
  );
  // The i8042 is there (Ctrl-Alt-Del, the keyboard reset); VGA, MSI and the CMOS clock are not.
  dv.setUint16(
    FADT.boot_flags,
    FADT_BOOT.I8042 | FADT_BOOT.NO_VGA | FADT_BOOT.NO_MSI | FADT_BOOT.NO_ASPM |
      FADT_BOOT.NO_CMOS_RTC,
    true,
  );
  ioRegister(dv, FADT.reset_register, ACPI_RESET_PORT);
  t[FADT.reset_value] = ACPI_RESET_VALUE;
  // Only the 64-bit pointer: a 32-bit one too would have to match it.
  dv.setBigUint64(FADT.Xdsdt, BigInt(dsdt), true);
  ioRegister(dv, FADT.sleep_control, ACPI_SLEEP_CONTROL_PORT);
  ioRegister(dv, FADT.sleep_status, ACPI_SLEEP_STATUS_PORT);
  ascii(t, FADT.hypervisor_id, "VOLT");
  return seal(t);
}

/** The MADT: `cpus` local APICs (IDs 0..cpus-1), the I/O APIC (ID `cpus`), ISA overrides, NMI. */
export function buildMadt(cpus: number): Uint8Array {
  if (!(Number.isInteger(cpus) && cpus >= 1 && cpus <= MAX_ACPI_CPUS)) {
    throw new RangeError(`The MADT cannot list ${cpus} CPUs`);
  }
  const length = MADT.entries + cpus * MADT_ENTRY.LOCAL_APIC_SIZE + MADT_ENTRY.IO_APIC_SIZE +
    ISA_OVERRIDES.length * MADT_ENTRY.INTERRUPT_OVERRIDE_SIZE + MADT_ENTRY.LOCAL_APIC_NMI_SIZE;
  const t = table("APIC", length, 6);
  const dv = new DataView(t.buffer);
  dv.setUint32(MADT.address, APIC_ADDR, true);
  dv.setUint32(MADT.flags, MADT.PCAT_COMPAT, true);
  let off = MADT.entries;
  for (let id = 0; id < cpus; id++) {
    t[off] = MADT_ENTRY.LOCAL_APIC;
    t[off + 1] = MADT_ENTRY.LOCAL_APIC_SIZE;
    t[off + 2] = id; // processor UID
    t[off + 3] = id; // APIC ID
    dv.setUint32(off + 4, MADT_ENTRY.ENABLED, true);
    off += MADT_ENTRY.LOCAL_APIC_SIZE;
  }
  t[off] = MADT_ENTRY.IO_APIC;
  t[off + 1] = MADT_ENTRY.IO_APIC_SIZE;
  t[off + 2] = cpus; // after the last local APIC, as the MP table has it
  dv.setUint32(off + 4, IOAPIC_ADDR, true);
  dv.setUint32(off + 8, 0, true); // GSI base
  off += MADT_ENTRY.IO_APIC_SIZE;
  for (const irq of ISA_OVERRIDES) {
    t[off] = MADT_ENTRY.INTERRUPT_OVERRIDE;
    t[off + 1] = MADT_ENTRY.INTERRUPT_OVERRIDE_SIZE;
    t[off + 2] = 0; // ISA
    t[off + 3] = irq;
    dv.setUint32(off + 4, irq, true); // KVM wires ISA line n to I/O APIC pin n
    dv.setUint16(off + 8, 0, true); // conforming: edge, active high
    off += MADT_ENTRY.INTERRUPT_OVERRIDE_SIZE;
  }
  t[off] = MADT_ENTRY.LOCAL_APIC_NMI;
  t[off + 1] = MADT_ENTRY.LOCAL_APIC_NMI_SIZE;
  t[off + 2] = 0xff; // every processor
  dv.setUint16(off + 3, 0, true);
  t[off + 5] = 1; // LINT1
  return seal(t);
}

/** The XSDT: one 64-bit pointer per table. */
export function buildXsdt(tables: readonly number[]): Uint8Array {
  const t = table("XSDT", SDT.size + 8 * tables.length, 1);
  const dv = new DataView(t.buffer);
  tables.forEach((addr, i) => dv.setBigUint64(SDT.size + 8 * i, BigInt(addr), true));
  return seal(t);
}

/** The ACPI 2.0 root pointer to the XSDT at `xsdt`. */
export function buildRsdp(xsdt: number): Uint8Array {
  const out = new Uint8Array(RSDP.size);
  const dv = new DataView(out.buffer);
  ascii(out, RSDP.signature, "RSD PTR ");
  ascii(out, RSDP.oem_id, OEM_ID);
  out[RSDP.revision] = 2;
  dv.setUint32(RSDP.length, RSDP.size, true);
  dv.setBigUint64(RSDP.xsdt_physical_address, BigInt(xsdt), true);
  out[RSDP.checksum] = acpiChecksum(out.subarray(0, RSDP.v1_size));
  out[RSDP.extended_checksum] = acpiChecksum(out);
  return out;
}

/**
 * Every table, laid out from {@linkcode ACPI_TABLES_ADDR}: a map of guest
 * address to bytes, the RSDP first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { acpiTables } from "./acpi.ts";
 * const tables = acpiTables({ cpus: 2, devices: [{ base: 0xd0000000, size: 0x1000, irq: 5 }] });
 * assert.equal(new TextDecoder().decode(tables[0].bytes.subarray(0, 8)), "RSD PTR ");
 * ```
 */
export function acpiTables(cfg: AcpiConfig): Array<{ addr: number; bytes: Uint8Array }> {
  const out: Array<{ addr: number; bytes: Uint8Array }> = [];
  let next = ACPI_TABLES_ADDR;
  const place = (bytes: Uint8Array): number => {
    const addr = next;
    next = (next + bytes.length + 15) & ~15;
    if (next > ACPI_TABLES_END) throw new RangeError("ACPI tables do not fit below 1 MiB");
    out.push({ addr, bytes });
    return addr;
  };
  const dsdt = place(buildDsdt(cfg.devices));
  const fadt = place(buildFadt(dsdt));
  const madt = place(buildMadt(cfg.cpus));
  const xsdt = place(buildXsdt([fadt, madt]));
  out.unshift({ addr: ACPI_RSDP_ADDR, bytes: buildRsdp(xsdt) });
  return out;
}

/** Writes the tables into guest memory; returns the RSDP's address. */
export function writeAcpiTables(mem: GuestMemory, cfg: AcpiConfig): number {
  for (const t of acpiTables(cfg)) mem.write(t.addr, t.bytes);
  return ACPI_RSDP_ADDR;
}
