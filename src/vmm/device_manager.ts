/**
 * The VM's devices: one owner for every device, its address window, its
 * interrupt line, its shared state and its host resources (disk files,
 * eventfds). Devices are plain specs that cross to every thread serving
 * them ({@linkcode DeviceSpec}); each thread builds its view of the same
 * device from the spec ({@linkcode buildBuses}), so there is one device per
 * VM, whichever vCPU exits on it.
 *
 * @module
 */

import { IOEVENTFD, IRQFD, KVM, SIZE } from "../../ffi/kvm.ts";
import {
  check,
  errno,
  libc,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  openPath,
  SysError,
} from "../../ffi/libc.ts";
import { F_GETFL, F_SETFL } from "../../ffi/fcntl.ts";
import {
  EFD_CLOEXEC,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_EVENT,
  EPOLLIN,
  SEEK_END,
} from "../../ffi/eventfd.ts";
import { MMIO } from "../../ffi/virtio.ts";
import * as L from "../arch/x86_64/layout.ts";
import { VoltError } from "../errors.ts";
import { blockInfo } from "../devices/virtio/blk.ts";
import { newVirtioState, type VirtioDeviceInfo } from "../devices/virtio/mmio_state.ts";
import { rngInfo } from "../devices/virtio/rng.ts";
import { netInfo } from "../devices/virtio/net.ts";
import { vsockInfo } from "../devices/virtio/vsock.ts";
import { listenVsock } from "./vsock_listen.ts";
import { formatMac, openTap, parseMac, randomMac } from "./tap.ts";
import { newSerialState } from "../devices/serial.ts";
import { newI8042State } from "../devices/i8042.ts";
import { MAILBOX_BYTES } from "./hosted_device.ts";
import { ACPI_PM } from "../devices/acpi_pm.ts";
import type { AcpiMmioDevice } from "../arch/x86_64/acpi.ts";

/** The legacy devices every VM has. */
export type LegacyKind = "serial" | "i8042" | "post" | "exit-port" | "boot-timer" | "acpi-pm";

/** What a virtio device is backed by, as the I/O loop rebuilds it. */
export type VirtioBackendSpec =
  | { type: "block"; fd: number; size: number; readOnly: boolean; id?: string; path: string }
  | { type: "entropy" }
  | { type: "net"; fd: number; mac: string; tap: string }
  | { type: "vsock"; cid: number; listenFd: number; udsPath: string };

/** A device, as every thread that serves it sees it (structured-clonable). */
export type DeviceSpec =
  | {
    kind: LegacyKind;
    bus: "pio";
    base: number;
    size: number;
    irq?: number;
    /** Shared registers (slot 0 the lock); none for a stateless port. */
    state?: SharedArrayBuffer;
  }
  | {
    kind: "virtio-mmio";
    bus: "mmio";
    base: number;
    size: number;
    irq: number;
    state: SharedArrayBuffer;
    /** Signalled on QUEUE_NOTIFY (by KVM through an ioeventfd, or by the transport). */
    notifyFd: number;
    /** Raises `irq` (a KVM irqfd). */
    irqFd: number;
    backend: VirtioBackendSpec;
  }
  | HostedSpec;

/** A device a script wrote, served on the script's thread through a mailbox. */
export interface HostedSpec {
  kind: "hosted";
  bus: "pio" | "mmio";
  base: number;
  size: number;
  irq?: number;
  /** The mailbox (slot 0 the lock). */
  state: SharedArrayBuffer;
}

/** A virtio device's spec. */
export type VirtioSpec = Extract<DeviceSpec, { kind: "virtio-mmio" }>;

/** A disk as the configuration gives it. */
export interface DiskConfig {
  /** Image path (also how errors name it). */
  path: string;
  /** Writable by the guest (default: read-only). */
  readOnly?: boolean;
  /** The serial the guest reads (`GET_ID`), up to 20 bytes. */
  id?: string;
  /** An open descriptor for `path` (the jailed monitor's way in); owned from here on. */
  fd?: number;
  /** The guest's root file system: the first disk (`/dev/vda`), named by `root=`. */
  root?: boolean;
}

/** A network interface as the configuration gives it. */
export interface NetConfig {
  /** The host TAP's name (it must exist: `ip tuntap add NAME mode tap`). */
  tap: string;
  /** The guest's MAC address, `XX:XX:XX:XX:XX:XX`; a random local one if not given. */
  mac?: string;
  /** An attached TAP descriptor (the jailed monitor's way in); owned from here on. */
  fd?: number;
  /** A name for it (Firecracker's `iface_id`). */
  id?: string;
}

