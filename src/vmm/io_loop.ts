/**
 * The I/O loop: serves every virtio queue of the VM off the vCPU threads,
 * on the main thread's event loop. `epoll_wait` on the devices' notify
 * eventfds (KVM signals them on the guest's QUEUE_NOTIFY write, with no
 * exit to userspace) runs on Deno's blocking pool (a non-blocking FFI
 * call); when it returns, the queues are served here and the devices'
 * irqfds raised. No thread of its own: a Deno worker would cost the monitor
 * about 15 MiB (a V8 isolate), measured with bench/blk.ts. A request moves
 * bytes between guest RAM and the host directly and allocates nothing.
 *
 * @module
 */

import { check, dataPath, libc, PinnedBuffer } from "../../ffi/libc.ts";
import { EPOLL_CTL_ADD, EPOLL_EVENT, EPOLLET, EPOLLIN } from "../../ffi/eventfd.ts";
import { FdBlockFile, VirtioBlk } from "../devices/virtio/blk.ts";
import { QueueRunner, type VirtioBackend } from "../devices/virtio/device.ts";
import { VirtioRng } from "../devices/virtio/rng.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";
import { IO_HOST, IO_STOP, type IoPlan, type VirtioBackendSpec } from "./device_manager.ts";
import { FdNetPort, VirtioNet } from "../devices/virtio/net.ts";
import { VirtioVsock } from "../devices/virtio/vsock.ts";
import { parseMac, tapOffload } from "./tap.ts";
import { type VmExit, vmExit } from "./exit_reason.ts";
import { eventfdSignal } from "./vcpu_devices.ts";
import { S } from "../devices/virtio/mmio_state.ts";

const MAX_EVENTS = 16;
/** Failed waits in a row before the loop gives up (the call's errno is another thread's). */
const MAX_FAILURES = 100;

/** Builds a device model from its spec. */
export function makeBackend(
  b: VirtioBackendSpec,
  memory: GuestMemory,
  restored = false,
  state?: SharedArrayBuffer,
): VirtioBackend {
  switch (b.type) {
    case "block":
      return new VirtioBlk(new FdBlockFile(b.fd, b.size), memory, {
        readOnly: b.readOnly,
        id: b.id,
      });
    case "entropy":
      return new VirtioRng(memory);
    case "net":
      return new VirtioNet(new FdNetPort(b.fd, tapOffload(b.fd)), memory, parseMac(b.mac));
    case "vsock":
      return new VirtioVsock(memory, {
        cid: b.cid,
        listenFd: b.listenFd,
        udsPath: b.udsPath,
        restored,
        configReads: state && (() => Atomics.load(new Int32Array(state), S.CONFIG_READS)),
      });
  }
}

/**
 * Serves the queues of `plan`'s devices until the stop descriptor is
 * written.
 *
 * @example
 * ```ts ignore
 * const exit = await runIoLoop(built.io, built.memory); // undefined after a stop
 * ```
 */
export async function runIoLoop(
  plan: IoPlan,
  memory: GuestMemory,
  onBackends?: (backends: readonly VirtioBackend[], runners: readonly QueueRunner[]) => void,
): Promise<VmExit | undefined> {
  const backends = plan.devices.map((d) => makeBackend(d.backend, memory, plan.restored, d.state));
  const runners = plan.devices.map((d, i) =>
    new QueueRunner(backends[i], d.state, memory, { trigger: eventfdSignal(d.irqFd) }, {
      resume: plan.restored,
    })
  );
  onBackends?.(backends, runners);
  // A restored driver may have made chains available after the last
  // notification the saved loop took: look once at every queue.
  if (plan.restored) { for (const r of runners) r.notified(); }
  try {
    return await serve(plan, backends, runners);
  } finally {
    for (const b of backends) b.close?.();
  }
}

async function serve(
  plan: IoPlan,
  backends: VirtioBackend[],
  runners: QueueRunner[],
): Promise<VmExit | undefined> {
  const l = libc();
  // A backend's host descriptor (a TAP, vsock's epoll set), edge-triggered.
  const ctl = new Uint8Array(EPOLL_EVENT.size);
  const ctlView = new DataView(ctl.buffer);
  backends.forEach((b, i) => {
    if (b.hostFd === undefined) return;
    ctlView.setUint32(EPOLL_EVENT.events, (EPOLLIN | EPOLLET) >>> 0, true);
    ctlView.setBigUint64(EPOLL_EVENT.data, BigInt(i | IO_HOST), true);
    check(l.epoll_ctl(plan.epollFd, EPOLL_CTL_ADD, b.hostFd, ctl), "epoll_ctl");
  });
  const timed = backends.filter((b) => b.nextDeadline).length > 0;
  const fds = plan.devices.map((d) => d.notifyFd);
  const events = new Uint8Array(EPOLL_EVENT.size * MAX_EVENTS);
  const ev = new DataView(events.buffer);
  const counter = new PinnedBuffer(8);
  const one = new PinnedBuffer(8);
  new DataView(one.buffer).setUint32(0, 1, true);
  let failures = 0;
  for (;;) {
    const timeout = timed ? nextTimeout(backends) : -1;
    const n = await l.epoll_wait_nb(plan.epollFd, events, MAX_EVENTS, timeout);
    if (n < 0) {
      // EINTR, as a rule; anything that keeps failing is the monitor's fault.
      if (++failures < MAX_FAILURES) continue;
      return vmExit("monitor-error", "The I/O loop's epoll_wait keeps failing");
    }
    failures = 0;
    if (n === 0) {
      // A deadline passed: the devices with one look at their clocks.
      backends.forEach((b, i) => b.nextDeadline && runners[i].notified());
      continue;
    }
    for (let i = 0; i < n; i++) {
      const data = ev.getUint32(i * EPOLL_EVENT.size + EPOLL_EVENT.data, true);
      if (data === IO_STOP) return undefined;
      const device = data & ~IO_HOST;
      if (device >= runners.length) continue;
      // Reads the count back to zero: notifications since the last one are
      // one wake-up. A host descriptor (a TAP with frames) has no count.
      if (!(data & IO_HOST)) dataPath.read(fds[device], counter.addr, 8);
      // Work left past the device's quota: notify itself, to come back
      // after the other devices had their turn.
      if (runners[device].notified()) dataPath.write(fds[device], one.addr, 8);
    }
  }
}

/** The epoll timeout: until the soonest device deadline, -1 for none. */
function nextTimeout(backends: VirtioBackend[]): number {
  let ms = Infinity;
  for (const b of backends) if (b.nextDeadline) ms = Math.min(ms, b.nextDeadline());
  return ms === Infinity ? -1 : Math.ceil(ms);
}
