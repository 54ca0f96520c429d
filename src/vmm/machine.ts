/**
 * A running microVM: vCPU workers, host input to the UART, stop and kick.
 *
 * @module
 */

import { RUN } from "../../ffi/kvm.ts";
import { libc, O_RDONLY, openPath } from "../../ffi/libc.ts";
import { SERIAL_IRQ } from "../arch/x86_64/layout.ts";
import { SharedSerial } from "../devices/serial.ts";
import { CTRL_ALT_DEL, I8042 } from "../devices/i8042.ts";
import { DeviceLock } from "../devices/lock.ts";
import { ConsoleRingReader, newConsoleRing } from "../devices/console_ring.ts";
import { autoConsoleMode, type ConsoleMode, terminalReset } from "./console_filter.ts";
import { VoltError } from "../errors.ts";
import { logger } from "../log.ts";
import { buildVm, type BuiltVm, releaseVm, restoreVm } from "./builder.ts";
import { resolveConfig, type ResolvedConfig, type VmConfig } from "./config.ts";
import {
  captureState,
  readSnapshot,
  type SnapshotDoc,
  unsnapshottable,
  writeDiffMemoryFile,
  writeMemoryFile,
  writeSnapshot,
} from "./snapshot.ts";
import { type VmExit, vmExit } from "./exit_reason.ts";
import { BootTrace, FIRST_RUN_PHASE, GUEST_READY_PHASE, type Mark } from "./trace.ts";
import { CTL, CTL_BYTES, VCPU_STAT, VCPU_STAT_SLOTS } from "./vcpu_loop.ts";
import type { QueueRunner, VirtioBackend } from "../devices/virtio/device.ts";
import type { VcpuEvent, VcpuFilter, VcpuStart } from "./worker_protocol.ts";
import { runIoLoop } from "./io_loop.ts";
import { irqLine } from "./vcpu_devices.ts";
import type { HostedSpec } from "./device_manager.ts";
import { serveMailbox, type UserDevice } from "./hosted_device.ts";

/**
 * The kick signal. Not SIGUSR1: Deno opens its inspector on SIGUSR1 (as
 * Node does), which would put a debugger port on every stop.
 */
const KICK_SIGNAL = 12; // SIGUSR2
/** Ctrl-A, then `x`: leave the VM from a raw terminal. */
const ESCAPE = 0x01;

/**
 * Host input the monitor holds for the guest beyond the UART's receive
 * FIFO. Past it {@linkcode Machine.sendInput} refuses bytes and stdin is
 * not read, so a guest that never reads its console (or reads it slowly)
 * makes the host's writer wait instead of growing the monitor. A few lines
 * of typing or a paste fit.
 */
export const INPUT_QUEUE_BYTES = 4096;
/** Bytes stdin is read in at most. */
const STDIN_CHUNK = 1024;
/**
 * How long a terminal's input waits on a full queue the guest takes
 * nothing from before it is read anyway (see forwardStdin).
 */
const TTY_STALL_MS = 500;

interface VcpuThread {
  worker: Worker;
  tid?: number;
  run?: Uint8Array;
  done: boolean;
}

const noop = () => {};

let kickHandler = false;

/**
 * A kick must interrupt KVM_RUN, not kill the process. The handler stays
 * for the life of the process: Deno restores the default action (which
 * terminates) when the last listener goes, and a kick sent while a vCPU
 * was on its way out can arrive after its VM is cleaned up.
 */
function ensureKickHandler(): void {
  if (kickHandler) return;
  Deno.addSignalListener("SIGUSR2", noop);
  kickHandler = true;
}

let workerUrl: URL = new URL("./vcpu_worker.ts", import.meta.url);

/**
 * Points vCPU workers at another module (a single-file bundle serves as its
 * own worker).
 */
export function setVcpuWorkerUrl(url: URL): void {
  workerUrl = url;
}

/**
 * Where a VM is in its life. It starts `not-started`; {@linkcode Machine.start}
 * makes it `running`, {@linkcode Machine.pause} and {@linkcode Machine.resume}
 * move it between `running` and `paused`, and it ends `halted`, from any
 * state, whether the guest or the host stopped it.
 */
export type VmState = "not-started" | "running" | "paused" | "halted";

