/**
 * Snapshot restore, side by side with QEMU microvm. The guest (the default
 * kernel and initramfs, 128 MiB, 1 vCPU) runs a console echo loop; it is
 * booted once per monitor, paused at READY and saved (Volt: `PUT
 * /snapshot/create`; QEMU: QMP `stop` and `migrate` to a file). Then, in
 * alternating rounds:
 * - restore to the guest answering: spawn → the echo of a line sent on the
 *   console (Volt: `volt run --restore`; QEMU: `-incoming` from the file);
 * - a cold boot of the same guest: spawn → `VOLT VM READY`;
 * - memory: `--clones` restores of one snapshot running at once against as
 *   many cold-booted VMs (Volt), summed proportional set sizes (PSS), and
 *   each one's private memory.
 *
 * Guest userspace must run: natively with hardware KVM, else in the
 * nested-KVM helper VM (the times are then TCG's; the ratios say more).
 * With `--parked`, the memory part alone runs natively on any host with
 * /dev/kvm (PVM too, where guest userspace cannot run): the default kernel
 * without an initramfs, parked in its wait for a root device that never
 * comes; a clone counts once its API reports it running.
 *
 * Usage: deno task bench:snapshot [--runs N] [--clones N] [--memory-only | --parked]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ensureDefaultGuest } from "../src/guest/default_guest.ts";
import { hostKind, hostKindLabel } from "../src/vmm/host.ts";
import { guestCmdline } from "./boot/plan.ts";
import { QEMU, qemuArgs, qemuCpu } from "./boot/qemu.ts";
import { publish, sideBySide, summarize } from "./boot/stats.ts";
import { parseRuns, PoolConsole, startPool, userspaceHere } from "./boot/userspace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const say = (s: string) => console.error(`bench:snapshot: ${s}`);
const MEMORY_MIB = 128;
const READY = "VOLT VM READY";
const ANSWER = "got-ping";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "20" },
    clones: { type: "string", default: "10" },
    nested: { type: "boolean" },
    // Only the memory part: the timed restores are a run of their own.
    "memory-only": { type: "boolean" },
    parked: { type: "boolean" },
  },
  strict: true,
});
const parked = values.parked ?? false;
const memoryOnly = parked || (values["memory-only"] ?? false);
const runs = memoryOnly ? 0 : parseRuns("bench:snapshot", values.runs);
const clones = parseRuns("bench:snapshot", values.clones);
if (!values.nested) await ensureDefaultGuest(say);
const kind = hostKind();
const where = parked ? `natively (${hostKindLabel(kind)})` : await userspaceHere(
  "bench:snapshot",
  "snapshot.ts",
  [`--runs=${runs}`, `--clones=${clones}`, ...(values["memory-only"] ? ["--memory-only"] : [])],
  values.nested,
);
const guest = await ensureDefaultGuest(say);
const cmdline = guestCmdline(
  kind,
  parked ? "root=/dev/vdz rootwait" : 'volt.cmd="while read l; do echo got-$l; done"',
);
/** The console line of a cold boot that is up. */
const UP = parked ? "Waiting for root device /dev/vdz" : READY;
const dir = Deno.makeTempDirSync({ prefix: "volt-bench-snapshot-" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TIMEOUT_MS = 300_000;

/** A spawned monitor whose console this bench reads and writes. */
class Vmm {
  out = "";
  readonly t0 = performance.now();
  readonly child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #read: Promise<void>;
  readonly #err: Promise<string>;
  #exited = false;
  constructor(cmd: string, args: string[]) {
    const child = new Deno.Command(cmd, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    }).spawn();
    this.child = child;
    this.#err = new Response(child.stderr).text();
    child.status.then(() => (this.#exited = true));
    this.#writer = child.stdin.getWriter();
    const dec = new TextDecoder();
    this.#read = (async () => {
      for await (const b of child.stdout) this.out += dec.decode(b, { stream: true });
    })();
  }
  /** ms from the spawn until `marker` is on the console; with `ping`, sends a line every 20 ms meanwhile. */
  async until(marker: string, ping = false): Promise<number> {
    const end = this.t0 + TIMEOUT_MS;
    let next = 0;
    // One write in flight at most: a monitor that does not read its stdin
    // (yet) must not hold this loop when the pipe is full.
    let writing = false;
    while (!this.out.includes(marker)) {
      const now = performance.now();
      if (now > end) {
        throw new Error(
          `No "${marker}" in ${TIMEOUT_MS} ms: ${JSON.stringify(this.out.slice(-300))}`,
        );
      }
      if (ping && now >= next && !writing) {
        next = now + 20;
        writing = true;
        this.#writer.write(new TextEncoder().encode("ping\n")).catch(() => {}).finally(() =>
          writing = false
        );
      }
      await sleep(1);
    }
    return performance.now() - this.t0;
  }
  async kill(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch { /* gone */ }
    this.#writer.close().catch(() => {});
    await this.child.status;
    await this.#read.catch(() => {});
  }
}

