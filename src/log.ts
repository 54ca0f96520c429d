/**
 * Levelled logs to stderr (stdout belongs to the guest console), through
 * LogTape.
 *
 * @module
 */

import {
  configureSync,
  getLogger,
  getLogLevels,
  getTextFormatter,
  type Logger,
  type LogLevel,
  resetSync,
} from "@logtape/logtape";

/** Accepted `--log-level` values. */
export const LOG_LEVELS: readonly string[] = [...getLogLevels(), "off"];

/** A log level (LogTape's, from `trace` to `fatal`) or `off`. */
export type Level = "trace" | "debug" | "info" | "warning" | "error" | "fatal" | "off";
// Spelled out for the docs; a compile error here if LogTape's set changes.
type SameLevels = [LogLevel | "off"] extends [Level] ? [Level] extends [LogLevel | "off"] ? true
  : never
  : never;
const _sameLevels: SameLevels = true;

// Strings unquoted: messages read as sentences, not as inspected values.
const formatter = getTextFormatter({
  timestamp: "none",
  value: (v, inspect) => (typeof v === "string" ? v : inspect(v)),
});
const encoder = new TextEncoder();

/**
 * Routes the `volt` category to stderr at `level`.
 *
 * @example
 * ```ts
 * import { configureLogging, logger } from "./log.ts";
 * configureLogging("warning");
 * logger("vmm").info("not shown");
 * ```
 */
export function configureLogging(level: Level): void {
  resetSync();
  configureSync({
    reset: true,
    sinks: {
      stderr: (record) => {
        Deno.stderr.writeSync(encoder.encode(formatter(record)));
      },
    },
    loggers: [
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: ["stderr"] },
      ...(level === "off" ? [] : [{ category: "volt", lowestLevel: level, sinks: ["stderr"] }]),
    ],
  });
}

/** A logger under the `volt` category. */
export function logger(...sub: string[]): Logger {
  return getLogger(["volt", ...sub]);
}
