/**
 * virtio-blk (virtio 1.2 §5.2) over a raw image: reads, writes, flush
 * (`fdatasync`), GET_ID, and on a writable disk discard and write-zeroes
 * (`fallocate`); read-only unless asked. Requests move bytes
 * between the file and guest RAM directly, with no copy and no allocation.
 *
 * @module
 */

import { dataPath, errno, IO_CHUNK, libc, PinnedBuffer } from "../../../ffi/libc.ts";
import { BLK, DEVICE_ID, F } from "../../../ffi/virtio.ts";
import type { GuestMemory } from "../../memory/guest_memory.ts";
import type { VirtioBackend } from "./device.ts";
import type { VirtioDeviceInfo } from "./mmio_state.ts";
import type { DescriptorChain } from "./queue.ts";

/** Queue entries the block device offers. */
export const BLK_QUEUE_SIZE = 256;

const EINTR = 4;
const FALLOC_FL_KEEP_SIZE = 0x01, FALLOC_FL_PUNCH_HOLE = 0x02, FALLOC_FL_ZERO_RANGE = 0x10;
/** Sectors one discard or write-zeroes range may cover (2 GiB). */
export const BLK_RANGE_SECTORS = 1 << 22;
/** Ranges one discard or write-zeroes request may carry. */
export const BLK_RANGE_SEGMENTS = 16;

/** What {@linkcode BlockFile.deallocate} does with a range. */
export type Deallocate = "discard" | "zero" | "zero-unmap";

/** Where a disk's bytes are: a descriptor, read at host addresses. */
export interface BlockFile {
  /** Bytes of the image (a multiple of 512 is used; a tail is ignored). */
  readonly size: number;
  /** Reads `len` bytes at `offset` to host address `addr`; false on an I/O error. */
  readAt(addr: number, len: number, offset: number): boolean;
  /** Writes `len` bytes from host address `addr` at `offset`; false on an I/O error. */
  writeAt(addr: number, len: number, offset: number): boolean;
  /** Makes written data durable; false on an I/O error. */
  sync(): boolean;
  /**
   * Reads (or writes, `write`) `len` bytes at `offset` into (from) the
   * `count` buffers of `iov` (`struct iovec`s), in one call where it can;
   * false on an I/O error. `len` is their total.
   */
  vectored?(iov: Iovecs, count: number, len: number, offset: number, write: boolean): boolean;
  /**
   * Discards `len` bytes at `offset` (they may read back as anything), or
   * zeroes them, freeing the space when `zero-unmap`; false on an I/O error.
   */
  deallocate?(offset: number, len: number, how: Deallocate): boolean;
}

/** A reusable `struct iovec` array (16 bytes each: base, length) at a fixed host address. */
export class Iovecs {
  private readonly pinned: PinnedBuffer;
  private readonly u32: Uint32Array;
  constructor(readonly capacity: number) {
    this.pinned = new PinnedBuffer(16 * capacity);
    this.u32 = new Uint32Array(this.pinned.buffer);
  }
  /** Host address of the array. */
  get addr(): number {
    return this.pinned.addr;
  }
  /** Sets entry `i`: two 32-bit halves each, so no BigInt is made. */
  set(i: number, base: number, len: number): void {
    const u = this.u32, w = 4 * i;
    u[w] = base % 2 ** 32;
    u[w + 1] = Math.floor(base / 2 ** 32);
    u[w + 2] = len;
    u[w + 3] = 0;
  }
  /** Entry `i`'s base and length. */
  base(i: number): number {
    return this.u32[4 * i] + this.u32[4 * i + 1] * 2 ** 32;
  }
  len(i: number): number {
    return this.u32[4 * i + 2];
  }
}

/**
 * A {@linkcode BlockFile} over an open descriptor, with `pread`/`pwrite`
 * straight into guest RAM.
 *
 * @example
 * ```ts ignore
 * const file = new FdBlockFile(fd, size);
 * ```
 */
export class FdBlockFile implements BlockFile {
  constructor(readonly fd: number, readonly size: number) {}

  readAt(addr: number, len: number, offset: number): boolean {
    return this.loop(addr, len, offset, false);
  }

  writeAt(addr: number, len: number, offset: number): boolean {
    return this.loop(addr, len, offset, true);
  }

