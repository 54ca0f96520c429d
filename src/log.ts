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

/** A log level or `off`. */
export type Level = LogLevel | "off";

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