/** What {@linkcode Machine.metrics} reports. */
export interface VmMetrics {
  /** Where the VM is in its life. */
  state: VmState;
  /** vCPU exits by kind, over every vCPU (`exitIdle`: HLT, interrupt windows, kicks). */
  vcpu: {
    exitIoIn: number;
    exitIoOut: number;
    exitMmioRead: number;
    exitMmioWrite: number;
    exitIdle: number;
  };
  /** Bytes the guest's UART sent to the console. */
  serialOutBytes: number;
  /**
   * Each virtio device: its kind, its id (a disk's, a TAP's name), its
   * counters, and its transport's (notifications, interrupts, each queue's
   * indices on both sides).
   */
  devices: Array<
    { kind: string; id?: string; stats: Record<string, number>; transport?: Record<string, number> }
  >;
}

/** Where {@linkcode Machine.snapshot} writes. */
export interface SnapshotTarget {
  /** The state file. */
  snapshotPath: string;
  /** The memory file. */
  memFilePath: string;
  /**
   * `full` (default): all of guest RAM. `diff`: only the pages written
   * since the VM's last snapshot (or its restore), at their offsets in a
   * sparse file; `volt snapshot rebase` (or {@linkcode rebaseMemoryFile})
   * writes it onto the last full memory file, which then restores with
   * this state file. Needs `trackDirtyPages`.
   */
  type?: "full" | "diff";
}

/** Where {@linkcode Machine.restore} restores from. */
export interface RestoreSource {
  /** The state file. */
  snapshotPath: string;
  /** The memory file (or `memFd`, an open descriptor for it, which the restore closes). */
  memFilePath?: string;
  /** @internal An open memory file (the jailed monitor's way in). */
  memFd?: number;
  /** @internal The state file, already read and checked. */
  snapshot?: SnapshotDoc;
}

/** This process's part of a restored VM's configuration. */
export type RestoreConfig =
  & Pick<VmConfig, "console" | "consoleMode" | "stdin" | "kvmDevice" | "kvmFd">
  & {
    /** The snapshot's disks, by index, opened from another path or descriptor. */
    disks?: Array<{ path?: string; fd?: number } | undefined>;
    /** Its network interfaces, by index, on another TAP (two clones need two). */
    nets?: Array<{ tap?: string; fd?: number } | undefined>;
    /** Its vsock device on another socket (two clones need two). */
    vsock?: { uds?: string; listenFd?: number };
    /** Records written pages from the start: the VM's next snapshot may be a diff of this one. */
    trackDirtyPages?: boolean;
  };

/** Opens a memory file for {@linkcode Machine.restore}, one line on failure. */
export function openMemoryFile(path: string | undefined): number {
  if (path === undefined) throw new VoltError("A restore needs the memory file", "usage");
  try {
    return openPath(path, O_RDONLY);
  } catch (e) {
    throw new VoltError(`Cannot open memory file ${path}: ${(e as Error).message}`, "noinput");
  }
}

/** Options of {@linkcode Machine.create}. */
export interface CreateOptions {
  /** Called with each boot phase as it happens. */
  onMark?: (m: Mark) => void;
  /** Epoch ms that trace times count from (default: this runtime's start). */
  traceOrigin?: number;
  /** Name of the first phase, this runtime's start (default "runtime up"). */
  startPhase?: string;
  /** Devices written in TypeScript, served on this thread (see {@linkcode UserDevice}). */
  devices?: UserDevice[];
}

/**
 * One microVM.
 *
 * @example
 * ```ts ignore
 * import { Machine } from "./machine.ts";
 * const vm = await Machine.create({ kernel: "vmlinux", console: "message" });
 * vm.onConsole = (bytes) => Deno.stdout.writeSync(bytes);
 * vm.start();
 * const exit = await vm.wait();
 * ```
 */
export class Machine {
  /** Boot phases so far. */
  readonly trace: BootTrace;
  /**
   * The built VM (memory, vCPUs, kernel facts): the monitor's internals,
   * for tests and tools; they may change between versions.
   *
   * @internal
   */
  readonly built: BuiltVm;
  /** Receives console bytes when `console` is `message`. */
  onConsole: (bytes: Uint8Array) => void = noop;
  /**
   * Called once when the guest reports ready on the boot-timer port, with
   * the time since the trace's origin.
   */
  onReady: (msSinceStart: number) => void = noop;

  private readonly threads: VcpuThread[];
  /** False while the I/O loop (virtio devices) may still touch guest RAM. */
  private ioDone = true;
  private readonly ctl = new SharedArrayBuffer(CTL_BYTES);
  /** Every vCPU's counters: its thread writes its own slots, {@linkcode metrics} adds them up. */
  private readonly vcpuStats: SharedArrayBuffer;
  /** The virtio devices' models, once the I/O loop has made them. */
  private backends: readonly VirtioBackend[] = [];
  /** Their transports, from the same moment. */
  private runners: readonly QueueRunner[] = [];
  private readonly consoleRing = newConsoleRing();
  private readonly consoleReader = new ConsoleRingReader(this.consoleRing);
  private consolePump?: Promise<void>;

