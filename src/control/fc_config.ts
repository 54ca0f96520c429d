/**
 * Firecracker's JSON configuration (`--config-file`, and the bodies of the
 * API's pre-boot requests), checked by one valibot schema and mapped onto
 * Volt's own {@linkcode VmConfig}. valibot, because its schemas are plain
 * functions in one small module with no dependency (the monitor loads it at
 * every start), `strictObject` refuses keys a schema does not name, and the
 * TypeScript types come from the same definition as the checks.
 *
 * A field Firecracker has and Volt does not (yet) is refused by name, never
 * ignored; Volt's own settings live under the `volt` key.
 *
 * @module
 */

import * as v from "valibot";
import { VoltError } from "../errors.ts";
import type { Level } from "../log.ts";
import type { VmConfig } from "../vmm/config.ts";
import type { DiskConfig, NetConfig, VsockConfig } from "../vmm/device_manager.ts";
import { MAX_CPUS } from "../vmm/config.ts";

/** A setting Volt refuses: it may be absent or null, nothing else. */
const unsupported = v.optional(v.null("is not supported by Volt yet"));
/** A setting that may only keep Firecracker's default. */
const onlyDefault = <T extends string | boolean>(value: T) =>
  v.optional(v.literal(value, `is supported by Volt only as ${JSON.stringify(value)}`));

/** Firecracker's `boot-source`. */
export const BootSource = v.strictObject({
  kernel_image_path: v.pipe(v.string(), v.minLength(1, "needs a path")),
  boot_args: v.nullish(v.string()),
  initrd_path: v.nullish(v.pipe(v.string(), v.minLength(1, "needs a path"))),
});

/** Firecracker's drive (`drives[]`, `PUT /drives/{id}`). */
export const Drive = v.strictObject({
  drive_id: v.pipe(v.string(), v.minLength(1, "needs a name")),
  path_on_host: v.pipe(v.string(), v.minLength(1, "needs a path")),
  is_root_device: v.boolean(),
  // Absent means read-only: Volt opens a disk writable only when asked.
  is_read_only: v.nullish(v.boolean()),
  partuuid: unsupported,
  cache_type: v.optional(v.picklist(["Unsafe", "Writeback"])),
  io_engine: onlyDefault("Sync"),
  rate_limiter: unsupported,
  socket: unsupported,
});

/** Firecracker's `machine-config`. */
export const MachineConfig = v.strictObject({
  vcpu_count: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_CPUS)),
  mem_size_mib: v.pipe(v.number(), v.integer(), v.minValue(8), v.maxValue(256 * 1024)),
  smt: onlyDefault(false),
  track_dirty_pages: v.optional(v.boolean()),
  huge_pages: onlyDefault("None"),
  cpu_template: v.nullish(v.literal("None", 'is supported by Volt only as "None"')),
});

/** Firecracker's network interface (`network-interfaces[]`, `PUT /network-interfaces/{id}`). */
export const NetworkInterface = v.strictObject({
  iface_id: v.pipe(v.string(), v.minLength(1, "needs a name")),
  host_dev_name: v.pipe(v.string(), v.minLength(1, "needs a TAP name")),
  guest_mac: v.nullish(v.string()),
  rx_rate_limiter: unsupported,
  tx_rate_limiter: unsupported,
});

/** Firecracker's `vsock`. */
export const Vsock = v.strictObject({
  guest_cid: v.pipe(v.number(), v.integer(), v.minValue(3), v.maxValue(0xfffffffe)),
  uds_path: v.pipe(v.string(), v.minLength(1, "needs a path")),
  // Deprecated in Firecracker and without meaning: there is one vsock device.
  vsock_id: v.nullish(v.string()),
});

/** Firecracker's log levels, by Volt's name. */
const FC_LEVELS = {
  Error: "error",
  Warning: "warning",
  Warn: "warning",
  Info: "info",
  Debug: "debug",
  Trace: "trace",
  Off: "off",
} as const satisfies Record<string, Level>;

/** Firecracker's `logger`: Volt logs to its stderr, at the level asked. */
export const Logger = v.strictObject({
  level: v.optional(v.picklist(Object.keys(FC_LEVELS) as (keyof typeof FC_LEVELS)[])),
  log_path: unsupported,
  show_level: v.optional(v.boolean()),
  show_log_origin: v.optional(v.boolean()),
  module: unsupported,
});

