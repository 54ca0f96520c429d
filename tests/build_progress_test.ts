import assert from "node:assert/strict";
import {
  BuildProgress,
  formatDuration,
  isKbuildLine,
  KbuildLineCounter,
} from "../src/guest/build_progress.ts";
import { runKernelBuild } from "../src/guest/default_guest.ts";
import { VoltError } from "../src/errors.ts";

/** Make output as a kernel build writes it: 6 status lines among others. */
const MAKE_OUTPUT = [
  "make: Entering directory '/build/src'",
  "  SYNC    include/config/auto.conf.cmd",
  "  HOSTCC  scripts/basic/fixdep",
  "  CC      init/main.o",
  "init/main.c: In function 'start_kernel':",
  "init/main.c:12:5: warning: unused variable 'x' [-Wunused-variable]",
  "   12 |     int x;",
  "      |     ^",
  "  AS      arch/x86/kernel/head_64.o",
  "  AR      init/built-in.a",
  "  LD      vmlinux.o",
  "Kernel: arch/x86/boot/bzImage is ready  (#1)",
  "make: Leaving directory '/build/src'",
  "",
].join("\n");

Deno.test("build progress: kbuild status lines are told from other make output", () => {
  for (
    const line of [
      "  CC      init/main.o",
      "  AS      arch/x86/entry/entry_64.o",
      "  LD      vmlinux.o",
      "  AR      lib/lib.a",
      "  HOSTCC  scripts/kconfig/conf.o",
      "  SORTTAB vmlinux",
      "  ASN.1   crypto/rsapubkey.asn1.[ch]",
      "  CC [M]  fs/fuse/dev.o",
    ]
  ) assert.ok(isKbuildLine(line), line);
  for (
    const line of [
      "",
      "CC init/main.o",
      "   CC      init/main.o",
      "  cc      init/main.o",
      "  CC",
      "   12 |     int x;",
      "      |     ^",
      "  Kernel: arch/x86/boot/bzImage is ready",
      "make[1]: *** [scripts/Makefile.build:250: init/main.o] Error 1",
    ]
  ) assert.ok(!isKbuildLine(line), line);
});

Deno.test("build progress: a line split anywhere across chunks counts once", () => {
  const whole = new KbuildLineCounter();
  assert.equal(whole.push(MAKE_OUTPUT), 6);
  for (let cut = 0; cut <= MAKE_OUTPUT.length; cut++) {
    const c = new KbuildLineCounter();
    c.push(MAKE_OUTPUT.slice(0, cut));
    assert.equal(c.push(MAKE_OUTPUT.slice(cut)), 6, `split at ${cut}`);
  }
  // One byte at a time, with CRLF endings.
  const c = new KbuildLineCounter();
  for (const ch of MAKE_OUTPUT.replaceAll("\n", "\r\n")) c.push(ch);
  assert.equal(c.count, 6);
});

Deno.test("build progress: a last line is counted only when complete or at the end", () => {
  const c = new KbuildLineCounter();
  assert.equal(c.push("  CC      a.o\n  CC      b.o"), 1);
  assert.equal(c.end(), 2);
  assert.equal(c.end(), 2);
});

Deno.test("build progress: never 100% before make exits, then done", () => {
  const p = new BuildProgress({ total: 10, terminal: false, start: 0 });
  p.push("  CC      x.o\n".repeat(9));
  assert.equal(p.line(5_000), "9/~10 objects (90%), 0m05s");
  p.push("  CC      x.o\n");
  assert.equal(p.line(6_000), "10/~10 objects (99%), 0m06s");
  // Past the estimate the total follows the count, still below 100%.
  p.push("  CC      x.o\n".repeat(5));
  assert.equal(p.line(7_000), "15/~15 objects (99%), 0m07s");
  assert.equal(p.finish(125_000, true), "done: 15 objects in 2m05s\n");
  assert.equal(p.finish(126_000, true), "");
  assert.equal(p.update(127_000), "");
});

Deno.test("build progress: a failed build says where it stopped", () => {
  const p = new BuildProgress({ total: 100, terminal: false, start: 0, prefix: "k: " });
  p.push("  CC      x.o\n".repeat(42));
  assert.equal(p.finish(3_000, false), "k: stopped at 42/~100 objects (42%), 0m03s\n");
});

