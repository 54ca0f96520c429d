/**
 * The kernel command line: defaults for a serial-console microVM, replaced
 * or extended by the user, checked against the kernel's limit.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/**
 * Defaults: console on COM1, reboot through the i8042 (a clean monitor stop),
 * no PCI or modules to probe, and the i8042 probes cut short.
 */
export const DEFAULT_CMDLINE =
  "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

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
