/**
 * Pause and resume, side by side with QEMU microvm: Volt's
 * `PATCH /vm {"state": "Paused"|"Resumed"}` on its API socket against
 * QEMU's QMP `stop` and `cont`, each a control-plane round trip over a unix
 * socket to a VM booting the same kernel, initramfs and command line.
 * Rounds alternate between the two; each round is `--runs` pauses and
 * resumes. Pausing is the monitor's work (the vCPUs leave KVM_RUN and
 * park), so it runs here on every kind of host with /dev/kvm (on PVM the
 * guest kernel boots slowly meanwhile, and that does not matter); without
 * /dev/kvm it runs in the helper VM.
 *
 * Usage: deno task bench:lifecycle [--runs N] [--rounds N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ensureDefaultGuest } from "../src/guest/default_guest.ts";
import { hostKind, hostKindLabel } from "../src/vmm/host.ts";
import { runNested } from "../tools/nested/run.ts";
import { QEMU, qemuArgs, qemuCpu } from "./boot/qemu.ts";
import { guestCmdline } from "./boot/plan.ts";
import { publish, sideBySide, summarize } from "./boot/stats.ts";
import { parseRuns } from "./boot/userspace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const say = (s: string) => console.error(`bench:lifecycle: ${s}`);
const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "50" },
    rounds: { type: "string", default: "3" },
    nested: { type: "boolean" },
  },
  strict: true,
});
const runs = parseRuns("bench:lifecycle", values.runs);
const rounds = parseRuns("bench:lifecycle", values.rounds);
const kind = hostKind();
if (kind === "none" && !values.nested) {
  say("no /dev/kvm here: running in the nested-KVM helper VM");
  Deno.exit(
    await runNested(
      [Deno.execPath(), "run", "-A", `${ROOT}/bench/lifecycle.ts`, "--nested", ...Deno.args],
      { cwd: ROOT, memory: "2G", cpus: 2, timeoutMs: 3600_000 },
    ),
  );
}
const where = values.nested
  ? "inside the nested-KVM helper VM (QEMU TCG)"
  : `natively (${hostKindLabel(kind)})`;

const guest = await ensureDefaultGuest(say);
const cmdline = guestCmdline(kind, 'volt.cmd="sleep 3600"');
const dir = Deno.makeTempDirSync({ prefix: "volt-bench-lifecycle-" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A request/response line protocol client over a unix socket (HTTP or QMP). */
class SocketClient {
  #buf = "";
  readonly #dec = new TextDecoder();
  readonly #enc = new TextEncoder();
  private constructor(readonly conn: Deno.UnixConn) {}
  static async open(path: string, ms = 60_000): Promise<SocketClient> {
    const end = performance.now() + ms;
    for (;;) {
      try {
        return new SocketClient(await Deno.connect({ transport: "unix", path }));
      } catch (e) {
        if (performance.now() > end) throw e;
        await sleep(10);
      }
    }
  }
  async send(text: string): Promise<void> {
    await this.conn.write(this.#enc.encode(text));
  }
  /** Reads until `done(buffered)` gives the end of one reply; returns it. */
  async until(done: (s: string) => number): Promise<string> {
    const chunk = new Uint8Array(4096);
    for (;;) {
      const end = done(this.#buf);
      if (end >= 0) {
        const reply = this.#buf.slice(0, end);
        this.#buf = this.#buf.slice(end);
        return reply;
      }
      const n = await this.conn.read(chunk);
      if (n === null) throw new Error(`connection closed: ${this.#buf}`);
      this.#buf += this.#dec.decode(chunk.subarray(0, n));
    }
  }
  close(): void {
    this.conn.close();
  }
}

/** The end of one HTTP response with a Content-Length, or -1. */
function httpEnd(s: string): number {
  const head = s.indexOf("\r\n\r\n");
  if (head < 0) return -1;
  const len = Number(/content-length: (\d+)/i.exec(s.slice(0, head))?.[1] ?? 0);
  return s.length >= head + 4 + len ? head + 4 + len : -1;
}

/** The end of the first QMP `return` (or `error`) line, skipping events. */
function qmpEnd(s: string): number {
  let from = 0;
  for (;;) {
    const nl = s.indexOf("\n", from);
    if (nl < 0) return -1;
    const line = s.slice(from, nl);
    if (line.includes('"return"') || line.includes('"error"')) return nl + 1;
    from = nl + 1;
  }
}

/** Times `runs` pause/resume pairs; returns [pause ms..., resume ms...]. */
async function timePairs(
  pause: () => Promise<void>,
  resume: () => Promise<void>,
): Promise<{ pause: number[]; resume: number[] }> {
  const out = { pause: [] as number[], resume: [] as number[] };
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    await pause();
    out.pause.push(performance.now() - t);
    await sleep(2);
    t = performance.now();
    await resume();
    out.resume.push(performance.now() - t);
    await sleep(2);
  }
  return out;
}

async function volt(): Promise<{ pause: number[]; resume: number[] }> {
  const sock = `${dir}/volt.sock`;
  const cfg = `${dir}/volt.json`;
  Deno.writeTextFileSync(
    cfg,
    JSON.stringify({
      "boot-source": {
        kernel_image_path: guest.kernel,
        initrd_path: guest.initrd,
        boot_args: cmdline,
      },
      "machine-config": { vcpu_count: 1, mem_size_mib: 128 },
    }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}/mod.ts`,
      "run",
      "--native",
      "--config-file",
      cfg,
      "--api-sock",
      sock,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  try {
    const c = await SocketClient.open(sock);
    const patch = async (state: string) => {
      const body = JSON.stringify({ state });
      await c.send(
        `PATCH /vm HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      const reply = await c.until(httpEnd);
      if (!reply.startsWith("HTTP/1.1 204")) throw new Error(`Volt: ${reply}`);
    };
    // The first KVM_RUN has happened once a pause succeeds.
    await patch("Paused");
    await patch("Resumed");
    const r = await timePairs(() => patch("Paused"), () => patch("Resumed"));
    c.close();
    return r;
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}

async function qemu(): Promise<{ pause: number[]; resume: number[] }> {
  const sock = `${dir}/qmp.sock`;
  const child = new Deno.Command(QEMU, {
    args: [
      ...qemuArgs({
        kernel: guest.kernel,
        initrd: guest.initrd,
        memoryMiB: 128,
        cpus: 1,
        cmdline,
        cpu: qemuCpu(kind),
      }),
      "-qmp",
      `unix:${sock},server=on,wait=off`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    const c = await SocketClient.open(sock);
    await c.until((s) => (s.includes("\n") ? s.indexOf("\n") + 1 : -1)); // the greeting
    const qmp = async (cmd: string) => {
      await c.send(`${JSON.stringify({ execute: cmd })}\n`);
      const reply = await c.until(qmpEnd);
      if (!reply.includes('"return"')) throw new Error(`QEMU: ${reply}`);
    };
    await qmp("qmp_capabilities");
    await qmp("stop");
    await qmp("cont");
    const r = await timePairs(() => qmp("stop"), () => qmp("cont"));
    c.close();
    return r;
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}

const v = { pause: [] as number[], resume: [] as number[] };
const q = { pause: [] as number[], resume: [] as number[] };
for (let round = 1; round <= rounds; round++) {
  say(`round ${round}/${rounds}: Volt`);
  const a = await volt();
  say(`round ${round}/${rounds}: QEMU`);
  const b = await qemu();
  v.pause.push(...a.pause), v.resume.push(...a.resume);
  q.pause.push(...b.pause), q.resume.push(...b.resume);
}
const p99 = (xs: number[]) =>
  [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))];
publish("lifecycle", [
  `# Pause and resume (ms, median of ${runs * rounds} each; ${where}, ${
    new Date().toISOString().slice(0, 10)
  })`,
  "",
  "Volt: `PATCH /vm` on its API socket; QEMU microvm: QMP `stop`/`cont`; both a round trip over a unix socket to a VM booting the same kernel.",
  "",
  ...sideBySide(["pause", "resume"], v, q),
  "",
  `p99: Volt pause ${p99(v.pause).toFixed(2)}, resume ${p99(v.resume).toFixed(2)}; QEMU stop ${
    p99(q.pause).toFixed(2)
  }, cont ${p99(q.resume).toFixed(2)}.`,
  `Goal (pause and resume each under 5 ms median): ${
    summarize(v.pause).median < 5 && summarize(v.resume).median < 5 ? "met" : "not met"
  }.`,
  "",
  `Command: \`deno task bench:lifecycle --runs ${runs} --rounds ${rounds}\``,
]);
