/**
 * `./volt run` on a host without /dev/kvm: builds or fetches the guest on
 * the host (fast there), then boots it with the real monitor inside the
 * nested-KVM helper VM (tools/nested/). The helper VM has no terminal input,
 * so a guest given no command stops right after it is ready.
 *
 * Usage: deno run -A tools/boot.ts [volt run options]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { report } from "../src/cli/main.ts";
import { resolveGuest } from "../src/cli/guest_cmd.ts";
import { runNested } from "./nested/run.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * Splits `--kernel`/`--initrd` from the other `volt run` options.
 *
 * @example
 * ```ts
 * import { splitGuestArgs } from "./boot.ts";
 * splitGuestArgs(["--kernel", "debian", "--memory", "256M"]);
 * // { kernel: "debian", initrd: undefined, rest: ["--memory", "256M"] }
 * ```
 */
export function splitGuestArgs(
  args: string[],
): { kernel?: string; initrd?: string; rest: string[] } {
  const { values, tokens } = parseArgs({
    args,
    options: { kernel: { type: "string" }, initrd: { type: "string" } },
    strict: false,
    tokens: true,
  });
  const rest: string[] = [];
  for (const t of tokens ?? []) {
    if (t.kind === "option" && (t.name === "kernel" || t.name === "initrd")) continue;
    if (t.kind === "option") {
      rest.push(t.rawName);
      if (t.value !== undefined && !t.inlineValue) rest.push(t.value);
      else if (t.inlineValue) rest[rest.length - 1] = `${t.rawName}=${t.value}`;
    } else if (t.kind === "positional") rest.push(t.value);
    else rest.push("--");
  }
  return {
    kernel: values.kernel as string | undefined,
    initrd: values.initrd as string | undefined,
    rest,
  };
}

if (import.meta.main) {
  try {
    const { kernel, initrd, rest } = splitGuestArgs(Deno.args);
    const guest = await resolveGuest(kernel, initrd);
    const hasCmd = rest.some((a) => a.includes("volt.cmd=") || a.includes("volt.exit"));
    const args = [
      "run",
      "--kernel",
      guest.kernel,
      ...(guest.initrd ? ["--initrd", guest.initrd] : []),
      ...rest,
    ];
    if (!hasCmd && !rest.includes("--cmdline")) args.push("--append", "volt.exit");
    console.error(
      "volt: /dev/kvm is absent: booting inside a nested-KVM helper VM (QEMU TCG with SVM), without terminal input",
    );
    Deno.exit(
      await runNested([Deno.execPath(), "run", "-A", `${ROOT}/mod.ts`, ...args], {
        cwd: ROOT,
        env: { DENO_NO_UPDATE_CHECK: "1" },
      }),
    );
  } catch (e) {
    Deno.exit(report(e));
  }
}
