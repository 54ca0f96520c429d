/**
 * Guest RAM: one anonymous host mapping (or a snapshot's memory file, mapped privately), never prefaulted as a whole (only
 * where the kernel image is copied), split around the MMIO gap below 4 GiB.
 *
 * @module
 */

import {
  errno,
  libc,
  MADV_DONTDUMP,
  MADV_POPULATE_WRITE,
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_PRIVATE,
  mmap,
  PROT_READ,
  PROT_WRITE,
  SysError,
} from "../../ffi/libc.ts";
import { MMIO_GAP_END, MMIO_GAP_START } from "../arch/x86_64/layout.ts";

const PAGE = 4096;

/** A guest-physical range backed by host memory at `hostOffset`. */
export interface MemoryRegion {
  /** Guest-physical start. */
  guestAddr: number;
  /** Length in bytes. */
  size: number;
  /** Offset into the host mapping. */
  hostOffset: number;
}

/** The error for guest accesses outside RAM. */
export class GuestMemoryError extends RangeError {
  constructor(addr: number, len: number) {
    super(`Guest range 0x${addr.toString(16)}+0x${len.toString(16)} is outside guest RAM`);
    this.name = "GuestMemoryError";
  }
}

/**
 * Splits `size` bytes of RAM around the MMIO gap: low RAM up to the gap,
 * the rest from 4 GiB.
 *
 * @example
 * ```ts
 * import { memoryRegions } from "./memory.ts";
 * memoryRegions(128 << 20); // [{ guestAddr: 0, size: 134217728, hostOffset: 0 }]
 * ```
 */
export function memoryRegions(size: number): MemoryRegion[] {
  const low = Math.min(size, MMIO_GAP_START);
  const regions: MemoryRegion[] = [{ guestAddr: 0, size: low, hostOffset: 0 }];
  if (size > low) regions.push({ guestAddr: MMIO_GAP_END, size: size - low, hostOffset: low });
  return regions;
}

/**
 * Guest RAM as seen by the monitor. Views returned by {@linkcode bytes} alias
 * guest memory: writes land in the guest.
 *
 * @example
 * ```ts
 * import { GuestMemory } from "./guest_memory.ts";
 * const mem = GuestMemory.fromBuffer(new ArrayBuffer(1 << 20));
 * mem.write(0x1000, new Uint8Array([0xf4])); // hlt
 * ```
 */
export class GuestMemory {
  /** The whole host mapping. */
  readonly host: Uint8Array;
  /** Guest-physical regions. */
  readonly regions: MemoryRegion[];
  /** Host address of the mapping (0n for a plain buffer). */
  readonly hostAddr: bigint;

  /** The mapping this object made and unmaps, if it made one. */
  #mapping?: Deno.PointerObject;
  /** Pages written since the last {@linkcode clearDirty}, a bit each by host offset, when tracked. */
  #dirty?: Uint32Array;

  private constructor(buffer: ArrayBuffer, hostAddr: bigint, mapping?: Deno.PointerObject) {
    this.host = new Uint8Array(buffer);
    this.regions = memoryRegions(buffer.byteLength);
    this.hostAddr = hostAddr;
    this.#mapping = mapping;
  }

