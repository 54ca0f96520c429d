/**
 * KVM ABI for x86_64: ioctl numbers computed from include/uapi/linux/kvm.h,
 * constants, and the byte layouts of the structures the monitor exchanges.
 *
 * @module
 */

import { io, ior, iow, iowr } from "./ioctl.ts";

/** The KVM ioctl type byte. */
export const KVMIO = 0xae;

/** Byte sizes of the structures the ioctls carry. */
export const SIZE = {
  kvm_regs: 144,
  kvm_sregs: 312,
  kvm_fpu: 416,
  kvm_msrs: 8,
  kvm_msr_entry: 16,
  kvm_cpuid2: 8,
  kvm_cpuid_entry2: 40,
  kvm_lapic_state: 1024,
  kvm_userspace_memory_region: 32,
  /** `{ u32 slot; u32 padding1; union { void *dirty_bitmap; u64 padding2; } }` */
  kvm_dirty_log: 16,
  kvm_irq_level: 8,
  kvm_pit_config: 64,
  kvm_mp_state: 4,
  kvm_segment: 24,
  kvm_dtable: 16,
  /** `{ u64 datamatch; u64 addr; u32 len; s32 fd; u32 flags; u8 pad[36]; }` */
  kvm_ioeventfd: 64,
  /** `{ u32 fd; u32 gsi; u32 flags; u32 resamplefd; u8 pad[16]; }` */
  kvm_irqfd: 32,
  /** `{ u32 nmsrs; u32 indices[]; }`, the header. */
  kvm_msr_list: 4,
  /** `{ u32 chip_id; u32 pad; union { pic, ioapic, dummy[512] } }` */
  kvm_irqchip: 520,
  /** `{ u64 clock; u32 flags; u32 pad0; u64 realtime; u64 host_tsc; u32 pad[4]; }` */
  kvm_clock_data: 48,
  /** Three `kvm_pit_channel_state`s, flags and reserved words. */
  kvm_pit_state2: 112,
  kvm_vcpu_events: 64,
  kvm_debugregs: 128,
  /** The fixed part; KVM_CAP_XSAVE2 reports a larger buffer where the host needs one. */
  kvm_xsave: 4096,
  kvm_xcrs: 392,
} as const;

/** `struct kvm_ioeventfd` offsets and flags. */
export const IOEVENTFD = {
  datamatch: 0,
  addr: 8,
  len: 16,
  fd: 20,
  flags: 24,
  FLAG_DATAMATCH: 1 << 0,
  FLAG_PIO: 1 << 1,
  FLAG_DEASSIGN: 1 << 2,
} as const;

/** `struct kvm_irqfd` offsets and flags. */
export const IRQFD = { fd: 0, gsi: 4, flags: 8, resamplefd: 12, FLAG_DEASSIGN: 1 << 0 } as const;

