/**
 * Absolute paths, as node:path's `resolve` makes them: our own, as
 * node:path would load Deno's Node layer in the monitor's runtime.
 *
 * @module
 */

/**
 * Joins `parts` from the right until one is absolute (else from the
 * current directory), then drops `.`, `..` and repeated slashes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolvePath } from "./paths.ts";
 * assert.equal(resolvePath("/a/b", "../c//d/."), "/a/c/d");
 * assert.equal(resolvePath("/a", "/x/y"), "/x/y");
 * ```
 */
export function resolvePath(...parts: string[]): string {
  let path = "";
  for (let i = parts.length - 1; i >= 0 && !path.startsWith("/"); i--) {
    if (parts[i]) path = path ? `${parts[i]}/${path}` : parts[i];
  }
  if (!path.startsWith("/")) path = `${Deno.cwd()}/${path}`;
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  return `/${out.join("/")}`;
}
