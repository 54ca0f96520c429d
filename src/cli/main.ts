/**
 * The `volt` command line: subcommands, one-line errors, exit codes.
 *
 * @module
 */

import { SysError } from "../../ffi/libc.ts";
import { EXIT_CODE, VoltError } from "../errors.ts";
import { configureLogging, logger } from "../log.ts";
import { parse, VERSION, wantsHelp } from "./options.ts";
import { COMMAND_USAGE, HELP } from "./usage.ts";
import { cpuidCommand } from "./cpuid_cmd.ts";
import { guestCommand, initramfsCommand, kernelCommand } from "./guest_cmd.ts";
import { runCommand } from "./run_cmd.ts";
import { poolCommand } from "./pool_cmd.ts";
import { execCommand } from "./exec_cmd.ts";
import { snapshotCommand } from "./snapshot_cmd.ts";
import { formatPolicy, MONITOR_POLICY, VCPU_POLICY } from "../sandbox/seccomp.ts";

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
    if (cmd !== undefined && cmd in COMMAND_USAGE && cmd !== "help") {
      if (wantsHelp(rest, { firstOnly: cmd === "exec" })) {
        console.log(COMMAND_USAGE[cmd]);
        return EXIT_CODE.ok;
      }
    }
    switch (cmd) {
      case "run":
        return await runCommand(rest);
      case "pool":
        return await poolCommand(rest);
      case "exec": {
        const status = await execCommand(rest);
        // stdin may still be read for the command: the process ends here.
        Deno.exit(status);
        return status;
      }
      case "cpuid":
        return cpuidCommand(rest);
      case "snapshot":
        return snapshotCommand(rest);
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
      case "help": {
        const [topic, ...more] = rest;
        if (topic === undefined) {
          console.log(HELP);
          return EXIT_CODE.ok;
        }
        if (more.length || !(topic in COMMAND_USAGE)) {
          throw new VoltError(
            `No help on "${[topic, ...more].join(" ")}" (commands: ${
              Object.keys(COMMAND_USAGE).join(", ")
            })`,
            "usage",
          );
        }
        console.log(COMMAND_USAGE[topic]);
        return EXIT_CODE.ok;
      }
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

export { configureLogging, VERSION };
