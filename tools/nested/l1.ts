/**
 * The L1 guest of the nested-KVM harness: Debian's generic kernel, the
 * modules that give it `/dev/kvm` (kvm-amd on QEMU's emulated SVM) and 9p,
 * and an initramfs (busybox and an /init) that runs one host command in a
 * chroot of the host's root filesystem. Built once, cached under
 * `cacheDir("nested")`.
 *
 * @module
 */

import { VoltError } from "../../src/errors.ts";
import { candidateVersion, fetchAndUnpack, resolveMeta } from "../../src/guest/apt.ts";
import { cacheDir, exists, writeAtomic } from "../../src/guest/cache.ts";
import { type CpioEntry, gunzip, gzip, writeCpio } from "../../src/guest/cpio.ts";
import { extractVmlinux } from "../../src/guest/kernels.ts";
import { bytesImage } from "../../src/boot/image.ts";
import { parseElf } from "../../src/boot/elf.ts";

/**
 * Debian's meta package for the generic kernel (the cloud kernel has no 9p).
 *
 * @example
 * ```ts
 * import { KERNEL_META } from "./l1.ts";
 * console.log(`apt-cache depends ${KERNEL_META}`);
 * ```
 */
export const KERNEL_META = "linux-image-amd64";

/**
 * Debian's statically linked busybox, fetched (never installed).
 *
 * @example
 * ```ts
 * import { BUSYBOX_PKG } from "./l1.ts";
 * console.log(`apt-get download ${BUSYBOX_PKG}`);
 * ```
 */
export const BUSYBOX_PKG = "busybox-static";

/**
 * Modules the init loads, by module name; their dependencies (read from
 * each module's `.modinfo`) are added and loaded first. `tun`: the
 * network tests make TAPs in namespaces of their own.
 */
const ROOT_MODULES = ["kvm_amd", "virtio_pci", "9pnet_virtio", "9p", "tun"];

/** Busybox applets the init uses. */
const APPLETS = [
  "sh",
  "cat",
  "chroot",
  "env",
  "insmod",
  "ln",
  "mkdir",
  "mount",
  "poweroff",
  "stty",
  "sync",
];

/**
 * The line the init prints just before the command starts: everything
 * before it is boot noise.
 *
 * @example
 * ```ts
 * import { START_MARKER } from "./l1.ts";
 * const boot = "[ 1.0] Run /init\nvolt-nested: command start\nhello\n";
 * console.log(boot.slice(boot.indexOf(START_MARKER) + START_MARKER.length + 1)); // "hello\n"
 * ```
 */
export const START_MARKER = "volt-nested: command start";

/**
 * The init's first line: the L1 kernel is up. The watchdog tells a QEMU or
 * kernel that never starts from an init that stalls by it.
 *
 * @example
 * ```ts
 * import { INIT_MARKER } from "./l1.ts";
 * console.log(INIT_MARKER); // "volt-nested: init"
 * ```
 */
export const INIT_MARKER = "volt-nested: init";

/**
 * Files the host writes into the control share (mounted at /ctl) and the
 * init reads or writes back.
 *
 * @example
 * ```ts ignore
 * import { CTL } from "./l1.ts";
 * const status = Number(Deno.readTextFileSync(`/tmp/volt-nested-x/${CTL.status}`));
 * ```
 */
export const CTL = {
  /** Shell script run by `/bin/sh -c` inside the chroot. */
  command: "command.sh",
  /** One writable share a line: `<mount tag> <absolute path>`. */
  shares: "shares",
  /** 9p mount options for the writable shares. */
  shareOptions: "share-options",
  /** Present when the host's stdout is a terminal. */
  tty: "tty",
  /** Present when the command reads the console (the host's stdin), not /dev/null. */
  stdin: "stdin",
  /** Written by the init as soon as the command ends: its exit status. */
  status: "status",
  /** Written by the init when it fails before or around the command. */
  error: "error",
  /** Written by the init: guest uptimes at boot steps (`<step> <seconds>`). */
  times: "times",
} as const;

/**
 * The 9p mount tags the init expects: the read-only host root, the control
 * share and the writable shares by index.
 *
 * @example
 * ```ts
 * import { TAGS } from "./l1.ts";
 * console.log(TAGS.root, TAGS.ctl, TAGS.share(0)); // hostroot voltctl voltrw0
 * ```
 */