  /** Moves all `len` bytes, resuming after short transfers and EINTR. */
  private loop(addr: number, len: number, offset: number, write: boolean): boolean {
    while (len > 0) {
      const step = Math.min(len, IO_CHUNK);
      const n = write
        ? dataPath.pwrite(this.fd, addr, step, offset)
        : dataPath.pread(this.fd, addr, step, offset);
      if (n < 0 && errno() === EINTR) continue;
      if (n <= 0) return false;
      addr += n;
      len -= n;
      offset += n;
    }
    return true;
  }

  sync(): boolean {
    return libc().fdatasync(this.fd) === 0;
  }

  /** A zero page for write-zeroes where the file system cannot zero a range. */
  private zeroes?: PinnedBuffer;

  /**
   * A hole punched for a discard or an unmapping write-zeroes, a zeroed
   * range otherwise; a file system without either gets a discard ignored
   * (it is a hint) and zeroes written.
   */
  deallocate(offset: number, len: number, how: Deallocate): boolean {
    const punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    const modes = how === "zero" ? [FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, punch] : [punch];
    for (const mode of modes) {
      let r = 0;
      do r = dataPath.fallocate(this.fd, mode, offset, len); while (r < 0 && errno() === EINTR);
      if (r === 0) return true;
    }
    if (how === "discard") return true;
    const zeroes = this.zeroes ??= new PinnedBuffer(64 << 10);
    for (let at = 0; at < len; at += zeroes.buffer.byteLength) {
      const step = Math.min(zeroes.buffer.byteLength, len - at);
      if (!this.loop(zeroes.addr, step, offset + at, true)) return false;
    }
    return true;
  }

  /**
   * One `preadv`/`pwritev` for the whole request (Linux hands a 1 MiB
   * request over as up to 256 separate pages); a short transfer finishes
   * buffer by buffer.
   */
  vectored(iov: Iovecs, count: number, len: number, offset: number, write: boolean): boolean {
    let n = 0;
    do {
      n = write
        ? dataPath.pwritev(this.fd, iov.addr, count, offset)
        : dataPath.preadv(this.fd, iov.addr, count, offset);
    } while (n < 0 && errno() === EINTR);
    if (n < 0) return false;
    if (n === len) return true;
    // Short: skip what was moved, then one buffer at a time.
    let done = n;
    for (let i = 0; i < count; i++) {
      const b = iov.base(i), l = iov.len(i);
      if (done >= l) {
        done -= l;
        continue;
      }
      if (!this.loop(b + done, l - done, offset + n, write)) return false;
      n += l - done;
      done = 0;
    }
    return true;
  }
}

/** How a disk is offered. */
export interface BlockOptions {
  readOnly: boolean;
  /** Up to 20 bytes the guest reads as the serial (`GET_ID`). */
  id?: string;
}

/**
 * The config space and features of a disk of `size` bytes; `ranges` when
 * the file can discard and zero (offered on a writable disk only).
 */
export function blockInfo(size: number, opts: BlockOptions, ranges = false): VirtioDeviceInfo {
  const config = new Uint8Array(BLK.CONFIG_BYTES);
  const dv = new DataView(config.buffer);
  dv.setBigUint64(BLK.CONFIG_CAPACITY, BigInt(Math.floor(size / BLK.SECTOR_SIZE)), true);
  // Two descriptors of a chain carry the header and the status byte.
  dv.setUint32(BLK.CONFIG_SEG_MAX, BLK_QUEUE_SIZE - 2, true);
  dv.setUint32(BLK.CONFIG_BLK_SIZE, BLK.SECTOR_SIZE, true);
  let features = (1n << BigInt(F.VERSION_1)) | (1n << BigInt(BLK.F_SEG_MAX)) |
    (1n << BigInt(BLK.F_BLK_SIZE)) | (1n << BigInt(BLK.F_FLUSH)) |
    (1n << BigInt(F.RING_EVENT_IDX)) | (1n << BigInt(F.RING_INDIRECT_DESC));
  if (opts.readOnly) features |= 1n << BigInt(BLK.F_RO);
  else if (ranges) {
    features |= (1n << BigInt(BLK.F_DISCARD)) | (1n << BigInt(BLK.F_WRITE_ZEROES));
    dv.setUint32(BLK.CONFIG_MAX_DISCARD_SECTORS, BLK_RANGE_SECTORS, true);
    dv.setUint32(BLK.CONFIG_MAX_DISCARD_SEG, BLK_RANGE_SEGMENTS, true);
    // In sectors: Linux takes it as the discard granularity (4 KiB, a page).
    dv.setUint32(BLK.CONFIG_DISCARD_SECTOR_ALIGNMENT, 8, true);
    dv.setUint32(BLK.CONFIG_MAX_WRITE_ZEROES_SECTORS, BLK_RANGE_SECTORS, true);
    dv.setUint32(BLK.CONFIG_MAX_WRITE_ZEROES_SEG, BLK_RANGE_SEGMENTS, true);
    config[BLK.CONFIG_WRITE_ZEROES_MAY_UNMAP] = 1;
  }
  return { deviceId: DEVICE_ID.BLOCK, features, queues: 1, queueMax: BLK_QUEUE_SIZE, config };
}

