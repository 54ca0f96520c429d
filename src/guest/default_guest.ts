/**
 * The default guest: the project's microVM kernel and an initramfs of
 * volt-init plus busybox, built or fetched on first use and cached by the
 * hash of their inputs.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { fetchAndUnpack } from "./apt.ts";
import { BuildProgress } from "./build_progress.ts";
import { cacheDir, exists, writeAtomic } from "./cache.ts";
import { type CpioEntry, gzip, writeCpio } from "./cpio.ts";
import { checkStatus, hasTool, runTool, spawnTool } from "./host_tools.ts";
import type { KernelPaths } from "./kernels.ts";
import { guestDir, KERNEL_PATCHES } from "./guest_sources.ts";

/** Debian package with the kernel source tarball. */
export const KERNEL_SOURCE_PKG = "linux-source-6.1";

/** Reports a long step. */
export type Progress = (line: string) => void;

/** Short content hash of files and strings, for cache keys. */
export async function contentHash(parts: Array<string | Uint8Array>): Promise<string> {
  const enc = new TextEncoder();
  const chunks = parts.map((p) => (typeof p === "string" ? enc.encode(p) : p));
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length + 1, 0));
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length + 1; // a separator byte keeps ["ab","c"] apart from ["a","bc"]
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(digest.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Builds volt-init with musl-gcc (cached by source hash); returns its path.
 *
 * @example
 * ```ts ignore
 * import { buildVoltInit } from "./default_guest.ts";
 * console.log(await buildVoltInit());
 * ```
 */
export async function buildVoltInit(progress: Progress = () => {}): Promise<string> {
  const src = `${await guestDir()}/init/volt-init.c`;
  const hash = await contentHash([Deno.readFileSync(src)]);
  const out = cacheDir("init", `volt-init-${hash}`);
  if (exists(out)) return out;
  if (!hasTool("musl-gcc")) {
    throw new VoltError("musl-gcc is not installed (apt-get install musl-tools)", "noinput");
  }
  progress("Building volt-init with musl-gcc");
  Deno.mkdirSync(cacheDir("init"), { recursive: true });
  const tmp = `${out}.tmp-${Deno.pid}`;
  runTool("musl-gcc", ["-static", "-Os", "-s", "-Wall", "-Wextra", "-o", tmp, src], {
    pkg: "musl-tools",
  });
  Deno.renameSync(tmp, out);
  return out;
}

/** Fetches Debian's static busybox (never installed); returns its path. */
export function fetchBusybox(progress: Progress = () => {}): string {
  const dir = cacheDir("busybox");
  const bin = `${dir}/bin/busybox`;
  if (exists(bin)) return bin;
  progress("Fetching busybox-static with apt-get download");
  const unpack = `${dir}.unpack-${Deno.pid}`;
  fetchAndUnpack("busybox-static", unpack);
  Deno.mkdirSync(`${dir}/bin`, { recursive: true });
  Deno.renameSync(`${unpack}/bin/busybox`, bin);
  Deno.removeSync(unpack, { recursive: true });
  return bin;
}

/** busybox's applet names, from the binary itself. */
export function busyboxApplets(busybox: string): string[] {
  return runTool(busybox, ["--list"]).split("\n").map((s) => s.trim()).filter((s) =>
    /^[\w.[-]+$/.test(s) && s !== "busybox"
  );
}

/** The initramfs entries of the default guest. */
export function defaultGuestEntries(
  init: Uint8Array,
  busybox: Uint8Array,
  applets: string[],
): CpioEntry[] {
  const entries: CpioEntry[] = [
    { type: "file", path: "init", data: init, mode: 0o755 },
    { type: "file", path: "bin/busybox", data: busybox, mode: 0o755 },
    { type: "chardev", path: "dev/console", major: 5, minor: 1, mode: 0o600 },
    { type: "dir", path: "proc" },
    { type: "dir", path: "sys" },
    { type: "dir", path: "tmp", mode: 0o1777 },
    { type: "dir", path: "root", mode: 0o700 },
  ];
  for (const a of applets) entries.push({ type: "symlink", path: `bin/${a}`, target: "busybox" });
  return entries;
}

/**
 * Builds (or reuses) the default initramfs; returns its path. With
 * `modulesDir` (a directory whose `order` file names its modules in load
 * order, as the Debian kernel's is), the modules go in
 * `/lib/modules/volt/`, where volt-init loads them before READY.
 */
export async function buildDefaultInitramfs(
  progress: Progress = () => {},
  modulesDir?: string,
): Promise<string> {
  const initPath = await buildVoltInit(progress);
  const bbPath = fetchBusybox(progress);
  const init = Deno.readFileSync(initPath);
  const busybox = Deno.readFileSync(bbPath);
  const modules: CpioEntry[] = [];
  if (modulesDir) {
    const order = Deno.readTextFileSync(`${modulesDir}/order`);
    modules.push({ type: "dir", path: "lib" }, { type: "dir", path: "lib/modules" }, {
      type: "dir",
      path: "lib/modules/volt",
    }, { type: "file", path: "lib/modules/volt/order", data: new TextEncoder().encode(order) });
    for (const name of order.split("\n").filter((n) => n.length > 0)) {
      if (!/^[\w.-]+\.ko$/.test(name)) throw new VoltError(`Bad module name ${name}`, "input");
      const data = Deno.readFileSync(`${modulesDir}/${name}`);
      modules.push({ type: "file", path: `lib/modules/volt/${name}`, data, mode: 0o644 });
    }
  }
  const hash = await contentHash([
    init,
    busybox,
    "initramfs-v1",
    ...modules.map((m) => m.type === "file" ? m.data : m.path),
  ]);
  const out = cacheDir("initramfs", `${modulesDir ? "modules" : "default"}-${hash}.cpio.gz`);
  if (exists(out)) return out;
  progress(`Writing the initramfs (volt-init + busybox${modulesDir ? " + modules" : ""})`);
  const archive = writeCpio([
    ...defaultGuestEntries(init, busybox, busyboxApplets(bbPath)),
    ...modules,
  ]);
  Deno.mkdirSync(cacheDir("initramfs"), { recursive: true });
  writeAtomic(out, await gzip(archive));
  return out;
}

/** Bytes of the default root image: the guest's files, and room for what it writes. */
export const ROOTFS_BYTES = 64 << 20;

/** `mkfs.ext4`, which Debian keeps in /sbin (not on a user's PATH). */
function mkfsExt4(): string {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    if (dir && exists(`${dir}/mkfs.ext4`)) return `${dir}/mkfs.ext4`;
  }
  throw new VoltError("mkfs.ext4 is not installed (apt-get install e2fsprogs)", "noinput");
}

/**
 * Writes `entries` as a directory tree under `dir` (what `mkfs.ext4 -d`
 * copies in). Device nodes are left out: the kernel mounts devtmpfs on
 * /dev before it starts init from a disk.
 */
export function writeTree(dir: string, entries: CpioEntry[]): void {
  for (const e of entries) {
    const path = `${dir}/${e.path}`;
    const parent = path.slice(0, path.lastIndexOf("/"));
    Deno.mkdirSync(parent, { recursive: true });
    if (e.type === "dir") Deno.mkdirSync(path, { recursive: true, mode: e.mode ?? 0o755 });
    else if (e.type === "file") {
      Deno.writeFileSync(path, e.data, { mode: e.mode ?? 0o644 });
      Deno.chmodSync(path, e.mode ?? 0o644);
    } else if (e.type === "symlink") Deno.symlinkSync(e.target, path);
    else Deno.mkdirSync(parent, { recursive: true });
    if (e.type === "dir" && e.mode !== undefined) Deno.chmodSync(path, e.mode);
  }
}

/**
 * Builds (or reuses) the default guest's ext4 root image: the initramfs's
 * files (volt-init as /init, busybox), made with `mkfs.ext4 -d` from a
 * directory, no loop mount and no root needed. Boot it with
 * `root=/dev/vda init=/init`.
 */
export async function buildDefaultRootfs(progress: Progress = () => {}): Promise<string> {
  const initPath = await buildVoltInit(progress);
  const bbPath = fetchBusybox(progress);
  const init = Deno.readFileSync(initPath);
  const busybox = Deno.readFileSync(bbPath);
  const hash = await contentHash([init, busybox, `rootfs-v2-${ROOTFS_BYTES}`]);
  const out = cacheDir("rootfs", `default-${hash}.ext4`);
  if (exists(out)) return out;
  const mkfs = mkfsExt4();
  progress("Writing the root image (ext4: volt-init + busybox)");
  Deno.mkdirSync(cacheDir("rootfs"), { recursive: true });
  const tree = Deno.makeTempDirSync({ prefix: "volt-rootfs-" });
  const tmp = `${out}.tmp-${Deno.pid}`;
  try {
    const entries = defaultGuestEntries(init, busybox, busyboxApplets(bbPath));
    writeTree(tree, [
      ...entries,
      { type: "dir", path: "dev" },
      { type: "dir", path: "mnt" },
      // Where a kernel booting from a disk looks for init first.
      { type: "symlink", path: "sbin/init", target: "/init" },
    ]);
    runTool(mkfs, [
      "-q",
      "-F",
      "-L",
      "volt-root",
      "-E",
      "root_owner=0:0",
      "-d",
      tree,
      tmp,
      `${ROOTFS_BYTES >> 10}k`,
    ], { pkg: "e2fsprogs" });
    Deno.renameSync(tmp, out);
  } finally {
    Deno.removeSync(tree, { recursive: true });
    try {
      Deno.removeSync(tmp);
    } catch { /* renamed */ }
  }
  return out;
}

/** The cache key of the microVM kernel: config fragment, patches, build script. */
async function kernelHash(): Promise<string> {
  const k = `${await guestDir()}/kernel`;
  const patches = KERNEL_PATCHES;
  return await contentHash([
    KERNEL_SOURCE_PKG,
    Deno.readFileSync(`${k}/microvm.config`),
    Deno.readFileSync(`${k}/build.sh`),
    ...patches.flatMap((p) => [p, Deno.readFileSync(`${k}/patches/${p}`)]),
  ]);
}

/** The cached microVM kernel for the current sources, if built. */
export async function microvmKernelPaths(): Promise<KernelPaths | undefined> {
  const dir = cacheDir("kernels", `microvm-${await kernelHash()}`);
  const p = { vmlinux: `${dir}/vmlinux`, bzImage: `${dir}/bzImage` };
  return exists(p.vmlinux) && exists(p.bzImage) ? p : undefined;
}

/** The kernel source tarball: the installed one, else fetched unpacked into the cache. */
function kernelSource(progress: Progress): string {
  const installed = `/usr/src/${KERNEL_SOURCE_PKG}.tar.xz`;
  if (exists(installed)) return installed;
  const dir = cacheDir("src", KERNEL_SOURCE_PKG);
  const tarball = `${dir}/usr/src/${KERNEL_SOURCE_PKG}.tar.xz`;
  if (exists(tarball)) return tarball;
  progress(`Fetching ${KERNEL_SOURCE_PKG} with apt-get download`);
  const unpack = `${dir}.unpack-${Deno.pid}`;
  fetchAndUnpack(KERNEL_SOURCE_PKG, unpack);
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* first fetch */ }
  Deno.renameSync(unpack, dir);
  return tarball;
}

