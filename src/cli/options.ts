/**
 * Option parsing every `volt` command shares: one-line usage errors, log
 * levels, counts, and `--help`.
 *
 * @module
 */

import meta from "../../deno.json" with { type: "json" };
import { VoltError } from "../errors.ts";
import { type Level, LOG_LEVELS } from "../log.ts";

/** The version `volt --version` prints. */
export const VERSION: string = meta.version;

/** One option of {@linkcode parse}: a string or a flag, maybe repeatable, maybe with a short name. */
export interface OptionSpec {
  type: "string" | "boolean";
  multiple?: boolean;
  short?: string;
}

/** What {@linkcode parse} returns for `T`: each given option's value (arrays when repeatable). */
export type ParsedValues<T extends Record<string, OptionSpec>> = {
  -readonly [K in keyof T]?: T[K] extends { type: "boolean" }
    ? T[K] extends { multiple: true } ? boolean[] : boolean
    : T[K] extends { multiple: true } ? string[]
    : string;
};

/**
 * Parses `args` against `options` (`--name value`, `--name=value`, `-s
 * value`, flags; no positional arguments), with one-line usage errors.
 * Our own, as node:util's parseArgs would load Deno's Node layer in every
 * runtime Volt starts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parse } from "./options.ts";
 * const { values } = parse(["--disk=a", "--disk", "b", "-q"], {
 *   disk: { type: "string", multiple: true },
 *   quiet: { type: "boolean", short: "q" },
 * });
 * assert.deepEqual(values, { disk: ["a", "b"], quiet: true });
 * ```
 */
export function parse<const T extends Record<string, OptionSpec>>(
  args: string[],
  options: T,
): { values: ParsedValues<T> } {
  const values: Record<string, unknown> = {};
  const byShort = new Map(
    Object.entries(options).flatMap(([k, o]) => (o.short ? [[o.short, k] as const] : [])),
  );
  const set = (name: string, value: string | boolean) => {
    if (options[name].multiple) ((values[name] ??= []) as unknown[]).push(value);
    else values[name] = value;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    let name: string | undefined, inline: string | undefined, shown: string;
    if (a.startsWith("--") && a.length > 2) {
      const eq = a.indexOf("=");
      name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      inline = eq < 0 ? undefined : a.slice(eq + 1);
      shown = `--${name}`;
      if (!Object.hasOwn(options, name)) throw new VoltError(`Unknown option '${shown}'`, "usage");
    } else if (a.startsWith("-") && a.length > 1 && a !== "--") {
      name = byShort.get(a[1]);
      shown = `-${a[1]}`;
      if (name === undefined) throw new VoltError(`Unknown option '${shown}'`, "usage");
      if (a.length > 2) inline = a.slice(a[2] === "=" ? 3 : 2);
    } else {
      throw new VoltError(
        `Unexpected argument '${a}'. This command does not take positional arguments`,
        "usage",
      );
    }
    if (options[name].type === "boolean") {
      if (inline !== undefined) {
        throw new VoltError(`Option '${shown}' does not take an argument`, "usage");
      }
      set(name, true);
      continue;
    }
    if (inline !== undefined) {
      set(name, inline);
      continue;
    }
    const next = args[i + 1];
    if (next === undefined) {
      throw new VoltError(`Option '${shown} <value>' argument missing`, "usage");
    }
    if (next.startsWith("-") && next !== "-") {
      throw new VoltError(
        `Option '${shown} <value>' argument is ambiguous: to give a value starting with a dash, use '${shown}=${next}'`,
        "usage",
      );
    }
    set(name, next);
    i++;
  }
  return { values: values as ParsedValues<T> };
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
