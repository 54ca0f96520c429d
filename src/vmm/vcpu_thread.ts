/**
 * The vCPU thread: builds its view of the shared devices, reports its thread
 * id (so the main thread can kick it), then runs the KVM_RUN loop.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { bindAllLibc, libc } from "../../ffi/libc.ts";
import type { Writer } from "../devices/serial.ts";
import { ConsoleRingWriter } from "../devices/console_ring.ts";
import { ConsoleWriter } from "./console_filter.ts";
import { installEncoded } from "../sandbox/seccomp.ts";
import { guestExit, vmExit } from "./exit_reason.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import { CTL, VCPU_STAT, VCPU_STAT_SLOTS, VcpuLoop } from "./vcpu_loop.ts";
import { Vm } from "./vm.ts";
import { buildBuses } from "./vcpu_devices.ts";
import type { VcpuEvent, VcpuStart } from "./worker_protocol.ts";

const post = (e: VcpuEvent) => self.postMessage(e);

/**
 * The vCPU's console writer: to stdout directly, through its own filter in
 * safe mode (each vCPU thread writes its bytes itself: a stdout that blocks
 * holds this vCPU, and a kick interrupts the write); to the ring for
 * `message`; nowhere for `none`.
 */
function consoleWriter(m: VcpuStart): Writer {
  if (m.console === "none") return { writeSync: (d) => d.length };
  const ctl = new Int32Array(m.ctl);
  if (m.console === "stdout") {
    return new ConsoleWriter(
      Deno.stdout,
      m.consoleMode,
      ctl,
      CTL.consoleDropped,
      CTL.privateModes,
    );
  }
  return new ConsoleRingWriter(m.consoleRing, () => Atomics.load(ctl, CTL.stop) !== 0);
}

/** `inner`, counting the bytes the guest's UART sends. */
function countBytes(inner: Writer, stats: Float64Array): Writer {
  return {
    writeSync(data: Uint8Array): number {
      const n = inner.writeSync(data);
      stats[VCPU_STAT.serialOut] += n;
      return n;
    },
  };
}

/**
 * Under PVM, guest userspace cannot run: the first syscall of init faults
 * (DESIGN.md §5). Spotting the kernel's report of that fault turns a guest
 * that would hang or panic into one clear stop.
 */
class PvmUserspaceWatch implements Writer {
  private line = "";
  constructor(private readonly inner: Writer, private readonly onFault: (line: string) => void) {}
  writeSync(data: Uint8Array): number {
    for (const b of data) {
      if (b === 10) {
        if (/\binit\[1\]: segfault at /.test(this.line)) this.onFault(this.line.trim());
        this.line = "";
      } else if (this.line.length < 200) this.line += String.fromCharCode(b);
    }
    return this.inner.writeSync(data);
  }
}

function start(m: VcpuStart): void {
  const vm = new Vm(m.vmFd);
  const memPtr = Deno.UnsafePointer.create(m.memAddr)!;
  const memory = GuestMemory.fromBuffer(
    Deno.UnsafePointerView.getArrayBuffer(memPtr, m.memSize),
    m.memAddr,
  );
  const run = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(m.runAddr)!, m.runSize),
  );
  const stats = new Float64Array(m.stats, m.id * VCPU_STAT_SLOTS * 8, VCPU_STAT_SLOTS);
  let out = countBytes(consoleWriter(m), stats);
  if (m.pvm) {
    out = new PvmUserspaceWatch(out, () =>
      loop!.stopWith(vmExit(
        "guest-userspace-unsupported",
        "The kernel reached init, but this host's KVM (PVM) cannot run guest userspace: init's first syscall faulted",
        m.id,
      )));
  }
  let loop: VcpuLoop | undefined = undefined;
  const ctl = new Int32Array(m.ctl);
  const { pio, mmio } = buildBuses(m.devices, {
    stopping: () => Atomics.load(ctl, CTL.stop) !== 0,
    vm,
    memory,
    console: out,
    reset: () => loop!.stopWith(vmExit("reset", "Guest reset", m.id)),
    powerOff: () => loop!.stopWith(vmExit("power-off", "Guest powered off", m.id)),
    ctl: {
      exit: (status: number) => loop!.stopWith(guestExit(status, m.id)),
      ready: () => post({ type: "ready", at: performance.timeOrigin + performance.now() }),
    },
  });
  loop = new VcpuLoop({ id: m.id, fd: m.fd, run, pio, mmio, ctl, memory, stats });
  post({ type: "running", tid: libc().gettid(), at: performance.timeOrigin + performance.now() });
  let exit;
  try {
    // Last: everything this thread sets up is done; from here it runs the guest.
    if (m.vcpuFilter) installEncoded(m.vcpuFilter.program, { tsync: false, log: m.vcpuFilter.log });
    exit = loop.run();
  } catch (e) {
    exit = vmExit("monitor-error", `vCPU ${m.id}: ${(e as Error).message}`, m.id);
  }
  post({ type: "exit", exit });
}

/**
 * Makes the current worker a vCPU thread: waits for its start message.
 *
 * @example
 * ```ts ignore
 * import { installVcpuThread } from "./vcpu_thread.ts";
 * installVcpuThread();
 * ```
 */
export function installVcpuThread(): void {
  self.onmessage = (e: MessageEvent<VcpuStart>) => {
    if (e.data.type !== "start") return;
    try {
      start(e.data);
    } catch (err) {
      const exit = vmExit(
        "monitor-error",
        `vCPU ${e.data.id}: ${(err as Error).message}`,
        e.data.id,
      );
      post({ type: "exit", exit });
    }
  };
  // Bind libc now, while loading (in parallel with the VM's build): before
  // the monitor revokes its reads, and before this thread's seccomp filter,
  // which refuses what a binding needs.
  bindAllLibc();
  post({ type: "loaded" });
}