export const TAGS = { root: "hostroot", ctl: "voltctl", share: (i: number) => `voltrw${i}` };

/**
 * The L1's /init (busybox sh). `die` reports through the control share once
 * it is mounted (before that, only the console shows it); the command runs
 * under `env -i`, so its whole environment comes from command.sh.
 *
 * @example
 * ```ts
 * import { INIT_SCRIPT } from "./l1.ts";
 * console.log(INIT_SCRIPT.split("\n")[0]); // "#!/bin/sh"
 * ```
 */
export const INIT_SCRIPT = `#!/bin/sh
export PATH=/bin
echo "${INIT_MARKER}"
NINEP=trans=virtio,version=9p2000.L,msize=512000
stamp() { read -r up _ </proc/uptime; echo "$1 $up" >>/ctl/${CTL.times}; }
die() {
  echo "volt-nested: $*"
  echo "$*" >/ctl/${CTL.error}
  sync
  poweroff -f
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
read -r booted _ </proc/uptime
for m in $(cat /etc/modules); do
  insmod "/lib/modules/$m.ko" || die "insmod $m failed"
done
mount -t 9p -o "$NINEP" ${TAGS.ctl} /ctl || die "cannot mount the control share"
echo "init $booted" >>/ctl/${CTL.times}
stamp modules
mount -t 9p -o "$NINEP,cache=loose,ro" ${TAGS.root} /mnt || die "cannot mount the host root over 9p"
mount -t proc proc /mnt/proc || die "cannot mount /proc in the host root"
mount -t sysfs sysfs /mnt/sys || die "cannot mount /sys in the host root"
mount -t devtmpfs devtmpfs /mnt/dev || die "cannot mount /dev in the host root"
mount -t tmpfs -o mode=1777 tmpfs /mnt/tmp || die "cannot mount /tmp in the host root"
# The host's /run is not this VM's (and read-only here): ip netns keeps its namespaces there.
mount -t tmpfs -o mode=755 tmpfs /mnt/run || die "cannot mount /run in the host root"
mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts devpts /mnt/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /mnt/dev/shm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
[ -e /dev/kvm ] || die "/dev/kvm did not appear (is SVM exposed to the VM?)"
opts=$(cat /ctl/${CTL.shareOptions})
while read -r tag dir; do
  mkdir -p "/mnt$dir" 2>/dev/null
  mount -t 9p -o "$NINEP$opts" "$tag" "/mnt$dir" || die "cannot mount $dir writable"
done </ctl/${CTL.shares}
cmd=$(cat /ctl/${CTL.command}) || die "cannot read the command"
stty -onlcr 2>/dev/null
stamp ready
echo "${START_MARKER}"
in=/dev/null
[ -e /ctl/${CTL.stdin} ] && in=/dev/console
# The status reaches the host as soon as the command ends (the control
# share is not cached): a process the command left behind can hold the
# pipe to cat, or sync can be slow, and the host then stops the VM itself.
if [ -e /ctl/${CTL.tty} ]; then
  env -i /bin/chroot /mnt /bin/sh -c "$cmd" <$in
  rc=$?
  echo "$rc" >/ctl/${CTL.status}
else
  { env -i /bin/chroot /mnt /bin/sh -c "$cmd" <$in 2>&1; echo $? >/ctl/${CTL.status}; } | cat
  rc=$(cat /ctl/${CTL.status})
fi
stamp done
kill -9 -1 2>/dev/null
sync
poweroff -f
`;

/**
 * Bumped when the image's layout changes in a way the inputs above do not
 * show.
 */
const FORMAT = 2;

/**
 * A built L1 image.
 *
 * @example
 * ```ts ignore
 * import { ensureL1, type L1Image } from "./l1.ts";
 * const img: L1Image = await ensureL1();
 * console.log(["-kernel", img.kernel, "-initrd", img.initrd]);
 * ```
 */
export interface L1Image {
  /** The kernel: a vmlinux QEMU boots through its PVH entry, else the bzImage. */
  kernel: string;
  /** The gzip-compressed initramfs. */
  initrd: string;
  /** What it was built from. */
  manifest: L1Manifest;
}

/**
 * What an image was built from (`manifest.json` next to it).
 *
 * @example
 * ```ts ignore
 * import { ensureL1 } from "./l1.ts";
 * const { manifest } = await ensureL1();
 * console.log(manifest.kernelRelease, manifest.modules.join(" "));
 * ```
 */
