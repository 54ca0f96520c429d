/**
 * `volt run`: boot a microVM and wait for it.
 *
 * @module
 */

import { EXIT_CODE, VoltError } from "../errors.ts";
import { configureLogging, logger } from "../log.ts";
import type { BootProtocol } from "../boot/loader.ts";
import { vmExit } from "../vmm/exit_reason.ts";
import { Machine } from "../vmm/machine.ts";
import { resolveConfig, type VmConfig } from "../vmm/config.ts";
import { selectTemplate } from "../vmm/builder.ts";
import { buildFilter, installFilter, MONITOR_POLICY } from "../sandbox/seccomp.ts";
import { resolveGuest } from "./guest_cmd.ts";
import { parse, parseLevel } from "./main.ts";

const OPTIONS = {
  kernel: { type: "string" },
  initrd: { type: "string" },
  cmdline: { type: "string" },
  append: { type: "string" },
  memory: { type: "string" },
  cpus: { type: "string" },
  boot: { type: "string" },
  "cpu-template": { type: "string" },
  "log-level": { type: "string" },
  kvm: { type: "string" },
  seccomp: { type: "boolean" },
} as const;

/** Parses a whole number flag. */
export function parseCount(s: string | undefined, what: string): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s)) throw new VoltError(`${what} must be a whole number, not "${s}"`, "usage");
  return Number(s);
}

/**
 * Boots the VM described by `args` and returns the exit code.
 *
 * @example
 * ```ts ignore
 * import { runCommand } from "./run_cmd.ts";
 * await runCommand(["--kernel", "vmlinux", "--memory", "128M"]);
 * ```
 */
export async function runCommand(args: string[]): Promise<number> {
  const { values: v } = parse(args, OPTIONS);
  const level = parseLevel(v["log-level"]);
  configureLogging(level);
  const log = logger("vmm");
  const config: VmConfig = {
    kernel: v.kernel ?? "default",
    initrd: v.initrd,
    cmdline: v.cmdline,
    append: v.append,
    memory: v.memory,
    cpus: parseCount(v.cpus, "--cpus"),
    bootProtocol: v.boot as BootProtocol | undefined,
    cpuTemplate: v["cpu-template"],
    console: "stdout",
    stdin: true,
    kvmDevice: v.kvm,
  };
  // Flags are checked before a default guest is built or fetched.
  resolveConfig(config);
  selectTemplate(config.cpuTemplate ?? "auto");
  const guest = await resolveGuest(v.kernel, v.initrd);
  const machine = await Machine.create(
    { ...config, ...guest },
    (m) => log.trace("{ms} ms {phase}", { ms: m.ms.toFixed(2), phase: m.phase }),
  );
  const onSignal = (name: "SIGINT" | "SIGTERM", code: number) => () =>
    machine.stop(vmExit("host-signal", `Stopped by ${name}`, undefined, code));
  const sigint = onSignal("SIGINT", EXIT_CODE.sigint);
  const sigterm = onSignal("SIGTERM", EXIT_CODE.sigterm);
  Deno.addSignalListener("SIGINT", sigint);
  Deno.addSignalListener("SIGTERM", sigterm);
  try {
    log.info("Booting {kernel} ({format}, {mode} entry), {mem} MiB, {cpus} vCPU, template {t}", {
      kernel: guest.kernel,
      format: machine.built.kernel.format,
      mode: machine.built.kernel.mode,
      mem: machine.built.memory.size >> 20,
      cpus: machine.built.vcpus.length,
      t: machine.built.template.name,
    });
    if (v.seccomp) {
      // Opt-in until the allow-list covers the signal path (SIGTERM under
      // the filter currently ends in SIGSYS). Set-up is done and every vCPU
      // thread exists: from here on, any syscall outside the allow-list
      // kills the whole process (TSYNC).
      installFilter(buildFilter(MONITOR_POLICY));
      machine.trace.mark("seccomp installed");
      log.info("Sandbox: seccomp allow-list of {n} syscalls on every thread", {
        n: MONITOR_POLICY.rules.length,
      });
    }
    machine.trace.mark("first KVM_RUN");
    machine.start();
    const exit = await machine.wait();
    await machine.settled();
    const clean = exit.code === 0 || exit.cause === "guest-exit";
    if (clean) log.info("{message}", { message: exit.message });
    else Deno.stderr.writeSync(new TextEncoder().encode(`volt: ${exit.message}\n`));
    return exit.code;
  } finally {
    machine.cleanup();
    Deno.removeSignalListener("SIGINT", sigint);
    Deno.removeSignalListener("SIGTERM", sigterm);
  }
}