  /**
   * How console bytes reach stdout (`console: "stdout"`), `auto` resolved
   * at start.
   */
  consoleMode?: ConsoleMode;
  private readonly serial: SharedSerial;
  private readonly cfg: ResolvedConfig;
  private exit?: VmExit;
  private readonly exited: Promise<VmExit>;
  private resolveExit!: (e: VmExit) => void;
  /** The VM's one record of where it is in its life. */
  private life: VmState = "not-started";
  /** Whether a snapshot was taken or restored from, so that a diff has a base. */
  private hasBase = false;
  private ran = false;
  private readonly cleanups: Array<() => void> = [];
  private pendingInput: Uint8Array[] = [];
  private pendingBytes = 0;
  /** When the guest last took queued input, or the queue last filled from empty. */
  private inputProgressAt = 0;
  private inputSpace?: PromiseWithResolvers<void>;
  private inputTimer?: ReturnType<typeof setTimeout>;
  private readyMarked = false;
  /** The script's devices, in the order their specs were added. */
  private userDevices: UserDevice[] = [];
  private released = false;

  private constructor(
    cfg: ResolvedConfig,
    trace: BootTrace,
    threads: VcpuThread[],
    built: BuiltVm,
  ) {
    this.cfg = cfg;
    this.trace = trace;
    this.threads = threads;
    this.built = built;
    this.exited = new Promise((r) => (this.resolveExit = r));
    this.vcpuStats = new SharedArrayBuffer(8 * VCPU_STAT_SLOTS * threads.length);
    // Host input is injected from this thread: the IRQ line ioctl is VM-wide.
    this.serial = new SharedSerial(
      built.devices.serialState,
      { writeSync: (d) => d.length },
      irqLine(built.vm, SERIAL_IRQ),
    );
  }

  /**
   * Builds the VM: workers spawn first and load while the main thread opens
   * KVM and loads the kernel.
   */
  static create(config: VmConfig, opts: CreateOptions = {}): Promise<Machine> {
    return Machine.launch(config, opts, (cfg, trace) => buildVm(cfg, trace, opts.devices));
  }

  /**
   * Restores a VM from a snapshot ({@linkcode Machine.snapshot}) in this
   * process: its RAM mapped privately from the memory file (pages load as
   * the guest touches them; clones of one snapshot share them), its
   * devices, vCPUs and interrupt controllers as they were. `config` gives
   * what is this process's own (console, stdin, KVM), and may point the
   * snapshot's disks elsewhere by index (`disks`). Start it with
   * {@linkcode Machine.start}; the guest goes on where it was paused.
   *
   * @example
   * ```ts ignore
   * const vm = await Machine.restore({ snapshotPath: "vm.snap", memFilePath: "vm.mem" });
   * vm.start();
   * ```
   */
  static async restore(
    from: RestoreSource,
    config: RestoreConfig = {},
    opts: Omit<CreateOptions, "devices"> = {},
  ): Promise<Machine> {
    const snap = from.snapshot ?? readSnapshot(from.snapshotPath);
    const memFd = from.memFd ?? openMemoryFile(from.memFilePath);
    const c = snap.config;
    const disks = c.disks.map((d, i) => {
      const o = config.disks?.[i];
      return {
        path: o?.path ?? d.path,
        fd: o?.fd,
        readOnly: d.readOnly,
        id: d.id ?? undefined,
        root: d.root,
      };
    });
    const nets = c.nets.map((n, i) => {
      const o = config.nets?.[i];
      return { tap: o?.tap ?? n.tap, fd: o?.fd, mac: n.mac, id: n.id ?? undefined };
    });
    const vsock = c.vsock
      ? {
        cid: c.vsock.cid,
        uds: config.vsock?.uds ?? c.vsock.uds,
        listenFd: config.vsock?.listenFd,
      }
      : undefined;
    try {
      const m = await Machine.launch(
        {
          console: config.console,
          consoleMode: config.consoleMode,
          stdin: config.stdin,
          kvmDevice: config.kvmDevice,
          kvmFd: config.kvmFd,
          kernel: from.snapshotPath,
          memory: c.memory,
          cpus: c.cpus,
          cpuTemplate: snap.host.template,
          disks,
          entropy: c.entropy,
          nets,
          vsock,
          trackDirtyPages: config.trackDirtyPages,
        },
        { startPhase: "runtime up", ...opts },
        (cfg, trace) => restoreVm(cfg, snap, memFd, trace),
      );
      // The memory file it came from is the base a diff of it goes on.
      m.hasBase = true;
      return m;
    } finally {
      // The mapping holds the file; the descriptor is no longer needed.
      libc().close(memFd);
    }
  }

