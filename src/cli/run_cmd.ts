/**
 * `volt run`: boot a microVM and wait for it.
 *
 * It runs in two steps: the outer process resolves the guest (building or
 * fetching it on first use), checks the inputs, jails itself and executes
 * the jailed monitor, which boots the VM under every sandbox layer
 * (src/sandbox/monitor.ts).
 *
 * @module
 */

import { bindAllLibc, libc, O_RDONLY, O_RDWR, openInheritable } from "../../ffi/libc.ts";
import { EXIT_CODE, VoltError } from "../errors.ts";
import { configureLogging, logger } from "../log.ts";
import type { BootProtocol } from "../boot/loader.ts";
import { vmExit } from "../vmm/exit_reason.ts";
import { Machine } from "../vmm/machine.ts";
import { resolveConfig, type VmConfig } from "../vmm/config.ts";
import { openImages, selectTemplate } from "../vmm/builder.ts";
import { BootTrace } from "../vmm/trace.ts";
import { bootMetrics, openMetricsFile, writeMetrics } from "../vmm/metrics.ts";
import { enterJail } from "../sandbox/jail.ts";
import { dumpable, makeUndumpable } from "../sandbox/process.ts";
import { pathExists } from "../sandbox/landlock.ts";
import {
  decodeJailState,
  encodeJailState,
  JAIL_STATE_OPTION,
  type JailState,
  planJail,
  programLocation,
  rootNeedsLandlock,
  rootWithoutLandlock,
  type SandboxFacts,
  type SandboxOptions,
  sandboxSummary,
  seccompMode,
  verifyJailed,
} from "../sandbox/monitor.ts";
import {
  buildFilter,
  encodeFilter,
  installFilter,
  MONITOR_POLICY,
  type Policy,
  VCPU_POLICY,
} from "../sandbox/seccomp.ts";
import type { VcpuFilter } from "../vmm/worker_protocol.ts";
import { SECCOMP_MODE_FILTER } from "../../ffi/seccomp.ts";
import { resolveGuest, resolveRootfs } from "./guest_cmd.ts";
import { parse, parseCount, parseLevel, VERSION } from "./options.ts";
import {
  decodePlan,
  encodePlan,
  type MonitorPlan,
  parseDisk,
  parseNet,
  parseVsock,
  PLAN_OPTION,
} from "./plan.ts";
import { openTap } from "../vmm/tap.ts";
import { listenVsock } from "../vmm/vsock_listen.ts";
import { resolvePath as resolve } from "./paths.ts";
import { type FileConfig, fromFirecracker, readConfigFile } from "../control/fc_config.ts";
import { ApiRoutes, type FcDocument, loadMemoryPath } from "../control/api.ts";
import { readSnapshot } from "../vmm/snapshot.ts";
import { UnixHttpServer } from "../control/http.ts";
import { listenUnix } from "../vmm/vsock_listen.ts";
import { MetricsLog, openMetricsLog } from "../vmm/metrics_log.ts";
import type { DiskConfig } from "../vmm/device_manager.ts";
import {
  acceptStart,
  adoptClientFds,
  clientGone,
  type PoolClient,
  type PoolResult,
  readLine,
  requestStart,
  sendLine,
} from "../control/pool.ts";
import { FIRST_RUN_PHASE } from "../vmm/trace.ts";

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
  "no-seccomp": { type: "boolean" },
  "no-landlock": { type: "boolean" },
  "require-sandbox": { type: "boolean" },
  "seccomp-log": { type: "boolean" },
  "allow-root-without-landlock": { type: "boolean" },
  "metrics-json": { type: "string" },
  "console-mode": { type: "string" },
  disk: { type: "string", multiple: true },
  rootfs: { type: "string" },
  entropy: { type: "boolean" },
  net: { type: "string", multiple: true },
  vsock: { type: "string" },
  "config-file": { type: "string" },
  "no-api": { type: "boolean" },
  "api-sock": { type: "string" },
  id: { type: "string" },
  restore: { type: "string" },
  "mem-file": { type: "string" },
  paused: { type: "boolean" },
  "vsock-uds": { type: "string" },
  "net-tap": { type: "string", multiple: true },
  "snapshot-dir": { type: "string" },
  "track-dirty-pages": { type: "boolean" },
  // A VM of the warm pool at PATH (`volt pool`): the pool's flags describe it.
  pool: { type: "string" },
  // Internal: a monitor of `volt pool`, whose stdin is the pool's listening socket.
  "pool-member": { type: "boolean" },
  // Internal: the KVM descriptor the outer step opened for the jailed monitor.
  "kvm-fd": { type: "string" },
  // Internal: the whole configuration, as one document, for the jailed monitor.
  [PLAN_OPTION]: { type: "string" },
  // `./volt run` decides where to boot; the monitor itself always boots here.
  native: { type: "boolean" },
  [JAIL_STATE_OPTION]: { type: "string" },
} as const;

type Values = ReturnType<typeof parse<typeof OPTIONS>>["values"];

