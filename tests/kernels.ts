/** Locates guest kernels the project's tooling cached. */
import { debianKernelPaths } from "../src/guest/kernels.ts";

/** Debian's cloud kernel, if fetched; in CI its absence is a failure. */
export function debianKernel(): { bzImage: string; vmlinux: string } | undefined {
  const p = debianKernelPaths();
  if (p) return p;
  if (Deno.env.get("CI") === "true") {
    throw new Error("CI must fetch Debian's kernel first (volt kernel fetch debian)");
  }
  return undefined;
}
