/**
 * Every guest-physical address and fixed port the monitor uses, in one place.
 *
 * Low memory follows Firecracker's choices (DESIGN.md §7) so a kernel sees
 * the same map it would there.
 *
 * @module
 */

/** Boot GDT. Five 8-byte descriptors (see gdt.ts). */
export const GDT_ADDR = 0x500;
/** Boot IDT: one null descriptor, loaded so the CPU has a valid IDTR. */
export const IDT_ADDR = 0x530;
/** PVH `hvm_start_info`, then its memory map. */
export const PVH_INFO_ADDR = 0x6000;
/** PVH memory map table, right after the start info. */
export const PVH_MEMMAP_ADDR = 0x6040;
/** PVH module list (the initrd). */
export const PVH_MODLIST_ADDR = 0x6f00;
/** The zero page (`struct boot_params`). */
export const ZERO_PAGE_ADDR = 0x7000;
/** Initial stack pointer for the boot CPU. */
export const BOOT_STACK_ADDR = 0x8ff0;
/** PML4 of the boot identity map. */
export const PML4_ADDR = 0x9000;
/** PDPT of the boot identity map. */
export const PDPT_ADDR = 0xa000;
/** PD of the boot identity map (512 × 2 MiB = 1 GiB). */
export const PD_ADDR = 0xb000;
/** Kernel command line. */
export const CMDLINE_ADDR = 0x20000;
/** Largest command line we reserve room for (up to the EBDA). */
export const CMDLINE_MAX = 0x10000;
/** End of conventional low RAM; the EBDA and the MP table live above. */
export const EBDA_START = 0x9fc00;
/** MP floating pointer and configuration table. */
export const MPTABLE_ADDR = EBDA_START;
/**
 * ACPI's root pointer, in the BIOS area Linux scans (0xe0000-0xfffff) when
 * the boot protocol does not pass it; the e820 map reserves it.
 */
export const ACPI_RSDP_ADDR = 0xe0000;
/** The ACPI tables (XSDT, FADT, MADT, DSDT), after the root pointer. */
export const ACPI_TABLES_ADDR = 0xe0040;
/** End of the room for ACPI tables (the BIOS area's end). */
export const ACPI_TABLES_END = 0x100000;
/** Start of the high memory where a bzImage's protected-mode code loads. */
export const HIMEM_START = 0x100000;
/** Identity-mapped span at boot. */
export const IDENTITY_MAP_SIZE = 1 << 30;

/** KVM's real-mode TSS (three pages) sits just below the identity-map page. */
export const KVM_TSS_ADDR = 0xfffbd000;
/** KVM's EPT identity-map page. */
export const KVM_IDENTITY_MAP_ADDR = 0xfffbc000;

/** Start of the MMIO gap below 4 GiB. */
export const MMIO_GAP_START = 0xc0000000;
/** End of the MMIO gap (4 GiB). */
export const MMIO_GAP_END = 0x100000000;

/** I/O APIC and local APIC bases the MP table advertises. */
export const IOAPIC_ADDR = 0xfec00000;
/** Local APIC base. */
export const APIC_ADDR = 0xfee00000;

/** COM1 16550 UART. */
export const SERIAL_PORT = 0x3f8;
/** COM1's ISA interrupt. */
export const SERIAL_IRQ = 4;
/** The i8042 keyboard's ISA interrupt. */
export const I8042_IRQ = 1;
/** i8042 data and command/status ports. */
export const I8042_DATA_PORT = 0x60;
/** i8042 command/status port. */
export const I8042_CMD_PORT = 0x64;
/** POST diagnostic port, written by Linux as an I/O delay. */
export const POST_PORT = 0x80;
/** Guest-to-monitor exit status (32-bit write; isa-debug-exit's usual port). */
export const EXIT_PORT = 0xf4;
/** Guest-ready marker volt-init writes once (the boot timer). */
export const BOOT_TIMER_PORT = 0xf8;

/**
 * The hardware-reduced ACPI registers (FADT): the sleep control register
 * (a write of SLP_TYP 5 with SLP_EN powers off), the sleep status
 * register, and the reset register, on three ports nothing else uses.
 */
export const ACPI_SLEEP_CONTROL_PORT = 0x600;
/** ACPI sleep status register. */
export const ACPI_SLEEP_STATUS_PORT = 0x601;
/** ACPI reset register; {@linkcode ACPI_RESET_VALUE} written there resets the VM. */
export const ACPI_RESET_PORT = 0x602;
/** What the FADT tells the guest to write to the reset register. */
export const ACPI_RESET_VALUE = 0x01;

/**
 * First virtio-mmio window, in the MMIO gap (Firecracker's choice): one
 * 4 KiB window per device, one after another.
 */
export const VIRTIO_MMIO_BASE = 0xd0000000;
/** Bytes of MMIO space each virtio device takes. */
export const VIRTIO_MMIO_WINDOW = 0x1000;
/**
 * Interrupt lines for virtio devices, in the order they are handed out:
 * the ISA lines nothing else here uses (the timer is 0, the i8042 1, the
 * PIC cascade 2, COM2 and COM1 3 and 4, the RTC 8), each wired to the I/O
 * APIC by the MP table. Edge-triggered, as with Firecracker's irqfds.
 */
export const VIRTIO_IRQS: readonly number[] = [5, 6, 7, 9, 10, 11, 12, 13, 14, 15];