/** The vsock device as the configuration gives it (Firecracker's `vsock`). */
export interface VsockConfig {
  /** The guest's CID (3 or more). */
  cid: number;
  /** The unix socket host clients connect to; guest connections to port P reach `<uds>_P`. */
  uds: string;
  /** A listening descriptor for `uds` (the jailed monitor's way in); owned from here on. */
  listenFd?: number;
}

/** What the I/O loop needs to serve the virtio devices. */
export interface IoPlan {
  devices: VirtioSpec[];
  /**
   * epoll set: each device's notify fd (data = its index), the host
   * descriptors its backend waits on (data = index | {@linkcode IO_HOST}),
   * and the stop fd.
   */
  epollFd: number;
  /** Written to end the I/O loop. */
  stopFd: number;
  /**
   * The devices come from a snapshot: each queue goes on from the indices
   * the guest's rings hold, not from zero.
   */
  restored?: boolean;
}

/** epoll data of the stop descriptor. */
export const IO_STOP = 0xffffffff;
/** epoll data bit of a backend's host descriptor (a TAP), over the device's index. */
export const IO_HOST = 0x10000;

/**
 * The devices of one VM, from the specs to the descriptors.
 *
 * @example
 * ```ts ignore
 * const devices = new DeviceManager();
 * devices.addLegacy();
 * devices.addEntropy();
 * devices.cmdline(); // ["virtio_mmio.device=4K@0xd0000000:5"]
 * ```
 */
export class DeviceManager {
  readonly specs: DeviceSpec[] = [];
  /** Descriptors this manager closes on release. */
  private readonly fds: number[] = [];
  private nextVirtio = 0;
  private epollFd = -1;
  private stopFd = -1;
  private released = false;

  /** COM1, the i8042, the POST port, the exit and boot-timer ports, the ACPI registers. */
  addLegacy(): void {
    this.specs.push(
      {
        kind: "serial",
        bus: "pio",
        base: L.SERIAL_PORT,
        size: 8,
        irq: L.SERIAL_IRQ,
        state: newSerialState(),
      },
      {
        kind: "i8042",
        bus: "pio",
        base: L.I8042_DATA_PORT,
        size: 5,
        irq: L.I8042_IRQ,
        state: newI8042State(),
      },
      { kind: "post", bus: "pio", base: L.POST_PORT, size: 1 },
      { kind: "exit-port", bus: "pio", base: L.EXIT_PORT, size: 4 },
      // Its latch is shared: the VM is ready once, whichever vCPU says so first.
      {
        kind: "boot-timer",
        bus: "pio",
        base: L.BOOT_TIMER_PORT,
        size: 1,
        state: new SharedArrayBuffer(8),
      },
      // Stateless: power-off and reset act at once.
      { kind: "acpi-pm", bus: "pio", base: L.ACPI_SLEEP_CONTROL_PORT, size: ACPI_PM.SIZE },
    );
  }

  /** COM1's shared state (the main thread feeds it host input). */
  get serialState(): SharedArrayBuffer {
    const s = this.specs.find((d) => d.kind === "serial");
    if (!s?.state) throw new Error("No serial device");
    return s.state;
  }

  /**
   * Adds a device served on this thread (see hosted_device.ts); refuses a
   * range that is not free on its bus, or MMIO outside the MMIO gap.
   */
  addHosted(d: { bus: "pio" | "mmio"; base: number; size: number; irq?: boolean }): HostedSpec {
    const { bus, base, size } = d;
    const limit = bus === "pio" ? 0x10000 : L.MMIO_GAP_END;
    const floor = bus === "pio" ? 0 : L.MMIO_GAP_START;
    if (!(Number.isSafeInteger(base) && Number.isSafeInteger(size) && size > 0)) {
      throw new VoltError(`A device needs a whole base and size, not ${base}+${size}`, "usage");
    }
    if (base < floor || base + size > limit) {
      throw new VoltError(
        bus === "pio"
          ? `Ports 0x${base.toString(16)}+${size} are past 0xffff`
          : `MMIO 0x${base.toString(16)}+${size} is outside the MMIO gap (0x${
            floor.toString(16)
          }-0x${limit.toString(16)})`,
        "usage",
      );
    }
    const taken = [
      ...this.specs.map((s) => ({ bus: s.bus, base: s.base, size: s.size })),
      // The interrupt controllers and the virtio windows still to come.
      { bus: "mmio", base: L.IOAPIC_ADDR, size: 0x1000 },
      { bus: "mmio", base: L.APIC_ADDR, size: 0x1000 },
      { bus: "mmio", base: L.VIRTIO_MMIO_BASE, size: L.VIRTIO_IRQS.length * L.VIRTIO_MMIO_WINDOW },
    ];
    const clash = taken.find((t) =>
      t.bus === bus && base < t.base + t.size && t.base < base + size
    );
    if (clash) {
      throw new VoltError(
        `Device range 0x${base.toString(16)}+${size} overlaps one at 0x${clash.base.toString(16)}`,
        "usage",
      );
    }
    const spec: HostedSpec = {
      kind: "hosted",
      bus,
      base,
      size,
      irq: d.irq ? this.takeIrq() : undefined,
      state: new SharedArrayBuffer(MAILBOX_BYTES),
    };
    this.specs.push(spec);
    return spec;
  }

