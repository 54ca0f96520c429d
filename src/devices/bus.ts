/**
 * Routes port I/O and MMIO exits to devices by address range. Devices see
 * only an offset into their own range.
 *
 * @module
 */

/**
 * What a device on a bus implements. `data.length` is the guest's access
 * width (1, 2 or 4 bytes for a port, up to 8 for MMIO), and an access is
 * routed by its first address only, so it may run past the device's range:
 * a device checks the widths it accepts.
 */
export interface BusDevice {
  /** Fills `data` for a read of `data.length` bytes at `offset`. */
  read(offset: number, data: Uint8Array): void;
  /** Handles a write of `data` at `offset`. */
  write(offset: number, data: Uint8Array): void;
}

interface Range {
  base: number;
  size: number;
  device: BusDevice;
}

/**
 * An address-range bus. Reads of unclaimed addresses return all-ones and
 * writes to them are dropped, as on real hardware, without logging.
 *
 * @example
 * ```ts
 * import { Bus } from "./bus.ts";
 * const bus = new Bus();
 * const seen: number[] = [];
 * bus.insert(0x3f8, 8, { read: (_o, d) => d.fill(0), write: (o) => void seen.push(o) });
 * bus.write(0x3f9, new Uint8Array([1])); // seen = [1]
 * ```
 */
export class Bus {
  private ranges: Range[] = [];

  /** Adds a device at [base, base + size); overlaps are refused. */
  insert(base: number, size: number, device: BusDevice): void {
    if (size <= 0) throw new RangeError("Bus range must not be empty");
    for (const r of this.ranges) {
      if (base < r.base + r.size && r.base < base + size) {
        throw new RangeError(
          `Bus range 0x${base.toString(16)}+${size} overlaps 0x${r.base.toString(16)}+${r.size}`,
        );
      }
    }
    this.ranges.push({ base, size, device });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  /** The range holding `addr`, by binary search. */
  private find(addr: number): Range | undefined {
    const rs = this.ranges;
    let lo = 0, hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid];
      if (addr < r.base) hi = mid - 1;
      else if (addr >= r.base + r.size) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  /** Dispatches a read; returns false when nothing claims `addr`. */
  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (!r) {
      data.fill(0xff);
      return false;
    }
    r.device.read(addr - r.base, data);
    return true;
  }

  /** Dispatches a write; returns false when nothing claims `addr`. */
  write(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (!r) return false;
    r.device.write(addr - r.base, data);
    return true;
  }
}