  /** Spawns the vCPU workers, builds the VM with `build` meanwhile, and waits for both. */
  private static async launch(
    config: VmConfig,
    opts: CreateOptions,
    build: (cfg: ResolvedConfig, trace: BootTrace) => BuiltVm,
  ): Promise<Machine> {
    const trace = new BootTrace(opts.onMark, opts.traceOrigin);
    trace.mark(opts.startPhase ?? "runtime up", 0);
    const cfg = resolveConfig(config);
    const threads: VcpuThread[] = [];
    const loaded: Promise<void>[] = [];
    const spawn = (): VcpuThread => {
      const worker = new Worker(workerUrl, { type: "module" });
      loaded.push(
        new Promise((resolve) => {
          worker.onmessage = (e: MessageEvent<VcpuEvent>) => {
            if (e.data.type === "loaded") resolve();
          };
        }),
      );
      return { worker, done: false };
    };
    for (let i = 0; i < cfg.cpus; i++) threads.push(spawn());
    let built: BuiltVm;
    try {
      built = build(cfg, trace);
    } catch (e) {
      for (const t of threads) t.worker.terminate();
      throw e;
    }
    const m = new Machine(cfg, trace, threads, built);
    m.userDevices = opts.devices ?? [];
    trace.mark("devices ready");
    ensureKickHandler();
    await Promise.all(loaded);
    trace.mark("vcpu workers loaded");
    return m;
  }

  /**
   * Saves a paused VM: guest RAM to `memFilePath` (a sparse file) and
   * everything else (vCPUs, interrupt controllers, PIT, clock, devices) to
   * `snapshotPath`, a versioned, checksummed state file. Each file is
   * written whole or not at all; with `type: "diff"` the memory file
   * holds only the pages written since the last snapshot (see
   * {@linkcode SnapshotTarget}). The VM stays paused; resume it or stop
   * it. A VM with a device the script wrote cannot be saved (that device
   * holds state Volt cannot see). A restored vsock device tells the guest
   * its transport was reset: connections close, listeners stay, as with
   * Firecracker.
   *
   * @example
   * ```ts ignore
   * await vm.pause();
   * vm.snapshot({ snapshotPath: "vm.snap", memFilePath: "vm.mem" });
   * vm.resume();
   * ```
   */
  snapshot(to: SnapshotTarget): void {
    this.expect("snapshot", ["paused"]);
    const why = unsnapshottable(this.built.devices.specs);
    if (why) throw new VoltError(`Cannot snapshot a VM with ${why} yet`, "usage");
    const mem = this.built.memory;
    const diff = to.type === "diff";
    if (diff && !mem.tracked) {
      throw new VoltError(
        "Cannot take a diff snapshot of a VM that does not track dirty pages (trackDirtyPages, machine-config's track_dirty_pages)",
        "usage",
      );
    }
    if (diff && !this.hasBase) {
      throw new VoltError(
        "Cannot take a diff snapshot before a full one: a diff holds only the pages written since the last snapshot",
        "usage",
      );
    }
    const doc = captureState(this.built, this.cfg);
    // KVM's log goes into the record first: if a write fails, the next snapshot still has it.
    if (mem.tracked) this.built.vm.mergeDirtyLog(mem);
    if (diff) writeDiffMemoryFile(mem, to.memFilePath);
    else writeMemoryFile(mem, to.memFilePath);
    writeSnapshot(to.snapshotPath, doc);
    if (mem.tracked) {
      mem.clearDirty();
      // Chains a device holds may still be written after this snapshot.
      if (!this.released) { for (const r of this.runners) r.markPosted(); }
    }
    this.hasBase = true;
  }

