import assert from "node:assert/strict";
import { VoltError } from "../src/errors.ts";
import { INIT_SCRIPT, modinfo, START_MARKER } from "../tools/nested/l1.ts";
import {
  commandScript,
  ConsoleFilter,
  OutputTail,
  runNested,
  STALL_STATUS,
  writableDirs,
} from "../tools/nested/run.ts";
import { hostKind } from "../src/vmm/host.ts";
import {
  retryTripleFaults,
  subsetArgs,
  testArgs,
  testCounts,
  tripleFaultedTests,
  USERSPACE_TEST_FILES,
} from "../tools/test.ts";
import { ROOT, sbin, tmpDir, typeAtShellPrompt } from "./helpers.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("nested: the command script keeps every argument and value intact", async () => {
  const dir = tmpDir();
  try {
    const args = ["a b", "c'd", 'e"f', "$HOME", "", "back\\slash", "new\nline", "*"];
    const script = commandScript(["printf", "[%s]", ...args], dir, {
      X: 'it\'s "quoted" $x `y`',
    });
    const out = await new Deno.Command("sh", {
      args: ["-c", `${script.replace(/^exec /m, "")}printf '<%s|%s>' "$X" "$PWD"`],
      env: {},
      clearEnv: true,
      stdout: "piped",
    }).output();
    assert.equal(
      dec(out.stdout),
      args.map((a) => `[${a}]`).join("") + `<it's "quoted" $x \`y\`|${dir}>`,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("nested: bad environment names are rejected", () => {
  assert.throws(() => commandScript(["true"], "/", { "A-B": "1" }), VoltError);
  assert.throws(() => commandScript(["true"], "/", { "1A": "1" }), VoltError);
});

Deno.test("nested: the console filter drops boot noise up to the marker, even split", () => {
  const f = new ConsoleFilter(false);
  const text = `SeaBIOS\r\n[    1.0] Run /init\r\n${START_MARKER}\nout 1\r\nout 2\n`;
  let shown = "";
  // Byte by byte: the marker, CR and LF all straddle chunk boundaries.
  for (const b of enc(text)) shown += dec(f.push(new Uint8Array([b])));
  assert.equal(shown, "out 1\nout 2\n");
  assert.ok(f.started);
  assert.deepEqual(f.bootLog, ["SeaBIOS", "[    1.0] Run /init"]);
});

Deno.test("nested: the console filter keeps a lone CR and binary bytes", () => {
  const f = new ConsoleFilter(false);
  const out = f.push(new Uint8Array([...enc(`${START_MARKER}\n`), 0x41, 0x0d, 0x42, 0xff, 0x0d]));
  assert.deepEqual([...out], [0x41, 0x0d, 0x42, 0xff]);
  assert.deepEqual([...f.push(enc("\n"))], [0x0a]);
  assert.deepEqual([...f.push(enc("x"))], [0x78]);
});

Deno.test("nested: a verbose console filter passes the boot log but not the marker", () => {
  const f = new ConsoleFilter(true);
  assert.equal(dec(f.push(enc("boot 1\r\nboot"))), "boot 1\n");
  assert.equal(dec(f.push(enc(` 2\n${START_MARKER}\r\ncmd\n`))), "boot 2\ncmd\n");
});

Deno.test("nested: writable directories are absolute, existing, outermost and never /", () => {
  const dir = tmpDir();
  try {
    Deno.mkdirSync(`${dir}/sub/deeper`, { recursive: true });
    assert.deepEqual(writableDirs([`${dir}/sub/deeper`, dir, `${dir}/sub/..`]), [dir]);
    assert.throws(() => writableDirs(["/"]), /host root/);
    Deno.symlinkSync(`${dir}/sub`, `${dir}/link`);
    assert.deepEqual(writableDirs([`${dir}/link/deeper`]), [`${dir}/sub/deeper`]);
    assert.throws(() => writableDirs([`${dir}/missing`]), /not found/);
    Deno.writeTextFileSync(`${dir}/file`, "");
    assert.throws(() => writableDirs([`${dir}/file`]), /Not a directory/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** A minimal ELF64 with a .modinfo section and a .bss that lies past the end of the file. */
function fakeModule(info: string[]): Uint8Array {
  const modinfoBytes = enc(info.join("\0") + "\0");
  const shstr = enc("\0.modinfo\0.bss\0.shstrtab\0");
  const dataOff = 64;
  const strOff = dataOff + modinfoBytes.length;
  const shoff = (strOff + shstr.length + 7) & ~7;
  const out = new Uint8Array(shoff + 4 * 64);
  const dv = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  dv.setBigUint64(0x28, BigInt(shoff), true);
  dv.setUint16(0x3a, 64, true);
  dv.setUint16(0x3c, 4, true);
  dv.setUint16(0x3e, 3, true);
  out.set(modinfoBytes, dataOff);
  out.set(shstr, strOff);
  const sh = (i: number, name: number, off: number, size: number) => {
    dv.setUint32(shoff + i * 64, name, true);
    dv.setBigUint64(shoff + i * 64 + 0x18, BigInt(off), true);
    dv.setBigUint64(shoff + i * 64 + 0x20, BigInt(size), true);
  };
  sh(1, 1, dataOff, modinfoBytes.length);
  sh(2, 10, 1 << 20, 4096); // .bss: no file bytes
  sh(3, 15, strOff, shstr.length);
  return out;
}

Deno.test("nested: modinfo reads a module's dependencies", () => {
  const info = modinfo(
    fakeModule(["license=GPL", "depends=kvm,ccp", "name=kvm_amd", "alias=a", "alias=b"]),
  );
  assert.deepEqual(info.get("depends"), ["kvm,ccp"]);
  assert.deepEqual(info.get("name"), ["kvm_amd"]);
  assert.deepEqual(info.get("alias"), ["a", "b"]);
  assert.throws(
    () => modinfo(enc("not an ELF at all, certainly not a module".repeat(2))),
    VoltError,
  );
});

Deno.test("nested: the init script is valid sh", async () => {
  const out = await new Deno.Command("sh", { args: ["-n", "-c", INIT_SCRIPT], stderr: "piped" })
    .output();
  assert.ok(out.success, dec(out.stderr));
});

Deno.test("nested: tools/test.ts adds tests/ unless a path is given", () => {
  const base = ["test", "-A", "--parallel"];
  assert.deepEqual(testArgs([], ROOT), [...base, "tests/"]);
  assert.deepEqual(testArgs(["--filter", "cpio"], ROOT), [...base, "--filter", "cpio", "tests/"]);
  assert.deepEqual(testArgs(["tests/ffi_test.ts"], ROOT), [...base, "tests/ffi_test.ts"]);
  assert.deepEqual(testArgs(["--", "x"], ROOT), [...base, "tests/", "--", "x"]);
  assert.deepEqual(testArgs(["ffi_test.ts"], `${ROOT}/tests`), [
    ...base,
    `${ROOT}/tests/ffi_test.ts`,
  ]);
});

/**
 * The helper VM is how this host gets a full KVM (PVM, or no /dev/kvm):
 * these tests boot it (10–30 s each) on the host itself. Inside the helper
 * VM the host is of neither kind, so they do not run there.
 */
const helperVm = { ignore: !["pvm", "none"].includes(hostKind()) };

Deno.test({
  ...helperVm,
  name: "nested: a command runs with /dev/kvm and its status comes back",
  fn: async () => {
    const rc = await runNested(["sh", "-c", "test -c /dev/kvm && exit 7"], {
      cwd: ROOT,
      progress: () => {},
    });
    assert.equal(rc, 7);
  },
});

/** Runs `sh -c script` in the helper VM from a child process, with `options` added (source text). */
function nestedInChild(script: string, options: string): Promise<Deno.CommandOutput> {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { runNested } from "${ROOT}/tools/nested/run.ts";
       Deno.exit(await runNested(["sh", "-c", ${JSON.stringify(script)}],
         { cwd: "${ROOT}", progress: () => {}, ${options} }));`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test({
  ...helperVm,
  name: "nested: the watchdog stops a silent command with one line naming the stage",
  fn: async () => {
    const out = await nestedInChild("echo quiet now; sleep 300", "stallMs: { command: 4000 }");
    const err = dec(out.stderr).trim();
    assert.equal(out.code, STALL_STATUS, err);
    assert.match(
      err,
      /^volt nested: the command stage made no progress for 4 s; the helper VM was stopped \(last output: quiet now\)$/m,
    );
    assert.equal(err.split("\n").length, 1, err);
  },
});

Deno.test({
  ...helperVm,
  name: "nested: a process the command leaves behind cannot keep the helper VM up",
  fn: async () => {
    const out = await nestedInChild("sleep 300 & echo left; exit 4", "shutdownGraceMs: 3000");
    const err = dec(out.stderr).trim();
    assert.equal(out.code, 4, err);
    assert.match(dec(out.stdout), /^left$/m);
    assert.match(
      err,
      /^volt nested: the helper VM did not power off within 3 s of the command's end/m,
    );
  },
});

/** Runs `./volt run` through tools/boot.ts, typing `input` once the shell prompts. */
const typeAtPrompt = (input: string) => typeAtShellPrompt(`${ROOT}/tools/boot.ts`, [], input);

Deno.test({
  ...helperVm,
  name: "nested: ./volt run types through the helper VM to the guest's shell; its status returns",
  fn: async () => {
    const r = await typeAtPrompt("echo volt-$((40+2))\nexit 5\n");
    assert.match(r.stderr, /booting inside a nested-KVM helper VM/);
    assert.match(r.out, /\nvolt-42\r?\n/, `${r.stderr}\n${r.out.slice(-2000)}`);
    assert.equal(r.status.code, 5, r.stderr);
  },
});

Deno.test({
  ...helperVm,
  name: "nested: Ctrl-A x typed through the helper VM stops the guest with exit 0",
  fn: async () => {
    const r = await typeAtPrompt("\x01x");
    assert.match(r.stderr, /booting inside a nested-KVM helper VM/);
    assert.match(r.out, /VOLT VM READY/, r.out.slice(-2000));
    assert.equal(r.status.code, 0, `${r.stderr}\n${r.out.slice(-2000)}`);
  },
});

Deno.test({
  ...helperVm,
  name:
    "nested: ./volt run --rootfs --disk REL,rw through the helper VM writes the host's file in place",
  fn: async () => {
    const dir = tmpDir();
    const mkfs = sbin("mkfs.ext4");
    assert.ok(
      new Deno.Command(mkfs, { args: ["-q", "-F", `${dir}/d.ext4`, "8M"] }).outputSync().success,
    );
    // A path relative to the caller's directory, which the helper VM does not share by default.
    const boot = () =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${ROOT}/tools/boot.ts`,
          "--rootfs",
          "--disk",
          "d.ext4,rw",
          "--append",
          'volt.cmd="mount /dev/vdb /mnt && echo in-place > /mnt/x && umount /mnt"',
        ],
        cwd: dir,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
    // A helper VM that wedged (seen once in a clean-clone CI, 2026-12-03) gets one more try.
    let out = await boot();
    if (out.code === STALL_STATUS) out = await boot();
    assert.equal(out.code, 0, dec(out.stderr) + dec(out.stdout).slice(-2000));
    const cat = new Deno.Command(sbin("debugfs"), {
      args: ["-R", "cat /x", `${dir}/d.ext4`],
      stderr: "null",
    })
      .outputSync();
    assert.equal(dec(cat.stdout), "in-place\n");
  },
});

for (
  const [flag, value, what] of [
    ["--net", "tap=vt0", "TAP devices"],
    ["--vsock", "cid=3,uds=/tmp/v.sock", "unix sockets"],
  ]
) {
  Deno.test({
    name:
      `nested: ./volt run ${flag} where the guest would boot in the helper VM is refused, one line`,
    ...helperVm,
    fn: async () => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}/tools/boot.ts`, flag, value],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 64);
      const lines = dec(out.stderr).trim().split("\n");
      assert.equal(lines.length, 1, dec(out.stderr));
      assert.ok(lines[0].startsWith(`volt: ${flag}: `), lines[0]);
      assert.ok(lines[0].endsWith(`helper VM, which cannot reach this host's ${what}`), lines[0]);
    },
  });
}

Deno.test("nested: the output tail keeps the last lines, bounded", () => {
  const t = new OutputTail(3);
  t.push(enc("one\ntwo\r\nthr"));
  t.push(enc("ee\nfour\n"));
  assert.deepEqual(t.lines(), ["three", "four"]);
  t.push(enc("x".repeat(1 << 20)));
  assert.ok(t.lines().join("").length <= 3 * 4096);
});

Deno.test("nested: tools/test.ts adds up every part and picks the userspace files", () => {
  const out = "ok | 3 passed | 0 failed | 1 ignored (2s)\n...\n" +
    "\x1b[31mFAILED\x1b[0m | 4 passed | 2 failed (1s)\n";
  assert.deepEqual(testCounts(out), { passed: 7, failed: 2, ignored: 1 });
  const userspaceArgs = (a: string[]) => subsetArgs(a, USERSPACE_TEST_FILES);
  assert.deepEqual(userspaceArgs(["test", "-A", "--parallel", "tests/"]), [
    "test",
    "-A",
    "--parallel",
    "tests/guest_e2e_test.ts",
    "tests/linux_test.ts",
    "tests/cpuid_guest_test.ts",
    "tests/disk_e2e_test.ts",
    "tests/net_e2e_test.ts",
    "tests/exec_e2e_test.ts",
  ]);
  assert.deepEqual(userspaceArgs(["test", "-A", "tests/linux_test.ts", "--filter", "x"]), [
    "test",
    "-A",
    "--filter",
    "x",
    "tests/linux_test.ts",
  ]);
  assert.equal(userspaceArgs(["test", "-A", "tests/cpio_test.ts"]), undefined);
});

Deno.test("nested: tests failing on a triple fault run once more by name, others stand", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const marker = `${dir}/ran`;
    await Deno.writeTextFile(
      `${dir}/a_test.ts`,
      `Deno.test("passes", () => {});
Deno.test("faults (once)", () => {
  try { Deno.statSync(${JSON.stringify(marker)}); } catch {
    Deno.writeTextFileSync(${JSON.stringify(marker)}, "");
    throw new Error("volt: Guest triple fault (KVM_EXIT_SHUTDOWN) at rip 0xfff0");
  }
});
Deno.test({ name: "other", ignore: Deno.env.get("OTHER") !== "1", fn() { throw new Error("no"); } });
`,
    );
    const runs: string[][] = [];
    const run = async (args = ["test", "-A", "--no-check", "a_test.ts"], other = "0") => {
      runs.push(args);
      const o = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: dir,
        env: { NO_COLOR: "1", OTHER: other },
      }).output();
      return [o.code, new TextDecoder().decode(o.stdout)] as [number, string];
    };
    const first = await run();
    assert.notEqual(first[0], 0);
    assert.deepEqual(tripleFaultedTests(first[1]), [{
      name: "faults (once)",
      file: "./a_test.ts",
    }]);
    const [code, out] = await retryTripleFaults(
      first,
      ["test", "-A", "--no-check", "a_test.ts"],
      run,
    );
    assert.equal(code, 0, out);
    assert.deepEqual(runs[1].slice(-3), ["--filter", "/^(?:faults \\(once\\))$/", "./a_test.ts"]);
    assert.deepEqual(testCounts(out), { passed: 2, failed: 0, ignored: 1 });

    // Another failure beside the triple fault: nothing is run again.
    await Deno.remove(marker);
    const mixed = await run(undefined, "1");
    assert.equal(tripleFaultedTests(mixed[1]), undefined);
    const before = runs.length;
    assert.deepEqual(await retryTripleFaults(mixed, ["test"], run), mixed);
    assert.equal(runs.length, before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