/** The sandbox layers `v` asks for; contradictions are usage errors. */
export function sandboxOptions(v: Partial<Values>): SandboxOptions {
  const opts: SandboxOptions = {
    seccomp: !v["no-seccomp"],
    landlock: !v["no-landlock"],
    require: !!v["require-sandbox"],
    seccompLog: !!v["seccomp-log"],
    // libc's, not Deno.uid(): the jailed monitor has no --allow-sys.
    landlockRequired: rootNeedsLandlock(libc().getuid(), !!v["allow-root-without-landlock"]),
  };
  if (opts.require) {
    const off = ["no-seccomp", "no-landlock", "seccomp-log"].find((k) => v[k as keyof Values]);
    if (off) throw new VoltError(`--require-sandbox conflicts with --${off}`, "usage");
  }
  if (opts.seccompLog && !opts.seccomp) {
    throw new VoltError("--seccomp-log conflicts with --no-seccomp", "usage");
  }
  if (opts.landlockRequired && !opts.landlock) {
    throw new VoltError(rootWithoutLandlock("--no-landlock"), "usage");
  }
  return opts;
}

/**
 * Boots the VM described by `args` and returns the exit code. Without
 * the hidden jail state this is the outer step, which returns only by
 * throwing: it becomes the jailed monitor.
 *
 * @example
 * ```ts ignore
 * import { runCommand } from "./run_cmd.ts";
 * await runCommand(["--kernel", "vmlinux", "--memory", "128M"]);
 * ```
 */
export async function runCommand(args: string[]): Promise<number> {
  const { values: v } = parse(bareRootfs(args), OPTIONS);
  const planText = v[PLAN_OPTION];
  if (planText !== undefined) {
    // The jailed monitor: everything comes in the plan; flags would be a second source.
    const own = Object.keys(v).filter((k) => k !== PLAN_OPTION && k !== JAIL_STATE_OPTION);
    if (own.length) {
      throw new VoltError(
        `--${PLAN_OPTION} is internal to volt and takes no other option`,
        "usage",
      );
    }
    const plan = decodePlan(planText);
    configureLogging(parseLevel(plan.logLevel));
    resolveConfig(plan.config);
    const state = v[JAIL_STATE_OPTION];
    if (state === undefined) {
      throw new VoltError(
        `--${PLAN_OPTION} is internal to volt and needs --${JAIL_STATE_OPTION}`,
        "usage",
      );
    }
    return await boot(plan.config, decodeJailState(state), plan.sandbox, plan);
  }
  if (v.pool !== undefined) return poolClientRun(v);
  if (v["pool-member"]) checkPoolMember(v);
  if (v["api-sock"] !== undefined && v["no-api"]) {
    throw new VoltError("--api-sock conflicts with --no-api", "usage");
  }
  if (v.id !== undefined && v["api-sock"] === undefined) {
    throw new VoltError("--id names the instance the API serves: it needs --api-sock", "usage");
  }
  if (v["mem-file"] !== undefined && v.restore === undefined) {
    throw new VoltError("--mem-file is the memory of a snapshot: it needs --restore", "usage");
  }
  for (const k of ["paused", "vsock-uds", "net-tap"] as const) {
    if (v[k] !== undefined && v.restore === undefined) {
      throw new VoltError(`--${k} is for a restored VM: it needs --restore`, "usage");
    }
  }
  if (v.restore !== undefined) return restoreRun(v);
  if (v["api-sock"] !== undefined && v["config-file"] === undefined) return await apiRun(v);
  const file = v["config-file"] === undefined ? undefined : configFromFile(v);
  const level = parseLevel(v["log-level"] ?? file?.logLevel);
  configureLogging(level);
  const sandbox = sandboxOptions(v);
  const config: VmConfig = file ? { ...file.config, ...ioOptions(v) } : {
    kernel: v.kernel ?? "default",
    initrd: v.initrd,
    cmdline: v.cmdline,
    append: v.append,
    memory: v.memory,
    cpus: parseCount(v.cpus, "--cpus"),
    bootProtocol: v.boot as BootProtocol | undefined,
    cpuTemplate: v["cpu-template"],
    console: "stdout",
    consoleMode: v["console-mode"] as VmConfig["consoleMode"],
    stdin: true,
    kvmDevice: v.kvm,
    kvmFd: parseCount(v["kvm-fd"], "--kvm-fd"),
    disks: [
      ...(v.rootfs === undefined ? [] : [{ ...parseDisk(v.rootfs), root: true }]),
      ...(v.disk ?? []).map(parseDisk),
    ],
    entropy: v.entropy,
    nets: (v.net ?? []).map(parseNet),
    vsock: v.vsock === undefined ? undefined : parseVsock(v.vsock),
    trackDirtyPages: v["track-dirty-pages"],
  };
  if (v["no-api"] && !file) throw new VoltError("--no-api needs --config-file", "usage");
  // Flags are checked before a default guest is built or fetched.
  const cfg = resolveConfig(config);
  const template = selectTemplate(config.cpuTemplate ?? "auto");
  const state = v[JAIL_STATE_OPTION];
  const plan: MonitorPlan = {
    config: { ...config, cpuTemplate: template.name },
    sandbox,
    logLevel: level,
    metricsJson: v["metrics-json"],
    ...(file?.metricsPath ? { metricsLog: { path: file.metricsPath } } : {}),
    ...snapshotDir(v),
    ...(v["pool-member"] ? { pool: { listenFd: 0 } } : {}),
  };
  if (state === undefined) {
    const api = v["api-sock"] === undefined ? undefined : apiSocket(v, file!.document);
    return (await prepareJail(plan, cfg, api))();
  }
  return await boot(plan.config, decodeJailState(state), sandbox);
}

