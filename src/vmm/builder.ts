/**
 * The boot flow, one function per step: open KVM → VM → guest memory →
 * kernel, initrd, cmdline → boot structures → vCPUs. The vCPU workers are
 * spawned first so their start-up overlaps everything else.
 *
 * @module
 */

import { writeZeroPage } from "../arch/x86_64/boot_params.ts";
import { type CpuTemplate, TEMPLATES, vcpuCpuid } from "../arch/x86_64/cpuid.ts";
import { e820Map } from "../arch/x86_64/e820.ts";
import { bootGdt, gdtBytes } from "../arch/x86_64/gdt.ts";
import { GDT_ADDR, IDT_ADDR } from "../arch/x86_64/layout.ts";
import { writeMptable } from "../arch/x86_64/mptable.ts";
import { writeAcpiTables } from "../arch/x86_64/acpi.ts";
import { bootMsrs } from "../arch/x86_64/msr.ts";
import { writeIdentityPageTables } from "../arch/x86_64/paging.ts";
import { bootRegs, bootSregs } from "../arch/x86_64/regs.ts";
import { writeStartInfo } from "../arch/x86_64/start_info.ts";
import { buildCmdline } from "../boot/cmdline.ts";
import { type Image, openImage } from "../boot/image.ts";
import { loadCmdline, type LoadedKernel, loadInitrd, loadKernel } from "../boot/loader.ts";
import { VoltError } from "../errors.ts";
import { isPvmHost, isTcgHost } from "./host.ts";
import { Kvm } from "./kvm.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import type { ResolvedConfig } from "./config.ts";
import { DeviceManager, type IoPlan } from "./device_manager.ts";
import type { UserDevice } from "./hosted_device.ts";
import type { BootTrace } from "./trace.ts";
import { Vcpu } from "./vcpu.ts";
import { Vm } from "./vm.ts";
import { libc } from "../../ffi/libc.ts";
import { SEEK_END } from "../../ffi/eventfd.ts";
import type { CpuidEntry } from "../arch/x86_64/cpuid.ts";
import { cpuidFromRows, type SnapshotDoc } from "./snapshot.ts";
import { restoreVcpu } from "./vcpu_state.ts";
import { restoreVmState } from "./vm_state.ts";

/** Everything a built VM holds. */
export interface BuiltVm {
  kvm: Kvm;
  vm: Vm;
  memory: GuestMemory;
  vcpus: Vcpu[];
  /** Each vCPU's CPUID table, as set (a snapshot keeps it). */
  cpuid: CpuidEntry[][];
  /** The kernel as loaded; none in a VM restored from a snapshot. */
  kernel?: LoadedKernel;
  cmdline: string;
  initrd?: { addr: number; size: number };
  template: CpuTemplate;
  /** The VM's devices and their host resources. */
  devices: DeviceManager;
  /** What the I/O loop serves; none without virtio devices. */
  io?: IoPlan;
}

/**
 * Resolves `auto` (PVM's template on PVM, nested-tcg's under QEMU's TCG,
 * else none) and checks the name.
 */
export function selectTemplate(
  name: string,
  pvm = isPvmHost(),
  tcg = !pvm && name === "auto" && isTcgHost(),
): CpuTemplate {
  if (name === "auto") return pvm ? TEMPLATES.pvm : tcg ? TEMPLATES["nested-tcg"] : TEMPLATES.none;
  const t = TEMPLATES[name];
  if (!t) {
    throw new VoltError(
      `Unknown CPU template: ${name} (one of auto, ${Object.keys(TEMPLATES).join(", ")})`,
      "usage",
    );
  }
  return t;
}

/** Opens the guest files up front so a missing one fails before KVM work. */
export function openImages(cfg: ResolvedConfig): { kernel: Image; initrd?: Image } {
  const kernel = openImage(cfg.kernel, "Kernel");
  try {
    return { kernel, initrd: cfg.initrd ? openImage(cfg.initrd, "Initrd") : undefined };
  } catch (e) {
    kernel.close();
    throw e;
  }
}

