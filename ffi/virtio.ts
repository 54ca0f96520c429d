/**
 * Virtio constants: the MMIO transport's registers
 * (include/uapi/linux/virtio_mmio.h), device status and feature bits
 * (virtio_config.h), split-ring layout (virtio_ring.h), and the block and
 * entropy devices (virtio_blk.h, virtio_ids.h). Virtio 1.2 spec, §2, §4.2,
 * §5.2, §5.4.
 *
 * @module
 */

/** "virt", little-endian. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** The transport version this monitor implements (virtio 1.x, not legacy). */
export const VIRTIO_MMIO_VERSION = 2;

/** Virtio-MMIO register offsets. */
export const MMIO = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_AVAIL_LOW: 0x090,
  QUEUE_AVAIL_HIGH: 0x094,
  QUEUE_USED_LOW: 0x0a0,
  QUEUE_USED_HIGH: 0x0a4,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;

/** Device status bits. */
export const STATUS = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** `InterruptStatus` bits. */
export const INT = { USED_RING: 1, CONFIG_CHANGE: 2 } as const;

/** Transport feature bits (the bit numbers). */
export const F = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
} as const;

/** Split-ring descriptor flags and sizes. */
export const VRING = {
  DESC_SIZE: 16,
  DESC_F_NEXT: 1,
  DESC_F_WRITE: 2,
  DESC_F_INDIRECT: 4,
  AVAIL_F_NO_INTERRUPT: 1,
  /** The largest queue the split ring allows. */
  MAX_SIZE: 32768,
} as const;

/** Device IDs. */
export const DEVICE_ID = { NET: 1, BLOCK: 2, ENTROPY: 4, VSOCK: 19 } as const;

/** Virtio-vsock packet header, operations and config (virtio 1.2 §5.10, virtio_vsock.h). */
export const VSOCK = {
  /** `struct virtio_vsock_hdr`, packed. */
  HDR_SIZE: 44,
  HDR_SRC_CID: 0,
  HDR_DST_CID: 8,
  HDR_SRC_PORT: 16,
  HDR_DST_PORT: 20,
  HDR_LEN: 24,
  HDR_TYPE: 28,
  HDR_OP: 30,
  HDR_FLAGS: 32,
  HDR_BUF_ALLOC: 36,
  HDR_FWD_CNT: 40,
  TYPE_STREAM: 1,
  OP_REQUEST: 1,
  OP_RESPONSE: 2,
  OP_RST: 3,
  OP_SHUTDOWN: 4,
  OP_RW: 5,
  OP_CREDIT_UPDATE: 6,
  OP_CREDIT_REQUEST: 7,
  SHUTDOWN_RCV: 1,
  SHUTDOWN_SEND: 2,
  /** The host's CID, as the guest addresses it. */
  HOST_CID: 2,
  /** Config space: `le64 guest_cid`. */
  CONFIG_BYTES: 8,
  RX: 0,
  TX: 1,
  EVENT: 2,
  /** `struct virtio_vsock_event { le32 id; }`: its size, and the one event id. */
  EVENT_SIZE: 4,
  EVENT_TRANSPORT_RESET: 0,
} as const;

/** Virtio-net feature bits, header and config layout (virtio 1.2 §5.1, virtio_net.h). */
export const NET = {
  F_CSUM: 0,
  F_GUEST_CSUM: 1,
  F_MAC: 5,
  F_GUEST_TSO4: 7,
  F_GUEST_TSO6: 8,
  F_HOST_TSO4: 11,
  F_HOST_TSO6: 12,
  F_MRG_RXBUF: 15,
  F_STATUS: 16,
  /** `struct virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
  HDR_SIZE: 12,
  HDR_NUM_BUFFERS: 10,
  CONFIG_MAC: 0,
  CONFIG_STATUS: 6,
  /** Bytes of config space through `status`. */
  CONFIG_BYTES: 8,
  S_LINK_UP: 1,
  /** Queue indices: receive, transmit (no control queue). */
  RX: 0,
  TX: 1,
} as const;

/** Virtio-blk feature bits, request types, status codes and config offsets. */
export const BLK = {
  F_SIZE_MAX: 1,
  F_SEG_MAX: 2,
  F_RO: 5,
  F_BLK_SIZE: 6,
  F_FLUSH: 9,
  F_DISCARD: 13,
  F_WRITE_ZEROES: 14,
  T_IN: 0,
  T_OUT: 1,
  T_FLUSH: 4,
  T_GET_ID: 8,
  T_DISCARD: 11,
  T_WRITE_ZEROES: 13,
  S_OK: 0,
  S_IOERR: 1,
  S_UNSUPP: 2,
  /** Bytes of `struct virtio_blk_outhdr`: type, reserved, sector. */
  HEADER_SIZE: 16,
  /** `VIRTIO_BLK_ID_BYTES`. */
  ID_BYTES: 20,
  SECTOR_SIZE: 512,
  CONFIG_CAPACITY: 0,
  CONFIG_SIZE_MAX: 8,
  CONFIG_SEG_MAX: 12,
  CONFIG_BLK_SIZE: 20,
  CONFIG_MAX_DISCARD_SECTORS: 36,
  CONFIG_MAX_DISCARD_SEG: 40,
  CONFIG_DISCARD_SECTOR_ALIGNMENT: 44,
  CONFIG_MAX_WRITE_ZEROES_SECTORS: 48,
  CONFIG_MAX_WRITE_ZEROES_SEG: 52,
  CONFIG_WRITE_ZEROES_MAY_UNMAP: 56,
  /** Bytes of config space through `write_zeroes_may_unmap` and its padding. */
  CONFIG_BYTES: 60,
  /** Bytes of `struct virtio_blk_discard_write_zeroes`: sector, num_sectors, flags. */
  RANGE_SIZE: 16,
  /** The range flag that lets WRITE_ZEROES deallocate. */
  RANGE_F_UNMAP: 1,
} as const;
