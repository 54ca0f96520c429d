/**
 * Where the guest's sources (volt-init, the kernel's config, patches and
 * build script) are on disk. From a checkout they are the repository's
 * `guest/`; run from a remote URL (`jsr:@volt/vmm`, https) they are fetched
 * once, beside this module's URL, into the cache: a path built from an
 * https URL would name nothing.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { cacheDir, exists } from "./cache.ts";

/** Every file under `guest/` the guest build reads, relative to it (a test checks the list). */
export const GUEST_FILES: readonly string[] = [
  "init/volt-init.c",
  "kernel/build.sh",
  "kernel/microvm.config",
  "kernel/patches/0001-x86-alternative-int3-selftest-boot-option.patch",
];

/** The kernel patches, in the order they apply. */
export const KERNEL_PATCHES: readonly string[] = GUEST_FILES.filter((f) =>
  f.startsWith("kernel/patches/") && f.endsWith(".patch")
).map((f) => f.slice("kernel/patches/".length)).sort();

/** The `guest/` directory beside this module, as a URL; a bundle puts it beside itself. */
let guestUrl = new URL("../../guest/", import.meta.url);

let resolved: string | undefined;

/**
 * Where the guest sources are, for a program that carries them elsewhere
 * (the single-file bundle keeps them in `guest/` beside itself).
 *
 * @example
 * ```ts ignore
 * import { setGuestSourcesUrl } from "./guest_sources.ts";
 * setGuestSourcesUrl(new URL("./guest/", import.meta.url));
 * ```
 */
export function setGuestSourcesUrl(url: URL): void {
  guestUrl = url;
  resolved = undefined;
}

/**
 * The guest sources' directory: the checkout's, or a cached copy of the
 * remote ones (fetched on first use).
 *
 * @example
 * ```ts ignore
 * import { guestDir } from "./guest_sources.ts";
 * console.log(`${await guestDir()}/init/volt-init.c`);
 * ```
 */
export async function guestDir(): Promise<string> {
  resolved ??= await guestDirFrom(guestUrl);
  return resolved;
}

/**
 * The directory holding {@linkcode GUEST_FILES} from `base` (a `file:` or
 * `http(s):` URL of a `guest/` directory): the path itself for `file:`,
 * else a cache directory named by the URL, filled once.
 */
export async function guestDirFrom(base: URL, cacheRoot?: string): Promise<string> {
  if (base.protocol === "file:") return decodeURIComponent(base.pathname).replace(/\/$/, "");
  const name = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(base.href))),
  ).slice(0, 8).map((b) => b.toString(16).padStart(2, "0")).join("");
  const dir = cacheRoot ? `${cacheRoot}/guest-${name}` : cacheDir("guest-src", name);
  if (GUEST_FILES.every((f) => exists(`${dir}/${f}`))) return dir;
  const tmp = `${dir}.tmp-${Deno.pid}`;
  for (const f of GUEST_FILES) {
    const url = new URL(f, base);
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new VoltError(
        `Cannot fetch the guest sources (${url}): ${(e as Error).message}`,
        "noinput",
      );
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new VoltError(`Cannot fetch the guest sources (${url}): HTTP ${res.status}`, "noinput");
    }
    const path = `${tmp}/${f}`;
    Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    Deno.writeFileSync(path, new Uint8Array(await res.arrayBuffer()));
  }
  try {
    Deno.renameSync(tmp, dir);
  } catch {
    // Another process filled it first.
    Deno.removeSync(tmp, { recursive: true });
  }
  return dir;
}