function writeBootStructures(
  b: Pick<BuiltVm, "memory" | "cmdline" | "initrd" | "devices"> & { kernel: LoadedKernel },
  cpus: number,
): number {
  const { memory: mem, kernel } = b;
  mem.write(GDT_ADDR, gdtBytes(bootGdt()));
  mem.bytes(IDT_ADDR, 8).fill(0);
  // Both: a kernel without ACPI (ours) reads the MP table, one with it the MADT.
  writeMptable(mem, cpus);
  const rsdpAddr = writeAcpiTables(mem, { cpus, devices: b.devices.acpiDevices() });
  const cmd = loadCmdline(mem, kernel, b.cmdline);
  const e820 = e820Map(mem);
  if (kernel.mode === "pvh") {
    return writeStartInfo(mem, {
      cmdlineAddr: cmd.addr,
      initrdAddr: b.initrd?.addr,
      initrdSize: b.initrd?.size,
      e820,
      rsdpAddr,
    });
  }
  return writeZeroPage(mem, {
    setupHeader: kernel.setupHeader,
    cmdlineAddr: cmd.addr,
    cmdlineSize: cmd.size,
    initrdAddr: b.initrd?.addr,
    initrdSize: b.initrd?.size,
    e820,
    rsdpAddr,
  });
}

function configureVcpu(
  kernel: LoadedKernel,
  cpu: Vcpu,
  bootInfo: number,
  cr3: number,
): void {
  cpu.setMsrs(bootMsrs());
  if (cpu.id === 0) {
    cpu.setRegs(bootRegs(kernel.mode, kernel.entry, bootInfo));
    cpu.setFpu();
    cpu.setSregs(bootSregs(kernel.mode, cr3));
  } else {
    cpu.setFpu();
  }
  cpu.setLapic();
}

/** Adds `cfg`'s devices in the one order both a boot and a restore use. */
function addDevices(devices: DeviceManager, cfg: ResolvedConfig, userDevices: UserDevice[]): void {
  devices.addLegacy();
  for (const disk of cfg.disks) devices.addDisk(disk);
  if (cfg.entropy) devices.addEntropy();
  for (const net of cfg.nets) devices.addNet(net);
  if (cfg.vsock) devices.addVsock(cfg.vsock);
  for (const d of userDevices) devices.addHosted(d);
}

/**
 * Runs the boot flow up to (not including) the first KVM_RUN.
 *
 * @example
 * ```ts ignore
 * import { resolveConfig } from "./config.ts";
 * import { buildVm } from "./builder.ts";
 * import { BootTrace } from "./trace.ts";
 * const built = buildVm(resolveConfig({ kernel: "vmlinux" }), new BootTrace());
 * ```
 */
