/**
 * The shared state of one virtio-mmio device: the transport's registers
 * and config space in a SharedArrayBuffer, so the vCPU threads (register
 * accesses) and the I/O loop (queue work) act on one device. Slot 0 is
 * the device lock the bus takes; the I/O loop only reads queue setup and
 * sets bits atomically.
 *
 * @module
 */

/** Queues one device may have. */
export const MAX_QUEUES = 8;
/** Bytes of device config space. */
export const CONFIG_SPACE_BYTES = 256;

/** Int32 slots. */
export const S = {
  LOCK: 0,
  STATUS: 1,
  DEVICE_FEATURES_SEL: 2,
  DRIVER_FEATURES_SEL: 3,
  DRIVER_FEATURES_LO: 4,
  DRIVER_FEATURES_HI: 5,
  QUEUE_SEL: 6,
  INTERRUPT_STATUS: 7,
  CONFIG_GENERATION: 8,
  /** Bumped on every device reset: the I/O loop drops its queue cursors. */
  RESET_GENERATION: 9,
  DEVICE_ID: 10,
  NUM_QUEUES: 11,
  QUEUE_MAX: 12,
  DEVICE_FEATURES_LO: 13,
  DEVICE_FEATURES_HI: 14,
  CONFIG_BYTES: 15,
  /** Notifications that reached the transport as exits (no ioeventfd). */
  NOTIFY_EXITS: 16,
  /** Why the device last asked for a reset, as a code (see {@linkcode NEEDS_RESET_WHY}). */
  NEEDS_RESET_WHY: 17,
  /** Device config reads by the driver, counted (a restored vsock device waits on one). */
  CONFIG_READS: 18,
  /** First queue's slots; each queue has {@linkcode Q_SLOTS}. */
  QUEUES: 32,
} as const;

/** Per-queue slots, from `S.QUEUES + Q_SLOTS * index`. */
export const Q = {
  NUM: 0,
  READY: 1,
  DESC_LO: 2,
  DESC_HI: 3,
  AVAIL_LO: 4,
  AVAIL_HI: 5,
  USED_LO: 6,
  USED_HI: 7,
} as const;
/** Slots per queue. */
export const Q_SLOTS = 8;

/** Byte offset of config space in the state. */
export const CONFIG_OFFSET = (S.QUEUES + Q_SLOTS * MAX_QUEUES) * 4;
/** Bytes of state one device needs. */
export const VIRTIO_STATE_BYTES = CONFIG_OFFSET + CONFIG_SPACE_BYTES;

/** Codes for {@linkcode S.NEEDS_RESET_WHY}. */
export const NEEDS_RESET_WHY = {
  NONE: 0,
  BAD_QUEUE_LAYOUT: 1,
  BAD_CHAIN: 2,
  BAD_REQUEST: 3,
} as const;

/** What a device model tells its transport. */
export interface VirtioDeviceInfo {
  /** Virtio device ID (2 block, 4 entropy). */
  deviceId: number;
  /** Feature bits offered, `VIRTIO_F_VERSION_1` included. */
  features: bigint;
  /** Queues the device has. */
  queues: number;
  /** Largest queue size the device takes. */
  queueMax: number;
  /** Device config space (read-only to the driver). */
  config: Uint8Array;
}

/** Fresh state for a device described by `info`. */
export function newVirtioState(info: VirtioDeviceInfo): SharedArrayBuffer {
  if (info.queues < 1 || info.queues > MAX_QUEUES) throw new RangeError("Bad virtio queue count");
  if (info.config.length > CONFIG_SPACE_BYTES) throw new RangeError("Virtio config too large");
  const sab = new SharedArrayBuffer(VIRTIO_STATE_BYTES);
  const s = new Int32Array(sab);
  s[S.DEVICE_ID] = info.deviceId;
  s[S.NUM_QUEUES] = info.queues;
  s[S.QUEUE_MAX] = info.queueMax;
  s[S.DEVICE_FEATURES_LO] = Number(info.features & 0xffffffffn) | 0;
  s[S.DEVICE_FEATURES_HI] = Number((info.features >> 32n) & 0xffffffffn) | 0;
  s[S.CONFIG_BYTES] = info.config.length;
  new Uint8Array(sab, CONFIG_OFFSET, info.config.length).set(info.config);
  return sab;
}

/** Slot of queue `q`'s field `f`. */
export function queueSlot(q: number, f: number): number {
  return S.QUEUES + Q_SLOTS * q + f;
}

/** Combines two 32-bit halves (stored as Int32) into an address. */
export function joinAddress(lo: number, hi: number): number {
  return (lo >>> 0) + (hi >>> 0) * 2 ** 32;
}

/** Queue `q`'s layout as the driver wrote it into the state. */
export function queueLayout(
  s: Int32Array,
  q: number,
): { size: number; desc: number; avail: number; used: number } {
  const at = (f: number) => s[queueSlot(q, f)];
  return {
    size: at(Q.NUM) >>> 0,
    desc: joinAddress(at(Q.DESC_LO), at(Q.DESC_HI)),
    avail: joinAddress(at(Q.AVAIL_LO), at(Q.AVAIL_HI)),
    used: joinAddress(at(Q.USED_LO), at(Q.USED_HI)),
  };
}