const voltCmd = (args: string[]) =>
  new Vmm(Deno.execPath(), ["run", "-A", `${ROOT}/mod.ts`, "run", "--native", ...args]);
const bootSource = {
  kernel_image_path: guest.kernel,
  ...(parked ? {} : { initrd_path: guest.initrd }),
  boot_args: cmdline,
};
const voltConfig = `${dir}/volt.json`;
Deno.writeTextFileSync(
  voltConfig,
  JSON.stringify({
    "boot-source": bootSource,
    "machine-config": { vcpu_count: 1, mem_size_mib: MEMORY_MIB },
  }),
);
const qemuBoot = qemuArgs({
  kernel: guest.kernel,
  initrd: guest.initrd,
  memoryMiB: MEMORY_MIB,
  cpus: 1,
  cmdline,
  cpu: qemuCpu(kind),
});

/** One HTTP/1.1 request over a unix socket; returns the status line. */
async function http(sock: string, method: string, path: string, body: unknown): Promise<string> {
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path: sock } });
  try {
    const r = await fetch(`http://localhost${path}`, {
      method,
      client,
      body: JSON.stringify(body),
    });
    const text = await r.text();
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return text;
  } finally {
    client.close();
  }
}

/** QMP commands, one at a time, over a unix socket. */
async function qmp(sock: string, cmds: Array<Record<string, unknown>>): Promise<string[]> {
  const conn = await Deno.connect({ transport: "unix", path: sock });
  // A QEMU that stops answering ends the exchange (closing the socket fails the read).
  const timer = setTimeout(() => conn.close(), 60_000);
  const dec = new TextDecoder();
  let buf = "";
  const chunk = new Uint8Array(65536);
  const line = async (want: (l: string) => boolean) => {
    for (;;) {
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        const l = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (want(l)) return l;
        continue;
      }
      const n = await conn.read(chunk);
      if (n === null) throw new Error(`QMP closed: ${buf}`);
      buf += dec.decode(chunk.subarray(0, n));
    }
  };
  try {
    await line(() => true); // the greeting
    const out: string[] = [];
    for (const c of [{ execute: "qmp_capabilities" }, ...cmds]) {
      await conn.write(new TextEncoder().encode(`${JSON.stringify(c)}\n`));
      const reply = await line((l) => l.includes('"return"') || l.includes('"error"'));
      if (reply.includes('"error"')) throw new Error(`QMP ${JSON.stringify(c)}: ${reply}`);
      out.push(reply);
    }
    return out.slice(1); // the replies to `cmds`, after qmp_capabilities'
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

async function waitFor(path: string): Promise<void> {
  const end = performance.now() + TIMEOUT_MS;
  while (performance.now() < end) {
    try {
      Deno.statSync(path);
      return;
    } catch { /* not yet */ }
    await sleep(10);
  }
  throw new Error(`${path} never appeared`);
}

// The snapshots, taken once each: the guest at READY, its echo loop reading.
say("Volt: booting and saving the snapshot");
const snaps = `${dir}/snaps`;
Deno.mkdirSync(snaps);
{
  const sock = `${dir}/volt.sock`;
  const vm = voltCmd(["--config-file", voltConfig, "--api-sock", sock, "--snapshot-dir", snaps]);
  await vm.until(UP);
  // The loop reads: it answers on a restore too.
  if (!parked) await vm.until(ANSWER, true);
  await http(sock, "PATCH", "/vm", { state: "Paused" });
  await http(sock, "PUT", "/snapshot/create", {
    snapshot_path: "vm.snap",
    mem_file_path: "vm.mem",
  });
  await vm.kill();
}
const qemuState = `${dir}/qemu.state`;
/** Why QEMU's snapshot could not be taken here, if it could not. */
let qemuFailed: string | undefined = memoryOnly ? "not taken (--memory-only)" : undefined;
if (!memoryOnly) {
  say("QEMU: booting and migrating to a file");
  try {
    const sock = `${dir}/qmp.sock`;
    const vm = new Vmm(QEMU, [...qemuBoot, "-qmp", `unix:${sock},server=on,wait=off`]);
    await vm.until(READY);
    await vm.until(ANSWER, true);
    await waitFor(sock);
    // Migrated running: the stream carries the run state, and one from a stopped source
    // restores paused (its guest never answered here). QEMU stops the source at the end.
    await qmp(sock, [
      { execute: "migrate", arguments: { uri: `exec:cat > ${qemuState}` } },
    ]);
    const end = performance.now() + TIMEOUT_MS;
    for (;;) {
      const [r] = await qmp(sock, [{ execute: "query-migrate" }]);
      if (r.includes('"completed"')) break;
      if (r.includes('"failed"') || performance.now() > end) throw new Error(`QEMU migrate: ${r}`);
      await sleep(20);
    }
    await vm.kill();
  } catch (e) {
    qemuFailed = (e as Error).message.split("\n")[0].slice(0, 300);
    say(`QEMU's snapshot failed, its restores are left out: ${qemuFailed}`);
  }
}
const snapshotBytes = {
  volt: Deno.statSync(`${snaps}/vm.snap`).size + Deno.statSync(`${snaps}/vm.mem`).size,
  qemu: qemuFailed ? 0 : Deno.statSync(qemuState).size,
};

const restoreArgs = ["--restore", `${snaps}/vm.snap`, "--mem-file", `${snaps}/vm.mem`];
// Clones restored ahead by a pool of monitors (`volt pool --restore`), two at a time.
const poolSock = `${dir}/pool.sock`;
const pool = memoryOnly
  ? undefined
  : await startPool(["--socket", poolSock, "--size", "2", ...restoreArgs], {
    timeoutMs: TIMEOUT_MS,
  });
if (pool) say("pool of 2 restored clones ready");
const times: Record<"volt" | "qemu", Record<string, number[]>> = {
  volt: { restore: [] as number[], "cold boot": [] as number[], "pool restore": [] as number[] },
  qemu: { restore: [] as number[], "cold boot": [] as number[], "pool restore": [] },
};
for (let i = 0; i < runs; i++) {
  say(`run ${i + 1}/${runs}`);
  const order = i % 2 ? ["qemu", "volt"] as const : ["volt", "qemu"] as const;
  for (const who of order) {
    if (who === "qemu" && qemuFailed) continue;
    if (who === "volt") {
      // Let the pool refill after the last take, so that the figure is a warm start's.
      if (i > 0) await sleep(2000);
      const p = new PoolConsole(poolSock, TIMEOUT_MS);
      times.volt["pool restore"].push(await p.until(ANSWER, true).finally(() => p.kill()));
      say(`volt pool restore: ${times.volt["pool restore"].at(-1)!.toFixed(1)} ms`);
    }
    const r = who === "volt"
      ? voltCmd(restoreArgs)
      : new Vmm(QEMU, [...qemuBoot, "-incoming", `exec:cat ${qemuState}`]);
    try {
      times[who].restore.push(await r.until(ANSWER, true).finally(() => r.kill()));
      say(`${who} restore: ${times[who].restore.at(-1)!.toFixed(0)} ms`);
    } catch (e) {
      if (who === "volt") throw e;
      // QEMU's restore is the peer's: when it does not answer here, its figure is left out.
      qemuFailed = `its restored guest did not answer: ${(e as Error).message.slice(0, 200)}`;
      say(`QEMU: ${qemuFailed}`);
    }
    const c = who === "volt" ? voltCmd(["--config-file", voltConfig]) : new Vmm(QEMU, qemuBoot);
    times[who]["cold boot"].push(await c.until(READY).finally(() => c.kill()));
    await c.kill();
    say(`${who} cold boot: ${times[who]["cold boot"].at(-1)!.toFixed(0)} ms`);
  }
}

/** Pss and private KiB of a process, from smaps_rollup. */
function rollup(pid: number): { pss: number; private: number } {
  const t = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
  const kib = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, "m").exec(t)?.[1] ?? 0);
  return { pss: kib("Pss"), private: kib("Private_Clean") + kib("Private_Dirty") };
}

