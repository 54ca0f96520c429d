/**
 * Guest kernels: Debian's cloud kernel (fetched, unpacked, its vmlinux
 * extracted for PVH boot) and the project's own microVM kernel (built from
 * `linux-source-6.1` by guest/kernel/build.sh).
 *
 * @module
 */

import { SETUP } from "../../ffi/bootparam.ts";
import { bytesImage } from "../boot/image.ts";
import { parseBzImage } from "../boot/bzimage.ts";
import { VoltError } from "../errors.ts";
import { candidateVersion, fetchAndUnpack, resolveMeta } from "./apt.ts";
import { cacheDir, exists, writeAtomic } from "./cache.ts";
import { loadOrder, moduleDepends, moduleName } from "./kmod.ts";

/** Debian's meta package for the cloud kernel. */
export const DEBIAN_CLOUD_META = "linux-image-cloud-amd64";

/** Paths of a cached kernel. */
export interface KernelPaths {
  bzImage: string;
  vmlinux: string;
}

const DEBIAN_DIR = () => cacheDir("kernels", "debian");

/**
 * The modules Debian's kernel needs for Volt's devices (it builds virtio,
 * virtio-mmio and vsock as modules); their dependencies come along.
 */
export const DEBIAN_MODULES = [
  "virtio_mmio",
  "virtio_blk",
  "virtio_net",
  "virtio_rng",
  "vmw_vsock_virtio_transport",
];

/** The cached Debian kernel, if fetched (with its modules: an older cache has none). */
export function debianKernelPaths(): KernelPaths | undefined {
  const dir = DEBIAN_DIR();
  const p = { bzImage: `${dir}/vmlinuz`, vmlinux: `${dir}/vmlinux` };
  return exists(p.bzImage) && exists(p.vmlinux) && exists(`${dir}/modules/order`) ? p : undefined;
}

/** The cached Debian kernel's modules directory: `order` names its files in load order. */
export function debianModulesDir(): string {
  return `${DEBIAN_DIR()}/modules`;
}

/** Copies `wanted` and what they depend on from an unpacked package into `out`, with `order`. */
function collectModules(unpacked: string, out: string, wanted: readonly string[]): void {
  const modules = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory) walk(p);
      else if (e.name.endsWith(".ko")) modules.set(moduleName(e.name), p);
    }
  };
  walk(`${unpacked}/lib/modules`);
  const order = loadOrder(wanted, modules, (p) => moduleDepends(Deno.readFileSync(p), p));
  Deno.mkdirSync(out, { recursive: true });
  const names = order.map((p) => p.replace(/^.*\//, ""));
  order.forEach((p, i) => writeAtomic(`${out}/${names[i]}`, Deno.readFileSync(p)));
  writeAtomic(`${out}/order`, new TextEncoder().encode(names.join("\n") + "\n"));
}

/** Decompressors by payload magic (the kernel's own choices). */
const DECOMPRESSORS: Array<{ magic: number[]; tool: string; args: string[]; pkg: string }> = [
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], tool: "xz", args: ["-dc"], pkg: "xz-utils" },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], tool: "zstd", args: ["-dcq"], pkg: "zstd" },
  { magic: [0x1f, 0x8b], tool: "gzip", args: ["-dc"], pkg: "gzip" },
  { magic: [0x42, 0x5a, 0x68], tool: "bzip2", args: ["-dc"], pkg: "bzip2" },
  { magic: [0x5d, 0x00, 0x00], tool: "xz", args: ["--format=lzma", "-dc"], pkg: "xz-utils" },
  { magic: [0x02, 0x21, 0x4c, 0x18], tool: "lz4", args: ["-dc"], pkg: "lz4" },
];

/**
 * Extracts the vmlinux ELF a bzImage carries (its compressed payload), as
 * the kernel's scripts/extract-vmlinux does.
 */
export async function extractVmlinux(bzImage: Uint8Array, name = "bzImage"): Promise<Uint8Array> {
  const bz = parseBzImage(bytesImage(name, bzImage));
  const dv = new DataView(bzImage.buffer, bzImage.byteOffset, bzImage.byteLength);
  const off = bz.pmOffset + dv.getUint32(SETUP.payload_offset, true);
  const len = dv.getUint32(SETUP.payload_length, true);
  const payload = bzImage.subarray(off, off + len);
  const d = DECOMPRESSORS.find((c) => c.magic.every((b, i) => payload[i] === b));
  if (!d) throw new VoltError(`${name}: unknown kernel compression`, "input");
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(d.tool, {
      args: d.args,
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    })
      .spawn();
  } catch {
    throw new VoltError(`${d.tool} is not installed (apt-get install ${d.pkg})`, "noinput");
  }
  const w = child.stdin.getWriter();
  const writing = w.write(payload).then(() => w.close()).catch(() => {});
  const out = await child.output();
  await writing;
  // Trailing data after the stream makes some tools complain; the ELF is whole.
  if (out.stdout.length < 4 || out.stdout[0] !== 0x7f) {
    throw new VoltError(`${name}: could not decompress the kernel payload`, "input");
  }
  return out.stdout;
}

/**
 * Fetches Debian's cloud kernel into the cache (once) and returns its paths.
 *
 * @example
 * ```ts ignore
 * import { fetchDebianKernel } from "./kernels.ts";
 * const { vmlinux } = await fetchDebianKernel((s) => console.error(s));
 * ```
 */
export async function fetchDebianKernel(
  progress: (s: string) => void = () => {},
): Promise<KernelPaths> {
  const cached = debianKernelPaths();
  if (cached) return cached;
  const pkg = resolveMeta(DEBIAN_CLOUD_META, "linux-image-");
  progress(`Fetching ${pkg} ${candidateVersion(pkg)} with apt-get download`);
  const dir = DEBIAN_DIR();
  const unpack = `${dir}.unpack`;
  try {
    Deno.removeSync(unpack, { recursive: true });
  } catch { /* not there */ }
  fetchAndUnpack(pkg, unpack);
  const boot = `${unpack}/boot`;
  const vmlinuz = [...Deno.readDirSync(boot)].find((e) => e.name.startsWith("vmlinuz-"));
  if (!vmlinuz) throw new VoltError(`${pkg} has no /boot/vmlinuz`, "internal");
  const bz = Deno.readFileSync(`${boot}/${vmlinuz.name}`);
  progress("Extracting vmlinux (for the PVH entry)");
  const elf = await extractVmlinux(bz, vmlinuz.name);
  Deno.mkdirSync(dir, { recursive: true });
  progress(`Taking the modules for virtio and vsock (${DEBIAN_MODULES.join(", ")})`);
  collectModules(unpack, `${dir}/modules`, DEBIAN_MODULES);
  writeAtomic(`${dir}/vmlinux`, elf);
  writeAtomic(`${dir}/vmlinuz`, bz);
  Deno.writeTextFileSync(`${dir}/VERSION`, `${vmlinuz.name.slice("vmlinuz-".length)}\n`);
  Deno.removeSync(unpack, { recursive: true });
  return debianKernelPaths()!;
}
