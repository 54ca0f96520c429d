/**
 * Running host tools for guest builds (apt-get, dpkg-deb, make), with one
 * clear message when one is missing or fails.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/** Options of {@linkcode runTool}. */
export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Inherit stdout/stderr (long builds show their own progress). */
  inherit?: boolean;
  /** Debian package that provides the tool, for the error message. */
  pkg?: string;
  /**
   * Stop the tool after this many seconds (a download stuck on the network
   * or a lock would otherwise hang its caller with no word).
   */
  limitSec?: number;
}

/**
 * Runs `cmd args...`; throws a one-line {@linkcode VoltError} on failure.
 *
 * @example
 * ```ts ignore
 * import { runTool } from "./host_tools.ts";
 * const out = runTool("dpkg-deb", ["--version"], { pkg: "dpkg" });
 * ```
 */
export function runTool(cmd: string, args: string[], opts: RunOptions = {}): string {
  let out: Deno.CommandOutput;
  const limit = opts.limitSec;
  try {
    // coreutils' timeout: the call is synchronous, so no timer of ours can fire.
    out = new Deno.Command(limit ? "timeout" : cmd, {
      args: limit ? ["-k", "10", String(limit), cmd, ...args] : args,
      cwd: opts.cwd,
      env: opts.env,
      stdin: "null",
      stdout: opts.inherit ? "inherit" : "piped",
      stderr: opts.inherit ? "inherit" : "piped",
    }).outputSync();
  } catch (e) {
    throw notInstalled(cmd, opts.pkg, e);
  }
  if (limit && out.code === 127) throw notInstalled(cmd, opts.pkg, new Deno.errors.NotFound());
  if (limit && (out.code === 124 || out.code === 137)) {
    throw new VoltError(
      `${cmd} ${args[0] ?? ""} did not finish within ${limit} s and was stopped`,
      "internal",
    );
  }
  if (!out.success) {
    const err = opts.inherit
      ? ""
      : new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
    throw toolFailed(cmd, args, err);
  }
  return opts.inherit ? "" : new TextDecoder().decode(out.stdout);
}

/**
 * Starts `cmd args...` with stdout inherited and stderr piped, for a caller
 * that forwards stderr itself (a long build with its own progress display).
 * Check the status with {@linkcode checkStatus}.
 *
 * @example
 * ```ts ignore
 * import { checkStatus, spawnTool } from "./host_tools.ts";
 * const child = spawnTool("bash", ["build.sh"]);
 * for await (const chunk of child.stderr) Deno.stderr.writeSync(chunk);
 * checkStatus("bash", ["build.sh"], await child.status);
 * ```
 */
export function spawnTool(cmd: string, args: string[], opts: RunOptions = {}): Deno.ChildProcess {
  try {
    return new Deno.Command(cmd, {
      args,
      cwd: opts.cwd,
      env: opts.env,
      stdin: "null",
      stdout: "inherit",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    throw notInstalled(cmd, opts.pkg, e);
  }
}

/** Throws the one-line {@linkcode VoltError} of {@linkcode runTool} when `status` is a failure. */
export function checkStatus(cmd: string, args: string[], status: Deno.CommandStatus): void {
  if (!status.success) throw toolFailed(cmd, args, "");
}

function notInstalled(cmd: string, pkg: string | undefined, e: unknown): unknown {
  if (!(e instanceof Deno.errors.NotFound)) return e;
  const hint = pkg ? ` (apt-get install ${pkg})` : "";
  return new VoltError(`${cmd} is not installed${hint}`, "noinput");
}

function toolFailed(cmd: string, args: string[], err: string): VoltError {
  return new VoltError(
    `${cmd} ${args.slice(0, 2).join(" ")} failed${err ? `: ${err}` : ""}`,
    "internal",
  );
}

/** True when `cmd` can be started. */
export function hasTool(cmd: string): boolean {
  try {
    new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    return true;
  } catch {
    return false;
  }
}