export function buildVm(
  cfg: ResolvedConfig,
  trace: BootTrace,
  userDevices: UserDevice[] = [],
): BuiltVm {
  const template = selectTemplate(cfg.cpuTemplate);
  // Guest memory and images first: a bad file fails before any KVM work.
  const images = openImages(cfg);
  let memory: GuestMemory;
  try {
    memory = GuestMemory.allocate(cfg.memory);
  } catch (e) {
    images.kernel.close();
    images.initrd?.close();
    throw e;
  }
  trace.mark("memory allocated");
  const devices = new DeviceManager();
  // What exists so far, released if a later step fails.
  const made: Partial<BuiltVm> & { vcpus: Vcpu[] } = { memory, vcpus: [], devices };
  try {
    // Devices before the command line, which names every virtio window.
    addDevices(devices, cfg, userDevices);
    trace.mark("devices added");
    let loaded: Omit<BuiltVm, "kvm" | "vm" | "vcpus" | "io" | "cpuid"> & {
      kernel: LoadedKernel;
    };
    try {
      const kernel = loadKernel(memory, images.kernel, cfg.bootProtocol);
      const initrd = images.initrd ? loadInitrd(memory, kernel, images.initrd) : undefined;
      loaded = {
        memory,
        kernel,
        initrd,
        template,
        devices,
        cmdline: buildCmdline({
          cmdline: cfg.cmdline,
          append: cfg.append,
          extra: [...template.cmdline, ...devices.cmdline()],
        }),
      };
    } finally {
      images.kernel.close();
      images.initrd?.close();
    }
    const bootInfo = writeBootStructures(loaded, cfg.cpus);
    const cr3 = writeIdentityPageTables(memory);
    trace.mark("kernel loaded");
    const kvm = Kvm.open(cfg.kvmDevice, cfg.kvmFd);
    made.kvm = kvm;
    trace.mark("kvm opened");
    if (cfg.cpus > kvm.maxVcpus) {
      throw new VoltError(`This host's KVM allows at most ${kvm.maxVcpus} vCPUs`, "usage");
    }
    const supported = kvm.supportedCpuid();
    const vm = Vm.create(kvm);
    made.vm = vm;
    if (cfg.trackDirtyPages) memory.trackWrites();
    vm.mapMemory(memory, cfg.trackDirtyPages);
    trace.mark("vm created");
    const io = devices.connect(vm.fd);
    if (io) trace.mark("virtio connected");
    const b: BuiltVm = { ...loaded, kvm, vm, vcpus: made.vcpus, io, cpuid: [] };
    const mmapSize = kvm.vcpuMmapSize;
    for (let id = 0; id < cfg.cpus; id++) {
      const cpu = new Vcpu(vm.createVcpu(id), id, mmapSize);
      made.vcpus.push(cpu);
      const table = vcpuCpuid(supported, { cpu: id, cpus: cfg.cpus, template });
      cpu.setCpuid(table);
      b.cpuid.push(table);
    }
    trace.mark("cpuid configured");
    for (const cpu of b.vcpus) configureVcpu(loaded.kernel, cpu, bootInfo, cr3);
    trace.mark("vcpus configured");
    return b;
  } catch (e) {
    releaseVm(made);
    throw e;
  }
}

/**
 * Releases what {@linkcode buildVm} made, in reverse: the devices' files
 * and eventfds, every vCPU's `kvm_run` mapping and fd, the VM fd, the KVM
 * fd, guest RAM. Safe to call
 * twice; nothing may use the VM afterwards, on any thread.
 */
export function releaseVm(b: Partial<BuiltVm>): void {
  b.devices?.release();
  for (const cpu of b.vcpus ?? []) cpu.close();
  b.vm?.close();
  b.kvm?.close();
  b.memory?.release();
}

/**
 * The restore flow, up to the first KVM_RUN: the snapshot's guest RAM
 * mapped privately from `memFd`, the same devices at the same addresses
 * with their registers put back, then KVM's VM and vCPU state. A host whose
 * KVM would show the guest another CPU (CPUID, XSAVE layout, TSC rate it
 * cannot scale to) is refused before any state is set. `cfg` is the
 * snapshot's machine (see `Machine.restore`).
 *
 * @example
 * ```ts ignore
 * const built = restoreVm(cfg, readSnapshot("vm.snap"), memFd, new BootTrace());
 * ```
 */
