/**
 * Debian packages fetched with `apt-get download` and unpacked with
 * `dpkg-deb -x`, never installed: guest kernels come from here.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { runTool } from "./host_tools.ts";

/**
 * The concrete package a meta package (e.g. `linux-image-cloud-amd64`)
 * depends on, by `apt-cache depends`.
 */
export function resolveMeta(meta: string, prefix: string): string {
  const out = runTool("apt-cache", ["depends", meta], { pkg: "apt", limitSec: 120 });
  const dep = out.split("\n").map((l) => l.trim()).find((l) =>
    l.startsWith("Depends: ") && l.includes(prefix)
  );
  if (!dep) {
    throw new VoltError(`Cannot resolve ${meta} (run apt-get update first?)`, "noinput");
  }
  return dep.slice("Depends: ".length).trim();
}

/** The candidate version apt would fetch. */
export function candidateVersion(pkg: string): string {
  const out = runTool("apt-cache", ["policy", pkg], { pkg: "apt", limitSec: 120 });
  const m = /Candidate:\s*(\S+)/.exec(out);
  if (!m || m[1] === "(none)") {
    throw new VoltError(`Debian package ${pkg} is not available`, "noinput");
  }
  return m[1];
}

/**
 * Downloads `pkg` into a temporary directory and unpacks it into `dest`.
 *
 * @example
 * ```ts ignore
 * import { fetchAndUnpack } from "./apt.ts";
 * fetchAndUnpack("busybox-static", "/tmp/bb");
 * ```
 */
export function fetchAndUnpack(pkg: string, dest: string): void {
  const tmp = Deno.makeTempDirSync({ prefix: "volt-apt-" });
  try {
    runTool("apt-get", ["download", "-q", pkg], { cwd: tmp, pkg: "apt", limitSec: 900 });
    const deb = [...Deno.readDirSync(tmp)].find((e) => e.name.endsWith(".deb"));
    if (!deb) throw new VoltError(`apt-get download ${pkg} produced no package`, "internal");
    Deno.mkdirSync(dest, { recursive: true });
    runTool("dpkg-deb", ["-x", `${tmp}/${deb.name}`, dest], { pkg: "dpkg" });
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}
