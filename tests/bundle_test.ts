/**
 * The offline single-file program: `tools/bundle.ts` writes `volt.js` and
 * its launcher, which runs with narrow Deno permissions and still jails
 * the monitor and boots a guest.
 */
import assert from "node:assert/strict";
import meta from "../deno.json" with { type: "json" };
import { needsKvm, ROOT, tmpDir } from "./helpers.ts";
import * as g from "./guests.ts";

const dist = tmpDir();
const built = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", `${ROOT}/tools/bundle.ts`, "--out", dist],
  stdout: "piped",
  stderr: "piped",
}).outputSync();

async function volt(args: string[]) {
  const out = await new Deno.Command(`${dist}/volt`, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("bundle: one file and a launcher that runs it", async () => {
  assert.equal(built.code, 0, new TextDecoder().decode(built.stderr));
  const size = Deno.statSync(`${dist}/volt.js`).size;
  assert.ok(size > 50_000, `volt.js is only ${size} bytes`);
  const src = Deno.readTextFileSync(`${dist}/volt.js`);
  assert.doesNotMatch(src, /from "\.\.?\//, "no relative imports left");
  // Deno's Node layer costs every runtime (outer step, monitor, each vCPU worker) ~25 ms.
  assert.doesNotMatch(src, /^import .*"node:/m, "a node: import in the monitor's code");
  // The vCPU workers' own bundle rides in front, without the CLI.
  const worker = /^globalThis\.__voltVcpuWorker = ("(?:[^"\\]|\\.)*");\n/.exec(src);
  assert.ok(worker, "no vCPU worker bundle in front of volt.js");
  const workerCode: string = JSON.parse(worker[1]);
  assert.match(workerCode, /installVcpuThread/);
  assert.doesNotMatch(workerCode, /function runCommand|function poolCommand/);
  assert.ok(workerCode.length < src.length / 3, `the worker is ${workerCode.length} bytes`);
  for (const f of ["init/volt-init.c", "kernel/microvm.config"]) {
    assert.ok(Deno.statSync(`${dist}/guest/${f}`).isFile, `the bundle lacks guest/${f}`);
  }
  const v = await volt(["--version"]);
  assert.equal(v.code, 0);
  assert.equal(v.stdout.trim(), `volt ${meta.version}`);
  const bad = await volt(["run", "--kernel", `${dist}/nope`]);
  assert.equal(bad.code, 66);
  assert.equal(bad.stderr, `volt: Kernel not found: ${dist}/nope\n`);
});

Deno.test({
  ...needsKvm,
  name: "bundle: the launcher's monitor jails itself and boots a guest",
  async fn() {
    const r = await volt(["run", "--kernel", g.hello(), "--log-level", "info"]);
    assert.equal(r.stdout, "Hello from a volt guest\n");
    assert.equal(r.code, 7, r.stderr);
    assert.match(
      r.stderr,
      /Sandbox: seccomp \d+ syscalls, \d+ on vCPU threads \(kill otherwise\), Landlock /,
    );
  },
});