/** The listening API socket and what the monitor serves on it. */
function apiSocket(v: Values, document: FcDocument): NonNullable<MonitorPlan["api"]> {
  const path = resolve(v["api-sock"]!);
  const fd = listenUnix(path, { inheritable: true, what: "API socket" });
  return { fd, path, id: v.id ?? "anonymous-instance", document };
}

/**
 * `volt run --api-sock PATH` without a config file: serves Firecracker's
 * API here, outside the jail, until `InstanceStart`; then opens what the
 * document names, jails itself and becomes the monitor, which goes on
 * serving the same socket.
 */
async function apiRun(v: Values): Promise<number> {
  const twice = VM_FLAGS.find((k) => v[k] !== undefined);
  if (twice) {
    throw new VoltError(
      `--${twice} conflicts with --api-sock: the API describes the VM (or give --config-file)`,
      "usage",
    );
  }
  const cliLevel = parseLevel(v["log-level"]);
  configureLogging(cliLevel);
  const sandbox = sandboxOptions(v);
  const api = apiSocket(v, {});
  let enter: (() => never) | undefined;
  const routes = new ApiRoutes({
    id: api.id,
    version: VERSION,
    state: () => (enter ? "Running" : "Not started"),
    start: async (doc) => {
      const file = fromFirecracker(doc, "InstanceStart");
      const config: VmConfig = { ...file.config, ...ioOptions(v) };
      const cfg = resolveConfig(config);
      const template = selectTemplate(config.cpuTemplate ?? "auto");
      const level = file.logLevel ?? cliLevel;
      const plan: MonitorPlan = {
        config: { ...config, cpuTemplate: template.name },
        sandbox,
        logLevel: level,
        metricsJson: v["metrics-json"],
        ...(file.metricsPath ? { metricsLog: { path: file.metricsPath } } : {}),
        ...snapshotDir(v),
      };
      enter = await prepareJail(plan, cfg, { ...api, document: doc });
    },
    loadSnapshot: (req) => {
      const plan: MonitorPlan = {
        config: { kernel: req.snapshot_path, ...ioOptions(v) },
        sandbox,
        logLevel: cliLevel,
        metricsJson: v["metrics-json"],
        ...snapshotDir(v),
      };
      enter = prepareRestore(plan, {
        snapshotPath: req.snapshot_path,
        memFilePath: loadMemoryPath(req),
        paused: !req.resume_vm,
        vsockUds: req.vsock_override?.uds_path,
        taps: Object.fromEntries(
          (req.network_overrides ?? []).map((o) => [o.iface_id, o.host_dev_name]),
        ),
        trackDirtyPages: req.enable_diff_snapshots || req.track_dirty_pages,
      }, { ...api, document: {} });
    },
  });
  const server = new UnixHttpServer(api.fd, async (req) => {
    const res = await routes.handle(req);
    if (!enter) return res;
    // Started: the answer goes out, then this process becomes the monitor.
    // Its connections end at the exec; the client is told not to reuse this one.
    server.close();
    return { ...res, close: true };
  });
  logger("api").info("Serving the API on {path}", { path: api.path });
  await server.serve();
  if (!enter) throw new VoltError("The API server stopped before InstanceStart", "internal");
  return enter();
}

/**
 * `volt run --pool PATH`: asks the pool for a VM, hands it this process's
 * stdin, stdout and stderr, and exits with the VM's code.
 */
function poolClientRun(v: Values): number {
  const own = Object.keys(v).filter((k) => k !== "pool" && k !== "log-level");
  if (own.length) {
    throw new VoltError(
      `--${own[0]} conflicts with --pool: the pool's flags describe its VMs`,
      "usage",
    );
  }
  configureLogging(parseLevel(v["log-level"]));
  const conn = requestStart(resolve(v.pool!));
  try {
    const first = readLine(conn, POOL_ANSWER_TIMEOUT_MS);
    if (first === undefined) {
      throw new VoltError("The pool closed the connection without an answer", "internal");
    }
    const answer = poolAnswer(first) as { accepted?: boolean; pid?: number; error?: string };
    if (!answer.accepted) throw new VoltError(`The pool refused: ${answer.error}`, "input");
    logger("pool").debug("Started by the pool's monitor {pid}", { pid: answer.pid });
    const last = readLine(conn);
    if (last === undefined) {
      throw new VoltError(
        `The pool's monitor ${answer.pid} ended without a status (killed?)`,
        "internal",
      );
    }
    const code = (poolAnswer(last) as Partial<PoolResult>).exit_code;
    if (!Number.isInteger(code) || code! < 0 || code! > 255) {
      throw new VoltError(`The pool's monitor sent no exit code: ${last.slice(0, 200)}`, "input");
    }
    return code!;
  } finally {
    libc().close(conn);
  }
}

