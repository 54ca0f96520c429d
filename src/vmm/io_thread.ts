/**
 * The I/O thread: serves every virtio queue of the VM off the vCPU
 * threads. It sleeps in `epoll_wait` on the devices' notify eventfds (KVM
 * signals them on the guest's QUEUE_NOTIFY write, with no exit to
 * userspace), serves the queue and raises the device's irqfd. A request
 * moves bytes between guest RAM and the host directly and allocates
 * nothing.
 *
 * @module
 */

import { dataPath, errno } from "../../ffi/libc.ts";
import { EPOLL_EVENT } from "../../ffi/eventfd.ts";
import { libc } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";
import { FdBlockFile, VirtioBlk } from "../devices/virtio/blk.ts";
import { QueueRunner, type VirtioBackend } from "../devices/virtio/device.ts";
import { VirtioRng } from "../devices/virtio/rng.ts";
import { GuestMemory } from "../memory/guest_memory.ts";
import { IO_STOP, type VirtioBackendSpec } from "./device_manager.ts";
import { eventfdSignal } from "./vcpu_devices.ts";
import { vmExit } from "./exit_reason.ts";
import { installEncoded } from "../sandbox/seccomp.ts";
import type { IoStart, VcpuEvent } from "./worker_protocol.ts";

const EINTR = 4;
const MAX_EVENTS = 16;

/** Builds a device model from its spec on this thread. */
export function makeBackend(b: VirtioBackendSpec, memory: GuestMemory): VirtioBackend {
  switch (b.type) {
    case "block":
      return new VirtioBlk(new FdBlockFile(b.fd, b.size), memory, {
        readOnly: b.readOnly,
        id: b.id,
      });
    case "entropy":
      return new VirtioRng(memory);
  }
}

/**
 * Runs the I/O loop until the stop descriptor is written; returns why it
 * ended if that was not a stop.
 */
export function runIo(m: IoStart, post: (e: VcpuEvent) => void): void {
  const memory = GuestMemory.fromBuffer(
    Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(m.memAddr)!, m.memSize),
    m.memAddr,
  );
  const runners = m.plan.devices.map((d) =>
    new QueueRunner(makeBackend(d.backend, memory), d.state, memory, {
      trigger: eventfdSignal(d.irqFd),
    })
  );
  const fds = m.plan.devices.map((d) => d.notifyFd);
  const events = new Uint8Array(EPOLL_EVENT.size * MAX_EVENTS);
  const ev = new DataView(events.buffer);
  const counter = new BigUint64Array(1);
  const counterAddr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(counter)));
  const l = libc();
  post({ type: "running", tid: l.gettid(), at: performance.timeOrigin + performance.now() });
  // Last before the loop: from here the thread only waits, serves and signals.
  if (m.filter) installEncoded(m.filter.program, { tsync: false, log: m.filter.log });
  for (;;) {
    const n = l.epoll_wait(m.plan.epollFd, events, MAX_EVENTS, -1);
    if (n < 0) {
      const e = errno();
      if (e === EINTR) continue;
      post({
        type: "exit",
        exit: vmExit("monitor-error", `I/O thread: epoll_wait failed: ${errnoName(e)}`),
      });
      return;
    }
    for (let i = 0; i < n; i++) {
      const data = ev.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.data, true);
      if (data === IO_STOP) {
        post({ type: "exit", exit: vmExit("host-stop", "I/O thread stopped") });
        return;
      }
      if (data >= runners.length) continue;
      // Reads the count back to zero: notifications since the last one are one wake-up.
      dataPath.read(fds[data], counterAddr, 8);
      runners[data].notified();
    }
  }
}
