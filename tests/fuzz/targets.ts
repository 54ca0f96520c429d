/**
 * Every fuzz target, in the order the suite and `deno task fuzz` run them.
 */

import { BOOT_TARGETS } from "./boot_targets.ts";
import { CONSOLE_TARGETS } from "./console_targets.ts";
import { CPIO_TARGETS } from "./cpio_targets.ts";
import { DEVICE_TARGETS } from "./device_targets.ts";
import { SECCOMP_TARGETS } from "./seccomp_targets.ts";
import type { Target } from "./target.ts";
import { VIRTIO_TARGETS } from "./virtio_targets.ts";

export type { Target };

/** Parsers and loader, cpio, devices, virtio, seccomp, the console filter. */
export const TARGETS: Target[] = [
  ...BOOT_TARGETS,
  ...CPIO_TARGETS,
  ...DEVICE_TARGETS,
  ...VIRTIO_TARGETS,
  ...SECCOMP_TARGETS,
  ...CONSOLE_TARGETS,
];