/** Firecracker's `metrics`: where the JSON lines go. */
export const Metrics = v.strictObject({
  metrics_path: v.pipe(v.string(), v.minLength(1, "needs a path")),
});

/** Firecracker's `entropy`. */
export const Entropy = v.strictObject({ rate_limiter: unsupported });

/** Volt's own settings, under `volt`. */
export const VoltSettings = v.strictObject({
  /** Appended to the command line (`--append`). */
  append: v.optional(v.string()),
  /** `auto`, `none` or `pvm` (`--cpu-template`). */
  cpu_template: v.optional(v.string()),
  /** `auto`, `pvh` or `linux64` (`--boot`). */
  boot_protocol: v.optional(v.picklist(["auto", "pvh", "linux64"])),
  /** `auto`, `safe` or `raw` (`--console-mode`). */
  console_mode: v.optional(v.picklist(["auto", "safe", "raw"])),
});

/** A whole Firecracker configuration file. */
export const FirecrackerConfig = v.strictObject({
  "boot-source": BootSource,
  drives: v.optional(v.array(Drive)),
  "machine-config": v.optional(MachineConfig),
  "network-interfaces": v.optional(v.array(NetworkInterface)),
  vsock: v.nullish(Vsock),
  logger: v.nullish(Logger),
  metrics: v.nullish(Metrics),
  entropy: v.nullish(Entropy),
  balloon: unsupported,
  "mmds-config": unsupported,
  "cpu-config": unsupported,
  volt: v.optional(VoltSettings),
});

/** The parsed file's type, from the schema. */
export type FirecrackerConfig = v.InferOutput<typeof FirecrackerConfig>;

/** What a configuration file sets: the VM, and the log level if it names one. */
export interface FileConfig {
  /** The VM, as Volt's own configuration. */
  config: VmConfig;
  /** The `logger` section's level, if it names one. */
  logLevel?: Level;
  /** The `metrics` section's path: Firecracker-style JSON lines go there. */
  metricsPath?: string;
  /** The document as given (`GET /vm/config` answers with it). */
  document: Record<string, unknown>;
}

/**
 * One line for the first problem valibot found: where (`drives[0].path_on_host`)
 * and what was expected.
 */
export function describeIssue(issue: v.BaseIssue<unknown>): string {
  let where = "";
  for (const p of issue.path ?? []) {
    const key = (p as { key: unknown }).key;
    where += typeof key === "number" ? `[${key}]` : `${where ? "." : ""}${String(key)}`;
  }
  const at = where || "the document";
  if (issue.type === "strict_object" && issue.expected === "never") {
    return `${at} is not a setting Volt knows`;
  }
  if (issue.message.startsWith("is ") || issue.message.startsWith("needs ")) {
    return `${at} ${issue.message}`;
  }
  const expected = issue.expected ?? issue.type;
  if (issue.received === "undefined") return `${at} is missing`;
  return `${at}: expected ${expected}, got ${issue.received}`;
}

/** Validates `data` against `schema`; the first problem is a usage error naming the field. */
export function check<S extends v.GenericSchema>(
  schema: S,
  data: unknown,
  what: string,
): v.InferOutput<S> {
  const r = v.safeParse(schema, data, { abortEarly: true });
  if (r.success) return r.output;
  throw new VoltError(`${what}: ${describeIssue(r.issues[0])}`, "usage");
}

/** A Firecracker drive as Volt's disk. */
export function diskOf(d: v.InferOutput<typeof Drive>): DiskConfig {
  return {
    path: d.path_on_host,
    readOnly: d.is_read_only ?? true,
    id: d.drive_id,
    root: d.is_root_device,
  };
}

/** A Firecracker network interface as Volt's. */
export function netOf(n: v.InferOutput<typeof NetworkInterface>): NetConfig {
  return { tap: n.host_dev_name, id: n.iface_id, ...(n.guest_mac ? { mac: n.guest_mac } : {}) };
}

