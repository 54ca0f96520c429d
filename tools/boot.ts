/**
 * `./volt run` on every kind of host: on hardware KVM it boots here; where
 * /dev/kvm is absent, or is PVM (which cannot run guest userspace), it
 * builds or fetches the guest on the host (fast there), then boots it with
 * the real monitor inside the nested-KVM helper VM (tools/nested/), our
 * terminal passed through to the guest's console. `--native` boots here
 * whatever the host.
 *
 * Usage: deno run -A tools/boot.ts [--native] [volt run options]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { report } from "../src/cli/main.ts";
import { dirname, resolve } from "node:path";
import { resolveGuest, resolveRootfs } from "../src/cli/guest_cmd.ts";
import { parseDisk } from "../src/cli/plan.ts";
import { bareRootfs } from "../src/cli/run_cmd.ts";
import { VoltError } from "../src/errors.ts";
import { readConfigFile } from "../src/control/fc_config.ts";
import { type HostKind, hostKind } from "../src/vmm/host.ts";
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

/**
 * Why `./volt run` boots in the helper VM on a host of `kind`, or undefined
 * when it boots here.
 *
 * @example
 * ```ts
 * import { nestedReason } from "./boot.ts";
 * console.log(nestedReason("hardware")); // undefined
 * console.log(nestedReason("pvm")?.startsWith("this host's KVM is PVM")); // true
 * ```
 */
export function nestedReason(kind: HostKind): string | undefined {
  if (kind === "none") return "/dev/kvm is absent or unusable here";
  if (kind === "pvm") {
    return "this host's KVM is PVM, which cannot run guest userspace (--native boots here anyway, to the kernel's init)";
  }
  return undefined;
}

/**
 * Rewrites `--disk` and `--rootfs` for the helper VM, which sees the host's
 * files at the same absolute paths: paths made absolute, the default root
 * image built here, and each rw disk's directory listed to share writable.
 */
export async function diskArgs(
  args: string[],
): Promise<{ rest: string[]; writable: string[]; rootfs: boolean }> {
  const rest: string[] = [];
  const writable: string[] = [];
  let rootfs = false;
  for (let i = 0; i < args.length; i++) {
    const m = /^--(disk|rootfs)(?:=(.*))?$/.exec(args[i]);
    if (!m) {
      rest.push(args[i]);
      continue;
    }
    const value = m[2] ?? args[++i];
    if (value === undefined) throw new VoltError(`--${m[1]} needs a value`, "usage");
    const disk = parseDisk(value);
    if (m[1] === "rootfs") {
      rootfs = true;
      disk.path = await resolveRootfs(disk.path);
    }
    const path = resolve(disk.path);
    if (!disk.readOnly) writable.push(dirname(path));
    const opts = [disk.readOnly ? "ro" : "rw", ...(disk.id ? [`id=${disk.id}`] : [])];
    rest.push(`--${m[1]}=${[path.replaceAll(",", ",,"), ...opts].join(",")}`);
  }
  return { rest, writable, rootfs };
}

/**
 * Rewrites a `--config-file` for the helper VM, as {@linkcode diskArgs}
 * does the disk flags: the same document with every path absolute and the
 * guest resolved here, written to a new directory the helper VM is given;
 * a TAP or vsock socket it names is refused (the helper VM cannot reach
 * them). Returns the new file and the directories to share writable.
 */
export async function configFileFor(
  file: string,
  why: string,
): Promise<{ file: string; writable: string[] }> {
  const { config, document } = readConfigFile(file);
  for (
    const [set, what] of [[config.nets?.length, "network interfaces"], [config.vsock, "vsock"]]
  ) {
    if (set) {
      throw new VoltError(
        `--config-file ${file} has ${what}: ${why}; the guest would boot inside the helper VM, ` +
          "which cannot reach this host's TAP devices or unix sockets",
        "usage",
      );
    }
  }
  // A copy to rewrite (JSON-typed, as it was read).
  const doc = JSON.parse(JSON.stringify(document));
  const boot = doc["boot-source"];
  const asked = boot.kernel_image_path === "default" ? undefined : boot.kernel_image_path;
  const guest = await resolveGuest(asked, boot.initrd_path ?? undefined);
  const rootDisk = (doc.drives ?? []).some((d: { is_root_device: boolean }) => d.is_root_device);
  boot.kernel_image_path = resolve(guest.kernel);
  // Booting from a disk: the default guest's initramfs would take over first.
  const initrd = rootDisk && !boot.initrd_path ? undefined : guest.initrd;
  if (initrd) boot.initrd_path = resolve(initrd);
  else delete boot.initrd_path;
  const writable: string[] = [];
  for (const d of doc.drives ?? []) {
    d.path_on_host = resolve(await resolveRootfs(d.path_on_host));
    if (d.is_read_only === false) writable.push(dirname(d.path_on_host));
  }
  const dir = Deno.makeTempDirSync({ prefix: "volt-config-" });
  const out = `${dir}/config.json`;
  Deno.writeTextFileSync(out, JSON.stringify(doc));
  return { file: out, writable: [...writable, dir] };
}

