/**
 * The `volt` command line: subcommands, one-line errors, exit codes.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import meta from "../../deno.json" with { type: "json" };
import { SysError } from "../../ffi/libc.ts";
import { EXIT_CODE, VoltError } from "../errors.ts";
import { configureLogging, type Level, LOG_LEVELS, logger } from "../log.ts";
import { cpuidCommand } from "./cpuid_cmd.ts";
import { guestCommand, initramfsCommand, kernelCommand } from "./guest_cmd.ts";
import { runCommand } from "./run_cmd.ts";
import { execCommand } from "./exec_cmd.ts";
import { formatPolicy, MONITOR_POLICY, VCPU_POLICY } from "../sandbox/seccomp.ts";

/** The version `volt --version` prints. */
export const VERSION: string = meta.version;

const HELP = `volt ${VERSION}: a KVM microVM monitor

Usage:
  volt run [--kernel PATH|debian] [options]
                                     boot a microVM (no --kernel: the default
                                     guest, built and cached on first use)
  volt run --config-file FILE [--api-sock PATH]
  volt run --api-sock PATH [--id ID] boot what a Firecracker config or API
                                     client describes
  volt exec --vsock PATH [-t] [--] CMD [ARGS...]
                                     run a command in a running guest (its
                                     --vsock socket): stdout, stderr, stdin
                                     and the exit status, -t a terminal
  volt guest build                   build the default kernel and initramfs
  volt kernel list | build | fetch debian
                                     guest kernels in the cache
  volt initramfs [--init FILE] [--add HOST:GUEST]... [--busybox] -o OUT[.gz]
  volt initramfs --list FILE         write or list a cpio newc archive
  volt sandbox --print               the seccomp allow-list and its BPF
  volt cpuid [--cpus N] [--cpu-template T]
                                     print the CPUID table a guest sees
  volt help | --help                 this text
  volt --version                     the version

Run options:
  --kernel PATH        vmlinux (ELF, PVH entry preferred) or bzImage;
                       "debian" fetches Debian's cloud kernel
  --initrd PATH        initial ramdisk
  --cmdline S          replace the default kernel command line
  --append S           append to the kernel command line
  --memory SIZE        guest RAM, e.g. 128M, 1G (default 128M)
  --cpus N             vCPUs, 1 to 32 (default 1)
  --boot PROTO         auto | pvh | linux64 (default auto)
  --cpu-template T     auto | none | pvm (default auto: pvm on PVM hosts)
  --kvm PATH           the KVM device (default /dev/kvm)
  --no-seccomp         skip the seccomp allow-list (on by default: any
                       other syscall kills the monitor)
  --seccomp-log        log syscalls outside the allow-list instead of
                       killing (to calibrate it on a new host)
  --no-landlock        skip Landlock (on by default: the monitor opens only
                       the guest's files, /dev/kvm and Deno's own)
  --require-sandbox    refuse to boot when a layer cannot be applied
  --allow-root-without-landlock
                       run the monitor as root where Landlock is off or
                       missing (refused by default: root keeps its files)
  --metrics-json PATH  write the boot phases, VMM init and guest boot time
                       (volt-init's boot-timer write) as JSON at exit
  --console-mode M     auto | safe | raw (default auto: safe when stdout is a
                       terminal and stdin is not); safe keeps the guest's
                       OSC, DCS, terminal queries and charset switches from
                       your terminal, raw passes every byte
  --disk PATH[,rw][,id=NAME]
                       a virtio disk (read-only unless rw; repeatable)
  --rootfs [PATH][,rw] boot from an ext4 root image (default: the default
                       guest's)
  --entropy            a virtio-rng device (/dev/hwrng)
  --net tap=NAME[,mac=MAC][,id=NAME]
                       a virtio-net interface on an existing TAP (repeatable)
  --vsock cid=N,uds=PATH
                       a virtio-vsock device, Firecracker's host side: host
                       clients connect to PATH ("CONNECT <port>\n"), guest
                       connections to port P reach PATH_P
  --config-file FILE   Firecracker's JSON configuration (boot-source, drives,
                       machine-config, network-interfaces, vsock, logger,
                       entropy; Volt's own settings under "volt"): it
                       describes the whole VM, so the flags above are refused
                       beside it; a field Volt does not support is refused
  --api-sock PATH      serve Firecracker's REST API on a unix socket: without
                       --config-file the VM waits for its configuration and
                       InstanceStart; PATCH /vm pauses and resumes it
  --id ID              the instance id the API reports (with --api-sock)
  --no-api             no API socket (with --config-file; the default)
  --log-level L        trace | debug | info | warning | error | fatal | off
                       (default warning)
  --native             boot on this host: ./volt run otherwise boots in the
                       nested-KVM helper VM where /dev/kvm is absent or PVM
                       (whose guests reach init but cannot run userspace)

Exit status: the guest's status when it reports one from 0 to 63, 86 when
it reports another (a line names it), 0 on guest reset or power-off,
64 usage, 65 bad input file, 66 missing file, 69 no usable KVM, 70 monitor
failure, 73 cannot write an output file, 80 triple fault, 81 entry failure,
82 KVM internal error, 83 guest crash, 84 unexpected KVM exit, 85 guest
userspace cannot run on this host (PVM), 129 SIGHUP, 130 SIGINT, 131 SIGQUIT,
143 SIGTERM (each restores the terminal first). In a terminal, Ctrl-A x
stops the VM.
`;