/** System, VM and vCPU ioctl request numbers. */
export const KVM = {
  GET_API_VERSION: io(KVMIO, 0x00),
  CREATE_VM: io(KVMIO, 0x01),
  CHECK_EXTENSION: io(KVMIO, 0x03),
  GET_VCPU_MMAP_SIZE: io(KVMIO, 0x04),
  GET_SUPPORTED_CPUID: iowr(KVMIO, 0x05, SIZE.kvm_cpuid2),
  CREATE_VCPU: io(KVMIO, 0x41),
  SET_USER_MEMORY_REGION: iow(KVMIO, 0x46, SIZE.kvm_userspace_memory_region),
  GET_DIRTY_LOG: iow(KVMIO, 0x42, SIZE.kvm_dirty_log),
  SET_TSS_ADDR: io(KVMIO, 0x47),
  SET_IDENTITY_MAP_ADDR: iow(KVMIO, 0x48, 8),
  CREATE_IRQCHIP: io(KVMIO, 0x60),
  IRQ_LINE: iow(KVMIO, 0x61, SIZE.kvm_irq_level),
  IRQFD: iow(KVMIO, 0x76, SIZE.kvm_irqfd),
  CREATE_PIT2: iow(KVMIO, 0x77, SIZE.kvm_pit_config),
  IOEVENTFD: iow(KVMIO, 0x79, SIZE.kvm_ioeventfd),
  RUN: io(KVMIO, 0x80),
  GET_REGS: ior(KVMIO, 0x81, SIZE.kvm_regs),
  SET_REGS: iow(KVMIO, 0x82, SIZE.kvm_regs),
  GET_SREGS: ior(KVMIO, 0x83, SIZE.kvm_sregs),
  SET_SREGS: iow(KVMIO, 0x84, SIZE.kvm_sregs),
  SET_MSRS: iow(KVMIO, 0x89, SIZE.kvm_msrs),
  GET_FPU: ior(KVMIO, 0x8c, SIZE.kvm_fpu),
  SET_FPU: iow(KVMIO, 0x8d, SIZE.kvm_fpu),
  GET_LAPIC: ior(KVMIO, 0x8e, SIZE.kvm_lapic_state),
  SET_LAPIC: iow(KVMIO, 0x8f, SIZE.kvm_lapic_state),
  SET_CPUID2: iow(KVMIO, 0x90, SIZE.kvm_cpuid2),
  GET_MP_STATE: ior(KVMIO, 0x98, SIZE.kvm_mp_state),
  // Snapshots: every piece of vCPU and VM state KVM keeps.
  GET_MSR_INDEX_LIST: iowr(KVMIO, 0x02, SIZE.kvm_msr_list),
  GET_MSRS: iowr(KVMIO, 0x88, SIZE.kvm_msrs),
  GET_CPUID2: iowr(KVMIO, 0x91, SIZE.kvm_cpuid2),
  SET_MP_STATE: iow(KVMIO, 0x99, SIZE.kvm_mp_state),
  GET_IRQCHIP: iowr(KVMIO, 0x62, SIZE.kvm_irqchip),
  // The kernel's header declares it _IOR; the number is what counts.
  SET_IRQCHIP: ior(KVMIO, 0x63, SIZE.kvm_irqchip),
  SET_CLOCK: iow(KVMIO, 0x7b, SIZE.kvm_clock_data),
  GET_CLOCK: ior(KVMIO, 0x7c, SIZE.kvm_clock_data),
  GET_PIT2: ior(KVMIO, 0x9f, SIZE.kvm_pit_state2),
  SET_PIT2: iow(KVMIO, 0xa0, SIZE.kvm_pit_state2),
  GET_VCPU_EVENTS: ior(KVMIO, 0x9f, SIZE.kvm_vcpu_events),
  SET_VCPU_EVENTS: iow(KVMIO, 0xa0, SIZE.kvm_vcpu_events),
  GET_DEBUGREGS: ior(KVMIO, 0xa1, SIZE.kvm_debugregs),
  SET_DEBUGREGS: iow(KVMIO, 0xa2, SIZE.kvm_debugregs),
  SET_TSC_KHZ: io(KVMIO, 0xa2),
  GET_TSC_KHZ: io(KVMIO, 0xa3),
  GET_XSAVE: ior(KVMIO, 0xa4, SIZE.kvm_xsave),
  SET_XSAVE: iow(KVMIO, 0xa5, SIZE.kvm_xsave),
  GET_XCRS: ior(KVMIO, 0xa6, SIZE.kvm_xcrs),
  SET_XCRS: iow(KVMIO, 0xa7, SIZE.kvm_xcrs),
  GET_XSAVE2: ior(KVMIO, 0xcf, SIZE.kvm_xsave),
} as const;

/** `kvm_userspace_memory_region.flags`: KVM logs the slot's written pages. */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;

/** `kvm_irqchip.chip_id`: the two 8259s and the I/O APIC. */
export const IRQCHIP = { PIC_MASTER: 0, PIC_SLAVE: 1, IOAPIC: 2 } as const;