/** What {@linkcode together} measured: how many answered, their summed PSS, the median private MiB. */
interface Together {
  n: number;
  pssMiB: number;
  privateMiB: number;
  /** Why the next one was not measured, when fewer than `clones` answered. */
  stopped?: string;
}

/**
 * Up to `clones` VMs running at once, each answered; their summed PSS and
 * the median private MiB. They start one after another, each once the
 * last answered: ten Linux boots at once under TCG wedged the helper VM.
 * One that does not answer ends the series: those that did are measured.
 */
async function together(
  make: (i: number) => Vmm,
  up: (vm: Vmm, i: number) => Promise<unknown>,
): Promise<Together> {
  const vms: Vmm[] = [];
  let stopped: string | undefined;
  try {
    for (let i = 0; i < clones && stopped === undefined; i++) {
      const vm = make(i);
      try {
        await up(vm, i);
        vms.push(vm);
      } catch (e) {
        await vm.kill();
        stopped = `VM ${i + 1} did not answer: ${(e as Error).message.slice(0, 200)}`;
        say(stopped);
      }
    }
    await sleep(500);
    // Volt's monitor is the deno child of `deno run mod.ts run`: the process that execs into it.
    // One that has exited since it answered (seen in the helper VM) is left out, and said.
    const use = vms.flatMap((v, i) => {
      try {
        return [rollup(v.child.pid)];
      } catch {
        stopped ??= `VM ${i + 1} exited after it answered: ${JSON.stringify(v.out.slice(-200))}`;
        say(stopped);
        return [];
      }
    });
    return {
      n: use.length,
      pssMiB: use.reduce((s, u) => s + u.pss, 0) / 1024,
      privateMiB: use.length ? summarize(use.map((u) => u.private / 1024)).median : 0,
      stopped,
    };
  } finally {
    for (const v of vms) await v.kill();
  }
}
// The pool's clones go first: with them, the helper VM's memory ran out during the part below.
pool?.child.kill("SIGTERM");
await pool?.child.status;
say(`memory: ${clones} restores at once`);
const cloneSock = (i: number) => `${dir}/clone-${i}.sock`;
/** A parked clone prints nothing: it is up once its API says it runs. */
async function running(i: number): Promise<void> {
  const end = performance.now() + TIMEOUT_MS;
  for (;;) {
    try {
      if ((await http(cloneSock(i), "GET", "/", undefined)).includes('"Running"')) return;
    } catch { /* not serving yet */ }
    if (performance.now() > end) throw new Error(`clone ${i + 1} never reported Running`);
    await sleep(10);
  }
}
const restored = await together(
  (i) => voltCmd([...restoreArgs, ...(parked ? ["--api-sock", cloneSock(i)] : [])]),
  (vm, i) => parked ? running(i) : vm.until(ANSWER, true),
);
say(`memory: ${clones} cold boots at once`);
const cold = await together(
  () => voltCmd(["--config-file", voltConfig]),
  (vm) => parked ? vm.until(UP) : vm.until(ANSWER, true),
);