/**
 * Kbuild status lines ("  CC      init/main.o") in the log of a full build of
 * guest/kernel: 13 from the config stages, 1379 from `make vmlinux bzImage`.
 * Counted with `make -n` on this config (the log of a real build is deleted
 * once the kernel is cached); the first build's progress is measured against
 * it, later ones against what the last build recorded.
 */
export const KBUILD_LINES_ESTIMATE = 1392;
/** Next to a built kernel: how many kbuild status lines its build log had. */
const KBUILD_LINES_FILE = "kbuild-lines";

/**
 * The status lines to expect from building into `dir`: what the build of the
 * same sources recorded, else the newest recorded by any build (configs
 * change little between builds), else {@linkcode KBUILD_LINES_ESTIMATE}.
 */
function expectedKbuildLines(dir: string): number {
  const read = (d: string): number | undefined => {
    try {
      const n = Number(Deno.readTextFileSync(`${d}/${KBUILD_LINES_FILE}`).trim());
      return Number.isSafeInteger(n) && n > 0 ? n : undefined;
    } catch {
      return undefined;
    }
  };
  const same = read(dir);
  if (same) return same;
  let newest: { lines: number; at: number } | undefined;
  try {
    for (const e of Deno.readDirSync(cacheDir("kernels"))) {
      const d = cacheDir("kernels", e.name);
      const lines = e.isDirectory && e.name.startsWith("microvm-") ? read(d) : undefined;
      if (!lines) continue;
      const at = Deno.statSync(`${d}/${KBUILD_LINES_FILE}`).mtime?.getTime() ?? 0;
      if (!newest || at > newest.at) newest = { lines, at };
    }
  } catch { /* no kernels built yet */ }
  return newest?.lines ?? KBUILD_LINES_ESTIMATE;
}

