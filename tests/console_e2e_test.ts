/**
 * The guest console on the real monitor (`volt run`, small guests on KVM):
 * `safe` mode keeps terminal control sequences from the host's terminal and
 * is the default on a terminal that is not the guest's shell, the terminal
 * is reset at exit, and a guest flooding a stdout nobody reads neither
 * grows the monitor nor delays SIGTERM.
 */
import assert from "node:assert/strict";
import { EXIT_CODE } from "../mod.ts";
import { ConsoleFilter, terminalReset } from "../src/vmm/console_filter.ts";
import { hasScript, needsKvm, ROOT, runCli } from "./helpers.ts";
import * as g from "./guests.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What a hostile guest prints: clipboard write, title, queries, alternate screen, charset. */
const HOSTILE = "before \x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x1b\\\x1b[6n\x1b[c\x1bP$qm\x1b\\" +
  "\x1b[?1049h\x1b(0\x0e \x1b[1;31mred\x1b[0m after\n";
const filtered = new ConsoleFilter();
const SAFE = dec.decode(filtered.filter(enc.encode(HOSTILE)));

function rssKiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmRSS:\s+(\d+) kB$/m);
  return Number(m![1]);
}

Deno.test({
  ...needsKvm,
  name: "console: --console-mode=safe keeps a guest's OSC 52, queries and charset switches away",
  async fn() {
    assert.equal(SAFE, "before  \x1b[1;31mred\x1b[0m after\n");
    const safe = await runCli([
      "run",
      "--kernel",
      g.printBytes(HOSTILE),
      "--console-mode=safe",
      "--log-level",
      "info",
    ]);
    assert.equal(safe.code, 0, safe.stderr);
    assert.equal(safe.stdout, SAFE);
    assert.match(
      safe.stderr,
      /The console kept 8 terminal control sequences from the terminal \(safe mode\)/,
    );

    // A pipe gets the guest's bytes as they are (auto is raw off a terminal).
    const raw = await runCli(["run", "--kernel", g.printBytes(HOSTILE)]);
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal(raw.stdout, HOSTILE);

    const bad = await runCli(["run", "--kernel", g.hello(), "--console-mode=pretty"]);
    assert.equal(bad.code, EXIT_CODE.usage);
    assert.equal(bad.stderr.trim(), "volt: Unknown console mode: pretty (auto, safe or raw)");
  },
});

Deno.test({
  ...needsKvm,
  ignore: needsKvm.ignore || !hasScript,
  name: "console: on a terminal that is not the guest's shell, auto is safe; the terminal is reset",
  async fn() {
    const q = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
    const volt = [Deno.execPath(), "run", "-A", `${ROOT}/mod.ts`, "run", "--kernel"];
    const run = (kernel: string) =>
      new Deno.Command("script", {
        // stdout is the terminal, stdin is not.
        args: ["-qfec", `${[...volt, kernel].map(q).join(" ")} </dev/null`, "/dev/null"],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
        env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      }).output();
    const out = await run(g.printBytes(HOSTILE));
    assert.equal(out.code, 0);
    // The terminal turns "\n" into "\r\n".
    const seen = dec.decode(out.stdout).replaceAll("\r\n", "\n");
    assert.equal(seen, SAFE + dec.decode(terminalReset(false)));
  },
});

Deno.test({
  ...needsKvm,
  name: "console: a guest flooding a stdout nobody reads stops on SIGTERM; the monitor stays small",
  async fn() {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}/mod.ts`, "run", "--kernel", g.consoleFlood()],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    }).spawn();
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const reader = child.stdout.getReader();
    let seen = "";
    while (!seen.includes("flooding\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += dec.decode(value);
    }
    // Stop reading: the pipe fills, then the console ring, then the guest waits.
    await new Promise((r) => setTimeout(r, 1500));
    const before = rssKiB(child.pid);
    await new Promise((r) => setTimeout(r, 1500));
    const grown = rssKiB(child.pid) - before;
    const t0 = performance.now();
    child.kill("SIGTERM");
    const status = await child.status;
    const took = performance.now() - t0;
    clearTimeout(killer);
    await reader.cancel();
    const stderr = dec.decode(await new Response(child.stderr).arrayBuffer());
    assert.equal(status.code, EXIT_CODE.sigterm, stderr);
    assert.ok(took < 10_000, `SIGTERM took ${took.toFixed(0)} ms`);
    assert.ok(grown < 8 * 1024, `the monitor grew by ${grown} KiB with stdout blocked`);
  },
});
