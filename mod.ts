/**
 * Volt: a KVM microVM monitor in TypeScript.
 *
 * Import it to boot microVMs from code; run it to get the `volt` CLI. A VM
 * goes from `not-started` to `running` ({@linkcode Machine.start}), between
 * `running` and `paused` ({@linkcode Machine.pause}, {@linkcode Machine.resume})
 * and ends `halted` ({@linkcode Machine.stop}, or the guest); a Firecracker
 * configuration maps onto a {@linkcode VmConfig} with {@linkcode fromFirecracker}.
 *
 * @example
 * ```ts ignore
 * import { createVm } from "jsr:@volt/vmm";
 * const vm = await createVm({ kernel: "vmlinux", initrd: "initrd.cpio", memory: "128M" });
 * const exit = await vm.run();
 * console.log(exit.message, exit.code);
 * ```
 *
 * @module
 */

import type { VmConfig } from "./src/vmm/config.ts";
import { type CreateOptions, Machine } from "./src/vmm/machine.ts";

export type { VmConfig } from "./src/vmm/config.ts";
export type { DiskConfig, NetConfig, VsockConfig } from "./src/vmm/device_manager.ts";
export type { ExecIo } from "./src/guest/exec.ts";
export type { UserDevice } from "./src/vmm/hosted_device.ts";
export type { BusDevice } from "./src/devices/bus.ts";
export type { Trigger } from "./src/devices/serial.ts";
export type {
  CreateOptions,
  RestoreConfig,
  RestoreSource,
  SnapshotTarget,
  VmMetrics,
  VmState,
} from "./src/vmm/machine.ts";
export type { StopCause, VmExit } from "./src/vmm/exit_reason.ts";
export type { BootTrace, Mark } from "./src/vmm/trace.ts";
export type { BootProtocol } from "./src/boot/loader.ts";
export type { ConsoleSink, VcpuFilter } from "./src/vmm/worker_protocol.ts";
export type { ConsoleMode } from "./src/vmm/console_filter.ts";
export type { ErrorKind } from "./src/errors.ts";
export type { Level } from "./src/log.ts";
export { Machine } from "./src/vmm/machine.ts";
export { EXIT_CODE, VoltError } from "./src/errors.ts";
export { DEFAULT_CMDLINE } from "./src/boot/cmdline.ts";
export { parseSize } from "./src/vmm/config.ts";
export { rebaseMemoryFile } from "./src/snapshot/rebase.ts";
export { EXEC_PORT, execInGuest } from "./src/guest/exec.ts";
export { type FileConfig, fromFirecracker, readConfigFile } from "./src/control/fc_config.ts";

/**
 * Builds a microVM, ready to {@linkcode Machine.start}. `devices` plugs in
 * devices written in TypeScript ({@linkcode UserDevice}), served on this
 * thread.
 *
 * @example
 * ```ts ignore
 * import { createVm } from "./mod.ts";
 * const seen: number[] = [];
 * const vm = await createVm({ kernel: "vmlinux", console: "message" }, {
 *   devices: [{
 *     bus: "pio", base: 0x510, size: 1,
 *     device: { read: (_o, d) => d.fill(0), write: (_o, d) => void seen.push(d[0]) },
 *   }],
 * });
 * vm.onConsole = (b) => Deno.stdout.writeSync(b);
 * await vm.run();
 * ```
 */
export function createVm(
  config: VmConfig,
  opts: Pick<CreateOptions, "devices" | "onMark"> = {},
): Promise<Machine> {
  return Machine.create(config, opts);
}

if (import.meta.main) {
  // The CLI is loaded only to run it: a script importing the library loads none of it.
  const { main } = await import("./src/cli/main.ts");
  Deno.exit(await main(Deno.args));
}
