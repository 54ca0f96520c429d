/**
 * `volt exec`'s protocol: a command run in a running guest by volt-init's
 * exec agent, reached over the VM's vsock socket (Firecracker's
 * `CONNECT <port>\n`). Frames both ways: a type byte, a 4-byte
 * little-endian length, at most {@linkcode EXEC_FRAME_MAX} payload bytes.
 * To the guest: `R` run (flags, rows, cols, argv NUL-separated), `I` stdin
 * bytes, `E` end of stdin, `W` window size. From it: `O` stdout, `e`
 * stderr, `X` the exit status (4 bytes).
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/** The vsock port volt-init's exec agent listens on. */
export const EXEC_PORT = 10000;
/** Payload bytes of one frame at most, both ways. */
export const EXEC_FRAME_MAX = 65536;

const enc = new TextEncoder();

/** One frame's bytes. */
export function frame(type: string, payload: Uint8Array = new Uint8Array()): Uint8Array {
  if (payload.length > EXEC_FRAME_MAX) throw new RangeError("Frame payload too large");
  const f = new Uint8Array(5 + payload.length);
  f[0] = type.charCodeAt(0);
  new DataView(f.buffer).setUint32(1, payload.length, true);
  f.set(payload, 5);
  return f;
}

/** The `R` frame for `argv`. */
export function runFrame(argv: string[], tty: boolean, size = { rows: 24, cols: 80 }): Uint8Array {
  const words = argv.map((a) => enc.encode(a));
  const body = new Uint8Array(5 + words.reduce((n, w) => n + w.length + 1, 0));
  const dv = new DataView(body.buffer);
  body[0] = tty ? 1 : 0;
  dv.setUint16(1, size.rows, true);
  dv.setUint16(3, size.cols, true);
  let at = 5;
  for (const w of words) {
    body.set(w, at);
    at += w.length + 1;
  }
  if (body.length > EXEC_FRAME_MAX) throw new VoltError("The command line is too long", "usage");
  return frame("R", body);
}

/**
 * Splits a byte stream into frames, keeping at most one frame's bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameReader, frame } from "./exec.ts";
 * const r = new FrameReader();
 * const f = frame("O", new Uint8Array([104, 105]));
 * assert.deepEqual(r.push(f.subarray(0, 3)), []);
 * assert.deepEqual(r.push(f.subarray(3)).map((x) => [x.type, [...x.payload]]), [["O", [104, 105]]]);
 * ```
 */
export class FrameReader {
  private buf = new Uint8Array(5 + EXEC_FRAME_MAX);
  private len = 0;

  /** Takes `bytes`; returns the frames they completed. Throws on a frame too large. */
  push(bytes: Uint8Array): Array<{ type: string; payload: Uint8Array }> {
    const out: Array<{ type: string; payload: Uint8Array }> = [];
    let at = 0;
    while (at < bytes.length) {
      const take = Math.min(bytes.length - at, this.buf.length - this.len);
      this.buf.set(bytes.subarray(at, at + take), this.len);
      this.len += take;
      at += take;
      for (;;) {
        if (this.len < 5) break;
        const n = new DataView(this.buf.buffer).getUint32(1, true);
        if (n > EXEC_FRAME_MAX) throw new VoltError("The guest sent a malformed frame", "input");
        if (this.len < 5 + n) break;
        out.push({ type: String.fromCharCode(this.buf[0]), payload: this.buf.slice(5, 5 + n) });
        this.buf.copyWithin(0, 5 + n, this.len);
        this.len -= 5 + n;
      }
    }
    return out;
  }
}

/** Where a command's output goes, and what feeds it. */
export interface ExecIo {
  /** The command's stdin; none: it reads end of file. */
  stdin?: ReadableStream<Uint8Array> | null;
  /** Takes the command's stdout as it comes. */
  stdout(bytes: Uint8Array): Promise<unknown> | unknown;
  /** Takes the command's stderr as it comes. */
  stderr(bytes: Uint8Array): Promise<unknown> | unknown;
  /** A terminal in the guest (stdout and stderr both come as `O`). */
  tty?: boolean;
  /** The terminal's size (default 24 x 80). */
  size?: { rows: number; cols: number };
  /** Called with a function that sends a new window size. */
  onResize?(send: (size: { rows: number; cols: number }) => void): void;
}

/**
 * Runs `argv` in the guest behind the vsock socket `uds`; resolves to its
 * exit status. A VM that is not there, or whose guest does not answer on
 * {@linkcode EXEC_PORT}, is a one-line error.
 *
 * @example
 * ```ts ignore
 * const status = await execInGuest("/tmp/v.sock", ["uname", "-a"], {
 *   stdout: (b) => Deno.stdout.write(b),
 *   stderr: (b) => Deno.stderr.write(b),
 * });
 * ```
 */
export async function execInGuest(uds: string, argv: string[], io: ExecIo): Promise<number> {
  if (argv.length === 0) throw new VoltError("volt exec needs a command", "usage");
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path: uds });
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such socket" : (e as Error).name;
    throw new VoltError(`No VM at ${uds} (${why}): is it running with --vsock?`, "noinput");
  }
  try {
    await writeAll(conn, enc.encode(`CONNECT ${EXEC_PORT}\n`));
    const line = await readLine(conn);
    if (!line || !/^OK \d+$/.test(line)) {
      throw new VoltError(
        `The VM at ${uds} does not answer on vsock port ${EXEC_PORT} (is volt-init its init?)`,
        "noinput",
      );
    }
    await writeAll(conn, runFrame(argv, !!io.tty, io.size));
    io.onResize?.((size) => {
      const p = new Uint8Array(4);
      new DataView(p.buffer).setUint16(0, size.rows, true);
      new DataView(p.buffer).setUint16(2, size.cols, true);
      writeAll(conn, frame("W", p)).catch(() => {});
    });
    let done = false;
    const pump = (async () => {
      if (io.stdin) {
        for await (const chunk of io.stdin) {
          if (done) break;
          for (let at = 0; at < chunk.length; at += EXEC_FRAME_MAX) {
            await writeAll(conn, frame("I", chunk.subarray(at, at + EXEC_FRAME_MAX)));
          }
        }
      }
      if (!done) await writeAll(conn, frame("E"));
    })().catch(() => {/* the guest is done with it */});
    const reader = new FrameReader();
    const buf = new Uint8Array(1 << 16);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) throw new VoltError("The VM went away before the command ended", "input");
      for (const f of reader.push(buf.subarray(0, n))) {
        if (f.type === "O") await io.stdout(f.payload);
        else if (f.type === "e") await io.stderr(f.payload);
        else if (f.type === "X" && f.payload.length === 4) {
          done = true;
          void pump;
          return new DataView(f.payload.buffer).getInt32(0, true) & 0xff;
        }
      }
    }
  } finally {
    try {
      conn.close();
    } catch { /* closed already */ }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** The first line (without its newline), read a byte at a time; undefined at EOF or past 64 bytes. */
async function readLine(conn: Deno.Conn): Promise<string | undefined> {
  const one = new Uint8Array(1);
  let line = "";
  while (line.length < 64) {
    const n = await conn.read(one).catch(() => null);
    if (!n) return undefined;
    if (one[0] === 0x0a) return line;
    line += String.fromCharCode(one[0]);
  }
  return undefined;
}