/** Options of {@linkcode runKernelBuild}. */
export interface KernelBuildOptions {
  /** The make log the script appends to during its build step. */
  log: string;
  /** Status lines the whole log is expected to have. */
  total: number;
  /** Environment of the script (added to this process's). */
  env?: Record<string, string>;
  /** Where the script's stderr and the progress go; default this process's stderr. */
  write?: (text: string) => void;
  /** Rewrite the progress line in place; default: whether stderr is a terminal. */
  terminal?: boolean;
  /** How often the log is read (ms). */
  pollMs?: number;
  /** The clock, in ms. */
  now?: () => number;
}

/** The stage line of build.sh's make step: progress is shown until its next line. */
const BUILD_STAGE = /^volt-kernel: \[\d+\/\d+\] building /;
/** Any stage line: the one after the make step means make succeeded. */
const STAGE = /^volt-kernel: \[\d+\/\d+\] /;

/** Lines of a byte stream, the last one even without a newline. */
async function* textLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    yield* lines;
  }
  if (rest) yield rest;
}

function writeStderr(text: string): void {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
}

/**
 * Runs `bash args...` (guest/kernel/build.sh), forwarding its stderr and,
 * during its make step, the progress of make read from the log as it grows:
 * build.sh keeps its whole make output in the log and its stderr quiet, so
 * both stay as they are. Returns the status lines in the log (0 when no make
 * step was seen); throws when the script fails.
 *
 * @example
 * ```ts ignore
 * import { runKernelBuild } from "./default_guest.ts";
 * const lines = await runKernelBuild(["guest/kernel/build.sh", "linux.tar.xz", "out"], {
 *   log: "out/work/build.log",
 *   total: 1392,
 * });
 * ```
 */
