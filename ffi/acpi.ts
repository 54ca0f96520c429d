/**
 * ACPI table layouts (ACPI 6.5 §5.2; the kernel's ACPICA headers
 * include/acpi/actbl.h, actbl1.h, actbl2.h, acrestyp.h) and the AML
 * opcodes the DSDT uses (§19.6, §20.2).
 *
 * @module
 */

/** `struct acpi_table_rsdp` (ACPI 2.0+, 36 bytes). */
export const RSDP = {
  size: 36,
  signature: 0,
  checksum: 8,
  oem_id: 9,
  revision: 15,
  rsdt_physical_address: 16,
  length: 20,
  xsdt_physical_address: 24,
  extended_checksum: 32,
  /** Bytes the first checksum covers (the ACPI 1.0 part). */
  v1_size: 20,
} as const;

/** `struct acpi_table_header`, the 36 bytes every table other than the RSDP starts with. */
export const SDT = {
  size: 36,
  signature: 0,
  length: 4,
  revision: 8,
  checksum: 9,
  oem_id: 10,
  oem_table_id: 16,
  oem_revision: 24,
  asl_compiler_id: 28,
  asl_compiler_revision: 32,
} as const;

/** `struct acpi_generic_address` (12 bytes) field offsets. */
export const GAS = {
  size: 12,
  space_id: 0,
  bit_width: 1,
  bit_offset: 2,
  access_width: 3,
  address: 4,
} as const;

/** `ACPI_ADR_SPACE_SYSTEM_IO`. */
export const ADR_SPACE_SYSTEM_IO = 1;
/** `ACPI_ACCESS_BYTE`: byte accesses, in a GAS's access width. */
export const ACCESS_BYTE = 1;

/** `struct acpi_table_fadt` (revision 6, 276 bytes) field offsets. */
export const FADT = {
  size: 276,
  revision: 6,
  minor_revision_value: 5,
  facs: 36,
  dsdt: 40,
  preferred_profile: 45,
  sci_interrupt: 46,
  boot_flags: 109,
  flags: 112,
  reset_register: 116,
  reset_value: 128,
  minor_revision: 131,
  Xfacs: 132,
  Xdsdt: 140,
  sleep_control: 244,
  sleep_status: 256,
  hypervisor_id: 268,
} as const;

/** FADT `flags` bits (actbl.h). */
export const FADT_FLAGS = {
  POWER_BUTTON: 1 << 4,
  SLEEP_BUTTON: 1 << 5,
  RESET_REGISTER: 1 << 10,
  HW_REDUCED: 1 << 20,
} as const;

/** FADT `boot_flags` (IA-PC boot architecture) bits. */
export const FADT_BOOT = {
  I8042: 1 << 1,
  NO_VGA: 1 << 2,
  NO_MSI: 1 << 3,
  NO_ASPM: 1 << 4,
  NO_CMOS_RTC: 1 << 5,
} as const;

/** `struct acpi_table_madt`: the header, then the local APIC address and flags. */
export const MADT = {
  address: 36,
  flags: 40,
  entries: 44,
  /** `ACPI_MADT_PCAT_COMPAT`: the board also has 8259 PICs. */
  PCAT_COMPAT: 1,
} as const;

/** MADT subtable types and lengths (`enum acpi_madt_type`). */
export const MADT_ENTRY = {
  LOCAL_APIC: 0,
  LOCAL_APIC_SIZE: 8,
  IO_APIC: 1,
  IO_APIC_SIZE: 12,
  INTERRUPT_OVERRIDE: 2,
  INTERRUPT_OVERRIDE_SIZE: 10,
  LOCAL_APIC_NMI: 4,
  LOCAL_APIC_NMI_SIZE: 6,
  /** `ACPI_MADT_ENABLED`, a local APIC's flag. */
  ENABLED: 1,
} as const;

/** AML opcodes and prefixes (ACPI 6.5 §20.2). */
export const AML = {
  ZERO: 0x00,
  ONE: 0x01,
  NAME: 0x08,
  BYTE_PREFIX: 0x0a,
  WORD_PREFIX: 0x0b,
  DWORD_PREFIX: 0x0c,
  STRING_PREFIX: 0x0d,
  QWORD_PREFIX: 0x0e,
  SCOPE: 0x10,
  BUFFER: 0x11,
  PACKAGE: 0x12,
  EXT_PREFIX: 0x5b,
  /** After EXT_PREFIX. */
  DEVICE: 0x82,
  ROOT_CHAR: 0x5c,
} as const;

/** Resource descriptors (ACPI 6.5 §6.4) the DSDT's `_CRS` buffers hold. */
export const RESOURCE = {
  /** Large item, 32-bit fixed memory range: tag, length u16, info, base u32, size u32. */
  MEMORY32_FIXED: 0x86,
  MEMORY32_FIXED_LENGTH: 9,
  /** Large item, extended interrupt: tag, length u16, flags, count, then u32 lines. */
  EXTENDED_IRQ: 0x89,
  /** Extended interrupt flags: consumer, edge-triggered (active high, exclusive). */
  IRQ_CONSUMER: 1 << 0,
  IRQ_EDGE: 1 << 1,
  /** Small item, I/O ports: tag, decode, min u16, max u16, alignment, length. */
  IO_PORT: 0x47,
  /** Small item, end tag (then a checksum byte; 0 means none). */
  END_TAG: 0x79,
} as const;

/** ACPI sleep control register bits (§4.8.3.7): SLP_TYP at 2..4, SLP_EN. */
export const SLEEP_CONTROL = {
  TYPE_SHIFT: 2,
  TYPE_MASK: 0x1c,
  ENABLE: 0x20,
} as const;

/** The `_S5_` sleep type value this DSDT gives (soft off). */
export const S5_SLEEP_TYPE = 5;
