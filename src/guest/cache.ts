/**
 * Where built and fetched guest artifacts live: `$XDG_CACHE_HOME/volt`, else
 * `~/.cache/volt`.
 *
 * @module
 */

/**
 * The cache directory (not created).
 *
 * @example
 * ```ts
 * import { cacheDir } from "./cache.ts";
 * console.log(cacheDir("kernels"));
 * ```
 */
export function cacheDir(...sub: string[]): string {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const home = Deno.env.get("HOME") ?? "/root";
  const base = xdg && xdg.startsWith("/") ? `${xdg}/volt` : `${home}/.cache/volt`;
  return [base, ...sub].join("/");
}

/** True when `path` exists. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Writes `data` to `path` through a temporary file and a rename, so readers never see half a file. */
export function writeAtomic(path: string, data: Uint8Array): void {
  const tmp = `${path}.tmp-${Deno.pid}`;
  Deno.writeFileSync(tmp, data);
  Deno.renameSync(tmp, path);
}
