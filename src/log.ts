/**
 * Levelled logs to stderr (stdout belongs to the guest console). Our own,
 * not a library's: every runtime Volt starts (the outer step, the jailed
 * monitor, each vCPU worker) loads this module, and the logging package it
 * replaced pulled in Deno's Node compatibility layer (`node:util`), which
 * cost each one about 10 ms and several MiB.
 *
 * @module
 */

/** A log level, from `trace` to `fatal`, or `off`. */
export type Level = "trace" | "debug" | "info" | "warning" | "error" | "fatal" | "off";

/** Accepted `--log-level` values. */
export const LOG_LEVELS: readonly string[] = [
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
  "off",
];

const RANK: Record<Level, number> = {
  trace: 0,
  debug: 1,
  info: 2,
  warning: 3,
  error: 4,
  fatal: 5,
  off: 6,
};
const TAG: Record<Exclude<Level, "off">, string> = {
  trace: "TRC",
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
  fatal: "FTL",
};

/** Properties a message's `{name}` placeholders take their values from. */
export type LogProperties = Record<string, unknown>;

/** Logs of one category (`volt·vmm`, ...). */
export interface Logger {
  /** Logs at `trace`. */
  trace(message: string, props?: LogProperties): void;
  /** Logs at `debug`. */
  debug(message: string, props?: LogProperties): void;
  /** Logs at `info`. */
  info(message: string, props?: LogProperties): void;
  /** Logs at `warning`. */
  warn(message: string, props?: LogProperties): void;
  /** Logs at `warning`. */
  warning(message: string, props?: LogProperties): void;
  /** Logs at `error`. */
  error(message: string, props?: LogProperties): void;
  /** Logs at `fatal`. */
  fatal(message: string, props?: LogProperties): void;
}

let lowest = RANK.warning;
const encoder = new TextEncoder();

/**
 * One log line: `[TAG] category: message`, each `{name}` replaced by
 * `props[name]` (strings as they are, other values inspected; `{{` and
 * `}}` are literal braces).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatLine } from "./log.ts";
 * assert.equal(formatLine("info", "vmm", "{n} vCPU, {s}", { n: 2, s: "ok" }), "[INF] volt·vmm: 2 vCPU, ok\n");
 * ```
 */
export function formatLine(
  level: Exclude<Level, "off">,
  category: string,
  message: string,
  props: LogProperties = {},
): string {
  const text = message.replace(/\{\{|\}\}|\{([^{}]*)\}/g, (all, name: string | undefined) => {
    if (all === "{{") return "{";
    if (all === "}}") return "}";
    const v = props[name!];
    return typeof v === "string" ? v : Deno.inspect(v, { compact: true, colors: false });
  });
  return `[${TAG[level]}] ${["volt", ...(category ? [category] : [])].join("·")}: ${text}\n`;
}

/**
 * Sends the `volt` logs at `level` and above to stderr.
 *
 * @example
 * ```ts
 * import { configureLogging, logger } from "./log.ts";
 * configureLogging("warning");
 * logger("vmm").info("not shown");
 * ```
 */
export function configureLogging(level: Level): void {
  lowest = RANK[level];
}

/** A logger under the `volt` category. */
export function logger(...sub: string[]): Logger {
  const category = sub.join("·");
  const at = (level: Exclude<Level, "off">) => (message: string, props?: LogProperties) => {
    if (RANK[level] < lowest) return;
    try {
      Deno.stderr.writeSync(encoder.encode(formatLine(level, category, message, props)));
    } catch { /* stderr closed: nothing to tell */ }
  };
  return {
    trace: at("trace"),
    debug: at("debug"),
    info: at("info"),
    warn: at("warning"),
    warning: at("warning"),
    error: at("error"),
    fatal: at("fatal"),
  };
}
