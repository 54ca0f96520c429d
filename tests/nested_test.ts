import assert from "node:assert/strict";
import { VoltError } from "../src/errors.ts";
import { INIT_SCRIPT, modinfo, START_MARKER } from "../tools/nested/l1.ts";
import {
  commandScript,
  ConsoleFilter,
  hostHasKvm,
  runNested,
  writableDirs,
} from "../tools/nested/run.ts";
import { testArgs } from "../tools/test.ts";
import { ROOT, tmpDir } from "./helpers.ts";

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

Deno.test({
  // Boots the helper VM (~10 s): opt in, on a host without /dev/kvm.
  name: "nested: a command runs with /dev/kvm and its status comes back",
  ignore: Deno.env.get("VOLT_NESTED_E2E") !== "1" || hostHasKvm(),
  fn: async () => {
    const rc = await runNested(["sh", "-c", "test -c /dev/kvm && exit 7"], {
      cwd: ROOT,
      progress: () => {},
    });
    assert.equal(rc, 7);
  },
});
