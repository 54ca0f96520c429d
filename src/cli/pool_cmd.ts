/**
 * `volt pool`: keeps N jailed monitors ready, each with its VM built
 * (memory, devices, kernel, vCPUs and workers) and waiting on one unix
 * socket; `volt run --pool PATH` (or any client of src/control/pool.ts)
 * takes one, which starts its VM at once on the client's stdin, stdout and
 * stderr. Each taken monitor is replaced by a new one.
 *
 * Every monitor is a `volt run --pool-member` with the pool's VM flags: the
 * same outer step, jail and monitor as a cold `volt run`, made ahead. Its
 * stdin is the pool's listening socket (shared by all of them: the kernel
 * hands each connection to one), its stdout a pipe on which it says
 * "ready", and which closes when a client takes it.
 *
 * @module
 */

import { errno, libc } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";
import { resolvePath as resolve } from "./paths.ts";
import { EXIT_CODE, VoltError } from "../errors.ts";
import { configureLogging, logger } from "../log.ts";
import { parseCount, parseLevel } from "./options.ts";
import { listenUnix } from "../vmm/vsock_listen.ts";
import { programLocation } from "../sandbox/monitor.ts";

/** Most monitors a pool keeps ready. */
export const POOL_SIZE_MAX = 32;
/** Monitors that fail to start in a row (after one was ready) before the pool gives up. */
const FAILURES_MAX = 5;

/** The pool's own options; every other argument is the VMs' `volt run` flags. */
function splitArgs(args: string[]): { socket?: string; size?: string; vm: string[] } {
  const out: { socket?: string; size?: string; vm: string[] } = { vm: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const m = /^--(socket|size)(?:=(.*))?$/.exec(a);
    if (!m) {
      out.vm.push(a);
      continue;
    }
    const value = m[2] ?? args[++i];
    if (value === undefined || (m[2] === undefined && value.startsWith("--"))) {
      throw new VoltError(`--${m[1]} needs a value`, "usage");
    }
    out[m[1] as "socket" | "size"] = value;
  }
  return out;
}

/** The `deno run` that starts this same program, unjailed, as `volt run` would be. */
function memberCommand(vmArgs: string[]): string[] {
  const p = programLocation();
  return [
    "run",
    "--quiet",
    "--no-prompt",
    "-A",
    ...(p.config ? [`--config=${p.config}`] : p.root ? ["--no-config"] : []),
    p.main,
    "run",
    ...vmArgs,
    "--pool-member",
  ];
}

/**
 * Runs the pool until SIGINT or SIGTERM; returns the exit code. A first
 * monitor that cannot start (a bad flag, a missing file) ends the pool
 * with its one line and code.
 *
 * @example
 * ```ts ignore
 * import { poolCommand } from "./pool_cmd.ts";
 * await poolCommand(["--socket", "/run/volt/pool.sock", "--size", "2", "--memory", "128M"]);
 * ```
 */
export async function poolCommand(args: string[]): Promise<number> {
  const { socket, size: sizeText, vm } = splitArgs(args);
  if (socket === undefined) throw new VoltError("volt pool needs --socket PATH", "usage");
  const size = parseCount(sizeText, "--size") ?? 2;
  if (size < 1 || size > POOL_SIZE_MAX) {
    throw new VoltError(`--size must be 1 to ${POOL_SIZE_MAX}, not ${size}`, "usage");
  }
  for (const a of vm) {
    if (a === "--pool" || a.startsWith("--pool=") || a === "--pool-member") {
      throw new VoltError(`${a} is not a flag of volt pool`, "usage");
    }
  }
  const levelAt = vm.findIndex((a) => a === "--log-level" || a.startsWith("--log-level="));
  const levelArg = levelAt < 0
    ? undefined
    : vm[levelAt].includes("=")
    ? vm[levelAt].slice(vm[levelAt].indexOf("=") + 1)
    : vm[levelAt + 1];
  configureLogging(parseLevel(levelArg ?? "info"));
  const log = logger("pool");
  const path = resolve(socket);
  // Whoever may connect gets a VM: the owner alone, from the bind on, whatever the umask.
  const l = libc();
  const umask = l.umask(0o177);
  let listenFd: number;
  try {
    listenFd = listenUnix(path, { inheritable: true, what: "pool socket" });
  } finally {
    l.umask(umask);
  }
  // Every monitor's stdin: they inherit it from this process's.
  if (l.dup3(listenFd, 0, 0) < 0) {
    throw new VoltError(`Cannot hand the pool socket on: ${errnoName(errno())}`, "internal");
  }
  l.close(listenFd);

  const command = memberCommand(vm);
  const untaken = new Set<Deno.ChildProcess>();
  let stopping = false;
  let failed: number | undefined;
  let ready = 0;
  let announced = false;
  let everReady = false;
  let failures = 0;
  const done = Promise.withResolvers<void>();

  /** One monitor from start to taken; false if it ended without being ready. */
  const member = async (): Promise<boolean> => {
    const child = new Deno.Command(Deno.execPath(), {
      args: command,
      stdin: "inherit",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    untaken.add(child);
    const reader = child.stdout.getReader();
    let text = "";
    let isReady = false;
    for (;;) {
      const r = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (r.done) break;
      text += new TextDecoder().decode(r.value);
      if (!isReady && text.includes("ready\n")) {
        isReady = true;
        everReady = true;
        ready++;
        if (!announced && ready === size) {
          announced = true;
          log.info("Pool ready: {size} monitors on {path}", { size, path });
        }
      }
      if (text.length > 64) text = text.slice(-16);
    }
    // The pipe closed: a client took it (its stdout is the client's now), or it ended.
    untaken.delete(child);
    if (isReady) ready--;
    if (!isReady) {
      const status = await child.status;
      if (!stopping) {
        log.debug("A monitor ended before it was ready: {code}", { code: status.code });
      }
      if (!stopping && !everReady && failed === undefined) failed = status.code || 70;
    } else {
      child.status.then((s) => log.debug("A pool VM ended: {code}", { code: s.code }));
    }
    return isReady;
  };

  const slot = async (): Promise<void> => {
    while (!stopping && failed === undefined) {
      if (await member()) {
        failures = 0;
        continue;
      }
      if (stopping || failed !== undefined) break;
      if (++failures > FAILURES_MAX) {
        log.error("{n} monitors in a row failed to start; stopping the pool", { n: failures });
        failed = EXIT_CODE.internal;
        break;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    done.resolve();
  };

  const stop = () => {
    stopping = true;
    done.resolve();
  };
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  for (const s of signals) Deno.addSignalListener(s, stop);
  try {
    // The first one alone: it may build the default guest, which the others then find.
    const first = slot();
    while (ready === 0 && failed === undefined && !stopping) {
      await Promise.race([done.promise, new Promise((r) => setTimeout(r, 20))]);
    }
    const slots = [first];
    if (failed === undefined && !stopping) {
      for (let i = 1; i < size; i++) slots.push(slot());
    }
    await done.promise;
    stopping = true;
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, stop);
    // Monitors no client took: SIGKILL, as one waiting in poll(2) does not run signal listeners.
    for (const c of untaken) {
      try {
        c.kill("SIGKILL");
      } catch { /* gone already */ }
    }
    await Promise.allSettled([...untaken].map((c) => c.status));
    try {
      Deno.removeSync(path);
    } catch { /* gone already */ }
    l.close(0);
  }
  return failed ?? EXIT_CODE.ok;
}
