import assert from "node:assert/strict";
import { type CpioEntry, gunzip, gzip, readCpio, writeCpio } from "../src/guest/cpio.ts";
import { VoltError } from "../src/errors.ts";
import { concat, cpioMember } from "./crafted.ts";

const text = (s: string) => new TextEncoder().encode(s);

/** One entry of each type, with explicit fields, in sorted order. */
const SAMPLE: CpioEntry[] = [
  { type: "dir", path: "bin", mode: 0o755, uid: 0, gid: 0 },
  { type: "file", path: "bin/busybox", data: text("\x7fELF fake"), mode: 0o755, uid: 0, gid: 0 },
  { type: "symlink", path: "bin/sh", target: "busybox", uid: 0, gid: 0 },
  { type: "dir", path: "dev", mode: 0o755, uid: 0, gid: 0 },
  { type: "chardev", path: "dev/console", major: 5, minor: 1, mode: 0o600, uid: 0, gid: 0 },
  { type: "blockdev", path: "dev/vda", major: 254, minor: 0, mode: 0o660, uid: 0, gid: 6 },
  { type: "dir", path: "home/user", mode: 0o700, uid: 1000, gid: 1000 },
  {
    type: "file",
    path: "home/user/empty",
    data: new Uint8Array(),
    mode: 0o600,
    uid: 1000,
    gid: 1000,
  },
  {
    type: "file",
    path: "init",
    data: text("#!/bin/sh\necho 'hi there'\n"),
    mode: 0o755,
    uid: 0,
    gid: 0,
  },
];

Deno.test("cpio: every entry type reads back as written", () => {
  const back = readCpio(writeCpio(SAMPLE));
  // "home" was created as the parent of home/user.
  const home: CpioEntry = { type: "dir", path: "home", mode: 0o755, uid: 0, gid: 0 };
  assert.deepEqual(back, [...SAMPLE.slice(0, 6), home, ...SAMPLE.slice(6)]);
});

Deno.test("cpio: output is byte-identical for the same input, whatever its order", () => {
  const a = writeCpio(SAMPLE);
  const b = writeCpio([...SAMPLE].reverse());
  assert.deepEqual(a, b);
  assert.deepEqual(
    writeCpio(SAMPLE, { mtime: 1700000000 }),
    writeCpio(SAMPLE, { mtime: 1700000000 }),
  );
  assert.notDeepEqual(writeCpio(SAMPLE, { mtime: 1 }), a);
});

Deno.test("cpio: entries are sorted by path, parents first", () => {
  const archive = writeCpio([
    { type: "file", path: "b", data: text("b") },
    { type: "file", path: "a/z", data: text("z") },
    { type: "file", path: "a-b", data: text("-") },
    { type: "file", path: "a/b", data: text("ab") },
  ]);
  assert.deepEqual(readCpio(archive).map((e) => e.path), ["a", "a-b", "a/b", "a/z", "b"]);
});

Deno.test("cpio: missing parents become 0755 directories; leading slashes are dropped", () => {
  const entries = readCpio(writeCpio([{ type: "file", path: "/usr/lib/x/y", data: text("y") }]));
  assert.deepEqual(entries.map((e) => [e.path, e.type, "mode" in e ? e.mode : undefined]), [
    ["usr", "dir", 0o755],
    ["usr/lib", "dir", 0o755],
    ["usr/lib/x", "dir", 0o755],
    ["usr/lib/x/y", "file", 0o644],
  ]);
});

Deno.test("cpio: default modes by type", () => {
  const entries = readCpio(writeCpio([
    { type: "file", path: "f", data: new Uint8Array() },
    { type: "dir", path: "d" },
    { type: "symlink", path: "l", target: "f" },
    { type: "chardev", path: "c", major: 1, minor: 3 },
    { type: "blockdev", path: "k", major: 7, minor: 0 },
  ]));
  const modes = Object.fromEntries(entries.map((e) => [e.path, "mode" in e ? e.mode : "n/a"]));
  assert.deepEqual(modes, { c: 0o600, d: 0o755, f: 0o644, k: 0o600, l: "n/a" });
});