  /** Maps `size` bytes of anonymous memory, MAP_NORESERVE. */
  static allocate(size: number): GuestMemory {
    const ptr = mmap(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
    // The guest's secrets stay out of the monitor's core dumps.
    if (libc().madvise(BigInt(Deno.UnsafePointer.value(ptr)), BigInt(size), MADV_DONTDUMP) !== 0) {
      const e = errno();
      libc().munmap(ptr, BigInt(size));
      throw new SysError("madvise", e);
    }
    const buf = Deno.UnsafePointerView.getArrayBuffer(ptr, size);
    return new GuestMemory(buf, BigInt(Deno.UnsafePointer.value(ptr)), ptr);
  }

  /**
   * Maps the memory file `fd` privately as guest RAM: pages load from the
   * file as the guest touches them, every VM mapping the same file shares
   * them in the page cache, and the guest's writes stay its own (the file
   * is never written). The descriptor may be closed afterwards.
   */
  static mapFile(fd: number, size: number): GuestMemory {
    const ptr = mmap(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd);
    if (libc().madvise(BigInt(Deno.UnsafePointer.value(ptr)), BigInt(size), MADV_DONTDUMP) !== 0) {
      const e = errno();
      libc().munmap(ptr, BigInt(size));
      throw new SysError("madvise", e);
    }
    const buf = Deno.UnsafePointerView.getArrayBuffer(ptr, size);
    return new GuestMemory(buf, BigInt(Deno.UnsafePointer.value(ptr)), ptr);
  }

  /**
   * Unmaps RAM that {@linkcode allocate} mapped (once; a wrapped buffer is
   * its owner's). Nothing may touch the memory afterwards, on any thread:
   * the VM's vCPUs must have stopped.
   */
  release(): void {
    if (!this.#mapping) return;
    libc().munmap(this.#mapping, BigInt(this.host.length));
    this.#mapping = undefined;
  }

  /** Wraps a buffer (tests, or a mapping made elsewhere). */
  static fromBuffer(buffer: ArrayBuffer, hostAddr = 0n): GuestMemory {
    return new GuestMemory(buffer, hostAddr);
  }

  /** Bytes of RAM. */
  get size(): number {
    return this.host.length;
  }

  /** End of RAM below the MMIO gap. */
  get lowEnd(): number {
    return this.regions[0].size;
  }

  /**
   * Offset into {@linkcode host} of the `len` bytes at guest address
   * `addr`, or -1 when any of them lies outside RAM (the MMIO gap, past
   * the end, a negative or non-integer value). Allocates nothing: the
   * virtio data path checks every guest address with it.
   */
  offsetOf(addr: number, len: number): number {
    if (!(addr >= 0 && len >= 0 && Number.isSafeInteger(addr + len))) return -1;
    const rs = this.regions;
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i];
      if (addr >= r.guestAddr && addr + len <= r.guestAddr + r.size) {
        return r.hostOffset + addr - r.guestAddr;
      }
    }
    return -1;
  }

  /** A view of `len` bytes at guest address `addr`; throws outside RAM. */
  bytes(addr: number, len: number): Uint8Array {
    for (const r of this.regions) {
      if (addr >= r.guestAddr && addr + len <= r.guestAddr + r.size) {
        const off = r.hostOffset + addr - r.guestAddr;
        return this.host.subarray(off, off + len);
      }
    }
    throw new GuestMemoryError(addr, len);
  }

  /** A DataView of `len` bytes at `addr` (little-endian accessors). */
  view(addr: number, len: number): DataView {
    const b = this.bytes(addr, len);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  /**
   * Faults `len` bytes at `addr` in with one `madvise` before a large copy
   * (the kernel image): one call instead of a page fault per page. Best
   * effort: kernels before 5.14 and plain buffers just fault as they go.
   */
  prefault(addr: number, len: number): void {
    if (this.hostAddr === 0n || len <= 0) return;
    const view = this.bytes(addr, len);
    const start = this.hostAddr + BigInt(view.byteOffset);
    const first = start & ~0xfffn;
    const end = (start + BigInt(len) + 0xfffn) & ~0xfffn;
    libc().madvise(first, end - first, MADV_POPULATE_WRITE);
  }

  /**
   * Starts recording the pages the monitor's own devices write (KVM logs
   * the guest's writes; a diff snapshot needs both).
   */
  trackWrites(): void {
    this.#dirty ??= new Uint32Array(Math.ceil(Math.ceil(this.size / PAGE) / 32));
  }

  /** Whether {@linkcode trackWrites} was called. */
  get tracked(): boolean {
    return this.#dirty !== undefined;
  }

  /**
   * Records that the monitor wrote (or may write) `len` bytes at host
   * offset `off`; nothing unless tracked. Allocates nothing: the virtio
   * data path calls it for every device-writable buffer.
   */
  markDirty(off: number, len: number): void {
    const d = this.#dirty;
    if (d === undefined || len <= 0) return;
    for (
      let p = Math.floor(off / PAGE), last = Math.floor((off + len - 1) / PAGE);
      p <= last;
      p++
    ) {
      d[p >>> 5] |= 1 << (p & 31);
    }
  }

  /**
   * The record of written pages (bit `p` is the page at host offset
   * `p * 4096`), live: KVM's log is merged into it before a diff snapshot.
   * Throws unless tracked.
   */
  get dirtyPages(): Uint32Array {
    if (this.#dirty === undefined) throw new Error("Guest memory writes are not tracked");
    return this.#dirty;
  }

  /** Forgets every recorded write (a snapshot has saved them). */
  clearDirty(): void {
    this.#dirty?.fill(0);
  }

  /** Copies `data` into the guest at `addr`. */
  write(addr: number, data: Uint8Array): void {
    this.bytes(addr, data.length).set(data);
  }
}