export async function runKernelBuild(args: string[], opts: KernelBuildOptions): Promise<number> {
  const emit = opts.write ?? writeStderr;
  const write = (text: string) => text && emit(text);
  const terminal = opts.terminal ?? Deno.stderr.isTerminal();
  const now = opts.now ?? Date.now;
  const child = spawnTool("bash", args, { env: opts.env });
  let step:
    | { progress: BuildProgress; log: Deno.FsFile; timer: ReturnType<typeof setInterval> }
    | undefined;
  let count = 0;
  const decoder = new TextDecoder();
  const buf = new Uint8Array(64 * 1024);
  const drain = (log: Deno.FsFile, progress: BuildProgress) => {
    for (let n = log.readSync(buf); n; n = log.readSync(buf)) {
      progress.push(decoder.decode(buf.subarray(0, n), { stream: true }));
    }
  };
  const stop = (ok: boolean) => {
    if (!step) return;
    const { progress, log, timer } = step;
    step = undefined;
    clearInterval(timer);
    drain(log, progress);
    progress.push(decoder.decode());
    log.close();
    write(progress.finish(now(), ok));
    count = progress.count;
  };
  try {
    for await (const line of textLines(child.stderr)) {
      // build.sh writes nothing during make: its next line is the next stage or the failure.
      stop(STAGE.test(line));
      write(`${line}\n`);
      if (!BUILD_STAGE.test(line)) continue;
      let log: Deno.FsFile;
      try {
        log = Deno.openSync(opts.log, { read: true });
      } catch {
        continue; // the build still runs, only without progress
      }
      const progress = new BuildProgress({
        total: opts.total,
        terminal,
        start: now(),
        prefix: "volt-kernel:       ",
      });
      const timer = setInterval(() => {
        drain(log, progress);
        write(progress.update(now()));
      }, opts.pollMs ?? 250);
      step = { progress, log, timer };
    }
  } finally {
    stop(false);
  }
  checkStatus("bash", args, await child.status);
  return count;
}