/** Parses `args` against `options`, turning parser errors into usage errors. */
export function parse<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
): ReturnType<
  typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: false }>
> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (e) {
    // node:util's messages are one line already; keep the first sentence.
    throw new VoltError((e as Error).message.split("\n")[0], "usage");
  }
}

/** Validates a `--log-level` value. */
export function parseLevel(s: string | undefined): Level {
  const level = s ?? "warning";
  if (!LOG_LEVELS.includes(level)) {
    throw new VoltError(`Unknown log level: ${level} (one of ${LOG_LEVELS.join(", ")})`, "usage");
  }
  return level as Level;
}

/**
 * Runs the CLI and returns the exit code; never throws.
 *
 * @example
 * ```ts ignore
 * import { main } from "./main.ts";
 * Deno.exit(await main(Deno.args));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  try {
    switch (cmd) {
      case "run":
        return await runCommand(rest);
      case "exec": {
        const status = await execCommand(rest);
        // stdin may still be read for the command: the process ends here.
        Deno.exit(status);
        return status;
      }
      case "cpuid":
        return cpuidCommand(rest);
      case "sandbox":
        parse(rest, { print: { type: "boolean" } });
        console.log(formatPolicy(MONITOR_POLICY));
        console.log("\nStacked on each vCPU thread right before its first KVM_RUN:\n");
        console.log(formatPolicy(VCPU_POLICY));
        return EXIT_CODE.ok;
      case "kernel":
        return await kernelCommand(rest);
      case "guest":
        return await guestCommand(rest);
      case "initramfs":
        return await initramfsCommand(rest);
      case "help":
      case "--help":
      case "-h":
      case undefined:
        console.log(HELP);
        return cmd === undefined ? EXIT_CODE.usage : EXIT_CODE.ok;
      case "--version":
      case "-V":
        console.log(`volt ${VERSION}`);
        return EXIT_CODE.ok;
      default:
        throw new VoltError(`Unknown command: ${cmd} (try volt help)`, "usage");
    }
  } catch (e) {
    return report(e);
  }
}

/** Prints one line for an error and returns its exit code. */
export function report(e: unknown): number {
  const write = (s: string) => Deno.stderr.writeSync(new TextEncoder().encode(`volt: ${s}\n`));
  if (e instanceof VoltError) {
    write(e.message);
    return e.exitCode;
  }
  if (e instanceof SysError) {
    write(e.message);
    return EXIT_CODE.internal;
  }
  if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
    write(`Not permitted: ${(e as Error).message.split("\n")[0]}`);
    return EXIT_CODE.noinput;
  }
  write(`Internal error: ${(e as Error)?.message ?? String(e)}`);
  logger("cli").debug("{stack}", { stack: (e as Error)?.stack });
  return EXIT_CODE.internal;
}

export { configureLogging };
