/**
 * A vCPU thread's view of the VM's devices: one bus entry per
 * {@linkcode DeviceSpec}, built from the spec by its kind, behind the
 * device's lock where its state is shared. A new kind of device is one
 * entry in {@linkcode DEVICE_KINDS} and a `DeviceManager.add...` method.
 *
 * @module
 */

import { dataPath, PinnedBuffer } from "../../ffi/libc.ts";
import { Bus, type BusDevice } from "../devices/bus.ts";
import { BootTimerPort, ExitPort, type GuestCtlHandler } from "../devices/guest_ctl.ts";
import { I8042 } from "../devices/i8042.ts";
import { AcpiPm } from "../devices/acpi_pm.ts";
import { ACPI_RESET_VALUE } from "../arch/x86_64/layout.ts";
import { DeviceLock, Serialized } from "../devices/lock.ts";
import { Serial, type Trigger, type Writer } from "../devices/serial.ts";
import { VirtioMmio } from "../devices/virtio/mmio.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";
import type { DeviceSpec } from "./device_manager.ts";
import type { Vm } from "./vm.ts";
import { MailboxDevice } from "./hosted_device.ts";

/** What the devices of one vCPU thread reach on that thread. */
export interface VcpuDeviceContext {
  vm: Vm;
  memory: GuestMemory;
  /** Where the UART's output goes from this thread. */
  console: Writer;
  /** The guest asked for a reset (the i8042's reset line, ACPI's reset register). */
  reset(): void;
  /** The guest powered off (ACPI's soft-off). */
  powerOff(): void;
  /** Exit port and boot timer. */
  ctl: GuestCtlHandler;
  /** True once the VM is stopping (a hosted device's wait gives up). */
  stopping(): boolean;
}

/** Reads as zero, ignores writes: Linux's I/O-delay port. */
const silent: BusDevice = { read: (_o, d) => d.fill(0), write() {} };

/** An edge on `irq` through KVM_IRQ_LINE. */
export function irqLine(vm: Vm, irq: number): Trigger {
  return {
    trigger() {
      vm.setIrqLine(irq, true);
      vm.setIrqLine(irq, false);
    },
  };
}

/** One 8-byte eventfd increment, from a buffer made once. */
export function eventfdSignal(fd: number): () => void {
  const one = new PinnedBuffer(8);
  new BigUint64Array(one.buffer)[0] = 1n;
  // The closure holds `one`, so its address stays good.
  return () => void dataPath.write(fd, one.addr, 8);
}

/** How one kind of device is built on a vCPU thread. */
interface Kind {
  build(spec: DeviceSpec, ctx: VcpuDeviceContext): BusDevice;
  /**
   * Its shared state's slot 0 is a lock the bus takes around each access;
   * false for a stateless port, or one whose state is a single atomic.
   */
  locked: boolean;
}

/** Every kind of device, and how each is built on a vCPU thread. */
export const DEVICE_KINDS: Record<DeviceSpec["kind"], Kind> = {
  serial: {
    build: (d, ctx) => new Serial(d.state!, ctx.console, irqLine(ctx.vm, d.irq!)),
    locked: true,
  },
  i8042: {
    build: (d, ctx) => new I8042(() => ctx.reset(), d.state!, irqLine(ctx.vm, d.irq!)),
    locked: true,
  },
  post: { build: () => silent, locked: false },
  "acpi-pm": {
    build: (_d, ctx) =>
      new AcpiPm({ powerOff: () => ctx.powerOff(), reset: () => ctx.reset() }, ACPI_RESET_VALUE),
    locked: false,
  },
  "exit-port": { build: (_d, ctx) => new ExitPort(ctx.ctl), locked: false },
  // One latch, set with a compare-and-swap: the first vCPU to write it wins.
  "boot-timer": {
    build: (d, ctx) => new BootTimerPort(ctx.ctl, new Int32Array(d.state!), 1),
    locked: false,
  },
  "virtio-mmio": {
    build: (d, ctx) => {
      if (d.kind !== "virtio-mmio") throw new TypeError("Not a virtio spec");
      const notify = eventfdSignal(d.notifyFd);
      const irq = eventfdSignal(d.irqFd);
      return new VirtioMmio(d.state, ctx.memory, { trigger: irq }, { notify });
    },
    locked: true,
  },
  // The lock keeps one access per mailbox in flight, whichever vCPU makes it.
  hosted: { build: (d, ctx) => new MailboxDevice(d.state!, ctx.stopping), locked: true },
};

/**
 * Builds the port and MMIO buses of one vCPU thread.
 *
 * @example
 * ```ts ignore
 * const { pio, mmio } = buildBuses(specs, ctx);
 * ```
 */
export function buildBuses(specs: DeviceSpec[], ctx: VcpuDeviceContext): { pio: Bus; mmio: Bus } {
  const pio = new Bus();
  const mmio = new Bus();
  for (const d of specs) {
    const kind = DEVICE_KINDS[d.kind];
    let dev = kind.build(d, ctx);
    // Shared state takes its lock at the bus: device code stays single-threaded.
    if (kind.locked) dev = new Serialized(dev, new DeviceLock(new Int32Array(d.state!)));
    (d.bus === "pio" ? pio : mmio).insert(d.base, d.size, dev);
  }
  return { pio, mmio };
}