/** A JSON object line from the pool; anything else is one line of error. */
function poolAnswer(line: string): Record<string, unknown> {
  try {
    const v = JSON.parse(line);
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v;
  } catch { /* below */ }
  throw new VoltError(`The pool answered what is not its protocol: ${line.slice(0, 200)}`, "input");
}

/** How long a client waits for a ready monitor to take it. */
const POOL_ANSWER_TIMEOUT_MS = 30_000;

/** What a monitor of the pool cannot have: each would need its own (a TAP, a socket) or share a write. */
function checkPoolMember(v: Values): void {
  const own = (["net", "vsock", "api-sock", "config-file", "vsock-uds", "net-tap"] as const).find((
    k,
  ) => v[k] !== undefined);
  if (own) {
    throw new VoltError(
      `volt pool: --${own} would be shared by every VM of the pool; give each VM its own with volt run`,
      "usage",
    );
  }
  const rw = [...(v.disk ?? []), ...(v.rootfs === undefined ? [] : [v.rootfs])].find((d) =>
    parseDisk(d).readOnly === false
  );
  if (rw !== undefined) {
    throw new VoltError(
      `volt pool: every VM of the pool would write disk ${rw}; the pool's disks are read-only`,
      "usage",
    );
  }
  if (v.paused) {
    throw new VoltError("volt pool: --paused would keep every VM of the pool paused", "usage");
  }
  if (!isSocket(0)) {
    throw new VoltError(
      "--pool-member is internal to volt pool (stdin is not its socket)",
      "usage",
    );
  }
}

/** Whether descriptor `fd` is a socket. */
function isSocket(fd: number): boolean {
  try {
    return Deno.statSync(`/proc/self/fd/${fd}`).isSocket === true;
  } catch {
    return false;
  }
}

/** `--snapshot-dir`, resolved, as the plan carries it. */
function snapshotDir(v: Values): Pick<MonitorPlan, "snapshotDir"> {
  const dir = v["snapshot-dir"];
  if (dir === undefined) return {};
  let info: Deno.FileInfo | undefined;
  try {
    info = Deno.statSync(dir);
  } catch { /* below */ }
  if (!info?.isDirectory) throw new VoltError(`--snapshot-dir ${dir} is not a directory`, "usage");
  return { snapshotDir: Deno.realPathSync(dir) };
}

/**
 * `volt run --restore SNAPSHOT --mem-file MEMORY [--paused]`: the VM the
 * snapshot describes, restored in a jailed monitor (its disks opened here,
 * as a boot's are); VM flags are refused, the snapshot says all of it.
 */
function restoreRun(v: Values): number {
  // Tracking is this process's choice; everything else about the VM is the snapshot's.
  const twice = [...VM_FLAGS, "config-file"].find((k) =>
    k !== "track-dirty-pages" && v[k as keyof Values] !== undefined
  );
  if (twice) {
    throw new VoltError(
      `--${twice} conflicts with --restore: the snapshot describes the VM`,
      "usage",
    );
  }
  if (v["mem-file"] === undefined) {
    throw new VoltError("--restore needs --mem-file, the snapshot's memory", "usage");
  }
  const level = parseLevel(v["log-level"]);
  configureLogging(level);
  const plan: MonitorPlan = {
    config: { kernel: v.restore!, ...ioOptions(v) },
    sandbox: sandboxOptions(v),
    logLevel: level,
    metricsJson: v["metrics-json"],
    ...snapshotDir(v),
    ...(v["pool-member"] ? { pool: { listenFd: 0 } } : {}),
  };
  const api = v["api-sock"] === undefined ? undefined : apiSocket(v, {});
  const taps = Object.fromEntries((v["net-tap"] ?? []).map((o) => {
    const eq = o.indexOf("=");
    if (eq <= 0 || eq === o.length - 1) {
      throw new VoltError(`--net-tap takes IFACE_ID=TAP, not ${o}`, "usage");
    }
    return [o.slice(0, eq), o.slice(eq + 1)];
  }));
  const restore = {
    snapshotPath: v.restore!,
    memFilePath: v["mem-file"],
    paused: !!v.paused,
    vsockUds: v["vsock-uds"],
    taps,
    trackDirtyPages: v["track-dirty-pages"],
  };
  return prepareRestore(plan, restore, api)();
}

/**
 * The restore's counterpart of {@linkcode prepareJail}: reads and checks
 * the snapshot here (a bad file is one line before any jail), opens its
 * memory file and disks, and returns the step into the jailed monitor.
 */
