/**
 * Which figure of the boot benchmark runs where, for each of the three
 * kinds of host (DESIGN.md §5): everything natively on hardware KVM,
 * everything in the nested-KVM helper VM without /dev/kvm, and on PVM the
 * monitor-side figures natively (the monitor runs at native speed there)
 * but the boots to userspace and to panic in the helper VM (guest
 * userspace cannot run on PVM).
 *
 * @module
 */

import { TEMPLATES } from "../../src/arch/x86_64/cpuid.ts";
import { buildCmdline } from "../../src/boot/cmdline.ts";

import type { HostKind } from "../../src/vmm/host.ts";

export type { HostKind };

/** Where a figure is measured. */
export type Place = "native" | "pvm-host" | "helper-vm";

/**
 * The benchmark's figures, in groups that are measured together:
 * `boot` is the cold boots to userspace and to panic, with the guest boot
 * time and Volt's phases; `vmm-init` is spawn → first KVM_RUN (traced and
 * wall); `security` the sandbox layers' cost on VMM init; `memory` the
 * overhead at three guest sizes; `pio` the exit rate against a C loop;
 * `size` the program sizes.
 */
export const FIGURES = ["boot", "vmm-init", "security", "memory", "pio", "size"] as const;

/** One group of figures. */
export type Figure = typeof FIGURES[number];

/**
 * Where each figure runs on a host of `kind`.
 *
 * @example
 * ```ts
 * import { benchPlan } from "./plan.ts";
 * benchPlan("pvm").boot; // "helper-vm"
 * benchPlan("pvm").memory; // "pvm-host"
 * ```
 */
export function benchPlan(kind: HostKind): Record<Figure, Place> {
  const plan = {} as Record<Figure, Place>;
  for (const f of FIGURES) {
    if (kind === "hardware") plan[f] = "native";
    else if (kind === "none") plan[f] = "helper-vm";
    // Guest userspace cannot run on PVM; everything else is the monitor's
    // own work (or PVM's exit path), which runs at native speed there.
    else plan[f] = f === "boot" ? "helper-vm" : "pvm-host";
  }
  return plan;
}

/**
 * The figures of `wanted` measured on this host and those run inside the
 * helper VM, by `plan`.
 *
 * @example
 * ```ts
 * import { benchPlan, FIGURES, splitPlan } from "./plan.ts";
 * splitPlan(benchPlan("pvm"), FIGURES).helper; // ["boot"]
 * ```
 */
export function splitPlan(
  plan: Record<Figure, Place>,
  wanted: readonly Figure[],
): { here: Figure[]; helper: Figure[] } {
  return {
    here: wanted.filter((f) => plan[f] !== "helper-vm"),
    helper: wanted.filter((f) => plan[f] === "helper-vm"),
  };
}

/**
 * Parses a comma-separated list of figure groups (the `--figures` option).
 *
 * @example
 * ```ts
 * import { parseFigures } from "./plan.ts";
 * parseFigures("boot,memory"); // ["boot", "memory"]
 * ```
 */
export function parseFigures(list: string): Figure[] {
  const out: Figure[] = [];
  for (const name of list.split(",").map((s) => s.trim()).filter((s) => s)) {
    if (!(FIGURES as readonly string[]).includes(name)) {
      throw new Error(`Unknown figure group: ${name} (one of ${FIGURES.join(", ")})`);
    }
    if (!out.includes(name as Figure)) out.push(name as Figure);
  }
  if (!out.length) throw new Error("No figure group given");
  return out;
}

/**
 * A place as the report's "ran on" column shows it.
 *
 * @example
 * ```ts
 * import { placeLabel } from "./plan.ts";
 * placeLabel("helper-vm"); // "helper VM (TCG)"
 * ```
 */
export function placeLabel(place: Place): string {
  return { native: "native", "pvm-host": "PVM host", "helper-vm": "helper VM (TCG)" }[place];
}

/**
 * Where a process measuring on a host of `kind` is, `nested` when it is the
 * helper VM's part.
 *
 * @example
 * ```ts
 * import { placeOf } from "./plan.ts";
 * placeOf("hardware", true); // "helper-vm"
 * ```
 */
export function placeOf(kind: HostKind, nested: boolean): Place {
  if (nested) return "helper-vm";
  return kind === "pvm" ? "pvm-host" : "native";
}

/**
 * The guest command line as Volt builds it on a host of `kind`: the
 * defaults, the PVM masks the monitor adds under its `pvm` CPU template (auto
 * on PVM), then `append`. QEMU gets this line so both guests see the same.
 *
 * @example
 * ```ts
 * import { guestCmdline } from "./plan.ts";
 * guestCmdline("hardware", "volt.exit"); // DEFAULT_CMDLINE + " volt.exit"
 * ```
 */
export function guestCmdline(kind: HostKind, append?: string): string {
  return buildCmdline({ append, extra: kind === "pvm" ? TEMPLATES.pvm.cmdline : [] });
}
