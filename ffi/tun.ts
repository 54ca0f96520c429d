/**
 * TUN/TAP: the ioctls, interface flags and offload bits of
 * include/uapi/linux/if_tun.h, and `struct ifreq` (include/uapi/linux/if.h).
 *
 * @module
 */

import { iow } from "./ioctl.ts";

/** The clone device a TAP is attached through. */
export const TUN_DEVICE = "/dev/net/tun";

/** `struct ifreq`: `ifr_name[IFNAMSIZ]`, then a 24-byte union whose first member is `ifr_flags`. */
export const IFREQ = { size: 40, name: 0, flags: 16 } as const;
/** `IFNAMSIZ`, the terminating NUL included. */
export const IFNAMSIZ = 16;

/** Interface flags for `TUNSETIFF`. */
export const IFF = {
  TAP: 0x0002,
  NO_PI: 0x1000,
  VNET_HDR: 0x4000,
} as const;

/** TUN ioctls (`_IOW('T', nr, int)`; `TUNSETIFF` carries a `struct ifreq` pointer). */
export const TUN = {
  SETIFF: iow(0x54, 202, 4),
  SETOFFLOAD: iow(0x54, 208, 4),
  SETVNETHDRSZ: iow(0x54, 216, 4),
} as const;

/** `TUNSETOFFLOAD` bits: what the TAP may hand the reader unfinished. */
export const TUN_F = {
  CSUM: 0x01,
  TSO4: 0x02,
  TSO6: 0x04,
} as const;