function prepareRestore(
  plan: MonitorPlan,
  from: {
    snapshotPath: string;
    memFilePath: string;
    paused: boolean;
    /** Another socket for its vsock device (Firecracker's `vsock_override`). */
    vsockUds?: string;
    /** Other TAPs, by interface id (Firecracker's `network_overrides`). */
    taps?: Record<string, string>;
    /** Record written pages from the start, for diff snapshots of the restored VM. */
    trackDirtyPages?: boolean;
  },
  api?: MonitorPlan["api"],
): () => never {
  const trace = new BootTrace();
  trace.mark("runtime up", 0);
  const real = (path: string, what: string) => {
    try {
      return Deno.realPathSync(path);
    } catch {
      throw new VoltError(`${what} not found: ${path}`, "noinput");
    }
  };
  const snapshotPath = real(from.snapshotPath, "Snapshot");
  const snap = readSnapshot(snapshotPath);
  const memPath = real(from.memFilePath, "Memory file");
  const c = snap.config;
  const config: VmConfig = {
    ...plan.config,
    kernel: snapshotPath,
    memory: c.memory,
    cpus: c.cpus,
    cpuTemplate: snap.host.template,
    entropy: c.entropy,
    disks: c.disks.map((d) => ({
      path: d.path,
      readOnly: d.readOnly,
      id: d.id ?? undefined,
      root: d.root,
    })),
    nets: c.nets.map((n) => ({
      tap: (n.id !== null ? from.taps?.[n.id] : undefined) ?? n.tap,
      mac: n.mac,
      id: n.id ?? undefined,
    })),
    vsock: c.vsock ? { cid: c.vsock.cid, uds: from.vsockUds ?? c.vsock.uds } : undefined,
    trackDirtyPages: from.trackDirtyPages,
  };
  if (plan.pool) {
    // Every clone of the pool would share these.
    const shared = c.nets.length
      ? "a network interface (each clone needs its own TAP)"
      : c.vsock
      ? "a vsock device (each clone needs its own socket)"
      : c.disks.some((d) => !d.readOnly)
      ? "a rw disk (every clone would write it)"
      : undefined;
    if (shared) {
      throw new VoltError(
        `volt pool: the snapshot has ${shared}; restore it with volt run`,
        "usage",
      );
    }
  }
  const unknown = Object.keys(from.taps ?? {}).find((id) => !c.nets.some((n) => n.id === id));
  if (unknown !== undefined) {
    throw new VoltError(`The snapshot has no network interface "${unknown}"`, "usage");
  }
  if (from.vsockUds !== undefined && !c.vsock) {
    throw new VoltError("The snapshot has no vsock device to put on another socket", "usage");
  }
  const cfg = resolveConfig(config);
  const opened: number[] = [];
  const track = (fd: number) => (opened.push(fd), fd);
  try {
    const memFd = openInheritable(memPath, O_RDONLY);
    if (memFd < 0) throw new VoltError(`Cannot open memory file ${memPath}`, "noinput");
    track(memFd);
    const restorePlan: MonitorPlan = {
      ...plan,
      config,
      restore: { memFd, paused: from.paused },
    };
    return openForJail(restorePlan, cfg, api, { kernel: snapshotPath, trace }, track);
  } catch (e) {
    for (const fd of opened) libc().close(fd);
    throw e;
  }
}

/**
 * Where `PUT /snapshot/create` may write `path` (relative to the snapshot
 * directory): inside `--snapshot-dir`, the one place the jailed monitor
 * may write.
 */
function snapshotTarget(dir: string | undefined, path: string, what: string): string {
  if (dir === undefined) {
    throw new VoltError(
      "snapshot/create: start Volt with --snapshot-dir DIR; the jailed monitor writes only there",
      "usage",
    );
  }
  const full = resolve(dir, path);
  if (!full.startsWith(`${dir}/`)) {
    throw new VoltError(
      `snapshot/create: ${what} ${path} is outside --snapshot-dir ${dir}`,
      "usage",
    );
  }
  return full;
}

/** Flags that shape the VM: with `--config-file` the file says all of it. */
const VM_FLAGS = [
  "kernel",
  "initrd",
  "cmdline",
  "append",
  "memory",
  "cpus",
  "boot",
  "cpu-template",
  "disk",
  "rootfs",
  "entropy",
  "net",
  "vsock",
  "track-dirty-pages",
] as const;

/** The VM a `--config-file` describes; a flag that would say it a second time is refused. */
function configFromFile(v: Values): FileConfig {
  const twice = VM_FLAGS.find((k) => v[k] !== undefined);
  if (twice) {
    throw new VoltError(
      `--${twice} conflicts with --config-file: the file describes the VM`,
      "usage",
    );
  }
  return readConfigFile(v["config-file"]!);
}

/** How the monitor meets the host, whichever way the VM is described. */
function ioOptions(v: Values): Partial<VmConfig> {
  return {
    console: "stdout",
    stdin: true,
    ...(v["console-mode"] !== undefined
      ? { consoleMode: v["console-mode"] as VmConfig["consoleMode"] }
      : {}),
    ...(v.kvm !== undefined ? { kvmDevice: v.kvm } : {}),
    ...(v["kvm-fd"] !== undefined ? { kvmFd: parseCount(v["kvm-fd"], "--kvm-fd") } : {}),
  };
}

/** The API in the jailed monitor: the GETs, pause and resume of `machine`, and its metrics. */
function apiRoutes(
  api: NonNullable<MonitorPlan["api"]>,
  machine: Machine,
  metrics?: MetricsLog,
  snapshotDir?: string,
): ApiRoutes {
  return new ApiRoutes({
    id: api.id,
    version: VERSION,
    state: () => (machine.state === "paused" ? "Paused" : "Running"),
    pause: () => machine.pause(),
    resume: () => machine.resume(),
    flushMetrics: () => metrics?.flush() ?? false,
    ctrlAltDel: () => machine.sendCtrlAltDel(),
    createSnapshot: (req) =>
      machine.snapshot({
        snapshotPath: snapshotTarget(snapshotDir, req.snapshot_path, "snapshot_path"),
        memFilePath: snapshotTarget(snapshotDir, req.mem_file_path, "mem_file_path"),
        type: req.snapshot_type === "Diff" ? "diff" : "full",
      }),
  }, api.document);
}

