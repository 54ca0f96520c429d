/**
 * Puts a kernel, its initrd and command line into guest memory and says how
 * to enter it.
 *
 * @module
 */

import { CMDLINE_ADDR, CMDLINE_MAX, HIMEM_START } from "../arch/x86_64/layout.ts";
import { VoltError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";
import { type BzImage, ENTRY_64_OFFSET, isBzImage, parseBzImage } from "./bzimage.ts";
import { DEFAULT_CMDLINE_MAX, encodeCmdline } from "./cmdline.ts";
import { isElf, parseElf } from "./elf.ts";
import type { Image } from "./image.ts";

/** Which entry a vmlinux is started through. */
export type BootProtocol = "auto" | "pvh" | "linux64";

/** A loaded kernel. */
export interface LoadedKernel {
  format: "elf" | "bzimage";
  /** `linux64`: long mode, RSI = zero page; `pvh`: 32-bit, EBX = start info. */
  mode: "linux64" | "pvh";
  entry: number;
  /** First byte past the kernel's image (initrd goes above). */
  end: number;
  cmdlineMax: number;
  initrdAddrMax: number;
  /** bzImage setup header for the zero page. */
  setupHeader?: Uint8Array;
}

const PAGE = 4096;
const HEAD = 0x400;

/** Whole MiB of guest RAM (`>> 20` would wrap from 2 GiB up). */
const mib = (mem: GuestMemory) => Math.floor(mem.size / 2 ** 20);

function fits(mem: GuestMemory, addr: number, len: number, what: string): Uint8Array {
  try {
    return mem.bytes(addr, len);
  } catch {
    throw new VoltError(
      `${what} needs guest memory up to 0x${(addr + len).toString(16)}; the guest has ${
        mib(mem)
      } MiB`,
      "input",
    );
  }
}

/**
 * Detects the format and loads the kernel.
 *
 * @example
 * ```ts ignore
 * import { GuestMemory } from "../memory/guest_memory.ts";
 * import { openImage } from "./image.ts";
 * import { loadKernel } from "./loader.ts";
 * const mem = GuestMemory.allocate(128 << 20);
 * const k = loadKernel(mem, openImage("vmlinux", "Kernel"), "auto");
 * ```
 */
export function loadKernel(mem: GuestMemory, img: Image, protocol: BootProtocol): LoadedKernel {
  const head = new Uint8Array(Math.min(HEAD, img.size));
  img.readAt(0, head);
  if (isElf(head)) return loadElf(mem, img, protocol);
  if (isBzImage(head)) {
    if (protocol === "pvh") {
      throw new VoltError(`${img.name} is a bzImage; PVH boot needs the vmlinux ELF`, "usage");
    }
    return loadBzImage(mem, img, parseBzImage(img));
  }
  if (img.size < HEAD) throw new VoltError(`${img.name} is truncated or not a kernel`);
  throw new VoltError(`${img.name} is not a kernel image (neither ELF nor bzImage)`);
}

function loadElf(mem: GuestMemory, img: Image, protocol: BootProtocol): LoadedKernel {
  const elf = parseElf(img);
  let end = 0;
  for (const s of elf.segments) {
    const dest = fits(mem, s.paddr, s.memsz, "The kernel");
    mem.prefault(s.paddr, s.filesz);
    img.readAt(s.offset, dest.subarray(0, s.filesz));
    dest.subarray(s.filesz).fill(0);
    end = Math.max(end, s.paddr + s.memsz);
  }
  if (protocol === "pvh" && elf.pvhEntry === undefined) {
    throw new VoltError(`${img.name} has no PVH entry note`, "usage");
  }
  const pvh = protocol !== "linux64" && elf.pvhEntry !== undefined;
  return {
    format: "elf",
    mode: pvh ? "pvh" : "linux64",
    entry: pvh ? elf.pvhEntry! : elf.entry,
    end,
    cmdlineMax: DEFAULT_CMDLINE_MAX,
    initrdAddrMax: 0xffffffff,
  };
}

function loadBzImage(mem: GuestMemory, img: Image, bz: BzImage): LoadedKernel {
  // The decompressor needs init_size bytes from where it runs (pref_address
  // for a relocatable kernel at or below it, else the load address).
  const runAt = Math.max(HIMEM_START, bz.prefAddress);
  fits(mem, runAt, bz.initSize, "The kernel");
  const dest = fits(mem, HIMEM_START, bz.pmSize, "The kernel");
  mem.prefault(HIMEM_START, bz.pmSize);
  img.readAt(bz.pmOffset, dest);
  return {
    format: "bzimage",
    mode: "linux64",
    entry: HIMEM_START + ENTRY_64_OFFSET,
    end: Math.max(HIMEM_START + bz.pmSize, runAt + bz.initSize),
    cmdlineMax: bz.cmdlineSize,
    initrdAddrMax: bz.initrdAddrMax,
    setupHeader: bz.setupHeader,
  };
}

/**
 * Writes the command line; returns its address and length.
 *
 * @example
 * ```ts ignore
 * import { loadCmdline } from "./loader.ts";
 * loadCmdline(mem, kernel, "console=ttyS0"); // { addr: 0x20000, size: 13 }
 * ```
 */
export function loadCmdline(
  mem: GuestMemory,
  kernel: LoadedKernel,
  cmdline: string,
): { addr: number; size: number } {
  const bytes = encodeCmdline(cmdline, Math.min(kernel.cmdlineMax, CMDLINE_MAX - 1));
  mem.write(CMDLINE_ADDR, bytes);
  return { addr: CMDLINE_ADDR, size: bytes.length - 1 };
}

/**
 * Places the initrd as high in low RAM as the kernel allows, page-aligned,
 * above the kernel; an initrd that does not fit there is a one-line
 * {@linkcode VoltError}, whatever size its image claims.
 *
 * @example
 * ```ts ignore
 * import { openImage } from "./image.ts";
 * import { loadInitrd } from "./loader.ts";
 * const { addr, size } = loadInitrd(mem, kernel, openImage("initrd.cpio.gz", "Initrd"));
 * ```
 */
export function loadInitrd(
  mem: GuestMemory,
  kernel: LoadedKernel,
  img: Image,
): { addr: number; size: number } {
  const top = Math.min(mem.lowEnd, kernel.initrdAddrMax + 1);
  const addr = Math.floor((top - img.size) / PAGE) * PAGE;
  const floor = Math.ceil(kernel.end / PAGE) * PAGE;
  if (img.size > mem.size || addr < floor) {
    throw new VoltError(
      `${img.name} (${img.size} bytes) does not fit in guest memory above the kernel (${
        mib(mem)
      } MiB)`,
      "input",
    );
  }
  const dest = fits(mem, addr, img.size, img.name);
  mem.prefault(addr, img.size);
  img.readAt(0, dest);
  return { addr, size: img.size };
}
