/**
 * The jailed monitor's configuration as one document: what the outer step
 * resolved (the guest's real paths, the CPU template, the descriptors it
 * opened for KVM and each disk), the sandbox options and the log level.
 * It crosses `execve` as one option, so no setting is written out twice.
 *
 * @module
 */

import type { Level } from "../log.ts";
import { VoltError } from "../errors.ts";
import type { SandboxOptions } from "../sandbox/monitor.ts";
import type { VmConfig } from "../vmm/config.ts";
import type { DiskConfig, NetConfig, VsockConfig } from "../vmm/device_manager.ts";
import { badInterfaceName, parseMac } from "../vmm/tap.ts";

/** The option that carries the plan. */
export const PLAN_OPTION = "monitor-plan";

/** Everything the jailed monitor runs with. */
export interface MonitorPlan {
  config: VmConfig;
  sandbox: SandboxOptions;
  logLevel: Level;
  /** `--metrics-json` (the outer step opens it; the monitor gets the descriptor). */
  metricsJson?: string;
  /** Firecracker's `metrics.metrics_path`, and the descriptor the outer step opened for it. */
  metricsLog?: { path: string; fd?: number };
  /** A restore (`--restore`, `PUT /snapshot/load`): `config.kernel` is the state file. */
  restore?: { memFd: number; paused: boolean };
  /** `--snapshot-dir`: the one directory the jailed monitor may write snapshots to. */
  snapshotDir?: string;
  /**
   * A monitor of a warm pool (`volt pool`): it builds its VM, reports ready
   * on stdout (a pipe to the pool), and starts the VM for the first client
   * that connects to `listenFd`.
   */
  pool?: { listenFd: number };
  /** The API socket (`--api-sock`), listening, and what the monitor serves on it. */
  api?: {
    fd: number;
    path: string;
    id: string;
    /** The Firecracker document the VM was started from (`GET /vm/config`). */
    document: Record<string, unknown>;
  };
}

/**
 * Encodes a plan for the command line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodePlan, encodePlan } from "./plan.ts";
 * const plan = {
 *   config: { kernel: "/k" },
 *   sandbox: { seccomp: true, landlock: true, require: false, seccompLog: false, landlockRequired: true },
 *   logLevel: "info" as const,
 * };
 * assert.deepEqual(decodePlan(encodePlan(plan)), plan);
 * ```
 */
export function encodePlan(plan: MonitorPlan): string {
  const bytes = new TextEncoder().encode(JSON.stringify(plan));
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Decodes {@linkcode encodePlan}'s output; a damaged value is a usage error. */
export function decodePlan(text: string): MonitorPlan {
  try {
    const bin = atob(text);
    const p = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    const s = p?.sandbox;
    if (
      typeof p?.config?.kernel === "string" && typeof p.logLevel === "string" &&
      ["seccomp", "landlock", "require", "seccompLog", "landlockRequired"].every((k) =>
        typeof s?.[k] === "boolean"
      )
    ) return p as MonitorPlan;
  } catch { /* fall through */ }
  throw new VoltError(`--${PLAN_OPTION} is internal to volt and this value is damaged`, "usage");
}

/**
 * Parses `--disk PATH[,rw|,ro][,id=NAME]` (a comma in the path is written
 * `,,`, as QEMU does).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDisk } from "./plan.ts";
 * assert.deepEqual(parseDisk("a,,b.img,rw,id=data"), { path: "a,b.img", readOnly: false, id: "data" });
 * ```
 */
export function parseDisk(spec: string): DiskConfig {
  const parts = spec.replaceAll(",,", "\0").split(",").map((p) => p.replaceAll("\0", ","));
  const [path, ...opts] = parts;
  if (!path) throw new VoltError(`--disk needs a path first: "${spec}"`, "usage");
  const disk: DiskConfig = { path, readOnly: true };
  for (const o of opts) {
    if (o === "rw") disk.readOnly = false;
    else if (o === "ro") disk.readOnly = true;
    else if (o.startsWith("id=") && o.length > 3) disk.id = o.slice(3);
    else {
      throw new VoltError(`Unknown --disk option "${o}" (rw, ro or id=NAME)`, "usage");
    }
  }
  return disk;
}

/**
 * Parses `--net tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,id=NAME]`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseNet } from "./plan.ts";
 * assert.deepEqual(parseNet("tap=tap0,mac=06:00:ac:10:00:02"), { tap: "tap0", mac: "06:00:ac:10:00:02" });
 * ```
 */
export function parseNet(spec: string): NetConfig {
  const net: Partial<NetConfig> = {};
  for (const o of spec.split(",")) {
    const eq = o.indexOf("=");
    const key = eq < 0 ? o : o.slice(0, eq), value = eq < 0 ? "" : o.slice(eq + 1);
    if (key === "tap") net.tap = value;
    else if (key === "mac") net.mac = value;
    else if (key === "id" && value) net.id = value;
    else throw new VoltError(`Unknown --net option "${o}" (tap=NAME, mac=MAC or id=NAME)`, "usage");
  }
  if (net.tap === undefined) throw new VoltError(`--net needs tap=NAME: "${spec}"`, "usage");
  const bad = badInterfaceName(net.tap);
  if (bad) throw new VoltError(`--net: ${bad}`, "usage");
  if (net.mac !== undefined) parseMac(net.mac);
  return net as NetConfig;
}

/**
 * Parses `--vsock cid=N,uds=PATH` (a comma in the path is written `,,`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseVsock } from "./plan.ts";
 * assert.deepEqual(parseVsock("cid=3,uds=/tmp/v.sock"), { cid: 3, uds: "/tmp/v.sock" });
 * ```
 */
export function parseVsock(spec: string): VsockConfig {
  const v: Partial<VsockConfig> = {};
  const parts = spec.replaceAll(",,", "\0").split(",").map((p) => p.replaceAll("\0", ","));
  for (const o of parts) {
    const eq = o.indexOf("=");
    const key = eq < 0 ? o : o.slice(0, eq), value = eq < 0 ? "" : o.slice(eq + 1);
    if (key === "cid" && /^\d{1,10}$/.test(value)) v.cid = Number(value);
    else if (key === "uds" && value) v.uds = value;
    else throw new VoltError(`Unknown --vsock option "${o}" (cid=N and uds=PATH)`, "usage");
  }
  if (v.cid === undefined || v.uds === undefined) {
    throw new VoltError(`--vsock needs cid=N and uds=PATH: "${spec}"`, "usage");
  }
  return v as VsockConfig;
}
