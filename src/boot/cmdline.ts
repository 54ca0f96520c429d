/**
 * The kernel command line: defaults for a serial-console microVM, replaced
 * or extended by the user, checked against the kernel's limit.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/**
 * Defaults: console on COM1, a panic resets at once (a monitor stop), no
 * PCI to probe, and the i8042 probes cut short. A reboot goes through
 * ACPI's reset register, or the i8042's reset line for a kernel without
 * ACPI (Linux's own order); modules stay allowed, which Debian's kernel
 * needs for its virtio devices, and so does the i8042's PNP probe: a
 * hardware-reduced ACPI kernel finds the i8042's line only there (the DSDT).
 */
export const DEFAULT_CMDLINE =
  "console=ttyS0 panic=-1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd";

/** x86 COMMAND_LINE_SIZE (2048) less the terminator, for kernels that do not say. */
export const DEFAULT_CMDLINE_MAX = 2047;

/** How the user shapes the command line. */
export interface CmdlineOptions {
  /** Replaces the defaults. */
  cmdline?: string;
  /** Appended after the defaults (or after `cmdline`). */
  append?: string;
  /** Appended by the monitor (host workarounds), before `append`. */
  extra?: string[];
}

/**
 * The final command line.
 *
 * @example
 * ```ts
 * import { buildCmdline } from "./cmdline.ts";
 * buildCmdline({ cmdline: "console=ttyS0", append: "quiet" }); // "console=ttyS0 quiet"
 * ```
 */
export function buildCmdline(opts: CmdlineOptions): string {
  const parts = [opts.cmdline ?? DEFAULT_CMDLINE, ...(opts.extra ?? [])];
  if (opts.append) parts.push(opts.append);
  return parts.filter((p) => p.length > 0).join(" ");
}

/** Encodes with the NUL terminator; throws if the kernel cannot take it. */
export function encodeCmdline(cmdline: string, max: number): Uint8Array {
  const bytes = new TextEncoder().encode(cmdline);
  if (bytes.includes(0)) throw new VoltError("Kernel command line contains a NUL byte", "usage");
  // cmdline_size counts the bytes before the terminator.
  if (bytes.length > max) {
    throw new VoltError(
      `Kernel command line is ${bytes.length} bytes; this kernel takes at most ${max}`,
      "usage",
    );
  }
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