/** `--rootfs` with no value (last, or before another option) means the default root image. */
export function bareRootfs(args: string[]): string[] {
  return args.map((a, i) =>
    a === "--rootfs" && (i + 1 === args.length || args[i + 1].startsWith("-"))
      ? "--rootfs=default"
      : a
  );
}

/**
 * Opens each disk for the jailed monitor (read-only unless `rw`), which
 * gets the descriptors and no path rule: the sandbox does not widen to a
 * disk's directory.
 */
function openDisks(disks: DiskConfig[], track: (fd: number) => void): DiskConfig[] {
  return disks.map((d) => {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(d.path);
    } catch {
      throw new VoltError(`Disk not found: ${d.path}`, "noinput");
    }
    if (!info.isFile && !info.isBlockDevice) {
      throw new VoltError(`Not a disk image (a regular file or block device): ${d.path}`, "usage");
    }
    const path = Deno.realPathSync(d.path);
    const fd = openInheritable(path, d.readOnly === false ? O_RDWR : O_RDONLY);
    if (fd < 0) {
      throw new VoltError(`Cannot open disk ${d.path}: permission denied or busy`, "noinput");
    }
    track(fd);
    return { ...d, path, fd };
  });
}

/**
 * Resolves the guest and opens everything the monitor needs (images, disks,
 * TAPs, sockets, KVM) here, where a bad input is still one line; returns
 * the step that jails this process and executes the monitor.
 */
async function prepareJail(
  plan: MonitorPlan,
  cfg: ReturnType<typeof resolveConfig>,
  api?: MonitorPlan["api"],
): Promise<() => never> {
  const trace = new BootTrace();
  trace.mark("runtime up", 0);
  // "default" is resolveConfig's stand-in for no --kernel: the default guest.
  const asked = plan.config.kernel === "default" ? undefined : plan.config.kernel;
  const guest = await resolveGuest(asked, plan.config.initrd);
  const root = cfg.disks.find((d) => d.root);
  if (root) {
    // Booting from a disk: the default guest's initramfs would take over first.
    if (plan.config.initrd === undefined) guest.initrd = undefined;
    root.path = await resolveRootfs(root.path);
  }
  // A missing or unreadable file fails here, with its own message, before
  // a jail rule would fail on it; a bad kernel fails in the monitor, before
  // KVM is opened, as without a jail.
  for (const image of Object.values(openImages({ ...cfg, ...guest }))) image?.close();
  const kernel = Deno.realPathSync(guest.kernel);
  const initrd = guest.initrd === undefined ? undefined : Deno.realPathSync(guest.initrd);
  // What this step opens is closed again if a later input fails (the API
  // lets a client fix its config and start again in the same process).
  const opened: number[] = [];
  const track = (fd: number) => (opened.push(fd), fd);
  try {
    return openForJail(plan, cfg, api, { kernel, initrd, trace }, track);
  } catch (e) {
    for (const fd of opened) libc().close(fd);
    throw e;
  }
}