  /**
   * Starts every vCPU; with `vcpuFilter`, each vCPU thread stacks that
   * seccomp filter on itself right before its first KVM_RUN.
   */
  start(opts: { vcpuFilter?: VcpuFilter; paused?: boolean } = {}): void {
    this.expect("start", ["not-started"]);
    this.life = "running";
    // Started paused (a restore not yet resumed): each vCPU parks before its first KVM_RUN.
    if (opts.paused) {
      this.life = "paused";
      Atomics.store(new Int32Array(this.ctl), CTL.pause, 1);
    }
    // Before the messages: a worker may reach KVM_RUN before this thread
    // gets back here, and phases stay in time order.
    this.trace.mark("vcpus started");
    const b = this.built;
    if (this.cfg.console === "stdout") this.consoleMode = this.resolveConsoleMode();
    this.threads.forEach((t, id) => {
      const cpu = b.vcpus[id];
      t.run = new Uint8Array(
        Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(cpu.runAddr)!, cpu.runSize),
      );
      t.worker.onmessage = (e: MessageEvent<VcpuEvent>) => this.onEvent(t, e.data);
      t.worker.onerror = (e) => {
        e.preventDefault();
        this.finish(vmExit("monitor-error", `vCPU ${id} worker failed: ${e.message}`, id));
      };
      const msg: VcpuStart = {
        type: "start",
        id,
        fd: cpu.fd,
        vmFd: b.vm.fd,
        runAddr: cpu.runAddr,
        runSize: cpu.runSize,
        memAddr: b.memory.hostAddr,
        memSize: b.memory.size,
        devices: b.devices.specs,
        ctl: this.ctl,
        stats: this.vcpuStats,
        console: this.cfg.console,
        consoleRing: this.consoleRing,
        consoleMode: this.consoleMode ?? "raw",
        pvm: b.template.name === "pvm",
        vcpuFilter: opts.vcpuFilter,
      };
      t.worker.postMessage(msg);
    });
    if (b.io) {
      this.ioDone = false;
      runIoLoop(b.io, b.memory, (backends, runners) => {
        this.backends = backends;
        this.runners = runners;
      }).catch((e) => vmExit("monitor-error", `I/O loop: ${(e as Error).message}`)).then((exit) => {
        this.ioDone = true;
        if (exit) this.finish(exit);
        this.cleanup();
      });
    }
    this.serveUserDevices();
    if (this.cfg.console === "message") {
      this.consolePump = this.consoleReader.pump((b) => this.onConsole(b));
    }
    if (this.cfg.stdin) this.forwardStdin();
  }

  /** Attaches each script device to its interrupt and serves its mailbox on this thread. */
  private serveUserDevices(): void {
    const specs = this.built.devices.specs.filter((s): s is HostedSpec => s.kind === "hosted");
    specs.forEach((spec, i) => {
      const d = this.userDevices[i].device;
      const irq = spec.irq;
      const vm = this.built.vm;
      d.attach?.(
        irq === undefined ? undefined : {
          trigger: () => {
            if (this.released) return;
            vm.setIrqLine(irq, true);
            vm.setIrqLine(irq, false);
          },
        },
      );
      serveMailbox(spec.state, d, () => this.exit !== undefined, (e) =>
        this.finish(vmExit(
          "monitor-error",
          `Device at 0x${spec.base.toString(16)} threw: ${(e as Error)?.message ?? e}`,
        )));
    });
  }

  /**
   * Resolves `auto` for a stdout console, and resets the terminal once the
   * vCPU threads (which write stdout themselves) are done.
   */
  private resolveConsoleMode(): ConsoleMode {
    const tty = Deno.stdout.isTerminal();
    const mode = this.cfg.consoleMode === "auto"
      ? autoConsoleMode(tty, this.cfg.stdin && Deno.stdin.isTerminal())
      : this.cfg.consoleMode;
    if (tty) {
      const ctl = new Int32Array(this.ctl);
      this.cleanups.push(() => {
        Deno.stdout.writeSync(terminalReset(Atomics.load(ctl, CTL.privateModes) !== 0));
      });
    }
    return mode;
  }

  /** Console control sequences `safe` mode kept from the terminal so far. */
  get consoleDropped(): number {
    return Atomics.load(new Int32Array(this.ctl), CTL.consoleDropped);
  }

  /** Handles one message from a vCPU worker. */
  private onEvent(t: VcpuThread, e: VcpuEvent): void {
    switch (e.type) {
      case "running":
        t.tid = e.tid;
        if (!this.ran) {
          this.ran = true;
          this.trace.mark(FIRST_RUN_PHASE, e.at - performance.timeOrigin);
        }
        // A stop or pause may have been asked before this thread could be kicked.
        if (this.life === "halted" || this.life === "paused") this.kick(t);
        break;
      case "ready": {
        // The workers latch the port; this keeps the mark single whatever arrives.
        if (this.readyMarked) break;
        this.readyMarked = true;
        const m = this.trace.mark(GUEST_READY_PHASE, e.at - performance.timeOrigin);
        this.onReady(m.ms);
        break;
      }
      case "exit":
        t.done = true;
        t.worker.terminate();
        this.finish(e.exit);
        if (this.threads.every((x) => x.done)) this.cleanup();
        break;
    }
  }

  /** Makes a vCPU leave KVM_RUN: immediate_exit, then a signal to its thread. */
  private kick(t: VcpuThread): void {
    if (t.done || !t.run || t.tid === undefined) return;
    t.run[RUN.immediate_exit] = 1;
    libc().tgkill(libc().getpid(), t.tid, KICK_SIGNAL);
  }

  /** Records the first exit and stops every other vCPU. */
  private finish(exit: VmExit): void {
    if (this.exit) return;
    this.exit = exit;
    const started = this.life !== "not-started";
    this.life = "halted";
    const ctl = new Int32Array(this.ctl);
    Atomics.store(ctl, CTL.stop, 1);
    // Parked vCPUs wake, see the stop and leave.
    Atomics.notify(ctl, CTL.pause);
    for (const t of this.threads) this.kick(t);
    this.built.devices.stopIo();
    logger("vmm").debug("VM stopped: {message}", { message: exit.message });
    this.resolveExit(exit);
    // Input is over: release whoever waits to send more.
    this.pendingInput = [];
    this.pendingBytes = 0;
    this.wakeInputWaiter();
    if (!started) this.cleanup();
  }

  /**
   * Counters since the VM was made: vCPU exits by kind and the console's
   * bytes (summed over vCPUs), and each virtio device's requests and bytes.
   *
   * @example
   * ```ts ignore
   * const m = vm.metrics();
   * console.log(m.vcpu.exitIoOut, m.devices.find((d) => d.kind === "block")?.stats);
   * ```
   */
  metrics(): VmMetrics {
    const all = new Float64Array(this.vcpuStats);
    const sum = (slot: number) => {
      let n = 0;
      for (let i = 0; i < this.threads.length; i++) n += all[i * VCPU_STAT_SLOTS + slot];
      return n;
    };
    const specs = this.built.io?.devices ?? [];
    return {
      state: this.life,
      vcpu: {
        exitIoIn: sum(VCPU_STAT.ioIn),
        exitIoOut: sum(VCPU_STAT.ioOut),
        exitMmioRead: sum(VCPU_STAT.mmioRead),
        exitMmioWrite: sum(VCPU_STAT.mmioWrite),
        exitIdle: sum(VCPU_STAT.idle),
      },
      serialOutBytes: sum(VCPU_STAT.serialOut),
      devices: specs.map((spec, i) => {
        const b = spec.backend;
        const id = b.type === "block" ? b.id : b.type === "net" ? b.tap : undefined;
        return {
          kind: b.type,
          ...(id === undefined ? {} : { id }),
          stats: { ...(this.backends[i]?.stats ?? {}) },
          // The queues' indices live in guest RAM, gone once released.
          transport: this.released ? {} : this.runners[i]?.report() ?? {},
        };
      }),
    };
  }

  /**
   * Presses Ctrl-Alt-Del on the guest's keyboard (the i8042), as
   * Firecracker's `SendCtrlAltDel` does: a Linux guest with the keyboard
   * driver runs its Ctrl-Alt-Del action (volt-init powers off cleanly).
   * Throws unless the VM is running or paused.
   */
  sendCtrlAltDel(): void {
    this.expect("send Ctrl-Alt-Del to", ["running", "paused"]);
    const spec = this.built.devices.specs.find((s) => s.kind === "i8042");
    if (!spec?.state) throw new VoltError("This VM has no keyboard controller", "usage");
    const kbc = new I8042(() => {}, spec.state, irqLine(this.built.vm, spec.irq!));
    // The vCPU threads reach the same controller under its lock.
    new DeviceLock(new Int32Array(spec.state)).hold(() => kbc.pressKeys(CTRL_ALT_DEL));
  }

  /** Where the VM is in its life: not started, running, paused or halted. */
  get state(): VmState {
    return this.life;
  }

  /** Throws a usage error for `action` unless the VM is in one of `from`. */
  private expect(action: string, from: VmState[]): void {
    if (from.includes(this.life)) return;
    const now = this.life === "not-started" ? "not started" : this.life;
    throw new VoltError(`Cannot ${action} a VM that is ${now}`, "usage");
  }

  /**
   * Pauses a running VM: every vCPU leaves KVM_RUN and parks, its state
   * kept, and this resolves once all of them are still. Devices finish the
   * requests they hold; the guest's clock goes on.
   *
   * @example
   * ```ts ignore
   * await vm.pause();
   * vm.resume();
   * ```
   */
  async pause(): Promise<void> {
    this.expect("pause", ["running"]);
    this.life = "paused";
    const ctl = new Int32Array(this.ctl);
    Atomics.store(ctl, CTL.pause, 1);
    for (const t of this.threads) this.kick(t);
    for (;;) {
      const parked = Atomics.load(ctl, CTL.parked);
      let live = 0;
      for (const t of this.threads) if (!t.done) live++;
      if (parked >= live || this.life !== "paused") return;
      const w = Atomics.waitAsync(ctl, CTL.parked, parked, 5);
      if (w.async) await w.value;
    }
  }

  /** Resumes a paused VM: each vCPU goes on where it stopped. */
  resume(): void {
    this.expect("resume", ["paused"]);
    this.life = "running";
    const ctl = new Int32Array(this.ctl);
    Atomics.store(ctl, CTL.pause, 0);
    Atomics.notify(ctl, CTL.pause);
  }

  /** Stops the VM from the host side. */
  stop(exit: VmExit = vmExit("host-stop", "Stopped by the host")): void {
    if (this.life === "not-started") {
      for (const t of this.threads) {
        t.worker.terminate();
        t.done = true;
      }
    }
    this.finish(exit);
  }

  /**
   * Starts the VM and resolves with how it ended, once every vCPU has left
   * KVM_RUN and host resources are released. After `timeoutMs` the host
   * stops it.
   */
  async run(timeoutMs?: number): Promise<VmExit> {
    this.start();
    const timer = timeoutMs === undefined ? undefined : setTimeout(
      () => this.stop(vmExit("host-stop", `Stopped after ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      const exit = await this.wait();
      await this.settled();
      return exit;
    } finally {
      clearTimeout(timer);
      this.cleanup();
    }
  }

  /** Resolves when the VM has stopped. */
  wait(): Promise<VmExit> {
    return this.exited;
  }

  /** Waits until every vCPU thread has left KVM_RUN and the console is drained. */
  async settled(timeoutMs = 2000): Promise<boolean> {
    const until = performance.now() + timeoutMs;
    while (!this.threads.every((t) => t.done) || !this.ioDone) {
      if (performance.now() > until) return false;
      for (const t of this.threads) this.kick(t);
      await new Promise((r) => setTimeout(r, 5));
    }
    this.consoleReader.stop();
    await this.consolePump;
    return true;
  }

  /**
   * Queues bytes for the guest's serial input, as many as fit in the
   * monitor's queue ({@linkcode INPUT_QUEUE_BYTES} in all), and returns how
   * many it took: the caller keeps the rest and sends it again after
   * {@linkcode waitInputSpace}. Takes nothing once the VM has stopped. The
   * bytes are copied.
   *
   * @example
   * ```ts ignore
   * let rest = new TextEncoder().encode("echo hi\n");
   * while (rest.length) {
   *   rest = rest.subarray(vm.sendInput(rest));
   *   if (rest.length) await vm.waitInputSpace();
   * }
   * ```
   */
  sendInput(data: Uint8Array): number {
    if (this.exit) return 0;
    const n = Math.min(data.length, INPUT_QUEUE_BYTES - this.pendingBytes);
    if (n <= 0) return 0;
    if (this.pendingBytes === 0) this.inputProgressAt = performance.now();
    this.pendingInput.push(data.slice(0, n));
    this.pendingBytes += n;
    this.drainInput();
    return n;
  }

  /** Bytes of input queued and not yet in the UART's FIFO. */
  get pendingInputBytes(): number {
    return this.pendingBytes;
  }

  /**
   * Resolves once {@linkcode sendInput} would take a byte again (at once if
   * it would now), or the VM stops while it waits. Once the VM has stopped
   * it rejects: nothing more can be sent, and a send loop must end rather
   * than spin.
   *
   * @example
   * ```ts ignore
   * await vm.waitInputSpace();
   * ```
   */
  waitInputSpace(): Promise<void> {
    if (this.exit) {
      return Promise.reject(new VoltError("The VM has stopped and takes no more input", "usage"));
    }
    if (this.pendingBytes < INPUT_QUEUE_BYTES) return Promise.resolve();
    this.inputSpace ??= Promise.withResolvers();
    return this.inputSpace.promise;
  }

  /** {@linkcode waitInputSpace}, for `ms` at most. */
  private async waitInputSpaceFor(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.waitInputSpace().catch(() => {}),
      new Promise<void>((r) => (timer = setTimeout(r, ms))),
    ]);
    clearTimeout(timer);
  }

  /** Resolves a pending {@linkcode Machine.waitInputSpace}. */
  private wakeInputWaiter(): void {
    this.inputSpace?.resolve();
    this.inputSpace = undefined;
  }

  /** Moves queued input into the UART as far as the guest listens and has room. */
  private drainInput(): void {
    // Input before the guest's driver listens would be lost in a FIFO reset.
    if (!this.serial.rxReady && this.pendingInput.length > 0) return this.retryInput(20);
    const before = this.pendingBytes;
    while (this.pendingInput.length > 0) {
      const head = this.pendingInput[0];
      const n = this.serial.enqueueInput(head);
      this.pendingBytes -= n;
      if (n === head.length) this.pendingInput.shift();
      else {
        this.pendingInput[0] = head.subarray(n);
        // The FIFO is full: try again when the guest has read some.
        this.retryInput(5);
        break;
      }
    }
    if (this.pendingBytes < before) {
      this.inputProgressAt = performance.now();
      this.wakeInputWaiter();
    }
  }

  /** Drains again after `ms`, once. */
  private retryInput(ms: number): void {
    if (this.exit) return;
    this.inputTimer ??= setTimeout(() => {
      this.inputTimer = undefined;
      this.drainInput();
    }, ms);
  }

  /**
   * Sends our stdin to the guest (raw on a terminal, where Ctrl-A x stops
   * the VM). It reads no more than the input queue takes, and not at all
   * while the queue is full, so the writer waits on the guest. On a
   * terminal, once the guest has taken nothing for {@linkcode TTY_STALL_MS}
   * with the queue full, it reads anyway and drops what the queue cannot
   * take (as a UART's overrun drops it): Ctrl-A x must reach the monitor
   * past a guest that does not read, while a paste into one that does is
   * not cut short.
   */
  private forwardStdin(): void {
    const tty = Deno.stdin.isTerminal();
    if (tty) {
      Deno.stdin.setRaw(true);
      this.cleanups.push(() => Deno.stdin.setRaw(false));
    }
    let escape = false;
    const buf = new Uint8Array(STDIN_CHUNK);
    const pump = async () => {
      while (!this.exit) {
        const space = INPUT_QUEUE_BYTES - this.pendingBytes;
        if (space <= 0) {
          const stalled = performance.now() - this.inputProgressAt;
          if (!tty) {
            await this.waitInputSpace();
            continue;
          }
          if (stalled < TTY_STALL_MS) {
            await this.waitInputSpaceFor(TTY_STALL_MS - stalled);
            continue;
          }
        }
        // A stalled terminal's reads are dropped whole: read them in full.
        const into = space > 0 ? buf.subarray(0, Math.min(space, buf.length)) : buf;
        const n = await Deno.stdin.read(into).catch(() => null);
        if (n === null || this.exit) return;
        let chunk = into.subarray(0, n);
        if (tty) {
          // Ctrl-A x quits; Ctrl-A Ctrl-A sends one Ctrl-A.
          const out: number[] = [];
          for (const b of chunk) {
            if (escape) {
              escape = false;
              if (b === 0x78) {
                this.stop(vmExit("host-stop", "Stopped from the console (Ctrl-A x)"));
                return;
              }
              out.push(b);
            } else if (b === ESCAPE) escape = true;
            else out.push(b);
          }
          chunk = new Uint8Array(out);
        }
        if (chunk.length) this.sendInput(chunk);
      }
    };
    pump();
  }

  /**
   * Releases host resources: the terminal, the timers and, once every vCPU
   * thread is done, the workers, the VM's descriptors and guest RAM. Safe
   * to call twice.
   */
  cleanup(): void {
    if (this.inputTimer !== undefined) clearTimeout(this.inputTimer);
    this.consoleReader.stop();
    while (this.cleanups.length) {
      try {
        this.cleanups.pop()!();
      } catch { /* best effort on the way out */ }
    }
    // The VM's descriptors and mappings go once no vCPU thread can touch
    // them; a thread still running (settled() gave up on it) leaves them,
    // and its exit calls this again.
    if (!this.released && this.ioDone && this.threads.every((t) => t.done)) {
      this.released = true;
      for (const t of this.threads) t.worker.terminate();
      releaseVm(this.built);
    }
  }
}