/** Firecracker's vsock as Volt's. */
export function vsockOf(s: v.InferOutput<typeof Vsock>): VsockConfig {
  return { cid: s.guest_cid, uds: s.uds_path };
}

/** A Firecracker log level as Volt's. */
export function levelOf(l: v.InferOutput<typeof Logger>): Level | undefined {
  return l.level === undefined ? undefined : FC_LEVELS[l.level];
}

/** Each id once: Firecracker's ids name devices, and a second one would shadow the first. */
function uniqueIds(ids: string[], what: string): void {
  const seen = new Set<string>();
  for (const id of ids) {
    if (seen.has(id)) throw new VoltError(`${what}: "${id}" is given twice`, "usage");
    seen.add(id);
  }
}

/**
 * Maps a parsed configuration onto Volt's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fromFirecracker } from "./fc_config.ts";
 * const { config } = fromFirecracker({
 *   "boot-source": { kernel_image_path: "vmlinux", boot_args: "console=ttyS0" },
 *   "machine-config": { vcpu_count: 2, mem_size_mib: 256 },
 * });
 * assert.deepEqual([config.kernel, config.cmdline, config.cpus, config.memory], [
 *   "vmlinux", "console=ttyS0", 2, 256 * 2 ** 20,
 * ]);
 * ```
 */
export function fromFirecracker(data: unknown, what = "Config"): FileConfig {
  const fc = check(FirecrackerConfig, data, what);
  const drives = fc.drives ?? [];
  uniqueIds(drives.map((d) => d.drive_id), `${what}: drive_id`);
  const nets = fc["network-interfaces"] ?? [];
  uniqueIds(nets.map((n) => n.iface_id), `${what}: iface_id`);
  const boot = fc["boot-source"];
  const machine = fc["machine-config"];
  const volt = fc.volt ?? {};
  const config: VmConfig = {
    kernel: boot.kernel_image_path,
    ...(boot.initrd_path ? { initrd: boot.initrd_path } : {}),
    ...(boot.boot_args != null ? { cmdline: boot.boot_args } : {}),
    ...(volt.append !== undefined ? { append: volt.append } : {}),
    ...(machine ? { cpus: machine.vcpu_count, memory: machine.mem_size_mib * 2 ** 20 } : {}),
    ...(machine?.track_dirty_pages ? { trackDirtyPages: true } : {}),
    ...(volt.cpu_template !== undefined ? { cpuTemplate: volt.cpu_template } : {}),
    ...(volt.boot_protocol !== undefined ? { bootProtocol: volt.boot_protocol } : {}),
    ...(volt.console_mode !== undefined ? { consoleMode: volt.console_mode } : {}),
    disks: drives.map(diskOf),
    nets: nets.map(netOf),
    ...(fc.vsock ? { vsock: vsockOf(fc.vsock) } : {}),
    ...(fc.entropy ? { entropy: true } : {}),
  };
  const logLevel = fc.logger ? levelOf(fc.logger) : undefined;
  return {
    config,
    document: data as Record<string, unknown>,
    ...(logLevel === undefined ? {} : { logLevel }),
    ...(fc.metrics ? { metricsPath: fc.metrics.metrics_path } : {}),
  };
}

/** Most bytes of a configuration file: far more than any real one, and still bounded. */
export const CONFIG_FILE_MAX = 1 << 20;

/**
 * Reads and maps a configuration file; a missing, oversized, non-JSON or
 * invalid file is one line naming it.
 */
export function readConfigFile(path: string): FileConfig {
  let bytes: Uint8Array;
  try {
    const info = Deno.statSync(path);
    if (!info.isFile) throw new VoltError(`Config file is not a file: ${path}`, "usage");
    if (info.size > CONFIG_FILE_MAX) {
      throw new VoltError(
        `Config file is larger than ${CONFIG_FILE_MAX >> 20} MiB: ${path}`,
        "input",
      );
    }
    bytes = Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof VoltError) throw e;
    throw new VoltError(`Config file not found: ${path}`, "noinput");
  }
  let data: unknown;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new VoltError(
      `Config file ${path} is not JSON: ${(e as Error).message.split("\n")[0]}`,
      "input",
    );
  }
  return fromFirecracker(data, `Config file ${path}`);
}
