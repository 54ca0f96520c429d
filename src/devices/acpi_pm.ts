/**
 * The hardware-reduced ACPI registers the FADT names (ACPI 6.5 §4.8.3.7,
 * §4.8.3.6): three byte-wide ports, the sleep control register at offset
 * 0, the sleep status register at 1 and the reset register at 2. SLP_EN
 * with the soft-off type powers the VM off; the reset value resets it.
 * Anything else a guest writes is ignored, and every read is zero (no
 * wake status: the VM never sleeps and wakes).
 *
 * @module
 */

import { S5_SLEEP_TYPE, SLEEP_CONTROL } from "../../ffi/acpi.ts";
import type { BusDevice } from "./bus.ts";

/** What the registers do to the VM. */
export interface AcpiPmHandler {
  /** The guest entered S5. */
  powerOff(): void;
  /** The guest wrote the reset value. */
  reset(): void;
}

/** Offsets in the device's three-port window. */
export const ACPI_PM = { SLEEP_CONTROL: 0, SLEEP_STATUS: 1, RESET: 2, SIZE: 3 } as const;

/**
 * The sleep control, sleep status and reset registers.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AcpiPm } from "./acpi_pm.ts";
 * let off = 0;
 * const pm = new AcpiPm({ powerOff: () => void off++, reset() {} }, 1);
 * pm.write(0, new Uint8Array([(5 << 2) | 0x20]));
 * assert.equal(off, 1);
 * ```
 */
export class AcpiPm implements BusDevice {
  constructor(private readonly h: AcpiPmHandler, private readonly resetValue: number) {}

  read(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  write(offset: number, data: Uint8Array): void {
    // Only byte registers: a wider write's first byte is the register's value.
    const v = data[0];
    if (offset === ACPI_PM.SLEEP_CONTROL) {
      const type = (v & SLEEP_CONTROL.TYPE_MASK) >> SLEEP_CONTROL.TYPE_SHIFT;
      if (v & SLEEP_CONTROL.ENABLE && type === S5_SLEEP_TYPE) this.h.powerOff();
    } else if (offset === ACPI_PM.RESET && v === this.resetValue) {
      this.h.reset();
    }
  }
}