/** {@linkcode prepareJail}'s descriptors and plan; each descriptor it opens goes to `track`. */
function openForJail(
  plan: MonitorPlan,
  cfg: ReturnType<typeof resolveConfig>,
  api: MonitorPlan["api"],
  { kernel, initrd, trace }: { kernel: string; initrd?: string; trace: BootTrace },
  track: (fd: number) => number,
): () => never {
  const { sandbox } = plan;
  const disks = openDisks(cfg.disks, track);
  // TAPs too: attached here, so the monitor needs no CAP_NET_ADMIN.
  const nets = cfg.nets.map((n) => ({
    ...n,
    fd: n.fd ?? track(openTap(n.tap, { inheritable: true })),
  }));
  // And vsock's socket: listened on here; guest connections to port P go to its path + "_P".
  const vsock = cfg.vsock && {
    ...cfg.vsock,
    uds: resolve(cfg.vsock.uds),
    listenFd: cfg.vsock.listenFd ??
      track(listenVsock(resolve(cfg.vsock.uds), { inheritable: true })),
  };
  trace.mark("guest resolved");

  const kvmFd = plan.config.kvmFd ?? openInheritable(cfg.kvmDevice, O_RDWR);
  if (kvmFd >= 0) track(kvmFd);
  const metricsLog = plan.metricsLog && {
    path: plan.metricsLog.path,
    fd: track(openMetricsLog(plan.metricsLog.path)),
  };
  // The monitor's whole configuration, resolved, in one document.
  const inner: MonitorPlan = {
    ...plan,
    // The outer step opens the metrics file; its descriptor travels in the jail state.
    metricsJson: undefined,
    metricsLog,
    config: {
      ...plan.config,
      kernel,
      initrd,
      kvmFd: kvmFd >= 0 ? kvmFd : undefined,
      disks,
      nets,
      vsock,
    },
    api,
  };
  const plannedJail = planJail({
    program: programLocation(),
    readFiles: initrd ? [kernel, initrd] : [kernel],
    // KVM comes as an open descriptor, with no path rule: the jail has
    // nothing it can write. A device that does not open here gets its
    // rule, so the monitor reports why (a missing one takes none).
    readWrite: kvmFd < 0 && pathExists(cfg.kvmDevice) ? [cfg.kvmDevice] : [],
    // Snapshots are written there, and nowhere else.
    writeDirs: plan.snapshotDir === undefined ? [] : [plan.snapshotDir],
    args: ["run", `--${PLAN_OPTION}=${encodePlan(inner)}`],
    landlock: sandbox.landlock,
  });
  const metricsFd = plan.metricsJson === undefined
    ? undefined
    : track(openMetricsFile(plan.metricsJson));
  const log = logger("sandbox");
  for (const r of plannedJail.rules ?? []) log.debug("Landlock: {access} {path}", { ...r });
  log.debug("Jailed monitor: {args}", { args: plannedJail.exec.args.join(" ") });
  const keep = [
    metricsFd,
    kvmFd,
    ...disks.map((d) => d.fd),
    ...nets.map((n) => n.fd),
    vsock?.listenFd,
    api?.fd,
    metricsLog?.fd,
    plan.restore?.memFd,
  ];
  return () =>
    enterJail({
      landlockRules: plannedJail.rules,
      requireLandlock: sandbox.require || sandbox.landlockRequired,
      requireLandlockWhy: sandbox.landlockRequired ? rootWithoutLandlock : undefined,
      warn: (line) => log.warn("{line}", { line }),
      onStep: (step) => trace.mark(step),
      keepFds: keep.filter((fd): fd is number => fd !== undefined && fd >= 0),
      then: (applied) => {
        if (sandbox.require && !applied.bounding) {
          throw new VoltError(
            "--require-sandbox: the capability bounding set cannot be emptied (no CAP_SETPCAP)",
            "internal",
          );
        }
        trace.mark("jail entered");
        const state: JailState = {
          origin: performance.timeOrigin,
          marks: trace.marks,
          metricsFd,
          ...applied,
        };
        return {
          ...plannedJail.exec,
          args: [...plannedJail.exec.args, `--${JAIL_STATE_OPTION}=${encodeJailState(state)}`],
        };
      },
    });
}

/**
 * A pool's monitor, its VM built: reports ready to the pool (a line on
 * stdout, a pipe), waits for a client, answers it and takes its stdin,
 * stdout and stderr. Undefined when the pool has gone.
 */
function waitForPoolClient(listenFd: number): PoolClient | undefined {
  Deno.stdout.writeSync(new TextEncoder().encode("ready\n"));
  const got = acceptStart(listenFd, 1);
  if (got === "parent-gone") return undefined;
  sendLine(got.conn, { accepted: true, pid: libc().getpid() });
  adoptClientFds(got.fds);
  return got;
}