/** Runs `volt <args>` in the helper VM, our terminal passed through; returns its status. */
async function bootNested(why: string, args: string[], writable: string[]): Promise<number> {
  console.error(`volt: ${why}: booting inside a nested-KVM helper VM (QEMU TCG with SVM)`);
  return await runNested([Deno.execPath(), "run", "-A", `${ROOT}/mod.ts`, ...args], {
    cwd: ROOT,
    env: { DENO_NO_UPDATE_CHECK: "1" },
    input: true,
    writable,
    commandStage: "guest console",
    // A person at an idle shell prompt is not a stall.
    stallMs: Deno.stdin.isTerminal() ? { command: Infinity } : undefined,
  });
}

/** Runs `volt run args` on this host; returns its status. */
async function runHere(args: string[]): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/mod.ts`, "run", ...args],
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // The child owns the terminal; our default SIGINT would orphan it.
  const ignore = () => {};
  Deno.addSignalListener("SIGINT", ignore);
  try {
    const s = await child.status;
    return s.signal ? 128 + (s.signal === "SIGINT" ? 2 : 15) : s.code;
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
  }
}

if (import.meta.main) {
  try {
    const native = Deno.args.includes("--native");
    const own = Deno.args.filter((a) => a !== "--native");
    // A snapshot restores on the kind of host that took it: here.
    const restore = own.some((a) => a === "--restore" || a.startsWith("--restore="));
    const why = native || restore ? undefined : nestedReason(hostKind());
    if (!why) Deno.exit(await runHere(own));
    const configAt = own.findIndex((a) => a === "--config-file" || a.startsWith("--config-file="));
    if (configAt >= 0) {
      const inline = own[configAt].startsWith("--config-file=");
      const path = inline ? own[configAt].slice("--config-file=".length) : own[configAt + 1];
      if (!path) throw new VoltError("--config-file needs a value", "usage");
      if (own.some((a) => a === "--api-sock" || a.startsWith("--api-sock="))) {
        throw new VoltError(
          `--api-sock: ${why}; the guest would boot inside the helper VM, which cannot reach ` +
            "this host's unix sockets",
          "usage",
        );
      }
      const cfg = await configFileFor(path, why);
      const rest = own.filter((_, i) => i !== configAt && (inline || i !== configAt + 1));
      Deno.exit(await bootNested(why, ["run", "--config-file", cfg.file, ...rest], cfg.writable));
    }
    const { kernel, initrd, rest: given } = splitGuestArgs(bareRootfs(own));
    for (
      const [flag, what] of [
        ["--net", "TAP devices"],
        ["--vsock", "unix sockets"],
        ["--api-sock", "unix sockets"],
      ]
    ) {
      if (given.some((a) => a === flag || a.startsWith(`${flag}=`))) {
        throw new VoltError(
          `${flag}: ${why}; the guest would boot inside the helper VM, which cannot reach this ` +
            `host's ${what}`,
          "usage",
        );
      }
    }
    const guest = await resolveGuest(kernel, initrd);
    const disks = await diskArgs(given);
    // Booting from a disk: the default guest's initramfs would take over first.
    if (disks.rootfs && initrd === undefined) guest.initrd = undefined;
    const args = [
      "run",
      "--kernel",
      guest.kernel,
      ...(guest.initrd ? ["--initrd", guest.initrd] : []),
      ...disks.rest,
    ];
    // A rw disk is written in place: its directory is shared writable.
    Deno.exit(await bootNested(why, args, disks.writable));
  } catch (e) {
    Deno.exit(report(e));
  }
}
