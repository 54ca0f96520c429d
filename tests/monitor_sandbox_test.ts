/**
 * The plan of the monitor's jail: what Landlock and Deno grant, and what
 * the jailed monitor is told. The plan is applied and proven on a real
 * monitor in sandbox_e2e_test.ts.
 */
import assert from "node:assert/strict";
import { denoDir } from "../src/sandbox/jail.ts";
import { libcPath } from "../ffi/libc.ts";
import {
  decodeJailState,
  encodeJailState,
  planJail,
  programLocation,
  sandboxSummary,
} from "../src/sandbox/monitor.ts";
import { ROOT, tmpDir } from "./helpers.ts";

Deno.test("jail plan: a local program is its deno.json's tree", () => {
  const loc = programLocation(new URL("../src/cli/main.ts", import.meta.url).href);
  assert.deepEqual(loc, {
    main: `${ROOT}/src/cli/main.ts`,
    root: ROOT,
    config: `${ROOT}/deno.json`,
  });
  const dir = tmpDir();
  Deno.writeTextFileSync(`${dir}/volt.js`, "");
  assert.deepEqual(programLocation(`file://${dir}/volt.js`), { main: `${dir}/volt.js`, root: dir });
  assert.deepEqual(programLocation("https://jsr.io/@volt/vmm/0.1.0/mod.ts"), {
    main: "https://jsr.io/@volt/vmm/0.1.0/mod.ts",
  });
});

Deno.test("jail plan: Deno grants FFI and reads of the program, libc and guest files only", () => {
  const plan = planJail({
    program: { main: `${ROOT}/mod.ts`, root: ROOT, config: `${ROOT}/deno.json` },
    readFiles: ["/k/vmlinux", "/k/initrd"],
    readWrite: ["/dev/kvm"],
    args: ["run", "--kernel=/k/vmlinux"],
    landlock: true,
  });
  const args = plan.exec.args;
  assert.equal(plan.exec.execPath, Deno.execPath());
  assert.equal(args[0], "run");
  assert.ok(args.includes("--no-prompt") && args.includes("--cached-only"));
  assert.ok(args.includes(`--config=${ROOT}/deno.json`));
  assert.ok(args.includes("--allow-ffi"));
  assert.ok(args.includes(`--allow-read=${ROOT},${libcPath()},/k/vmlinux,/k/initrd`));
  assert.deepEqual(args.slice(-3), [`${ROOT}/mod.ts`, "run", "--kernel=/k/vmlinux"]);
  assert.equal(args.filter((a) => a.startsWith("--allow")).length, 2, args.join(" "));
  assert.equal(plan.exec.env?.DENO_NO_UPDATE_CHECK, "1");
  // The caller's environment stays outside: only Deno's cache and colour.
  assert.deepEqual(
    Object.keys(plan.exec.env!).sort(),
    [
      "DENO_DIR",
      "DENO_NO_UPDATE_CHECK",
      ...(Deno.env.get("NO_COLOR") === undefined ? [] : ["NO_COLOR"]),
    ].sort(),
  );

  const rules = new Map(plan.rules!.map((r) => [r.path, r.access]));
  assert.equal(rules.get("/k/vmlinux"), "read");
  assert.equal(rules.get("/k/initrd"), "read");
  assert.equal(rules.get("/dev/kvm"), "readwrite");
  assert.equal(rules.get(ROOT), "read");
  const exeDir = Deno.execPath().slice(0, Deno.execPath().lastIndexOf("/"));
  assert.equal(rules.get(exeDir), "exec-read");
  // Nothing writable but the KVM device: Deno's cache is read-only (the
  // unjailed volt runs its code next time), and no blanket grant of /.
  const writable = plan.rules!.filter((r) => r.access === "readwrite").map((r) => r.path);
  assert.deepEqual(writable, ["/dev/kvm"]);
  assert.equal(rules.get(denoDir()), "read");
  assert.ok(!rules.has("/") && !rules.has("/etc") && !rules.has("/proc"));
});

Deno.test("jail plan: a remote program may import from its host; no Landlock when off", () => {
  const plan = planJail({
    program: { main: "https://jsr.io/@volt/vmm/0.1.0/mod.ts" },
    readFiles: ["/k/vmlinux"],
    readWrite: [],
    args: ["run"],
    landlock: false,
  });
  assert.equal(plan.rules, undefined);
  assert.ok(plan.exec.args.includes("--no-config"));
  assert.ok(plan.exec.args.includes("--allow-import=jsr.io"));
  assert.ok(plan.exec.args.includes(`--allow-read=${libcPath()},/k/vmlinux`));
});

Deno.test("jail plan: a path Deno's flags cannot carry is refused", () => {
  assert.throws(
    () =>
      planJail({
        program: { main: "/p/mod.ts", root: "/p" },
        readFiles: ["/k/a,b"],
        readWrite: [],
        args: [],
        landlock: false,
      }),
    /^VoltError: Path \/k\/a,b contains a comma/,
  );
});

Deno.test("jail state: round trip, and a summary that names what is off", () => {
  const state = {
    origin: 1234.5,
    marks: [{ phase: "jail entered", ms: 3 }],
    landlock: { abi: 6, rules: 9 },
    bounding: true,
  };
  assert.deepEqual(decodeJailState(encodeJailState(state)), state);
  assert.throws(() => decodeJailState("not base64!"), /damaged/);
  assert.equal(
    sandboxSummary({
      seccomp: { syscalls: 54, log: false },
      state,
      revoked: true,
      dumpable: false,
    }),
    "Sandbox: seccomp 54 syscalls (kill otherwise), Landlock ABI 6 with 9 rules, " +
      "no capabilities (bounding set empty), no_new_privs, undumpable, Deno: FFI only (reads revoked)",
  );
  assert.equal(
    sandboxSummary({
      seccomp: "off",
      state: { ...state, landlock: { skipped: "off" }, bounding: false },
      revoked: false,
      dumpable: true,
    }),
    "Sandbox: seccomp off, Landlock off, no capabilities, no_new_privs, dumpable, Deno: FFI and guest reads",
  );
});
