/**
 * The VM configuration, validated once with one-line errors.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import type { BootProtocol } from "../boot/loader.ts";
import type { ConsoleSink } from "./worker_protocol.ts";
import type { ConsoleMode } from "./console_filter.ts";
import type { DiskConfig, NetConfig, VsockConfig } from "./device_manager.ts";
import { VSOCK_PATH_MAX } from "./vsock_listen.ts";
import { badInterfaceName, parseMac } from "./tap.ts";

/** What a caller asks for. */
export interface VmConfig {
  /** vmlinux (ELF) or bzImage. */
  kernel: string;
  /** Initial ramdisk (cpio, optionally compressed). */
  initrd?: string;
  /** Replaces the default kernel command line. */
  cmdline?: string;
  /** Appended to the kernel command line. */
  append?: string;
  /** Guest RAM in bytes or as a size string ("128M", "1G"). Default 128 MiB. */
  memory?: number | string;
  /** vCPUs, 1 to 32. Default 1. */
  cpus?: number;
  /** `auto` prefers a vmlinux's PVH entry. */
  bootProtocol?: BootProtocol;
  /** `auto` picks `pvm` on a PVM host, else `none`. */
  cpuTemplate?: string;
  /** Where the guest console goes. Default `stdout`. */
  console?: ConsoleSink;
  /**
   * How console bytes reach a terminal on stdout: `safe` drops the escape
   * sequences a guest could use against the terminal, `raw` passes every
   * byte, `auto` (default) is `safe` when stdout is a terminal and stdin is
   * not.
   */
  consoleMode?: ConsoleMode | "auto";
  /** Forward host stdin to the guest's serial port. */
  stdin?: boolean;
  /** The KVM device. Default `/dev/kvm`. */
  kvmDevice?: string;
  /**
   * An open KVM device descriptor to use instead of opening `kvmDevice`
   * (the jailed monitor gets its KVM this way, with no path rule); the VM
   * takes it over.
   */
  kvmFd?: number;
  /** Disks, in the order the guest sees them (`/dev/vda`, `/dev/vdb`, ...). */
  disks?: DiskConfig[];
  /** A virtio-rng device: the guest's `/dev/hwrng` reads the host's `getrandom`. */
  entropy?: boolean;
  /** Network interfaces, each on a host TAP, in the order the guest sees them (`eth0`, ...). */
  nets?: NetConfig[];
  /** A virtio-vsock device with Firecracker's host side (unix sockets). */
  vsock?: VsockConfig;
  /**
   * Records the pages the guest and the devices write, so that a snapshot
   * can be a diff (only the pages written since the last one). KVM then
   * write-protects the guest's memory, which costs a fault per page first
   * written after each snapshot. Default false, as with Firecracker.
   */
  trackDirtyPages?: boolean;
}

/** Smallest guest we boot: the boot structures and a kernel need room. */
export const MIN_MEMORY = 8 << 20;
/** Largest guest: bounded by what a 2-level-free mapping can describe sanely. */
export const MAX_MEMORY = 256 * 2 ** 30;
/** Most vCPUs. */
export const MAX_CPUS = 32;

const UNITS: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/**
 * Parses a size: bytes, or a number with K/M/G/T (optionally `iB` or `B`).
 *
 * @example
 * ```ts
 * import { parseSize } from "./config.ts";
 * parseSize("128M"); // 134217728
 * ```
 */
export function parseSize(s: string | number): number {
  if (typeof s === "number") {
    if (!Number.isSafeInteger(s) || s <= 0) throw new VoltError(`Not a size: ${s}`, "usage");
    return s;
  }
  const m = /^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(s);
  if (!m) throw new VoltError(`Not a size: "${s}" (try 128M or 1G)`, "usage");
  const n = Number(m[1]) * UNITS[m[2].toLowerCase()];
  if (!Number.isSafeInteger(n) || n <= 0) throw new VoltError(`Not a size: "${s}"`, "usage");
  return n;
}

/** A validated configuration. */
export interface ResolvedConfig
  extends Required<Omit<VmConfig, "initrd" | "cmdline" | "append" | "memory" | "kvmFd" | "vsock">> {
  kvmFd?: number;
  vsock?: VsockConfig;
  initrd?: string;
  cmdline?: string;
  append?: string;
  memory: number;
}

/** A disk entry, checked. */
function checkDisk(d: DiskConfig): DiskConfig {
  if (typeof d?.path !== "string" || d.path === "") {
    throw new VoltError("A disk needs a path", "usage");
  }
  if (d.fd !== undefined && !(Number.isSafeInteger(d.fd) && d.fd >= 0)) {
    throw new VoltError(`Not a file descriptor: ${d.fd}`, "usage");
  }
  if (d.id !== undefined && new TextEncoder().encode(d.id).length > 20) {
    throw new VoltError(`Disk id "${d.id}" is longer than 20 bytes`, "usage");
  }
  return { path: d.path, readOnly: d.readOnly ?? true, id: d.id, fd: d.fd, root: d.root };
}