const med = (xs: number[]) => xs.length ? summarize(xs).median : NaN;
const p99 = (xs: number[]) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))];
const v = times.volt, q = times.qemu;
const tenth = med(v.restore) <= med(v["cold boot"]) / 10;
const poolTenth = med(v["pool restore"]) <= med(v["cold boot"]) / 10;
const ahead = !qemuFailed && med(v.restore) < med(q.restore);
const poolAhead = !qemuFailed && med(v["pool restore"]) < med(q.restore);
// Compared at the count both reached: a PSS sum grows with every VM.
const both = Math.min(restored.n, cold.n);
const perVm = (t: Together) => t.n ? t.pssMiB / t.n : NaN;
const date = new Date().toISOString().slice(0, 10);
const command = `deno task bench:snapshot ${
  parked ? "--parked" : memoryOnly ? "--memory-only" : `--runs ${runs}`
} --clones ${clones}`;
const timed = memoryOnly ? [] : [
  ...sideBySide(["restore", "cold boot"], v, q),
  `| pool restore (a clone restored ahead by \`volt pool --restore\`: the request → the echo) | ${
    med(v["pool restore"]).toFixed(1)
  } | | |`,
  "",
  `p99: Volt restore ${p99(v.restore).toFixed(0)} ms, pool restore ${
    p99(v["pool restore"]).toFixed(0)
  } ms, QEMU restore ${qemuFailed ? "-" : p99(q.restore).toFixed(0)} ms. Files: Volt ${
    (snapshotBytes.volt / 2 ** 20).toFixed(1)
  } MiB (state + sparse memory file; ${
    (Deno.statSync(`${snaps}/vm.mem`).size / 2 ** 20).toFixed(0)
  } MiB apparent), QEMU ${(snapshotBytes.qemu / 2 ** 20).toFixed(1)} MiB.${
    qemuFailed ? ` QEMU: ${qemuFailed}.` : ""
  }`,
  "",
];
const memory = [
  `Memory, Volt, up to ${clones} VMs at once: ${restored.n} restored clones of one snapshot ${
    restored.pssMiB.toFixed(0)
  } MiB PSS together (${perVm(restored).toFixed(1)} MiB each, ${
    restored.privateMiB.toFixed(1)
  } MiB private each), ${cold.n} cold-booted VMs ${cold.pssMiB.toFixed(0)} MiB (${
    perVm(cold).toFixed(1)
  } MiB each, ${cold.privateMiB.toFixed(1)} MiB private each): ${
    (perVm(restored) / perVm(cold)).toFixed(2)
  }× per VM.${restored.stopped ? ` Clones: ${restored.stopped}.` : ""}${
    cold.stopped ? ` Cold boots: ${cold.stopped}.` : ""
  }`,
  "",
];
const goals = [
  ...(memoryOnly ? [] : [
    `restore at most a tenth of a cold boot: ${tenth ? "met" : "not met"} (${
      (med(v.restore) / med(v["cold boot"])).toFixed(2)
    }) by \`volt run --restore\`, ${poolTenth ? "met" : "not met"} (${
      (med(v["pool restore"]) / med(v["cold boot"])).toFixed(3)
    }) from a pool`,
    `ahead of QEMU's restore: ${ahead ? "met" : "not met"} (${
      (med(v.restore) / med(q.restore)).toFixed(2)
    }×) by \`volt run --restore\`, ${poolAhead ? "met" : "not met"} (${
      (med(v["pool restore"]) / med(q.restore)).toFixed(3)
    }×) from a pool`,
  ]),
  `${both} clones far below ${both} cold boots (under half): ${
    both > 0 && perVm(restored) < perVm(cold) / 2 ? "met" : "not met"
  }`,
];
publish(parked ? "snapshot-parked" : "snapshot", [
  `# Snapshot restore (${date})`,
  "",
  `Where: ${where}. ${
    memoryOnly ? "Memory part only" : `${runs} runs each, alternating; medians (ms from spawn)`
  }. Command: \`${command}\`.`,
  parked
    ? `Guest: the default kernel without an initramfs, ${MEMORY_MIB} MiB, 1 vCPU, parked in its wait for a root device (\`root=/dev/vdz rootwait\`); a clone is counted once \`GET /\` says Running, a cold boot at "${UP}".`
    : `Guest: the default kernel and initramfs, ${MEMORY_MIB} MiB, 1 vCPU, a console echo loop; "restore" is spawn → the echo of a line sent on the console (Volt \`volt run --restore\`, QEMU \`-incoming\` from its \`migrate\` file, migrated running), "cold boot" spawn → \`${READY}\`.`,
  "",
  ...timed,
  ...memory,
  `Goals: ${goals.join("; ")}.`,
]);
Deno.removeSync(dir, { recursive: true });