Deno.test("build progress: without a terminal, a line per 10% or per minute", () => {
  const p = new BuildProgress({ total: 100, terminal: false, start: 0, prefix: "k: " });
  const written: string[] = [];
  // One status line a second for 100 seconds, updated every 250 ms.
  for (let t = 0; t < 100_000; t += 250) {
    if (t % 1000 === 0) p.push("  CC      x.o\n");
    const out = p.update(t);
    if (out) written.push(out);
  }
  assert.deepEqual(
    written,
    [10, 20, 30, 40, 50, 60, 70, 80, 90].map((n) =>
      `k: ${n}/~100 objects (${n}%), ${formatDuration((n - 1) * 1000)}\n`
    ),
  );
  // At the 99% cap nothing moves: only the minute heartbeat shows life.
  const quiet: number[] = [];
  for (let t = 100_000; t <= 300_000; t += 250) if (p.update(t)) quiet.push(t);
  assert.deepEqual(quiet, [149_000, 209_000, 269_000]);
  assert.equal(p.finish(300_000, true), "k: done: 100 objects in 5m00s\n");
});

Deno.test("build progress: on a terminal, one line rewritten only when it changes", () => {
  const p = new BuildProgress({ total: 2000, terminal: true, start: 0, prefix: "k: " });
  assert.equal(p.update(0), "\rk: 0/~2000 objects (0%), 0m00s");
  assert.equal(p.update(100), "");
  p.push("  CC      x.o\n".repeat(1500));
  assert.equal(p.update(200), "\rk: 1500/~2000 objects (75%), 0m00s");
  assert.equal(p.update(61_000), "\rk: 1500/~2000 objects (75%), 1m01s");
  // A shorter text is padded over the longer one, then the line is ended.
  const end = p.finish(62_000, true);
  assert.equal(end, `\rk: done: 1500 objects in 1m02s${" ".repeat(4)}\n`);
  assert.equal(
    end.length,
    "\rk: 1500/~2000 objects (75%), 1m01s".length + 1,
  );
});

/**
 * A stand-in for guest/kernel/build.sh: its stage lines on stderr, make's
 * output only in the log, written in pieces that split lines.
 */
const FAKE_BUILD = `
set -euo pipefail
log="$1"; fail="$2"
say() { printf 'volt-kernel: %s\\n' "$*" >&2; }
printf '  HOSTCC  scripts/kconfig/conf.o\\nconfiguration written\\n' >"$log"
say "[1/3] make tinyconfig"
say "[2/3] building vmlinux (log: $log)"
for i in 1 2 3 4 5 6 7 8 9; do
  printf '  CC      obj%s.o\\nwarning: x\\n  A' "$i" >>"$log"
  sleep 0.03
  printf 'R      dir%s/built-in.a\\n' "$i" >>"$log"
done
if [[ "$fail" == 1 ]]; then
  printf 'make: *** [Makefile:1] Error 2\\n' >>"$log"
  tail -n 1 "$log" >&2
  say "error: kernel build failed (full log: $log)"
  exit 1
fi
say "[3/3] done"
`;

async function fakeBuild(fail: boolean): Promise<{ out: string; lines?: number; error?: unknown }> {
  const dir = await Deno.makeTempDir({ prefix: "volt-build-progress-" });
  try {
    const script = `${dir}/build.sh`;
    await Deno.writeTextFile(script, FAKE_BUILD);
    let out = "";
    const log = `${dir}/build.log`;
    try {
      const lines = await runKernelBuild([script, log, fail ? "1" : "0"], {
        log,
        total: 10,
        terminal: false,
        pollMs: 10,
        write: (s) => out += s,
      });
      return { out, lines };
    } catch (error) {
      return { out, error };
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("build progress: shown during the script's make step, from its log", async () => {
  const { out, lines, error } = await fakeBuild(false);
  assert.equal(error, undefined);
  assert.equal(lines, 19);
  const at = (s: string) => {
    const i = out.indexOf(s);
    assert.ok(i >= 0, `${s} in:\n${out}`);
    return i;
  };
  const building = at("volt-kernel: [2/3] building vmlinux");
  const progress = out.search(/volt-kernel: {7}\d+\/~\d+ objects \(\d+%\), \dm\d\ds\n/);
  const done = at("volt-kernel:       done: 19 objects in ");
  const next = at("volt-kernel: [3/3] done\n");
  assert.ok(at("volt-kernel: [1/3] make tinyconfig") < building);
  assert.ok(building < progress && progress < done && done < next, out);
  assert.ok(!out.includes("(100%)"), out);
  // The 10% lines cannot outnumber 10, however often the log was read.
  assert.ok(out.split("\n").filter((l) => l.includes("objects (")).length <= 10, out);
});

Deno.test("build progress: a failing make step ends the progress before the log tail", async () => {
  const { out, lines, error } = await fakeBuild(true);
  assert.equal(lines, undefined);
  assert.ok(error instanceof VoltError, String(error));
  assert.match(error.message, /^bash .*build\.sh .* failed$/);
  assert.match(
    out,
    /volt-kernel: {7}stopped at 19\/~19 objects \(99%\), \dm\d\ds\nmake: \*\*\* \[Makefile:1\] Error 2\nvolt-kernel: error: kernel build failed \(full log: .*\)\n$/,
  );
  assert.ok(!out.includes("done:"), out);
});
