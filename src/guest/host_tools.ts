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
  try {
    out = new Deno.Command(cmd, {
      args,
      cwd: opts.cwd,
      env: opts.env,
      stdin: "null",
      stdout: opts.inherit ? "inherit" : "piped",
      stderr: opts.inherit ? "inherit" : "piped",
    }).outputSync();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      const hint = opts.pkg ? ` (apt-get install ${opts.pkg})` : "";
      throw new VoltError(`${cmd} is not installed${hint}`, "noinput");
    }
    throw e;
  }
  if (!out.success) {
    const err = opts.inherit
      ? ""
      : new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
    throw new VoltError(
      `${cmd} ${args.slice(0, 2).join(" ")} failed${err ? `: ${err}` : ""}`,
      "internal",
    );
  }
  return opts.inherit ? "" : new TextDecoder().decode(out.stdout);
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