/** A network interface entry, checked. */
function checkNet(n: NetConfig): NetConfig {
  const bad = typeof n?.tap === "string"
    ? badInterfaceName(n.tap)
    : "a network interface needs a TAP";
  if (bad) throw new VoltError(bad.charAt(0).toUpperCase() + bad.slice(1), "usage");
  if (n.mac !== undefined) parseMac(n.mac);
  if (n.fd !== undefined && !(Number.isSafeInteger(n.fd) && n.fd >= 0)) {
    throw new VoltError(`Not a file descriptor: ${n.fd}`, "usage");
  }
  return { tap: n.tap, mac: n.mac, fd: n.fd, id: n.id };
}

/** The vsock entry, checked. */
function checkVsock(v: VsockConfig): VsockConfig {
  if (!(Number.isSafeInteger(v?.cid) && v.cid >= 3 && v.cid <= 0xfffffffe)) {
    throw new VoltError(`vsock CID must be 3 to 4294967294, not ${v?.cid}`, "usage");
  }
  if (typeof v.uds !== "string" || v.uds === "") {
    throw new VoltError("vsock needs a socket path (uds=PATH)", "usage");
  }
  if (new TextEncoder().encode(v.uds).length > VSOCK_PATH_MAX) {
    throw new VoltError(
      `vsock socket path is longer than ${VSOCK_PATH_MAX} bytes: ${v.uds}`,
      "usage",
    );
  }
  if (v.listenFd !== undefined && !(Number.isSafeInteger(v.listenFd) && v.listenFd >= 0)) {
    throw new VoltError(`Not a file descriptor: ${v.listenFd}`, "usage");
  }
  return { cid: v.cid, uds: v.uds, listenFd: v.listenFd };
}

/** Checks ranges and fills defaults. */
export function resolveConfig(c: VmConfig): ResolvedConfig {
  if (!c.kernel) throw new VoltError("No kernel given (--kernel PATH)", "usage");
  const memory = parseSize(c.memory ?? "128M");
  if (memory < MIN_MEMORY) {
    throw new VoltError(
      `Memory ${memory} bytes is too small; the minimum is ${MIN_MEMORY >> 20} MiB`,
      "usage",
    );
  }
  if (memory > MAX_MEMORY) {
    throw new VoltError(`Memory is too large; the maximum is 256 GiB`, "usage");
  }
  if (memory % 4096 !== 0) throw new VoltError("Memory must be a multiple of 4 KiB", "usage");
  const cpus = c.cpus ?? 1;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
    throw new VoltError(`vCPU count must be 1 to ${MAX_CPUS}, not ${c.cpus}`, "usage");
  }
  const bootProtocol = c.bootProtocol ?? "auto";
  if ((c.disks ?? []).filter((d) => d?.root).length > 1) {
    throw new VoltError("Only one disk can be the root disk", "usage");
  }
  if (c.kvmFd !== undefined && !(Number.isSafeInteger(c.kvmFd) && c.kvmFd >= 0)) {
    throw new VoltError(`Not a file descriptor: ${c.kvmFd}`, "usage");
  }
  const consoleMode = c.consoleMode ?? "auto";
  if (!["auto", "safe", "raw"].includes(consoleMode)) {
    throw new VoltError(`Unknown console mode: ${consoleMode} (auto, safe or raw)`, "usage");
  }
  if (!["auto", "pvh", "linux64"].includes(bootProtocol)) {
    throw new VoltError(`Unknown boot protocol: ${bootProtocol} (auto, pvh or linux64)`, "usage");
  }
  return {
    kernel: c.kernel,
    initrd: c.initrd,
    cmdline: c.cmdline,
    append: c.append,
    memory,
    cpus,
    bootProtocol,
    cpuTemplate: c.cpuTemplate ?? "auto",
    console: c.console ?? "stdout",
    consoleMode,
    stdin: c.stdin ?? false,
    kvmDevice: c.kvmDevice ?? "/dev/kvm",
    kvmFd: c.kvmFd,
    // The root disk goes first: it is /dev/vda.
    disks: (c.disks ?? []).map(checkDisk).sort((a, b) => Number(!!b.root) - Number(!!a.root)),
    entropy: c.entropy ?? false,
    nets: (c.nets ?? []).map(checkNet),
    vsock: c.vsock === undefined ? undefined : checkVsock(c.vsock),
    trackDirtyPages: c.trackDirtyPages ?? false,
  };
}
