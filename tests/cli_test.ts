/**
 * Bad input gets one clear line and a non-zero exit, with no stack trace:
 * these run without KVM (files are checked before /dev/kvm is opened).
 */
import assert from "node:assert/strict";
import { runCli, tmpDir } from "./helpers.ts";
import { makeBzImage, makeElf } from "./images.ts";

const dir = tmpDir();
const file = (name: string, data: Uint8Array) => {
  const p = `${dir}/${name}`;
  Deno.writeFileSync(p, data);
  return p;
};
const elf = file("k.elf", makeElf({ code: new Uint8Array([0xf4]) }));
const bigElf = makeElf({ code: new Uint8Array(8192) });

const cases: Array<[string, string[], number, RegExp]> = [
  ["missing kernel", ["--kernel", `${dir}/nope`], 66, /^Kernel not found: .*nope$/],
  ["kernel is a directory", ["--kernel", dir], 66, /is not a regular file$/],
  [
    "not a kernel",
    ["--kernel", file("text", new TextEncoder().encode("x".repeat(5000)))],
    65,
    /is not a kernel image/,
  ],
  ["empty file", ["--kernel", file("empty", new Uint8Array())], 65, /truncated or not a kernel/],
  [
    "truncated ELF",
    ["--kernel", file("t.elf", bigElf.subarray(0, bigElf.length - 100))],
    65,
    /is truncated$/,
  ],
  [
    "truncated bzImage",
    [
      "--kernel",
      file("t.bz", makeBzImage({ code: new Uint8Array(8192) }).subarray(0, 4000)),
    ],
    65,
    /is truncated$/,
  ],
  ["missing initrd", ["--kernel", elf, "--initrd", `${dir}/none`], 66, /^Initrd not found/],
  [
    "initrd larger than RAM",
    ["--kernel", elf, "--memory", "32M", "--initrd", file("big", new Uint8Array(33 << 20))],
    65,
    /does not fit in guest memory/,
  ],
  ["memory not a size", ["--kernel", elf, "--memory", "lots"], 64, /^Not a size: "lots"/],
  ["memory too small", ["--kernel", elf, "--memory", "2M"], 64, /too small/],
  ["cpus not a number", ["--kernel", elf, "--cpus", "two"], 64, /--cpus must be a whole number/],
  ["too many cpus", ["--kernel", elf, "--cpus", "64"], 64, /1 to 32/],
  [
    "cmdline too long",
    ["--kernel", elf, "--cmdline", "x".repeat(3000)],
    64,
    /^Kernel command line is \d+ bytes; this kernel takes at most 2047$/,
  ],
  ["unknown flag", ["--kernel", elf, "--frobnicate"], 64, /^Unknown option '--frobnicate'/],
  [
    "a required sandbox turned off",
    ["--kernel", elf, "--require-sandbox", "--no-landlock"],
    64,
    /^--require-sandbox conflicts with --no-landlock$/,
  ],
  [
    "seccomp logging without seccomp",
    ["--kernel", elf, "--no-seccomp", "--seccomp-log"],
    64,
    /^--seccomp-log conflicts with --no-seccomp$/,
  ],
  [
    "metrics file in a missing directory",
    ["--kernel", elf, "--metrics-json", `${dir}/no/such/dir/m.json`],
    73,
    /^Cannot write metrics to .*m\.json: ENOENT$/,
  ],
  [
    "a forged jail state",
    ["--kernel", elf, "--jail-state", "e30="],
    64,
    /^--jail-state is internal to volt and this value is damaged$/,
  ],
  ["unknown log level", ["--kernel", elf, "--log-level", "loud"], 64, /^Unknown log level: loud/],
  ["unknown template", ["--kernel", elf, "--cpu-template", "m5"], 64, /^Unknown CPU template: m5/],
  [
    "no KVM device",
    ["--kernel", elf, "--kvm", `${dir}/kvm`],
    69,
    /^Cannot open .*kvm: it does not exist/,
  ],
  [
    "not a KVM device",
    ["--kernel", elf, "--kvm", "/dev/null"],
    69,
    /is not a KVM device \(KVM_GET_API_VERSION failed: ENOTTY\)$/,
  ],
];

for (const [name, args, code, re] of cases) {
  Deno.test(`bad input: ${name} → exit ${code}, one line`, async () => {
    const r = await runCli(["run", ...args]);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^volt: /);
    assert.match(lines[0].slice(6), re);
    assert.equal(r.code, code, r.stderr);
    assert.equal(r.stdout, "");
  });
}

Deno.test("the kernel file is never written", async () => {
  const before = Deno.readFileSync(elf);
  const mtime = Deno.statSync(elf).mtime;
  await runCli(["run", "--kernel", elf, "--kvm", "/dev/null"]);
  assert.deepEqual(Deno.readFileSync(elf), before);
  assert.deepEqual(Deno.statSync(elf).mtime, mtime);
});

Deno.test("volt --version, help and unknown commands", async () => {
  const v = await runCli(["--version"]);
  assert.match(v.stdout, /^volt \d+\.\d+\.\d+\n$/);
  assert.equal(v.code, 0);
  const h = await runCli(["help"]);
  assert.match(h.stdout, /volt run \[--kernel PATH\|debian\]/);
  const u = await runCli(["launch"]);
  assert.equal(u.code, 64);
  assert.equal(u.stderr, "volt: Unknown command: launch (try volt help)\n");
});

Deno.test("volt initramfs writes a gzip cpio that --list reads back", async () => {
  const out = `${dir}/i.cpio.gz`;
  const w = await runCli(["initramfs", "--init", elf, "--add", `${elf}:/opt/k.elf`, "-o", out]);
  assert.equal(w.code, 0, w.stderr);
  const l = await runCli(["initramfs", "--list", out]);
  assert.equal(l.code, 0, l.stderr);
  const size = Deno.statSync(elf).size;
  assert.match(l.stdout, new RegExp(`^file +init ${size}$`, "m"));
  assert.match(l.stdout, new RegExp(`^file +opt/k.elf ${size}$`, "m"));
  assert.match(l.stdout, /^dir +opt$/m);
  const bad = await runCli(["initramfs", "--add", "nocolon", "-o", out]);
  assert.equal(bad.code, 64);
  assert.equal(bad.stderr, 'volt: --add takes HOST:GUEST, not "nocolon"\n');
});