async function boot(
  config: VmConfig,
  state: JailState,
  sandbox: SandboxOptions,
  { api, metricsLog, restore, snapshotDir, pool }: Pick<
    MonitorPlan,
    "api" | "metricsLog" | "restore" | "snapshotDir" | "pool"
  > = {},
): Promise<number> {
  const log = logger("vmm");
  const onMark = (m: { ms: number; phase: string }) =>
    log.trace("{ms} ms {phase}", { ms: m.ms.toFixed(2), phase: m.phase });
  state.marks.forEach(onMark);
  makeUndumpable();
  verifyJailed(state, sandbox.require, sandbox.landlockRequired);
  const created = { onMark, traceOrigin: state.origin, startPhase: "jailed runtime up" };
  const machine = restore
    ? await Machine.restore(
      { snapshotPath: config.kernel, memFd: restore.memFd },
      {
        console: config.console,
        consoleMode: config.consoleMode,
        stdin: config.stdin,
        kvmDevice: config.kvmDevice,
        kvmFd: config.kvmFd,
        disks: config.disks?.map((d) => ({ path: d.path, fd: d.fd })),
        nets: config.nets?.map((n) => ({ tap: n.tap, fd: n.fd })),
        vsock: config.vsock && { uds: config.vsock.uds, listenFd: config.vsock.listenFd },
        trackDirtyPages: config.trackDirtyPages,
      },
      created,
    )
    : await Machine.create(config, created);
  machine.onReady = (ms) => log.info("Guest boot time: {ms} ms", { ms: ms.toFixed(1) });
  // Every signal that would end the process on its own stops the VM instead,
  // so the terminal is restored (raw mode off, the reset) on the way out.
  const signals = [
    ["SIGHUP", EXIT_CODE.sighup],
    ["SIGINT", EXIT_CODE.sigint],
    ["SIGQUIT", EXIT_CODE.sigquit],
    ["SIGTERM", EXIT_CODE.sigterm],
  ] as const;
  const listeners = signals.map(([name, code]) => {
    const stop = () => machine.stop(vmExit("host-signal", `Stopped by ${name}`, undefined, code));
    Deno.addSignalListener(name, stop);
    return [name, stop] as const;
  });
  try {
    // The guest's files and the vCPU workers' modules are loaded: the
    // monitor reads nothing more through Deno.
    Deno.permissions.revokeSync({ name: "read" });
    machine.trace.mark("deno reads revoked");
    // Made before seccomp: the server's epoll set and eventfd are its last new descriptors.
    // The metrics read the API's counters, and the API flushes the metrics.
    const served = { routes: undefined as ApiRoutes | undefined };
    const metrics = metricsLog?.fd === undefined ? undefined : new MetricsLog(metricsLog.fd, {
      vm: () => machine.metrics(),
      phases: () => [...state.marks, ...machine.trace.marks],
      api: () => served.routes?.stats ?? { requests: 0, faults: 0 },
    });
    const routes = api && apiRoutes(api, machine, metrics, snapshotDir);
    served.routes = routes;
    const server = api && routes && new UnixHttpServer(api.fd, (req) => routes.handle(req));
    let seccomp: SandboxFacts["seccomp"] = "off";
    let vcpuFilter: VcpuFilter | undefined;
    const withDefault = (p: Policy): Policy =>
      sandbox.seccompLog ? { ...p, defaultAction: "log" } : p;
    const policy = withDefault(MONITOR_POLICY);
    // Built ahead: a pool's monitor only installs them once a client came.
    const filter = sandbox.seccomp ? buildFilter(policy) : undefined;
    const vcpu = withDefault(VCPU_POLICY);
    const vcpuProgram = filter && encodeFilter(buildFilter(vcpu));
    // Every libc symbol, before the filter: binding one needs mmap and mprotect.
    bindAllLibc();
    let client: PoolClient | undefined;
    if (pool) {
      const got = waitForPoolClient(pool.listenFd);
      if (got === undefined) return EXIT_CODE.ok;
      client = got;
      machine.trace.mark("pool client accepted", got.acceptedAt - performance.timeOrigin);
    }
    // Before the filter, which allows its epoll_wait and recv but not epoll_create1.
    const gone = client && clientGone(client.conn);
    if (filter) {
      // Every vCPU thread exists: from here on, a syscall outside the
      // allow-list kills the whole process (TSYNC).
      installFilter(filter, { log: sandbox.seccompLog });
      if (seccompMode() !== SECCOMP_MODE_FILTER) {
        throw new VoltError("The seccomp filter is not in force after installing it", "internal");
      }
      machine.trace.mark("seccomp installed");
      vcpuFilter = { program: vcpuProgram!, log: sandbox.seccompLog };
      seccomp = {
        syscalls: policy.rules.length,
        vcpuSyscalls: vcpu.rules.length,
        log: sandbox.seccompLog,
      };
    }
    log.info("Booting {kernel} ({format}, {mode} entry), {mem} MiB, {cpus} vCPU, template {t}", {
      kernel: config.kernel,
      format: machine.built.kernel?.format,
      mode: machine.built.kernel?.mode,
      mem: machine.built.memory.size >> 20,
      cpus: machine.built.vcpus.length,
      t: machine.built.template.name,
    });
    logger("sandbox").info("{line}", {
      line: sandboxSummary({ seccomp, state, revoked: true, dumpable: dumpable() }),
    });
    machine.start({ vcpuFilter, paused: restore?.paused });
    gone?.then(() =>
      machine.stop(
        vmExit("host-signal", "The pool's client went away", undefined, EXIT_CODE.sighup),
      )
    );
    const serving = server?.serve();
    const exit = await machine.wait();
    // Taken as it stops, while guest RAM (the queues' indices) is still mapped.
    const atStop = machine.metrics();
    server?.close();
    await serving;
    await machine.settled();
    metrics?.close();
    if (state.metricsFd !== undefined) {
      writeMetrics(
        state.metricsFd,
        bootMetrics({
          origin: state.origin,
          phases: [...state.marks, ...machine.trace.marks],
          guest: {
            kernel: config.kernel,
            initrd: config.initrd,
            memoryMiB: machine.built.memory.size >> 20,
            cpus: machine.built.vcpus.length,
          },
          exit,
          vm: atStop,
        }),
      );
    }
    if (machine.consoleDropped) {
      log.info("The console kept {n} terminal control sequences from the terminal ({mode} mode)", {
        n: machine.consoleDropped,
        mode: machine.consoleMode,
      });
    }
    // A guest status volt does not pass through gets its line: the code alone would hide it.
    if (client) {
      const first = machine.trace.marks.find((m) => m.phase === FIRST_RUN_PHASE);
      const result: PoolResult = {
        exit_code: exit.code,
        message: exit.message,
        accepted_at: client.acceptedAt,
        ...(first ? { first_run_at: state.origin + first.ms } : {}),
      };
      sendLine(client.conn, result);
    }
    const clean = exit.code === 0 ||
      (exit.cause === "guest-exit" && exit.code !== EXIT_CODE.guestStatus);
    if (clean) log.info("{message}", { message: exit.message });
    else Deno.stderr.writeSync(new TextEncoder().encode(`volt: ${exit.message}\n`));
    return exit.code;
  } finally {
    machine.cleanup();
    for (const [name, stop] of listeners) Deno.removeSignalListener(name, stop);
  }
}