export interface L1Manifest {
  kernelPackage: string;
  kernelPackageVersion: string;
  kernelRelease: string;
  /** "pvh" (vmlinux) or "bzImage". */
  kernelFormat: "pvh" | "bzImage";
  busyboxVersion: string;
  /** Module load order. */
  modules: string[];
  /** sha256 of the recipe (init script, module and applet lists, format). */
  recipe: string;
}

/** Package versions resolved with apt, re-checked at most once per {@linkcode RECHECK_MS}. */
interface Versions {
  checkedAt: number;
  kernelPackage: string;
  kernelPackageVersion: string;
  busyboxVersion: string;
}

/** How long resolved package versions are trusted (apt-cache costs seconds). */
const RECHECK_MS = 7 * 24 * 3600 * 1000;

/**
 * Options of {@linkcode ensureL1}.
 *
 * @example
 * ```ts ignore
 * import { ensureL1, type EnsureL1Options } from "./l1.ts";
 * const opts: EnsureL1Options = { refresh: true, progress: (s) => console.error(s) };
 * await ensureL1(opts);
 * ```
 */
export interface EnsureL1Options {
  /** Progress lines (fetching, building). */
  progress?: (line: string) => void;
  /** Re-resolve the Debian package versions now instead of weekly. */
  refresh?: boolean;
}

async function sha256(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function recipeText(): string {
  return JSON.stringify({ FORMAT, INIT_SCRIPT, ROOT_MODULES, APPLETS });
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(path)) as T;
  } catch {
    return undefined;
  }
}

function resolveVersions(refresh: boolean, progress: (s: string) => void): Versions {
  const path = cacheDir("nested", "versions.json");
  const known = readJson<Versions>(path);
  if (known && !refresh && Date.now() - known.checkedAt < RECHECK_MS) return known;
  try {
    const kernelPackage = resolveMeta(KERNEL_META, "linux-image-");
    const v: Versions = {
      checkedAt: Date.now(),
      kernelPackage,
      kernelPackageVersion: candidateVersion(kernelPackage),
      busyboxVersion: candidateVersion(BUSYBOX_PKG),
    };
    Deno.mkdirSync(cacheDir("nested"), { recursive: true });
    writeAtomic(path, new TextEncoder().encode(JSON.stringify(v, null, 2) + "\n"));
    return v;
  } catch (e) {
    // Stale versions beat no image, e.g. when apt's lists were cleaned.
    if (!known) throw e;
    progress(`Using the cached L1 package versions: ${(e as Error).message}`);
    return known;
  }
}

/**
 * The key/value strings of a kernel module's `.modinfo` section
 * (`depends=kvm,ccp`, `name=kvm_amd`, ...), values by key.
 *
 * @example
 * ```ts ignore
 * import { modinfo } from "./l1.ts";
 * const info = modinfo(Deno.readFileSync("kvm-amd.ko"), "kvm-amd");
 * console.log(info.get("depends")); // ["kvm,ccp"]
 * ```
 */
export function modinfo(ko: Uint8Array, name = "module"): Map<string, string[]> {
  const dv = new DataView(ko.buffer, ko.byteOffset, ko.byteLength);
  const bad = () => new VoltError(`${name}: not an x86_64 ELF kernel module`, "internal");
  if (ko.length < 64 || dv.getUint32(0) !== 0x7f454c46 || ko[4] !== 2 || ko[5] !== 1) throw bad();
  const shoff = Number(dv.getBigUint64(0x28, true));
  const shentsize = dv.getUint16(0x3a, true);
  const shnum = dv.getUint16(0x3c, true);
  const shstrndx = dv.getUint16(0x3e, true);
  if (shoff + shnum * shentsize > ko.length || shstrndx >= shnum) throw bad();
  const header = (i: number) => shoff + i * shentsize;
  // Only sections read are bounds-checked: .bss-like ones occupy no file space.
  const bytes = (i: number) => {
    const off = Number(dv.getBigUint64(header(i) + 0x18, true));
    const size = Number(dv.getBigUint64(header(i) + 0x20, true));
    if (off + size > ko.length) throw bad();
    return ko.subarray(off, off + size);
  };
  const strtab = bytes(shstrndx);
  const cstr = (b: Uint8Array, at: number) => {
    const end = b.indexOf(0, at);
    return new TextDecoder().decode(b.subarray(at, end < 0 ? b.length : end));
  };
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    if (cstr(strtab, dv.getUint32(header(i), true)) !== ".modinfo") continue;
    for (const kv of new TextDecoder().decode(bytes(i)).split("\0")) {
      const eq = kv.indexOf("=");
      if (eq <= 0) continue;
      const k = kv.slice(0, eq);
      out.set(k, [...(out.get(k) ?? []), kv.slice(eq + 1)]);
    }
  }
  return out;
}

