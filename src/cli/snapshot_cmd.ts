/**
 * `volt snapshot rebase`: lays a diff snapshot's memory file onto its base
 * (Firecracker's `rebase-snap`), so the diff's state file restores from it.
 *
 * @module
 */

import { EXIT_CODE, VoltError } from "../errors.ts";
import { rebaseMemoryFile } from "../snapshot/rebase.ts";
import { parse } from "./options.ts";

/**
 * Runs `volt snapshot SUBCOMMAND ...`.
 *
 * @example
 * ```ts ignore
 * import { snapshotCommand } from "./snapshot_cmd.ts";
 * snapshotCommand(["rebase", "--base-file", "vm.mem", "--diff-file", "diff.mem"]);
 * ```
 */
export function snapshotCommand(args: string[]): number {
  const [sub, ...rest] = args;
  if (sub !== "rebase") {
    throw new VoltError(
      sub === undefined
        ? "volt snapshot needs a subcommand (rebase)"
        : `Unknown snapshot subcommand: ${sub} (rebase)`,
      "usage",
    );
  }
  const { values: v } = parse(rest, {
    "base-file": { type: "string" },
    "diff-file": { type: "string" },
  });
  if (v["base-file"] === undefined || v["diff-file"] === undefined) {
    throw new VoltError("volt snapshot rebase needs --base-file and --diff-file", "usage");
  }
  rebaseMemoryFile(v["base-file"], v["diff-file"]);
  return EXIT_CODE.ok;
}
