/**
 * Builds the offline single-file program: `dist/volt.js` (deno bundle) and
 * `dist/volt`, a launcher carrying the permission flags. `deno compile`
 * needs a runtime download this host cannot reach; the release workflow
 * does that part.
 *
 * Usage: deno run -A tools/bundle.ts [--out DIR]   (default dist/)
 */

import { parseArgs } from "node:util";
import { dirname } from "node:path";
import { GUEST_FILES } from "../src/guest/guest_sources.ts";

const root = new URL("..", import.meta.url).pathname;
const { values } = parseArgs({ options: { out: { type: "string" } } });
const dist = values.out ?? `${root}dist`;
Deno.mkdirSync(dist, { recursive: true });
const bundle = (entry: string, out: string) => {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "deno", "-o", out, `${root}${entry}`],
    stdout: "inherit",
    stderr: "inherit",
  }).outputSync();
  if (!r.success) Deno.exit(r.code);
};
// The vCPU workers get a bundle of their own module, carried inside volt.js
// as text: a worker that loaded all of volt.js would hold the whole CLI too
// (measured: 2.5 MiB more per vCPU, and a slower start).
const workerFile = `${dist}/.vcpu_worker.js`;
bundle("src/vmm/vcpu_worker.ts", workerFile);
const workerCode = Deno.readTextFileSync(workerFile);
Deno.removeSync(workerFile);
bundle("src/cli/bundle_entry.ts", `${dist}/volt.js`);
const main = Deno.readTextFileSync(`${dist}/volt.js`);
Deno.writeTextFileSync(
  `${dist}/volt.js`,
  `globalThis.__voltVcpuWorker = ${JSON.stringify(workerCode)};\n${main}`,
);
// The guest's sources travel beside the bundle: the default guest is built from them.
for (const f of GUEST_FILES) {
  Deno.mkdirSync(dirname(`${dist}/guest/${f}`), { recursive: true });
  Deno.copyFileSync(`${root}guest/${f}`, `${dist}/guest/${f}`);
}

// These flags are the outer step's, which builds or fetches the guest: the
// guest files are named on the command line, so reads stay broad, and
// writes go to the guest cache only. The monitor itself re-executes in its
// jail with --allow-ffi and reads of this file, libc and the guest files.
// FFI cannot be scoped to libc: Deno 2.9 refuses pointer views (guest RAM,
// kvm_run) under a path-scoped --allow-ffi.
const launcher = `#!/bin/sh
# Volt launcher: runs the bundled monitor with its permission flags.
here=$(dirname "$(readlink -f "$0")")
cache="\${XDG_CACHE_HOME:-$HOME/.cache}/volt"
exec env DENO_NO_UPDATE_CHECK=1 deno run --quiet --no-prompt \\
  --allow-ffi --allow-read --allow-write="$cache" \\
  --allow-env --allow-run --allow-sys \\
  "$here/volt.js" "$@"
`;
Deno.writeTextFileSync(`${dist}/volt`, launcher, { mode: 0o755 });
const size = Deno.statSync(`${dist}/volt.js`).size;
console.log(`${dist}/volt.js ${(size / 1024).toFixed(0)} KiB, launcher ${dist}/volt`);
