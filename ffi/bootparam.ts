/**
 * Kernel boot ABI layouts: `struct boot_params` and `struct setup_header`
 * (arch/x86/include/uapi/asm/bootparam.h, Documentation/x86/boot.rst), the
 * PVH `hvm_start_info` (xen/interface/hvm/start_info.h), the MP
 * specification tables (asm/mpspec_def.h) and the ELF64 fields the loader
 * reads.
 *
 * @module
 */

/** Size of the zero page. */
export const BOOT_PARAMS_SIZE = 4096;

/** `struct boot_params` byte offsets. */
export const BOOT_PARAMS = {
  acpi_rsdp_addr: 0x070,
  ext_ramdisk_image: 0x0c0,
  ext_ramdisk_size: 0x0c4,
  ext_cmd_line_ptr: 0x0c8,
  e820_entries: 0x1e8,
  hdr: 0x1f1,
  e820_table: 0x2d0,
} as const;

/** Entries `boot_params.e820_table` holds. */
export const E820_MAX_ENTRIES = 128;
/** Size of `struct boot_e820_entry` (packed: addr u64, size u64, type u32). */
export const E820_ENTRY_SIZE = 20;
/** e820 range types. */
export const E820_RAM = 1;
/** Reserved range. */
export const E820_RESERVED = 2;

/** `struct setup_header` fields by absolute offset in the zero page / bzImage. */
export const SETUP = {
  setup_sects: 0x1f1,
  boot_flag: 0x1fe,
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  code32_start: 0x214,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  payload_offset: 0x248,
  payload_length: 0x24c,
  pref_address: 0x258,
  init_size: 0x260,
} as const;

/** "HdrS" little-endian. */
export const SETUP_MAGIC = 0x53726448;
/** `boot_flag` value. */
export const BOOT_FLAG = 0xaa55;
/** `loadflags`: protected-mode code loaded at 0x100000. */
export const LOADED_HIGH = 0x01;
/** `loadflags`: heap_end_ptr is valid. */
export const CAN_USE_HEAP = 0x80;
/** `xloadflags`: has the 64-bit entry at +0x200. */
export const XLF_KERNEL_64 = 0x01;
/** `type_of_loader` for a boot loader without an assigned id. */
export const LOADER_TYPE_UNDEFINED = 0xff;

/** `struct hvm_start_info` (version 1) byte offsets and magic. */
export const HVM_START_INFO = {
  size: 56,
  magic: 0,
  version: 4,
  flags: 8,
  nr_modules: 12,
  modlist_paddr: 16,
  cmdline_paddr: 24,
  rsdp_paddr: 32,
  memmap_paddr: 40,
  memmap_entries: 48,
} as const;
/** `XEN_HVM_START_MAGIC_VALUE`. */
export const HVM_START_MAGIC = 0x336ec578;
/** `struct hvm_modlist_entry` size (paddr, size, cmdline_paddr, reserved). */
export const HVM_MODLIST_ENTRY_SIZE = 32;
/** `struct hvm_memmap_table_entry` size (addr, size, type, reserved). */
export const HVM_MEMMAP_ENTRY_SIZE = 24;
/** `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH 32-bit entry point note. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** ELF64 header and program header offsets. */
export const ELF = {
  ident_class: 4,
  ident_data: 5,
  type: 16,
  machine: 18,
  entry: 24,
  phoff: 32,
  phentsize: 54,
  phnum: 56,
  ehdr_size: 64,
  phdr_size: 56,
  ph_type: 0,
  ph_offset: 8,
  ph_vaddr: 16,
  ph_paddr: 24,
  ph_filesz: 32,
  ph_memsz: 40,
  shoff: 40,
  shentsize: 58,
  shnum: 60,
  shstrndx: 62,
  shdr_size: 64,
  sh_name: 0,
  sh_offset: 24,
  sh_size: 32,
} as const;
/** `\x7fELF`. */
export const ELF_MAGIC = 0x464c457f;
/** ELFCLASS64. */
export const ELFCLASS64 = 2;
/** ELFDATA2LSB. */
export const ELFDATA2LSB = 1;
/** EM_X86_64. */
export const EM_X86_64 = 62;
/** PT_LOAD. */
export const PT_LOAD = 1;
/** PT_NOTE. */
export const PT_NOTE = 4;

/** MP specification table sizes and entry types (MP spec 1.4). */
export const MP = {
  floating_size: 16,
  config_header_size: 44,
  processor_size: 20,
  bus_size: 8,
  ioapic_size: 8,
  intsrc_size: 8,
  lintsrc_size: 8,
  type_processor: 0,
  type_bus: 1,
  type_ioapic: 2,
  type_intsrc: 3,
  type_lintsrc: 4,
  spec_rev: 4,
  cpu_enabled: 1,
  cpu_bootprocessor: 2,
  irq_int: 0,
  irq_nmi: 1,
  irq_extint: 3,
  apic_version: 0x14,
  ioapic_version: 0x11,
} as const;
