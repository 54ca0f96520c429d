/**
 * `volt cpuid`: the CPUID table a guest would see on this host.
 *
 * @module
 */

import { formatCpuid, vcpuCpuid } from "../arch/x86_64/cpuid.ts";
import { EXIT_CODE } from "../errors.ts";
import { selectTemplate } from "../vmm/builder.ts";
import { Kvm } from "../vmm/kvm.ts";
import { parse, parseCount } from "./options.ts";

/**
 * Prints the table for vCPU `--cpu` (default 0) of a `--cpus`-vCPU VM.
 *
 * @example
 * ```ts ignore
 * import { cpuidCommand } from "./cpuid_cmd.ts";
 * cpuidCommand(["--cpus", "2"]);
 * ```
 */
export function cpuidCommand(args: string[]): number {
  const { values: v } = parse(args, {
    cpus: { type: "string" },
    cpu: { type: "string" },
    "cpu-template": { type: "string" },
    json: { type: "boolean" },
  });
  const cpus = parseCount(v.cpus, "--cpus") ?? 1;
  const cpu = parseCount(v.cpu, "--cpu") ?? 0;
  const template = selectTemplate(v["cpu-template"] ?? "auto");
  const kvm = Kvm.open();
  const table = vcpuCpuid(kvm.supportedCpuid(), { cpu, cpus, template });
  kvm.close();
  if (v.json) {
    console.log(JSON.stringify({
      template: template.name,
      cmdline: template.cmdline,
      entries: table.map((e) => ({
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
      })),
    }));
    return EXIT_CODE.ok;
  }
  console.log(`CPU template: ${template.name} (${template.description})`);
  console.log(formatCpuid(table));
  // On PVM the guest's cpuid reads the host's CPU, not this table: the
  // kernel command line is what hides features there.
  console.log(
    template.cmdline.length
      ? `Kernel command line added (hides from the guest kernel what the table cannot): ${
        template.cmdline.join(" ")
      }`
      : "Kernel command line added: nothing",
  );
  return EXIT_CODE.ok;
}