Deno.test("cpio: header layout (magic, inode numbers, nlink, 4-byte alignment, trailer)", () => {
  const archive = writeCpio([
    { type: "dir", path: "d" },
    { type: "file", path: "d/abc", data: text("12345") },
  ]);
  const s = new TextDecoder().decode(archive);
  const hdr = (off: number) => {
    const f = (i: number) => parseInt(s.slice(off + 6 + i * 8, off + 14 + i * 8), 16);
    return {
      magic: s.slice(off, off + 6),
      ino: f(0),
      mode: f(1),
      nlink: f(4),
      size: f(6),
      namesize: f(11),
    };
  };
  assert.deepEqual(hdr(0), {
    magic: "070701",
    ino: 1,
    mode: 0o40755,
    nlink: 2,
    size: 0,
    namesize: 2,
  });
  // 110 + "d\0" = 112: already aligned.
  assert.deepEqual(hdr(112), {
    magic: "070701",
    ino: 2,
    mode: 0o100644,
    nlink: 1,
    size: 5,
    namesize: 6,
  });
  // 112 + 110 + "d/abc\0" = 228, then 5 data bytes padded to 8.
  assert.equal(s.slice(228, 233), "12345");
  assert.deepEqual(hdr(236), { magic: "070701", ino: 0, mode: 0, nlink: 1, size: 0, namesize: 11 });
  assert.equal(s.slice(346, 356), "TRAILER!!!");
  assert.equal(archive.length % 4, 0);
});

Deno.test("cpio: duplicates, '..' and bad values are rejected with a VoltError", () => {
  const f = (path: string): CpioEntry => ({ type: "file", path, data: new Uint8Array() });
  assert.throws(
    () => writeCpio([f("a"), f("/a")]),
    (e) => e instanceof VoltError && /Duplicate/.test(e.message),
  );
  assert.throws(
    () => writeCpio([f("a/../b")]),
    (e) => e instanceof VoltError && /"\.\."/.test(e.message),
  );
  assert.throws(() => writeCpio([f("/")]), VoltError);
  assert.throws(() => writeCpio([f("a"), f("a/b")]), /not a directory/);
  assert.throws(
    () => writeCpio([{ type: "file", path: "x", data: new Uint8Array(), mode: 0o100644 }]),
    VoltError,
  );
  assert.throws(() => writeCpio([{ type: "chardev", path: "c", major: -1, minor: 0 }]), VoltError);
});

Deno.test("cpio: the reader rejects garbage and truncation", () => {
  assert.throws(() => readCpio(text("hello world")), VoltError);
  const archive = writeCpio(SAMPLE);
  assert.throws(() => readCpio(archive.subarray(0, archive.length - 20)), /truncated/);
  const bad = archive.slice();
  bad[0] = 0x39;
  assert.throws(() => readCpio(bad), /bad magic/);
});

Deno.test("cpio: sizes from the header stay in bounds; names in errors stay on one line", () => {
  const none = new Uint8Array();
  const trailer = cpioMember("TRAILER!!!", none, { mode: 0 });
  const err = (re: RegExp) => (e: unknown) => e instanceof VoltError && re.test(e.message);
  assert.throws(
    () => readCpio(concat(cpioMember("init", none, { namesize: 0xffffffff }), trailer)),
    err(/^Cpio archive truncated in a name at offset 110$/),
  );
  assert.throws(
    () => readCpio(concat(cpioMember("init", text("x"), { filesize: 0xffffffff }), trailer)),
    err(/^Cpio archive truncated in the data of "init" at offset 116$/),
  );
  assert.throws(
    () => readCpio(concat(cpioMember("init", text("x")), trailer.subarray(0, 115))),
    err(/^Cpio archive truncated in a name at offset 230$/),
  );
  // A name from the archive was printed raw: a newline in it split the error over lines.
  assert.throws(
    () => readCpio(concat(cpioMember("a\nb", text("x"), { filesize: 0x80000000 }), trailer)),
    err(/^Cpio archive truncated in the data of "a\\nb" at offset 116$/),
  );
  assert.throws(
    () => readCpio(concat(cpioMember("fifo\r", none, { mode: 0o010644 }), trailer)),
    err(/^Unsupported cpio file type 0o10000 of "fifo\\r"$/),
  );
  // And a megabyte-long name does not become a megabyte-long line.
  const long = "n".repeat(1 << 20);
  assert.throws(
    () => readCpio(cpioMember(long, none, { mode: 0o140644 })),
    err(new RegExp(`^Unsupported cpio file type 0o140000 of "${"n".repeat(80)}…"$`)),
  );
  assert.throws(
    () => writeCpio([{ type: "file", path: "a\n/../b", data: none }]),
    err(/^Cpio path must not contain "\.\.": "a\\n\/\.\.\/b"$/),
  );
});

Deno.test("gzip round trip, and gunzip rejects non-gzip data", async () => {
  const archive = writeCpio(SAMPLE);
  const z = await gzip(archive);
  assert.deepEqual([z[0], z[1]], [0x1f, 0x8b]);
  assert.deepEqual(await gunzip(z), archive);
  const big = new Uint8Array(3 << 20).map((_, i) => (i * 7) & 0xff);
  assert.deepEqual(await gunzip(await gzip(big)), big);
  await assert.rejects(gunzip(text("not gzip at all")), VoltError);
});

