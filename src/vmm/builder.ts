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

/** Everything a built VM holds. */
export interface BuiltVm {
  kvm: Kvm;
  vm: Vm;
  memory: GuestMemory;
  vcpus: Vcpu[];
  kernel: LoadedKernel;
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
  b: Pick<BuiltVm, "memory" | "kernel" | "cmdline" | "initrd">,
  cpus: number,
): number {
  const { memory: mem, kernel } = b;
  mem.write(GDT_ADDR, gdtBytes(bootGdt()));
  mem.bytes(IDT_ADDR, 8).fill(0);
  writeMptable(mem, cpus);
  const cmd = loadCmdline(mem, kernel, b.cmdline);
  const e820 = e820Map(mem);
  if (kernel.mode === "pvh") {
    return writeStartInfo(mem, {
      cmdlineAddr: cmd.addr,
      initrdAddr: b.initrd?.addr,
      initrdSize: b.initrd?.size,
      e820,
    });
  }
  return writeZeroPage(mem, {
    setupHeader: kernel.setupHeader,
    cmdlineAddr: cmd.addr,
    cmdlineSize: cmd.size,
    initrdAddr: b.initrd?.addr,
    initrdSize: b.initrd?.size,
    e820,
  });
}

function configureVcpu(b: BuiltVm, cpu: Vcpu, bootInfo: number, cr3: number): void {
  cpu.setMsrs(bootMsrs());
  if (cpu.id === 0) {
    cpu.setRegs(bootRegs(b.kernel.mode, b.kernel.entry, bootInfo));
    cpu.setFpu();
    cpu.setSregs(bootSregs(b.kernel.mode, cr3));
  } else {
    cpu.setFpu();
  }
  cpu.setLapic();
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
    devices.addLegacy();
    for (const disk of cfg.disks) devices.addDisk(disk);
    if (cfg.entropy) devices.addEntropy();
    for (const net of cfg.nets) devices.addNet(net);
    if (cfg.vsock) devices.addVsock(cfg.vsock);
    for (const d of userDevices) devices.addHosted(d);
    trace.mark("devices added");
    let loaded: Omit<BuiltVm, "kvm" | "vm" | "vcpus" | "io">;
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
    vm.mapMemory(memory);
    trace.mark("vm created");
    const io = devices.connect(vm.fd);
    if (io) trace.mark("virtio connected");
    const b: BuiltVm = { ...loaded, kvm, vm, vcpus: made.vcpus, io };
    const mmapSize = kvm.vcpuMmapSize;
    for (let id = 0; id < cfg.cpus; id++) {
      const cpu = new Vcpu(vm.createVcpu(id), id, mmapSize);
      made.vcpus.push(cpu);
      cpu.setCpuid(vcpuCpuid(supported, { cpu: id, cpus: cfg.cpus, template }));
    }
    trace.mark("cpuid configured");
    for (const cpu of b.vcpus) configureVcpu(b, cpu, bootInfo, cr3);
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
