/**
 * Timing a monitor process from spawn to a line on its console.
 *
 * @module
 */

/** One timed run. */
export interface TimedRun {
  pid: number;
  /** Epoch ms right before the spawn. */
  spawnEpoch: number;
  /** ms from spawn to the marker; undefined if it never came. */
  markerMs?: number;
  /** Exit code (after the kill, if one was sent). */
  code: number;
  /** Console output (stdout) and stderr. */
  stdout: string;
  stderr: string;
}

/** Options of {@linkcode runUntil}. */
export interface RunUntilOptions {
  /** Give up (and kill) after this long. */
  timeoutMs: number;
  /** Called once the marker is seen, with the pid (e.g. to read /proc). */
  atMarker?: (pid: number) => void | Promise<void>;
  /** Kill once the marker is seen (and `atMarker` is done); else wait for the exit. */
  killAtMarker?: boolean;
  /** Stop at this line on stderr instead (QEMU's trace, Volt's `--log-level trace`). */
  stderrMarker?: string;
  /**
   * No marker line: the marker is this many ms after the spawn, if the
   * process still runs then (a guest that never prints what we wait for).
   */
  afterMs?: number;
  /**
   * The signal `killAtMarker` sends (default SIGKILL); SIGTERM lets Volt
   * stop the VM and write its --metrics-json. SIGKILL follows after
   * {@linkcode STOP_GRACE_MS}.
   */
  stopSignal?: Deno.Signal;
}

/** How long a process stopped with a gentler signal than SIGKILL gets before SIGKILL. */
export const STOP_GRACE_MS = 10_000;

/**
 * Spawns `cmd args`, records when `marker` first appears on stdout, and
 * collects the rest.
 *
 * @example
 * ```ts ignore
 * import { runUntil } from "./process.ts";
 * const r = await runUntil("qemu-system-x86_64", args, "VOLT VM READY", { timeoutMs: 60_000 });
 * ```
 */
export async function runUntil(
  cmd: string,
  args: string[],
  marker: string,
  opts: RunUntilOptions,
): Promise<TimedRun> {
  const spawnEpoch = performance.timeOrigin + performance.now();
  const t0 = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).spawn();
  let markerMs: number | undefined;
  let stopGrace: ReturnType<typeof setTimeout> | undefined;
  const timer = setTimeout(() => {
    const signal = opts.stopSignal ?? "SIGKILL";
    console.error(`bench: ${cmd} did not finish in ${opts.timeoutMs} ms; sending ${signal}`);
    const kill = (s: Deno.Signal) => {
      try {
        child.kill(s);
      } catch { /* gone meanwhile */ }
    };
    kill(signal);
    if (signal !== "SIGKILL") stopGrace = setTimeout(() => kill("SIGKILL"), STOP_GRACE_MS);
  }, opts.timeoutMs);
  let hit: () => void;
  const seen = new Promise<void>((r) => (hit = r));
  const watch = async (stream: ReadableStream<Uint8Array>, what: string | undefined) => {
    const dec = new TextDecoder();
    let text = "";
    for await (const chunk of stream) {
      text += dec.decode(chunk, { stream: true });
      if (what !== undefined && markerMs === undefined && text.includes(what)) {
        markerMs = performance.now() - t0;
        hit();
      }
    }
    return text;
  };
  const onStdout = opts.stderrMarker === undefined && opts.afterMs === undefined;
  const outP = watch(child.stdout, onStdout ? marker : undefined);
  const errP = watch(child.stderr, opts.afterMs === undefined ? opts.stderrMarker : undefined);
  const status = child.status;
  let exited = false;
  status.then(() => exited = true);
  const clock = opts.afterMs === undefined ? undefined : setTimeout(() => {
    if (exited) return;
    markerMs = performance.now() - t0;
    hit();
  }, opts.afterMs);
  await Promise.race([seen, status]);
  clearTimeout(clock);
  let grace: ReturnType<typeof setTimeout> | undefined;
  if (markerMs !== undefined) {
    await opts.atMarker?.(child.pid);
    if (opts.killAtMarker) {
      const signal = opts.stopSignal ?? "SIGKILL";
      try {
        child.kill(signal);
      } catch { /* already gone */ }
      if (signal !== "SIGKILL") {
        grace = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone meanwhile */ }
        }, STOP_GRACE_MS);
      }
    }
  }
  // A process stuck in the kernel may outlive SIGKILL for a while: measure
  // on, and leave it to exit when it can.
  const gone = await Promise.race([
    status.then((s) => s.code),
    new Promise<undefined>((r) => setTimeout(() => r(undefined), opts.timeoutMs + 15_000)),
  ]);
  clearTimeout(timer);
  clearTimeout(stopGrace);
  clearTimeout(grace);
  if (gone === undefined) {
    console.error(`bench: ${cmd} (pid ${child.pid}) did not exit after SIGKILL; moving on`);
    return { pid: child.pid, spawnEpoch, markerMs, code: -1, stdout: "", stderr: "" };
  }
  return {
    pid: child.pid,
    spawnEpoch,
    markerMs,
    code: gone,
    stdout: await outP,
    stderr: await errP,
  };
}