function hasCpio(): boolean {
  try {
    return new Deno.Command("cpio", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync()
      .success;
  } catch {
    return false;
  }
}

const cpioTool = hasCpio();
if (!cpioTool && Deno.env.get("CI") === "true") {
  throw new Error("CI must install cpio (apt-get install cpio)");
}

async function runCpio(args: string[], input: Uint8Array, cwd?: string): Promise<Uint8Array> {
  const child = new Deno.Command("cpio", {
    args,
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const w = child.stdin.getWriter();
  await w.write(input);
  await w.close();
  const out = await child.output();
  const err = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `cpio ${args.join(" ")} failed: ${err}`);
  return out.stdout;
}

const lines = (b: Uint8Array) => new TextDecoder().decode(b).trim().split("\n");

Deno.test({
  name: "cpio: GNU cpio lists and extracts our archives identically",
  ignore: !cpioTool,
  fn: async () => {
    const entries: CpioEntry[] = [
      { type: "file", path: "init", data: text("#!/bin/sh\nexec /bin/sh\n"), mode: 0o755 },
      { type: "file", path: "etc/motd", data: text("a line with 'quotes' and spaces\n") },
      { type: "file", path: "etc/odd", data: new Uint8Array([0, 1, 2, 255, 254]), mode: 0o640 },
      { type: "dir", path: "var/empty", mode: 0o711 },
      { type: "symlink", path: "bin/sh", target: "busybox" },
      { type: "symlink", path: "lib64", target: "/lib" },
      { type: "file", path: "bin/busybox", data: new Uint8Array(4099).fill(0x41), mode: 0o755 },
      { type: "chardev", path: "dev/null", major: 1, minor: 3, mode: 0o666 },
    ];
    const archive = writeCpio(entries, { mtime: 1234567890 });

    const listing = lines(await runCpio(["-it", "--quiet"], archive));
    assert.deepEqual(listing, readCpio(archive).map((e) => e.path));

    const verbose = lines(await runCpio(["-itv", "--quiet"], archive));
    const line = (p: string) =>
      verbose.find((l) => l.endsWith(` ${p}`) || l.includes(` ${p} -> `))!;
    assert.match(line("init"), /^-rwxr-xr-x +1 root +root +23 /);
    assert.match(line("var/empty"), /^drwx--x--x +2 root +root /);
    assert.match(line("dev/null"), /^crw-rw-rw- +1 root +root +1, +3 /);
    assert.match(line("bin/sh"), /^lrwxrwxrwx .* bin\/sh -> busybox$/);

    const dir = Deno.makeTempDirSync({ prefix: "volt-cpio-" });
    try {
      // Device nodes would need mknod; extract everything else.
      await runCpio(["-idm", "--quiet", "--no-absolute-filenames", "-f", "dev/null"], archive, dir);
      for (const e of entries) {
        const p = `${dir}/${e.path}`;
        if (e.type === "chardev" || e.type === "blockdev") {
          assert.throws(() => Deno.lstatSync(p), Deno.errors.NotFound);
          continue;
        }
        const st = Deno.lstatSync(p);
        if (e.type === "file") {
          assert.deepEqual(Deno.readFileSync(p), e.data, e.path);
          assert.equal(st.mode! & 0o7777, e.mode ?? 0o644, e.path);
          assert.equal(st.mtime!.getTime(), 1234567890_000, e.path);
        } else if (e.type === "dir") {
          assert.ok(st.isDirectory, e.path);
          assert.equal(st.mode! & 0o7777, e.mode, e.path);
        } else if (e.type === "symlink") {
          assert.ok(st.isSymlink, e.path);
          assert.equal(Deno.readLinkSync(p), e.target);
        }
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "cpio: archives GNU cpio writes (newc) read back",
  ignore: !cpioTool,
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "volt-cpio-" });
    try {
      Deno.mkdirSync(`${dir}/sub`);
      Deno.writeTextFileSync(`${dir}/sub/file.txt`, "contents\n");
      Deno.chmodSync(`${dir}/sub/file.txt`, 0o600);
      Deno.symlinkSync("sub/file.txt", `${dir}/link`);
      const archive = await runCpio(
        ["-o", "-H", "newc", "--quiet"],
        text("sub\nsub/file.txt\nlink\n"),
        dir,
      );
      const entries = readCpio(archive);
      const byPath = Object.fromEntries(entries.map((e) => [e.path, e]));
      assert.equal(byPath["sub"].type, "dir");
      const file = byPath["sub/file.txt"];
      assert.ok(file.type === "file");
      assert.equal(new TextDecoder().decode(file.data), "contents\n");
      assert.equal(file.mode, 0o600);
      const link = byPath["link"];
      assert.ok(link.type === "symlink");
      assert.equal(link.target, "sub/file.txt");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