/** The only API version this monitor (and every kernel since 2.6.22) speaks. */
export const KVM_API_VERSION = 12;

/** KVM_CHECK_EXTENSION capabilities the monitor relies on. */
export const CAP = {
  IRQCHIP: 0,
  HLT: 1,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  NR_VCPUS: 9,
  PIT2: 33,
  SET_IDENTITY_MAP_ADDR: 37,
  MAX_VCPUS: 66,
  IRQFD: 32,
  IOEVENTFD: 36,
  IMMEDIATE_EXIT: 136,
  ADJUST_CLOCK: 39,
  VCPU_EVENTS: 41,
  DEBUGREGS: 50,
  XSAVE: 55,
  XCRS: 56,
  GET_TSC_KHZ: 61,
  XSAVE2: 208,
} as const;

/** `kvm_run.exit_reason` values. */
export const EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
} as const;

/** `kvm_run.internal.suberror` values. */
export const INTERNAL_ERROR = {
  EMULATION: 1,
  SIMUL_EX: 2,
  DELIVERY_EV: 3,
  UNEXPECTED_EXIT_REASON: 4,
} as const;

/** `kvm_run.system_event.type` values. */
export const SYSTEM_EVENT = { SHUTDOWN: 1, RESET: 2, CRASH: 3 } as const;

/** `kvm_run.io.direction`. */
export const EXIT_IO_IN = 0;
/** `kvm_run.io.direction` for `out`. */
export const EXIT_IO_OUT = 1;

/** Offsets inside the mmapped `struct kvm_run`. */
export const RUN = {
  immediate_exit: 1,
  exit_reason: 8,
  // union at 32
  io_direction: 32,
  io_size: 33,
  io_port: 34,
  io_count: 36,
  io_data_offset: 40,
  mmio_phys_addr: 32,
  mmio_data: 40,
  mmio_len: 48,
  mmio_is_write: 52,
  fail_entry_reason: 32,
  fail_entry_cpu: 40,
  internal_suberror: 32,
  internal_ndata: 36,
  internal_data: 40,
  system_event_type: 32,
  system_event_ndata: 36,
  system_event_data: 40,
} as const;

/** `struct kvm_regs` u64 indices. */
export const REGS = {
  rax: 0,
  rbx: 1,
  rcx: 2,
  rdx: 3,
  rsi: 4,
  rdi: 5,
  rsp: 6,
  rbp: 7,
  rip: 16,
  rflags: 17,
} as const;

/** `struct kvm_sregs` byte offsets. */
export const SREGS = {
  cs: 0,
  ds: 24,
  es: 48,
  fs: 72,
  gs: 96,
  ss: 120,
  tr: 144,
  ldt: 168,
  gdt: 192,
  idt: 208,
  cr0: 224,
  cr2: 232,
  cr3: 240,
  cr4: 248,
  cr8: 256,
  efer: 264,
  apic_base: 272,
} as const;

/** `struct kvm_segment` byte offsets. */
export const SEGMENT = {
  base: 0,
  limit: 8,
  selector: 12,
  type: 14,
  present: 15,
  dpl: 16,
  db: 17,
  s: 18,
  l: 19,
  g: 20,
  avl: 21,
  unusable: 22,
} as const;

/** `struct kvm_dtable` byte offsets. */
export const DTABLE = { base: 0, limit: 8 } as const;

/** `struct kvm_fpu` byte offsets. */
export const FPU = { fcw: 128, mxcsr: 408 } as const;

/** `struct kvm_cpuid_entry2` byte offsets. */
export const CPUID_ENTRY = {
  function: 0,
  index: 4,
  flags: 8,
  eax: 12,
  ebx: 16,
  ecx: 20,
  edx: 24,
} as const;

/** `kvm_cpuid_entry2.flags`: the leaf has sub-leaves selected by ECX. */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

/** Local APIC register offsets inside `kvm_lapic_state.regs`. */
export const APIC_REG = { id: 0x20, lvt0: 0x350, lvt1: 0x360 } as const;
