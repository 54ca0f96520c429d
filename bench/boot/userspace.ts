/**
 * The preamble of every benchmark whose guest needs userspace: it runs
 * here on hardware KVM, and inside the nested-KVM helper VM on PVM and
 * without /dev/kvm (re-running the same script there with `--nested`).
 *
 * @module
 */

import { hostKind, hostKindLabel } from "../../src/vmm/host.ts";
import { runNested } from "../../tools/nested/run.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * Returns where the benchmark runs (for its report) if that is here;
 * otherwise runs `bench/<script>` with `args` and `--nested` in the helper
 * VM and exits with its status.
 *
 * @example
 * ```ts ignore
 * const where = await userspaceHere("bench:net", "net.ts", [`--runs=3`], values.nested);
 * ```
 */
export async function userspaceHere(
  name: string,
  script: string,
  args: string[],
  nested = false,
): Promise<string> {
  const kind = hostKind();
  if (nested) return "inside the nested-KVM helper VM (QEMU TCG)";
  if (kind === "hardware") return "natively (hardware KVM)";
  console.error(
    `${name}: ${
      hostKindLabel(kind)
    }: guest userspace needs the nested-KVM helper VM; running there`,
  );
  Deno.exit(
    await runNested(
      [Deno.execPath(), "run", "-A", `${ROOT}/bench/${script}`, "--nested", ...args],
      {
        cwd: ROOT,
        memory: "4G",
        cpus: 2,
        timeoutMs: 2 * 3600_000,
      },
    ),
  );
}

/** `--runs`, checked: a positive whole number, or one line and exit 64. */
export function parseRuns(name: string, value: string | undefined): number {
  const runs = Number(value);
  if (!Number.isSafeInteger(runs) || runs < 1) {
    console.error(`${name}: --runs must be a positive whole number, not ${value}`);
    Deno.exit(64);
  }
  return runs;
}