export function restoreVm(
  cfg: ResolvedConfig,
  snap: SnapshotDoc,
  memFd: number,
  trace: BootTrace,
): BuiltVm {
  const template = selectTemplate(snap.host.template);
  const size = Number(libc().lseek(memFd, 0n, SEEK_END));
  if (size !== snap.config.memory) {
    throw new VoltError(
      `The memory file has ${size} bytes; the snapshot's guest has ${snap.config.memory}`,
      "input",
    );
  }
  const memory = GuestMemory.mapFile(memFd, size);
  trace.mark("memory mapped");
  const devices = new DeviceManager();
  const made: Partial<BuiltVm> & { vcpus: Vcpu[] } = { memory, vcpus: [], devices };
  try {
    addDevices(devices, cfg, []);
    restoreDevices(devices, snap);
    trace.mark("devices restored");
    const kvm = Kvm.open(cfg.kvmDevice, cfg.kvmFd);
    made.kvm = kvm;
    if (cfg.cpus > kvm.maxVcpus) {
      throw new VoltError(`This host's KVM allows at most ${kvm.maxVcpus} vCPUs`, "usage");
    }
    if (kvm.xsaveSize !== snap.host.xsaveSize) {
      throw new VoltError(
        `This host's XSAVE state is ${kvm.xsaveSize} bytes, the snapshot's ${snap.host.xsaveSize}: another CPU`,
        "kvm",
      );
    }
    const supported = kvm.supportedCpuid();
    const cpuids = snap.host.cpuid.map(cpuidFromRows);
    cpuids.forEach((saved, id) => {
      const here = vcpuCpuid(supported, { cpu: id, cpus: cfg.cpus, template });
      const why = cpuidDifference(saved, here);
      if (why) {
        throw new VoltError(
          `This host's CPU or KVM differs from the snapshot's (vCPU ${id}: ${why})`,
          "kvm",
        );
      }
    });
    const vm = Vm.create(kvm);
    made.vm = vm;
    if (cfg.trackDirtyPages) memory.trackWrites();
    vm.mapMemory(memory, cfg.trackDirtyPages);
    trace.mark("vm created");
    const io = devices.connect(vm.fd);
    if (io) io.restored = true;
    const mmapSize = kvm.vcpuMmapSize;
    for (let id = 0; id < cfg.cpus; id++) {
      const cpu = new Vcpu(vm.createVcpu(id), id, mmapSize);
      made.vcpus.push(cpu);
      cpu.setCpuid(cpuids[id]);
      const khz = snap.host.tscKhz;
      if (khz > 0 && cpu.tscKhz() !== khz && !cpu.setTscKhz(khz)) {
        throw new VoltError(
          `This host's KVM cannot run the snapshot's TSC at ${khz} kHz (it runs at ${cpu.tscKhz()})`,
          "kvm",
        );
      }
    }
    restoreVmState(vm.fd, snap.vm);
    made.vcpus.forEach((cpu, id) => restoreVcpu(cpu.fd, snap.vcpus[id]));
    trace.mark("vcpus restored");
    return {
      kvm,
      vm,
      memory,
      vcpus: made.vcpus,
      cmdline: snap.config.cmdline,
      template,
      devices,
      io,
      cpuid: cpuids,
    };
  } catch (e) {
    releaseVm(made);
    throw e;
  }
}

/** Puts the snapshot's device registers into `devices`, which must be the same devices. */
function restoreDevices(devices: DeviceManager, snap: SnapshotDoc): void {
  const specs = devices.specs;
  const saved = snap.devices;
  const same = specs.length === saved.length &&
    specs.every((s, i) =>
      s.kind === saved[i].kind && s.base === saved[i].base && (s.irq ?? null) === saved[i].irq &&
      (s.state?.byteLength ?? -1) === (saved[i].state?.length ?? -1)
    );
  if (!same) throw new VoltError("The snapshot's devices are not this machine's", "input");
  specs.forEach((s, i) => {
    if (!s.state) return;
    const regs = new Int32Array(s.state);
    regs.set(new Int32Array(saved[i].state!.slice().buffer));
    // Slot 0 is a lock: whoever held it at the save is not here now.
    regs[0] = 0;
  });
}

/** The first entry where two CPUID tables differ, or undefined when they are the same. */
function cpuidDifference(saved: CpuidEntry[], here: CpuidEntry[]): string | undefined {
  const key = (e: CpuidEntry) => `${e.function}.${e.index}`;
  const byKey = new Map(here.map((e) => [key(e), e]));
  for (const e of saved) {
    const h = byKey.get(key(e));
    const name = `leaf 0x${e.function.toString(16)}.${e.index}`;
    if (!h) return `${name} is not offered here`;
    for (const r of ["eax", "ebx", "ecx", "edx"] as const) {
      if (h[r] !== e[r]) {
        return `${name} ${r} is 0x${(h[r] >>> 0).toString(16)} here, 0x${
          (e[r] >>> 0).toString(16)
        } in the snapshot`;
      }
    }
  }
  if (here.length !== saved.length) {
    return `${here.length} CPUID entries here, ${saved.length} saved`;
  }
  return undefined;
}
