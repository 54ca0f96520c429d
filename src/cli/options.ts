/**
 * Option parsing every `volt` command shares: one-line usage errors, log
 * levels, counts, and `--help`.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import meta from "../../deno.json" with { type: "json" };
import { VoltError } from "../errors.ts";
import { type Level, LOG_LEVELS } from "../log.ts";

/** The version `volt --version` prints. */
export const VERSION: string = meta.version;

/** Parses `args` against `options`, turning parser errors into usage errors. */
export function parse<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
): ReturnType<
  typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: false }>
> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (e) {
    // node:util's messages are one line already; keep the first sentence.
    throw new VoltError((e as Error).message.split("\n")[0], "usage");
  }
}

/** Validates a `--log-level` value. */
export function parseLevel(s: string | undefined): Level {
  const level = s ?? "warning";
  if (!LOG_LEVELS.includes(level)) {
    throw new VoltError(`Unknown log level: ${level} (one of ${LOG_LEVELS.join(", ")})`, "usage");
  }
  return level as Level;
}

/** Parses a whole number flag. */
export function parseCount(s: string | undefined, what: string): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s)) throw new VoltError(`${what} must be a whole number, not "${s}"`, "usage");
  return Number(s);
}

/**
 * Whether `args` (a command's own, after its name) ask for its help:
 * `--help` or `-h` before any `--`, or, for a command whose arguments are
 * another command's (`exec`), as the first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { wantsHelp } from "./options.ts";
 * assert.equal(wantsHelp(["list", "--help"]), true);
 * assert.equal(wantsHelp(["--", "--help"]), false);
 * assert.equal(wantsHelp(["--vsock", "s", "ls", "--help"], { firstOnly: true }), false);
 * ```
 */
export function wantsHelp(args: string[], opts: { firstOnly?: boolean } = {}): boolean {
  const isHelp = (a: string) => a === "--help" || a === "-h";
  if (opts.firstOnly) return args.length > 0 && isHelp(args[0]);
  const dash = args.indexOf("--");
  return (dash < 0 ? args : args.slice(0, dash)).some(isHelp);
}
