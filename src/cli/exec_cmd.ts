/**
 * `volt exec --vsock PATH [-t] [--] CMD ARGS...`: runs a command in a
 * running guest (volt-init's exec agent, over the VM's vsock socket),
 * streams its stdout and stderr apart, passes stdin, and exits with its
 * status, like `docker exec`. `-t` gives it a terminal.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { execInGuest } from "../guest/exec.ts";

/** `volt exec`'s usage line. */
export const EXEC_USAGE = "volt exec --vsock PATH [-t] [--] CMD [ARGS...]";

/** The options and the command, parsed; options stop at the command or `--`. */
export function parseExecArgs(args: string[]): { uds: string; tty: boolean; argv: string[] } {
  let uds: string | undefined, tty = false, i = 0;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      i++;
      break;
    }
    if (a === "-t" || a === "--tty") tty = true;
    else if (a === "--vsock") {
      uds = args[++i];
      if (uds === undefined) throw new VoltError("--vsock needs the VM's socket path", "usage");
    } else if (a.startsWith("--vsock=")) uds = a.slice(8);
    else if (a.startsWith("-")) {
      throw new VoltError(`Unknown option '${a}' (${EXEC_USAGE})`, "usage");
    } else break;
  }
  const argv = args.slice(i);
  if (!uds) throw new VoltError(`volt exec needs --vsock PATH (${EXEC_USAGE})`, "usage");
  if (argv.length === 0) throw new VoltError(`volt exec needs a command (${EXEC_USAGE})`, "usage");
  return { uds, tty, argv };
}

/** Runs `volt exec`; returns the command's exit status. */
export async function execCommand(args: string[]): Promise<number> {
  const { uds, tty, argv } = parseExecArgs(args);
  const raw = tty && Deno.stdin.isTerminal();
  const size = Deno.stdout.isTerminal() ? Deno.consoleSize() : { rows: 24, columns: 80 };
  let onWinch: (() => void) | undefined;
  if (raw) Deno.stdin.setRaw(true);
  try {
    return await execInGuest(uds, argv, {
      tty,
      size: { rows: size.rows, cols: size.columns },
      stdin: Deno.stdin.readable,
      stdout: (b) => writeAll(Deno.stdout, b),
      stderr: (b) => writeAll(Deno.stderr, b),
      onResize: (send) => {
        if (!raw) return;
        onWinch = () => {
          const s = Deno.consoleSize();
          send({ rows: s.rows, cols: s.columns });
        };
        Deno.addSignalListener("SIGWINCH", onWinch);
      },
    });
  } finally {
    if (onWinch) Deno.removeSignalListener("SIGWINCH", onWinch);
    if (raw) Deno.stdin.setRaw(false);
  }
}

async function writeAll(w: { write(b: Uint8Array): Promise<number> }, b: Uint8Array) {
  for (let at = 0; at < b.length;) at += await w.write(b.subarray(at));
}