/** What a block device has served. */
export type BlkStats = {
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  flushes: number;
  /** Requests answered with an error status (or no status at all). */
  failures: number;
};

/**
 * The block device.
 *
 * @example
 * ```ts ignore
 * const blk = new VirtioBlk(new FdBlockFile(fd, size), memory, { readOnly: true });
 * ```
 */
export class VirtioBlk implements VirtioBackend {
  readonly info: VirtioDeviceInfo;
  private readonly bytes: number;
  private readonly hostBase: number;
  private readonly dv: DataView;
  private readonly host: Uint8Array;
  private readonly id: Uint8Array;
  private readonly iov = new Iovecs(BLK_QUEUE_SIZE);

  constructor(
    private readonly file: BlockFile,
    mem: GuestMemory,
    private readonly opts: BlockOptions,
  ) {
    this.info = blockInfo(file.size, opts, !!file.deallocate);
    this.bytes = Math.floor(file.size / BLK.SECTOR_SIZE) * BLK.SECTOR_SIZE;
    this.hostBase = Number(mem.hostAddr);
    this.host = mem.host;
    this.dv = new DataView(mem.host.buffer, mem.host.byteOffset, mem.host.byteLength);
    const id = new TextEncoder().encode(opts.id ?? "");
    if (id.length > BLK.ID_BYTES) throw new RangeError("Disk id longer than 20 bytes");
    this.id = new Uint8Array(BLK.ID_BYTES);
    this.id.set(id);
  }

  /** Requests and bytes served, and requests that failed. */
  readonly stats: BlkStats = {
    reads: 0,
    readBytes: 0,
    writes: 0,
    writeBytes: 0,
    flushes: 0,
    failures: 0,
  };

  handle(_queue: number, c: DescriptorChain): number {
    const last = c.count - 1;
    // No writable status byte at the end: nothing can be reported, nothing is done.
    if (last < 1 || !c.writable[last] || c.len[last] === 0) {
      this.stats.failures++;
      return 0;
    }
    const statusAt = c.host[last] + c.len[last] - 1;
    const status = this.request(c, last);
    if (status !== BLK.S_OK) this.stats.failures++;
    this.host[statusAt] = status;
    return this.written + 1;
  }

  /** Bytes the last request wrote into guest buffers, its status byte aside. */
  private written = 0;