  /** The next free interrupt line. */
  private takeIrq(): number {
    const used = new Set(this.specs.map((s) => s.irq));
    const irq = L.VIRTIO_IRQS.find((i) => !used.has(i));
    if (irq === undefined) {
      throw new VoltError("No interrupt line left for another device", "usage");
    }
    return irq;
  }

  /** The virtio devices. */
  get virtio(): VirtioSpec[] {
    return this.specs.filter((d): d is VirtioSpec => d.kind === "virtio-mmio");
  }

  /** Adds a disk; opens it read-only unless `readOnly` is false. */
  addDisk(disk: DiskConfig): VirtioSpec {
    const readOnly = disk.readOnly ?? true;
    if (disk.root) {
      if (this.rootDisk || this.nextVirtio > 0) {
        throw new VoltError("The root disk must be the first virtio device, and only one", "usage");
      }
      this.rootDisk = { readOnly };
    }
    let fd = disk.fd;
    if (fd === undefined) {
      try {
        fd = openPath(disk.path, readOnly ? O_RDONLY : O_RDWR);
      } catch (e) {
        throw new VoltError(`Cannot open disk ${disk.path}: ${(e as Error).message}`, "usage");
      }
    }
    this.fds.push(fd);
    const size = Number(libc().lseek(fd, 0n, SEEK_END));
    if (!(size >= 512)) {
      throw new VoltError(
        size < 0
          ? `Cannot size disk ${disk.path}: ${new SysError("lseek", errno()).message}`
          : `Disk ${disk.path} is smaller than one 512-byte sector`,
        "usage",
      );
    }
    // The I/O loop serves it with an FdBlockFile, which discards and zeroes.
    return this.addVirtio(blockInfo(size, { readOnly, id: disk.id }, true), {
      type: "block",
      fd,
      size,
      readOnly,
      id: disk.id,
      path: disk.path,
    });
  }

  /**
   * Adds a network interface on a TAP: the descriptor given, or the TAP
   * attached here (a process with the right to).
   */
  addNet(net: NetConfig): VirtioSpec {
    const fd = net.fd ?? openTap(net.tap);
    this.fds.push(fd);
    // Reads run until EAGAIN; a descriptor handed in may have come blocking.
    const fl = check(libc().fcntl(fd, F_GETFL, 0), "fcntl");
    check(libc().fcntl(fd, F_SETFL, fl | O_NONBLOCK), "fcntl");
    const mac = net.mac ? parseMac(net.mac) : randomMac();
    return this.addVirtio(netInfo(mac), { type: "net", fd, mac: formatMac(mac), tap: net.tap });
  }

  /** Adds the vsock device; listens on its socket here unless a descriptor is given. */
  addVsock(v: VsockConfig): VirtioSpec {
    if (this.virtio.some((d) => d.backend.type === "vsock")) {
      throw new VoltError("A VM has at most one vsock device", "usage");
    }
    const listenFd = v.listenFd ?? listenVsock(v.uds);
    this.fds.push(listenFd);
    return this.addVirtio(vsockInfo(v.cid), {
      type: "vsock",
      cid: v.cid,
      listenFd,
      udsPath: v.uds,
    });
  }

  /** Adds the entropy device. */
  addEntropy(): VirtioSpec {
    return this.addVirtio(rngInfo(), { type: "entropy" });
  }