/** Module names treat "-" and "_" alike; files use either. */
function moduleName(file: string): string {
  return file.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

function walk(dir: string, found: Map<string, string>): void {
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) walk(p, found);
    else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) found.set(moduleName(e.name), p);
  }
}

/** The bytes of a module file, decompressed when the distribution compresses modules. */
async function readModule(path: string): Promise<Uint8Array> {
  const raw = Deno.readFileSync(path);
  if (path.endsWith(".gz")) return await gunzip(raw);
  const tool = path.endsWith(".xz")
    ? { cmd: "xz", args: ["-dc", path], pkg: "xz-utils" }
    : path.endsWith(".zst")
    ? { cmd: "zstd", args: ["-dcq", path], pkg: "zstd" }
    : undefined;
  if (!tool) return raw;
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(tool.cmd, { args: tool.args, stdout: "piped", stderr: "piped" })
      .output();
  } catch {
    throw new VoltError(`${tool.cmd} is not installed (apt-get install ${tool.pkg})`, "noinput");
  }
  if (!out.success) throw new VoltError(`Cannot decompress the module ${path}`, "internal");
  return out.stdout;
}

/**
 * `roots` and everything they depend on, dependencies first. Built-in
 * modules (listed in modules.builtin) need no loading and are dropped.
 */
async function moduleClosure(
  modDir: string,
  roots: string[],
): Promise<Array<{ name: string; data: Uint8Array }>> {
  const files = new Map<string, string>();
  walk(`${modDir}/kernel`, files);
  let builtin = new Set<string>();
  try {
    builtin = new Set(
      Deno.readTextFileSync(`${modDir}/modules.builtin`).split("\n").map((l) =>
        moduleName(l.split("/").pop()!)
      ),
    );
  } catch { /* older packages ship no list: then every dependency must be a file */ }
  const order: Array<{ name: string; data: Uint8Array }> = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = async (name: string, from: string) => {
    if (state.get(name) === "done" || builtin.has(name)) return;
    if (state.get(name) === "visiting") {
      throw new VoltError(`Kernel module dependency cycle through ${name}`, "internal");
    }
    const path = files.get(name);
    if (!path) {
      throw new VoltError(
        `Kernel module ${name} (needed by ${from}) is not in the package`,
        "internal",
      );
    }
    state.set(name, "visiting");
    const data = await readModule(path);
    const deps = (modinfo(data, name).get("depends") ?? []).flatMap((d) => d.split(",")).filter((
      d,
    ) => d);
    for (const d of deps) await visit(moduleName(d), name);
    state.set(name, "done");
    order.push({ name, data });
  };
  for (const r of roots) await visit(r, "the nested-KVM harness");
  return order;
}

function textFile(path: string, text: string, mode = 0o644): CpioEntry {
  return { type: "file", path, data: new TextEncoder().encode(text), mode };
}