  /** Serves a request whose status byte is in descriptor `last`; returns its status. */
  private request(c: DescriptorChain, last: number): number {
    this.written = 0;
    if (c.writable[0] || c.len[0] < BLK.HEADER_SIZE) return BLK.S_IOERR;
    const dv = this.dv, h = c.host[0];
    const type = dv.getUint32(h, true);
    const lo = dv.getUint32(h + 8, true), hi = dv.getUint32(h + 12, true);
    switch (type) {
      case BLK.T_IN:
      case BLK.T_OUT: {
        const write = type === BLK.T_OUT;
        if (write && this.opts.readOnly) return BLK.S_IOERR;
        let len = 0;
        for (let i = 1; i < last; i++) {
          // Reads land in device-writable buffers, writes come from readable ones.
          if (c.writable[i] !== (write ? 0 : 1)) return BLK.S_IOERR;
          len += c.len[i];
        }
        // Whole sectors, inside the disk; a sector number past 2^41 is past any disk.
        if (len % BLK.SECTOR_SIZE || hi >= 1 << 9) return BLK.S_IOERR;
        let offset = (lo + hi * 2 ** 32) * BLK.SECTOR_SIZE;
        if (offset + len > this.bytes) return BLK.S_IOERR;
        if (write) this.stats.writes++, this.stats.writeBytes += len;
        else this.stats.reads++, this.stats.readBytes += len;
        const segments = last - 1;
        if (
          this.file.vectored && segments > 1 && segments <= this.iov.capacity && len <= IO_CHUNK
        ) {
          for (let i = 1; i < last; i++) this.iov.set(i - 1, this.hostBase + c.host[i], c.len[i]);
          if (!this.file.vectored(this.iov, segments, len, offset, write)) return BLK.S_IOERR;
          if (!write) this.written = len;
          return BLK.S_OK;
        }
        for (let i = 1; i < last; i++) {
          const addr = this.hostBase + c.host[i];
          const ok = write
            ? this.file.writeAt(addr, c.len[i], offset)
            : this.file.readAt(addr, c.len[i], offset);
          if (!ok) return BLK.S_IOERR;
          offset += c.len[i];
          if (!write) this.written += c.len[i];
        }
        return BLK.S_OK;
      }
      case BLK.T_FLUSH:
        this.stats.flushes++;
        return this.opts.readOnly || this.file.sync() ? BLK.S_OK : BLK.S_IOERR;
      case BLK.T_DISCARD:
      case BLK.T_WRITE_ZEROES:
        return this.ranges(c, last, type === BLK.T_DISCARD);
      case BLK.T_GET_ID: {
        if (last < 2 || !c.writable[1]) return BLK.S_IOERR;
        const n = Math.min(c.len[1], BLK.ID_BYTES);
        this.host.set(this.id.subarray(0, n), c.host[1]);
        this.written = n;
        return BLK.S_OK;
      }
    }
    return BLK.S_UNSUPP;
  }

  /**
   * A discard or write-zeroes request: its ranges (16 bytes each: sector,
   * sectors, flags) fill the readable buffers between header and status.
   */
  private ranges(c: DescriptorChain, last: number, discard: boolean): number {
    const file = this.file;
    if (this.opts.readOnly) return BLK.S_IOERR;
    if (!file.deallocate) return BLK.S_UNSUPP;
    // Every range is checked before any is applied: a bad request changes nothing.
    let count = 0;
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 1; i < last; i++) {
        if (c.writable[i] || c.len[i] % BLK.RANGE_SIZE) return BLK.S_IOERR;
        for (let r = c.host[i], end = r + c.len[i]; r < end; r += BLK.RANGE_SIZE) {
          const status = this.range(r, discard, pass === 1);
          if (status !== BLK.S_OK) return status;
          if (pass === 0 && ++count > BLK_RANGE_SEGMENTS) return BLK.S_IOERR;
        }
      }
    }
    return count > 0 ? BLK.S_OK : BLK.S_IOERR;
  }

  /** Checks the range at host offset `r`, and applies it when `apply`. */
  private range(r: number, discard: boolean, apply: boolean): number {
    const dv = this.dv;
    const lo = dv.getUint32(r, true), hi = dv.getUint32(r + 4, true);
    const sectors = dv.getUint32(r + 8, true), flags = dv.getUint32(r + 12, true);
    // Discard has no flags; write-zeroes only unmap (§5.2.6.2).
    if (flags & ~(discard ? 0 : BLK.RANGE_F_UNMAP)) return BLK.S_UNSUPP;
    if (sectors > BLK_RANGE_SECTORS || hi >= 1 << 9) return BLK.S_IOERR;
    const offset = (lo + hi * 2 ** 32) * BLK.SECTOR_SIZE, len = sectors * BLK.SECTOR_SIZE;
    if (offset + len > this.bytes) return BLK.S_IOERR;
    if (!apply || len === 0) return BLK.S_OK;
    const how = discard ? "discard" : flags & BLK.RANGE_F_UNMAP ? "zero-unmap" : "zero";
    return this.file.deallocate!(offset, len, how) ? BLK.S_OK : BLK.S_IOERR;
  }
}