  private addVirtio(info: VirtioDeviceInfo, backend: VirtioBackendSpec): VirtioSpec {
    const n = this.nextVirtio;
    if (n >= L.VIRTIO_IRQS.length) {
      throw new VoltError(`At most ${L.VIRTIO_IRQS.length} virtio devices fit one VM`, "usage");
    }
    this.nextVirtio++;
    const irq = this.takeIrq();
    const spec: VirtioSpec = {
      kind: "virtio-mmio",
      bus: "mmio",
      base: L.VIRTIO_MMIO_BASE + n * L.VIRTIO_MMIO_WINDOW,
      size: L.VIRTIO_MMIO_WINDOW,
      irq,
      state: newVirtioState(info),
      notifyFd: -1,
      irqFd: -1,
      backend,
    };
    this.specs.push(spec);
    return spec;
  }

  /** Each virtio device's window and line, as the DSDT describes them. */
  acpiDevices(): AcpiMmioDevice[] {
    return this.virtio.map((d) => ({ base: d.base, size: d.size, irq: d.irq }));
  }

  /**
   * The kernel command-line words that tell Linux where each virtio device
   * is, and which disk is its root.
   */
  cmdline(): string[] {
    const words = this.virtio.map((d) =>
      `virtio_mmio.device=${d.size >> 10}K@0x${d.base.toString(16)}:${d.irq}`
    );
    const root = this.rootDisk;
    // Disks are added first, in order: the root disk, added first of all, is vda.
    if (root) words.push("root=/dev/vda", root.readOnly ? "ro" : "rw");
    return words;
  }

  private rootDisk?: { readOnly: boolean };

  /**
   * Wires the virtio devices into the VM: an eventfd KVM signals on each
   * device's QUEUE_NOTIFY (KVM_IOEVENTFD, no exit), one that raises its
   * line (KVM_IRQFD), and the epoll set the I/O loop waits on.
   */
  connect(vmFd: number): IoPlan | undefined {
    const devices = this.virtio;
    if (devices.length === 0) return undefined;
    const l = libc();
    const newFd = (what: string, fd: number) => {
      check(fd, what);
      this.fds.push(fd);
      return fd;
    };
    this.epollFd = newFd("epoll_create1", l.epoll_create1(EPOLL_CLOEXEC));
    this.stopFd = newFd("eventfd", l.eventfd(0, EFD_CLOEXEC));
    const ev = new Uint8Array(EPOLL_EVENT.size);
    const evView = new DataView(ev.buffer);
    const watch = (fd: number, data: number, events = EPOLLIN) => {
      evView.setUint32(EPOLL_EVENT.events, events, true);
      evView.setBigUint64(EPOLL_EVENT.data, BigInt(data), true);
      check(l.epoll_ctl(this.epollFd, EPOLL_CTL_ADD, fd, ev), "epoll_ctl");
    };
    watch(this.stopFd, IO_STOP);
    const ioev = new Uint8Array(SIZE.kvm_ioeventfd);
    const iov = new DataView(ioev.buffer);
    const irqfd = new Uint8Array(SIZE.kvm_irqfd);
    const irqv = new DataView(irqfd.buffer);
    devices.forEach((d, i) => {
      d.notifyFd = newFd("eventfd", l.eventfd(0, EFD_CLOEXEC));
      d.irqFd = newFd("eventfd", l.eventfd(0, EFD_CLOEXEC));
      ioev.fill(0);
      iov.setBigUint64(IOEVENTFD.addr, BigInt(d.base + MMIO.QUEUE_NOTIFY), true);
      iov.setUint32(IOEVENTFD.len, 4, true);
      iov.setInt32(IOEVENTFD.fd, d.notifyFd, true);
      check(l.ioctl_buf(vmFd, KVM.IOEVENTFD, ioev), "KVM_IOEVENTFD");
      irqfd.fill(0);
      irqv.setUint32(IRQFD.fd, d.irqFd, true);
      irqv.setUint32(IRQFD.gsi, d.irq, true);
      check(l.ioctl_buf(vmFd, KVM.IRQFD, irqfd), "KVM_IRQFD");
      watch(d.notifyFd, i);
    });
    return { devices, epollFd: this.epollFd, stopFd: this.stopFd };
  }

  /** Tells the I/O loop to end (safe before {@linkcode connect} and after release). */
  stopIo(): void {
    if (this.stopFd < 0 || this.released) return;
    const one = new BigUint64Array([1n]);
    libc().write(this.stopFd, new Uint8Array(one.buffer), 8n);
  }

  /**
   * Closes every descriptor the devices hold (disks, eventfds, epoll), once.
   * Closing the VM fd drops KVM's ioeventfd and irqfd bindings with it.
   */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const fd of this.fds.splice(0)) libc().close(fd);
  }
}
