/**
 * Guest tooling commands: `volt kernel`, `volt guest build`, `volt initramfs`.
 *
 * @module
 */

import { EXIT_CODE, VoltError } from "../errors.ts";
import { writeAtomic } from "../guest/cache.ts";
import { type CpioEntry, gunzip, gzip, readCpio, writeCpio } from "../guest/cpio.ts";
import {
  buildDefaultInitramfs,
  buildDefaultRootfs,
  buildMicrovmKernel,
  busyboxApplets,
  ensureDefaultGuest,
  fetchBusybox,
  microvmKernelPaths,
} from "../guest/default_guest.ts";
import { debianKernelPaths, debianModulesDir, fetchDebianKernel } from "../guest/kernels.ts";
import { parse } from "./options.ts";

/** Progress lines go to stderr, prefixed, so stdout stays the guest's. */
export const progress = (s: string): void => {
  Deno.stderr.writeSync(new TextEncoder().encode(`volt: ${s}\n`));
};

/**
 * Resolves `--kernel` aliases: `debian` fetches Debian's cloud kernel (its
 * vmlinux, for the PVH entry) and gives it the default initramfs with its
 * virtio and vsock modules; none builds the default guest.
 */
export async function resolveGuest(
  kernel: string | undefined,
  initrd: string | undefined,
): Promise<{ kernel: string; initrd?: string }> {
  if (kernel === undefined) {
    const g = await ensureDefaultGuest(progress);
    return { kernel: g.kernel, initrd: initrd ?? g.initrd };
  }
  if (kernel === "debian") {
    const k = await fetchDebianKernel(progress);
    return {
      kernel: k.vmlinux,
      initrd: initrd ?? await buildDefaultInitramfs(progress, debianModulesDir()),
    };
  }
  return { kernel, initrd };
}

/**
 * `volt kernel list|build|fetch debian`.
 *
 * @example
 * ```ts ignore
 * import { kernelCommand } from "./guest_cmd.ts";
 * await kernelCommand(["list"]);
 * ```
 */
export async function kernelCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "list": {
      const { values } = parse(rest, { json: { type: "boolean" } });
      const micro = await microvmKernelPaths();
      const deb = debianKernelPaths();
      if (values.json) {
        console.log(JSON.stringify([
          { name: "microvm", ready: !!micro, ...(micro ?? {}) },
          { name: "debian", ready: !!deb, ...(deb ?? {}) },
        ]));
        return EXIT_CODE.ok;
      }
      console.log(`microvm  ${micro ? micro.vmlinux : "(not built: volt kernel build)"}`);
      console.log(`debian   ${deb ? deb.vmlinux : "(not fetched: volt kernel fetch debian)"}`);
      return EXIT_CODE.ok;
    }
    case "build": {
      parse(rest, {});
      console.log((await buildMicrovmKernel(progress)).vmlinux);
      return EXIT_CODE.ok;
    }
    case "fetch": {
      const [which, ...more] = rest;
      parse(more, {});
      if (which !== "debian") throw new VoltError("Usage: volt kernel fetch debian", "usage");
      console.log((await fetchDebianKernel(progress)).vmlinux);
      return EXIT_CODE.ok;
    }
    default:
      throw new VoltError("Usage: volt kernel list | build | fetch debian", "usage");
  }
}

/** `volt guest build`: the default kernel, initramfs and ext4 root image, printed as paths. */
export async function guestCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "build") throw new VoltError("Usage: volt guest build", "usage");
  parse(rest, {});
  const g = await ensureDefaultGuest(progress);
  const rootfs = await buildDefaultRootfs(progress);
  console.log(`kernel ${g.kernel}\ninitrd ${g.initrd}\nrootfs ${rootfs}`);
  return EXIT_CODE.ok;
}

/**
 * Resolves `--rootfs`: `default` is the default guest's root image (built
 * if missing), anything else a path.
 */
export async function resolveRootfs(rootfs: string): Promise<string> {
  return rootfs === "default" ? await buildDefaultRootfs(progress) : rootfs;
}

/**
 * `volt initramfs --init FILE [--add HOST:GUEST]... [--busybox] -o OUT` writes
 * a newc archive (gzip when OUT ends in .gz); `--list FILE` prints one.
 */
export async function initramfsCommand(args: string[]): Promise<number> {
  const { values: v } = parse(args, {
    init: { type: "string" },
    add: { type: "string", multiple: true },
    busybox: { type: "boolean" },
    output: { type: "string", short: "o" },
    list: { type: "string" },
  });
  if (v.list) {
    let data = readInput(v.list, "Initramfs");
    if (data[0] === 0x1f && data[1] === 0x8b) data = await gunzip(data);
    for (const e of readCpio(data)) {
      const extra = e.type === "symlink"
        ? ` -> ${e.target}`
        : e.type === "file"
        ? ` ${e.data.length}`
        : "";
      console.log(`${e.type.padEnd(8)} ${e.path}${extra}`);
    }
    return EXIT_CODE.ok;
  }
  if (!v.output) throw new VoltError("No output file given (-o OUT)", "usage");
  const entries: CpioEntry[] = [];
  if (v.init) {
    entries.push({ type: "file", path: "init", data: readInput(v.init, "Init"), mode: 0o755 });
  }
  if (v.busybox) {
    const bb = fetchBusybox(progress);
    entries.push({ type: "file", path: "bin/busybox", data: Deno.readFileSync(bb), mode: 0o755 });
    for (const a of busyboxApplets(bb)) {
      entries.push({ type: "symlink", path: `bin/${a}`, target: "busybox" });
    }
  }
  for (const spec of v.add ?? []) {
    const i = spec.lastIndexOf(":");
    if (i <= 0 || i === spec.length - 1) {
      throw new VoltError(`--add takes HOST:GUEST, not "${spec}"`, "usage");
    }
    const host = spec.slice(0, i);
    const data = readInput(host, "File");
    const mode = Deno.statSync(host).mode ?? 0o644;
    entries.push({
      type: "file",
      path: spec.slice(i + 1).replace(/^\/+/, ""),
      data,
      mode: mode & 0o7777,
    });
  }
  if (entries.length === 0) {
    throw new VoltError("Nothing to put in the initramfs (--init, --add, --busybox)", "usage");
  }
  let archive = writeCpio(entries);
  if (v.output.endsWith(".gz")) archive = await gzip(archive);
  writeAtomic(v.output, archive);
  return EXIT_CODE.ok;
}

function readInput(path: string, what: string): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new VoltError(`${what} not found: ${path}`, "noinput");
    }
    throw new VoltError(`${what} ${path} cannot be read: ${(e as Error).message}`, "noinput");
  }
}
