/**
 * The host-channel benchmark: Volt's vsock device and volt-init's exec
 * agent, in one running default guest.
 *
 * - connect: a host client's `CONNECT 10000\n` to `OK` (the agent listens),
 *   100 times;
 * - exec round trip: `true` run through the library's `execInGuest`
 *   (connect, run, exit status), 100 times; and `volt exec -- true` as a
 *   process (a Deno start included), 20 times;
 * - throughput: 64 MiB each way through an exec's stdin (`cat >/dev/null`)
 *   and stdout (`head -c 64M /dev/zero`).
 *
 * QEMU has no peer here: its vsock needs the host's vhost-vsock, which
 * this kind of machine does not have (DESIGN.md §5).
 *
 * Guest userspace must run: natively with hardware KVM; inside the
 * nested-KVM helper VM on PVM and without /dev/kvm.
 *
 * Usage: deno task bench:vsock
 *
 * @module
 */

import { parseArgs } from "node:util";
import { EXEC_PORT, execInGuest } from "../src/guest/exec.ts";
import { publish, summarize } from "./boot/stats.ts";
import { userspaceHere } from "./boot/userspace.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const say = (s: string) => console.error(`bench:vsock: ${s}`);
const { values } = parseArgs({
  args: Deno.args,
  options: { nested: { type: "boolean" } },
  strict: true,
});
const where = await userspaceHere("bench:vsock", "vsock.ts", [], values.nested);

const dir = Deno.makeTempDirSync({ prefix: "volt-bench-vsock-" });
const uds = `${dir}/v.sock`;
const vm = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    `${ROOT}/mod.ts`,
    "run",
    "--vsock",
    `cid=3,uds=${uds}`,
    "--append",
    'volt.cmd="echo vsock-bench-ready-$((6*7)); sleep 3600"',
  ],
  stdin: "null",
  stdout: "piped",
  stderr: "inherit",
  env: { DENO_NO_UPDATE_CHECK: "1" },
}).spawn();
const reader = vm.stdout.pipeThrough(new TextDecoderStream()).getReader();
// The kernel echoes its command line: the marker is what only the shell prints.
for (let seen = ""; !seen.includes("vsock-bench-ready-42");) {
  const { value, done } = await reader.read();
  if (done) throw new Error(`the VM ended before it was ready: ${seen.slice(-500)}`);
  seen += value;
}
reader.releaseLock();
vm.stdout.cancel().catch(() => {});

const sink = { stdout() {}, stderr() {} };
const enc = new TextEncoder();

async function connectOnce(): Promise<number> {
  const t0 = performance.now();
  const c = await Deno.connect({ transport: "unix", path: uds });
  await c.write(enc.encode(`CONNECT ${EXEC_PORT}\n`));
  const one = new Uint8Array(1);
  while (await c.read(one) && one[0] !== 10) { /* the OK line */ }
  const ms = performance.now() - t0;
  c.close();
  return ms;
}

const connect: number[] = [], exec: number[] = [], execCli: number[] = [];
const BYTES = 64 << 20;
let up: number | undefined, down: number | undefined;
/** What went wrong, if anything: the figures before it still count. */
let failure: string | undefined;
try {
  say("connect x100");
  for (let i = 0; i < 100; i++) connect.push(await connectOnce());
  say("exec round trip x100");
  for (let i = 0; i < 100; i++) {
    const t0 = performance.now();
    const code = await execInGuest(uds, ["true"], sink);
    exec.push(performance.now() - t0);
    if (code !== 0) throw new Error(`true exited ${code}`);
  }
  say("volt exec -- true, as a process, x20");
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}/mod.ts`, "exec", "--vsock", uds, "--", "true"],
      stdout: "null",
      stderr: "null",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).output();
    execCli.push(performance.now() - t0);
    if (r.code !== 0) throw new Error(`volt exec exited ${r.code}`);
  }
  say("64 MiB host to guest (stdin)");
  const chunk = new Uint8Array(1 << 16);
  let sent = 0;
  let t0 = performance.now();
  await execInGuest(uds, ["sh", "-c", "cat > /dev/null"], {
    ...sink,
    stdin: new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= BYTES) return c.close();
        sent += chunk.length;
        c.enqueue(chunk);
      },
    }),
  });
  up = BYTES / (1 << 20) / ((performance.now() - t0) / 1000);
  say("64 MiB guest to host (stdout)");
  let got = 0;
  t0 = performance.now();
  await execInGuest(uds, ["head", "-c", String(BYTES), "/dev/zero"], {
    stdout: (b) => void (got += b.length),
    stderr() {},
  });
  if (got !== BYTES) throw new Error(`read ${got} of ${BYTES} bytes`);
  down = got / (1 << 20) / ((performance.now() - t0) / 1000);
} catch (e) {
  // Under TCG a guest now and then triple-faults: report what was measured.
  failure = (e as Error).message;
  say(`failed: ${failure}`);
} finally {
  vm.kill("SIGTERM");
  await vm.status;
  Deno.removeSync(dir, { recursive: true });
}

const row = (name: string, xs: number[]) => {
  if (xs.length === 0) return `| ${name} | - | - | 0 |`;
  const sorted = [...xs].sort((a, b) => a - b);
  const p99 = sorted[Math.min(xs.length - 1, Math.ceil(xs.length * 0.99) - 1)];
  return `| ${name} | ${summarize(xs).median.toFixed(2)} | ${p99.toFixed(2)} | ${xs.length} |`;
};
const mibs = (
  x: number | undefined,
) => (x === undefined ? "not measured" : `${x.toFixed(1)} MiB/s`);
publish("vsock", [
  `# Host-channel benchmark (${new Date().toISOString().slice(0, 10)})`,
  "",
  `Where: ${where}. Command: \`deno task bench:vsock\`. Guest: the default kernel and initramfs, 128 MiB, 1 vCPU.`,
  "",
  "| figure (ms) | median | p99 | runs |",
  "| --- | ---: | ---: | ---: |",
  row("CONNECT to OK (vsock connect)", connect),
  row("exec `true`, in-process (execInGuest)", exec),
  row("`volt exec -- true`, a process", execCli),
  "",
  `Throughput through an exec's streams (64 MiB each): host to guest ${mibs(up)}, guest to host ${
    mibs(down)
  }.`,
  failure ? `The run stopped early: ${failure}.` : "",
  "",
]);
Deno.exit(failure ? 1 : 0);