/** Fetches, unpacks and assembles an image into `dir`. */
async function build(dir: string, v: Versions, recipe: string, progress: (s: string) => void) {
  const work = `${dir}.build-${Deno.pid}`;
  try {
    Deno.removeSync(work, { recursive: true });
  } catch { /* not there */ }
  try {
    progress(`Fetching ${v.kernelPackage} ${v.kernelPackageVersion} with apt-get download`);
    fetchAndUnpack(v.kernelPackage, `${work}/kernel`);
    progress(`Fetching ${BUSYBOX_PKG} ${v.busyboxVersion} with apt-get download`);
    fetchAndUnpack(BUSYBOX_PKG, `${work}/busybox`);

    const vmlinuz = [...Deno.readDirSync(`${work}/kernel/boot`)].find((e) =>
      e.name.startsWith("vmlinuz-")
    );
    if (!vmlinuz) throw new VoltError(`${v.kernelPackage} has no /boot/vmlinuz`, "internal");
    const release = vmlinuz.name.slice("vmlinuz-".length);
    const modules = await moduleClosure(`${work}/kernel/lib/modules/${release}`, ROOT_MODULES);
    const busybox = Deno.readFileSync(`${work}/busybox/bin/busybox`);

    const entries: CpioEntry[] = [
      textFile("init", INIT_SCRIPT, 0o755),
      { type: "file", path: "bin/busybox", data: busybox, mode: 0o755 },
      ...APPLETS.map((a): CpioEntry => ({ type: "symlink", path: `bin/${a}`, target: "busybox" })),
      // The kernel opens it for init's stdio before /init can mount devtmpfs.
      { type: "chardev", path: "dev/console", major: 5, minor: 1 },
      ...["proc", "sys", "mnt", "ctl", "tmp"].map((d): CpioEntry => ({ type: "dir", path: d })),
      textFile("etc/modules", modules.map((m) => m.name).join("\n") + "\n"),
      ...modules.map((m): CpioEntry => ({
        type: "file",
        path: `lib/modules/${m.name}.ko`,
        data: m.data,
      })),
    ];
    const initrd = await gzip(writeCpio(entries));
    // QEMU boots a vmlinux through its PVH note directly: no firmware
    // bzImage loader and no decompression, seconds faster under TCG.
    progress("Extracting vmlinux (for QEMU's PVH boot)");
    const bz = Deno.readFileSync(`${work}/kernel/boot/${vmlinuz.name}`);
    const elf = await extractVmlinux(bz, vmlinuz.name);
    const pvh = parseElf(bytesImage("vmlinux", elf)).pvhEntry !== undefined;

    const manifest: L1Manifest = {
      kernelPackage: v.kernelPackage,
      kernelPackageVersion: v.kernelPackageVersion,
      kernelRelease: release,
      kernelFormat: pvh ? "pvh" : "bzImage",
      busyboxVersion: v.busyboxVersion,
      modules: modules.map((m) => m.name),
      recipe,
    };
    Deno.mkdirSync(dir, { recursive: true });
    writeAtomic(`${dir}/kernel`, pvh ? elf : bz);
    writeAtomic(`${dir}/initrd.gz`, initrd);
    // Written last: its presence marks a complete image.
    writeAtomic(
      `${dir}/manifest.json`,
      new TextEncoder().encode(JSON.stringify(manifest, null, 2) + "\n"),
    );
  } finally {
    Deno.removeSync(work, { recursive: true });
  }
}

/** Removes images other than `keep` (each is ~70 MB); a build in progress elsewhere is left alone. */
function prune(keep: string): void {
  const root = cacheDir("nested");
  for (const e of Deno.readDirSync(root)) {
    if (!e.isDirectory || e.name === keep || !/^[0-9a-f]{16}$/.test(e.name)) continue;
    try {
      Deno.removeSync(`${root}/${e.name}`, { recursive: true });
    } catch { /* in use or gone */ }
  }
}

/**
 * Returns the cached L1 image, building it first when the recipe or the
 * Debian package versions changed. The first build downloads about 70 MB.
 *
 * @example
 * ```ts ignore
 * import { ensureL1 } from "./l1.ts";
 * const img = await ensureL1({ progress: (s) => console.error(s) });
 * console.log(img.kernel, img.initrd, img.manifest.modules);
 * ```
 */
export async function ensureL1(opts: EnsureL1Options = {}): Promise<L1Image> {
  const progress = opts.progress ?? (() => {});
  const recipe = await sha256(recipeText());
  const v = resolveVersions(opts.refresh ?? false, progress);
  const key = (await sha256(
    JSON.stringify([recipe, v.kernelPackage, v.kernelPackageVersion, v.busyboxVersion]),
  ))
    .slice(0, 16);
  const dir = cacheDir("nested", key);
  if (!exists(`${dir}/manifest.json`)) {
    progress(`Building the nested-KVM helper VM image in ${dir}`);
    await build(dir, v, recipe, progress);
    prune(key);
  }
  const manifest = readJson<L1Manifest>(`${dir}/manifest.json`);
  if (!manifest) throw new VoltError(`Corrupt nested-KVM image manifest in ${dir}`, "internal");
  return { kernel: `${dir}/kernel`, initrd: `${dir}/initrd.gz`, manifest };
}