/**
 * Builds the microVM kernel (about 9 minutes on 2 cores; progress goes to
 * stderr, with a count of objects during make) unless the cache has it for
 * the current sources.
 *
 * @example
 * ```ts ignore
 * import { buildMicrovmKernel } from "./default_guest.ts";
 * const { vmlinux } = await buildMicrovmKernel(console.error);
 * ```
 */
export async function buildMicrovmKernel(progress: Progress = () => {}): Promise<KernelPaths> {
  const cached = await microvmKernelPaths();
  if (cached) return cached;
  for (
    const [tool, pkg] of [["make", "make"], ["gcc", "gcc"], ["flex", "flex"], ["bison", "bison"], [
      "bc",
      "bc",
    ]]
  ) {
    if (!hasTool(tool)) {
      throw new VoltError(`${tool} is not installed (apt-get install ${pkg})`, "noinput");
    }
  }
  const source = kernelSource(progress);
  const dir = cacheDir("kernels", `microvm-${await kernelHash()}`);
  const work = cacheDir("build", "kernel");
  progress(`Building the microVM kernel from ${KERNEL_SOURCE_PKG} (about 9 minutes on 2 cores)`);
  const lines = await runKernelBuild([
    `${await guestDir()}/kernel/build.sh`,
    source,
    `${dir}.tmp`,
    work,
  ], {
    log: `${work}/build.log`,
    total: expectedKbuildLines(dir),
  });
  if (lines > 0) Deno.writeTextFileSync(`${dir}.tmp/${KBUILD_LINES_FILE}`, `${lines}\n`);
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* first build */ }
  Deno.renameSync(`${dir}.tmp`, dir);
  try {
    Deno.removeSync(work, { recursive: true });
  } catch { /* already gone */ }
  return (await microvmKernelPaths())!;
}

/** Everything `volt run` needs when given no kernel. */
export interface DefaultGuest {
  kernel: string;
  initrd: string;
}

/**
 * Builds or reuses the default guest.
 *
 * @example
 * ```ts ignore
 * import { ensureDefaultGuest } from "./default_guest.ts";
 * const { kernel, initrd } = await ensureDefaultGuest((s) => console.error(s));
 * ```
 */
export async function ensureDefaultGuest(progress: Progress = () => {}): Promise<DefaultGuest> {
  const initrd = await buildDefaultInitramfs(progress);
  const kernel = await buildMicrovmKernel(progress);
  return { kernel: kernel.vmlinux, initrd };
}
