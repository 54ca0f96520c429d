/**
 * Bad input gets one clear line and a non-zero exit, with no stack trace:
 * these run without KVM (files are checked before /dev/kvm is opened).
 */
import assert from "node:assert/strict";
import { inHelperVm, needsKvm, runCli, tmpDir } from "./helpers.ts";

/**
 * A parser that loops forever is killed at this bound rather than hanging
 * the suite. In the helper VM every Deno start runs under TCG, and a run
 * that reaches the jailed monitor starts Deno twice: seconds each there.
 */
const BAD_INPUT_MS = inHelperVm ? 120_000 : 20_000;
import { makeBzImage, makeElf } from "./images.ts";
import { concat, cpioMember, craftBzImage, craftElf, note, noteElf, pvhNote } from "./crafted.ts";

const dir = tmpDir();
const text = (s: string) => new TextEncoder().encode(s);
const file = (name: string, data: Uint8Array) => {
  const p = `${dir}/${name}`;
  Deno.writeFileSync(p, data);
  return p;
};
const elf = file("k.elf", makeElf({ code: new Uint8Array([0xf4]) }));
const bigElf = makeElf({ code: new Uint8Array(8192) });
const none = new Uint8Array();
const load = { type: 1, offset: 0x1000, paddr: 0x1000000, filesz: 0x100, memsz: 0x100 };
const crafted = (name: string, spec: Parameters<typeof craftElf>[0]) =>
  file(name, craftElf({ body: new Uint8Array(0x200), ...spec }));

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
  // Crafted headers (issue 10): exit 70 "Internal error: Offset is outside the bounds of the
  // DataView", a hang, or a kernel that went on to KVM (exit 69 here) before.
  [
    "ELF note with a name size past 2^31",
    ["--kernel", file("n1.elf", noteElf(note(0x7ffffffe, 0, 18, none, none)))],
    65,
    /^Kernel .*n1\.elf is not a usable x86_64 vmlinux: note at file offset 0x1010 \(name 2147483646 bytes, data 0 bytes\) runs past its segment$/,
  ],
  [
    "ELF note whose rounded sizes wrap to no progress",
    ["--kernel", file("n2.elf", noteElf(note(0xfffffffd, 0xfffffff4, 18, none, none)))],
    65,
    /: note at file offset 0x1010 \(name 4294967293 bytes, data 4294967284 bytes\) runs past its segment$/,
  ],
  [
    "ELF note with a data size of 0xffffffff",
    ["--kernel", file("n3.elf", noteElf(note(4, 0xffffffff, 18, text("Xen\0"), none)))],
    65,
    /: note at file offset 0x1010 \(name 4 bytes, data 4294967295 bytes\) runs past its segment$/,
  ],
  [
    "PVH entry above 4 GiB",
    ["--kernel", file("n4.elf", noteElf(pvhNote(0x100001000n)))],
    65,
    /: PVH entry 0x100001000 is above 4 GiB$/,
  ],
  [
    "program headers past the end of the file",
    ["--kernel", crafted("ph1.elf", { phdrs: [load], phoff: 0x1200 - 30 })],
    65,
    /^Kernel .*ph1\.elf is truncated$/,
  ],
  [
    "phnum 65535",
    ["--kernel", crafted("ph2.elf", { phdrs: [load], phnum: 0xffff })],
    65,
    /: 65535 program headers of 56 bytes exceed the 64 KiB Linux takes$/,
  ],
  [
    "a segment past the end of the file",
    ["--kernel", crafted("ph3.elf", { phdrs: [{ ...load, offset: 0xfffffffffffff000n }] })],
    65,
    /is truncated$/,
  ],
  [
    "overlapping segments",
    [
      "--kernel",
      crafted("ph4.elf", { phdrs: [load, { ...load, offset: 0x1100, paddr: 0x10000f0 }] }),
    ],
    65,
    /: segments at 0x1000000\+0x100 and 0x10000f0\+0x100 overlap$/,
  ],
  [
    "a segment past guest memory",
    [
      "--kernel",
      crafted("ph5.elf", { phdrs: [{ ...load, paddr: 0x3fff000, memsz: 0x2000 }] }),
      "--memory",
      "64M",
    ],
    65,
    /^The kernel needs guest memory up to 0x4001000; the guest has 64 MiB$/,
  ],
  [
    "a segment beyond 52-bit addresses",
    ["--kernel", crafted("ph6.elf", { phdrs: [{ ...load, paddr: 0xfffffffffffff000n }] })],
    65,
    /: segment 0 \(0xfffffffffffff000\+0x100\) is beyond 52-bit physical addresses$/,
  ],
  [
    "bzImage whose setup_sects points past the end",
    ["--kernel", file("s.bz", craftBzImage([[0x1f1, 1, 200]]))],
    65,
    /^Kernel .*s\.bz is truncated: its 200 setup sectors end at 0x19200, past its 3584 bytes$/,
  ],
  ["missing initrd", ["--kernel", elf, "--initrd", `${dir}/none`], 66, /^Initrd not found/],
  [
    "initrd larger than RAM",
    ["--kernel", elf, "--memory", "32M", "--initrd", file("big", new Uint8Array(33 << 20))],
    65,
    /does not fit in guest memory/,
  ],
  [
    "initrd that fits RAM but not above the kernel",
    ["--kernel", elf, "--memory", "32M", "--initrd", file("mid", new Uint8Array(20 << 20))],
    65,
    /^Initrd .*mid \(20971520 bytes\) does not fit in guest memory above the kernel \(32 MiB\)$/,
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
  ...(Deno.uid() === 0
    ? [[
      "root without Landlock",
      ["--kernel", elf, "--no-landlock"],
      64,
      /^Refusing to run the monitor as root without Landlock \(--no-landlock\): run volt as a user with access to \/dev\/kvm, or pass --allow-root-without-landlock$/,
    ] as [string, string[], number, RegExp]]
    : []),
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
  [
    "missing disk",
    ["--kernel", elf, "--disk", `${dir}/nope.img`],
    66,
    /^Disk not found: .*nope\.img$/,
  ],
  [
    "disk is a directory",
    ["--kernel", elf, "--disk", dir],
    64,
    /^Not a disk image \(a regular file or block device\): /,
  ],
  [
    "disk smaller than a sector",
    ["--kernel", elf, "--disk", file("tiny.img", new Uint8Array(100))],
    64,
    /^Disk .*tiny\.img is smaller than one 512-byte sector$/,
  ],
  [
    "unknown disk option",
    ["--kernel", elf, "--disk", `${dir}/x.img,cache=none`],
    64,
    /^Unknown --disk option "cache=none" \(rw, ro or id=NAME\)$/,
  ],
  [
    "disk id past 20 bytes",
    ["--kernel", elf, "--disk", `${dir}/x.img,id=${"a".repeat(21)}`],
    64,
    /^Disk id "a{21}" is longer than 20 bytes$/,
  ],
  [
    "a TAP that does not exist",
    ["--kernel", elf, "--net", "tap=voltnope0"],
    66,
    /^No TAP device named voltnope0 \(make one first: ip tuntap add voltnope0 mode tap\)$/,
  ],
  [
    "an interface that is not a TAP",
    ["--kernel", elf, "--net", "tap=lo"],
    66,
    /^Interface lo is not a TAP device$/,
  ],
  [
    "a TAP name too long",
    ["--kernel", elf, "--net", "tap=averyveryverylongname"],
    64,
    /^--net: TAP name "averyveryverylongname" is longer than 15 bytes$/,
  ],
  [
    "a bad MAC",
    ["--kernel", elf, "--net", "tap=tap0,mac=06:00:zz:00:00:01"],
    64,
    /^Not a MAC address \(XX:XX:XX:XX:XX:XX\): "06:00:zz:00:00:01"$/,
  ],
  [
    "a multicast MAC",
    ["--kernel", elf, "--net", "tap=tap0,mac=01:00:5e:00:00:01"],
    64,
    /^MAC 01:00:5e:00:00:01 is a multicast address$/,
  ],
  [
    "--net without a TAP",
    ["--kernel", elf, "--net", "mac=06:00:00:00:00:01"],
    64,
    /^--net needs tap=NAME: "mac=06:00:00:00:00:01"$/,
  ],
  [
    "an unknown --net option",
    ["--kernel", elf, "--net", "tap=tap0,vhost=on"],
    64,
    /^Unknown --net option "vhost=on" \(tap=NAME, mac=MAC or id=NAME\)$/,
  ],
  [
    "a vsock CID below 3",
    ["--kernel", elf, "--vsock", `cid=2,uds=${dir}/v.sock`],
    64,
    /^vsock CID must be 3 to 4294967294, not 2$/,
  ],
  [
    "--vsock without a socket path",
    ["--kernel", elf, "--vsock", "cid=3"],
    64,
    /^--vsock needs cid=N and uds=PATH: "cid=3"$/,
  ],
  [
    "an unknown --vsock option",
    ["--kernel", elf, "--vsock", `cid=3,uds=${dir}/v.sock,port=1`],
    64,
    /^Unknown --vsock option "port=1" \(cid=N and uds=PATH\)$/,
  ],
  [
    "a vsock path that is not a socket",
    ["--kernel", elf, "--vsock", `cid=3,uds=${file("not-a-socket", new Uint8Array(1))}`],
    73,
    /^vsock socket path exists and is not a socket: .*not-a-socket$/,
  ],
  [
    "a vsock path in a missing directory",
    ["--kernel", elf, "--vsock", `cid=3,uds=${dir}/no/such/v.sock`],
    73,
    /^Cannot listen on .*v\.sock: ENOENT$/,
  ],
  [
    "a damaged monitor plan",
    ["--monitor-plan", "e30=", "--jail-state", "e30="],
    64,
    /^--monitor-plan is internal to volt and this value is damaged$/,
  ],
  [
    "a monitor plan with other options",
    ["--monitor-plan", "e30=", "--kernel", elf],
    64,
    /^--monitor-plan is internal to volt and takes no other option$/,
  ],
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
    // A parser that loops forever is killed and fails here rather than hanging the suite.
    const r = await runCli(["run", ...args], { timeout: BAD_INPUT_MS });
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

Deno.test("--help on every command and subcommand, and volt help COMMAND: usage on stdout, exit 0", async () => {
  const cases: Array<[string[], RegExp]> = [
    [
      ["run", "--help"],
      /^Usage:\n {2}volt run [^]*--config-file FILE[^]*--api-sock PATH[^]*Exit status:/,
    ],
    [["run", "--kernel", "x", "-h"], /^Usage:\n {2}volt run /],
    [["exec", "--help"], /^Usage: volt exec --vsock PATH/],
    [["kernel", "list", "--help"], /^Usage: volt kernel list \[--json\]/],
    [["kernel", "--help"], /^Usage: volt kernel/],
    [["guest", "build", "--help"], /^Usage: volt guest build/],
    [["initramfs", "--help"], /^Usage:\n {2}volt initramfs/],
    [["sandbox", "--help"], /^Usage: volt sandbox --print/],
    [["cpuid", "--help"], /^Usage: volt cpuid [^]*--json/],
    [["snapshot", "rebase", "--help"], /^Usage: volt snapshot rebase --base-file FILE/],
    [["help", "run"], /^Usage:\n {2}volt run /],
    [["help", "exec"], /^Usage: volt exec /],
    [["help", "help"], /^Usage: volt help \[COMMAND\]/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stdout, re, args.join(" "));
    assert.equal(r.stderr, "", args.join(" "));
  }
  // A command's --help after `--` is the guest command's, not volt's.
  const e = await runCli(["exec", "--vsock", `${dir}/none.sock`, "--", "ls", "--help"]);
  assert.equal(e.code, 66);
  const bad = await runCli(["help", "launch"]);
  assert.equal(bad.code, 64);
  assert.match(bad.stderr, /^volt: No help on "launch" \(commands: run, exec, /);
});

Deno.test("volt snapshot rebase: the diff's data over the base, holes keep the base; bad input is one line", async () => {
  const base = `${dir}/base.mem`, diff = `${dir}/diff.mem`;
  const size = 64 << 10;
  Deno.writeFileSync(base, Uint8Array.from({ length: size }, (_, i) => i & 0xff));
  // A sparse diff: page 3 written (zeros included), the rest holes.
  const f = Deno.openSync(diff, { write: true, create: true, truncate: true });
  f.truncateSync(size);
  f.seekSync(3 * 4096, Deno.SeekMode.Start);
  const page = new Uint8Array(4096).fill(0xab);
  page.fill(0, 0, 16);
  f.writeSync(page);
  f.close();
  const r = await runCli(["snapshot", "rebase", "--base-file", base, "--diff-file", diff]);
  assert.equal(r.code, 0, r.stderr);
  const out = Deno.readFileSync(base);
  assert.equal(out.length, size);
  assert.deepEqual(out.subarray(3 * 4096, 4 * 4096), page);
  for (const i of [0, 4095, 4 * 4096, size - 1]) assert.equal(out[i], i & 0xff, `byte ${i}`);
  const bad: Array<[string[], number, RegExp]> = [
    [["snapshot"], 64, /^volt: volt snapshot needs a subcommand \(rebase\)\n$/],
    [["snapshot", "merge"], 64, /^volt: Unknown snapshot subcommand: merge \(rebase\)\n$/],
    [["snapshot", "rebase", "--base-file", base], 64, /needs --base-file and --diff-file\n$/],
    [
      ["snapshot", "rebase", "--base-file", base, "--diff-file", `${dir}/nope`],
      66,
      /^volt: Cannot open diff memory file .*nope: .*\n$/,
    ],
    [
      ["snapshot", "rebase", "--base-file", base, "--diff-file", elf],
      65,
      /^volt: The diff .* bytes, the base .* not the same VM's memory\n$/,
    ],
  ];
  for (const [args, code, re] of bad) {
    const b = await runCli(args);
    assert.equal(b.code, code, `${args.join(" ")}: ${b.stderr}`);
    assert.match(b.stderr, re);
  }
  assert.deepEqual(Deno.readFileSync(base), out, "a refused rebase changed the base");
});

Deno.test("volt kernel list --json and volt cpuid --json are JSON", async () => {
  const k = await runCli(["kernel", "list", "--json"]);
  assert.equal(k.code, 0, k.stderr);
  const kernels = JSON.parse(k.stdout);
  assert.deepEqual(kernels.map((x: { name: string }) => x.name), ["microvm", "debian"]);
  for (const x of kernels) assert.equal(typeof x.ready, "boolean");
  if (!needsKvm.ignore) {
    const c = await runCli(["cpuid", "--json", "--cpus", "2", "--cpu", "1"]);
    assert.equal(c.code, 0, c.stderr);
    const t = JSON.parse(c.stdout);
    assert.equal(typeof t.template, "string");
    assert.ok(Array.isArray(t.cmdline));
    const leaf1 = t.entries.find((e: { function: number }) => e.function === 1);
    // vCPU 1's initial APIC id is in CPUID.1 EBX[31:24].
    assert.equal(leaf1.ebx >>> 24, 1);
  }
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

// `volt initramfs --list` on crafted archives: every header value is the file's.
const cpioFile = (name: string, ...parts: Uint8Array[]) => file(name, concat(...parts));
const trailer = cpioMember("TRAILER!!!", none, { mode: 0 });
const listCases: Array<[string, string, RegExp]> = [
  [
    "a namesize of 0xffffffff",
    cpioFile("c1.cpio", cpioMember("init", none, { namesize: 0xffffffff }), trailer),
    /^Cpio archive truncated in a name at offset 110$/,
  ],
  [
    "a filesize of 0xffffffff",
    cpioFile("c2.cpio", cpioMember("init", text("x"), { filesize: 0xffffffff }), trailer),
    /^Cpio archive truncated in the data of "init" at offset 116$/,
  ],
  [
    "a truncated trailer",
    cpioFile("c3.cpio", cpioMember("init", text("x")), trailer.subarray(0, 115)),
    /^Cpio archive truncated in a name at offset 230$/,
  ],
  [
    "no trailer",
    cpioFile("c4.cpio", cpioMember("init", text("x"))),
    /^Cpio archive truncated in a header at offset 120$/,
  ],
  [
    "a name that is not NUL-terminated",
    cpioFile("c5.cpio", cpioMember("init", none, { namesize: 4 }), trailer),
    /^Cpio name not NUL-terminated at offset 110$/,
  ],
  [
    "a non-ASCII byte in a header field",
    cpioFile(
      "c6.cpio",
      (() => {
        const m = cpioMember("init", none);
        m.set([0xc3, 0xa9], 6); // "é" where the inode number goes
        return m;
      })(),
    ),
    /^Bad cpio header field at offset 6$/,
  ],
  [
    // Printed raw before: the newline split the error over two lines.
    "a FIFO whose name holds a newline",
    cpioFile("c8.cpio", cpioMember("a\nb", none, { mode: 0o010644 }), trailer),
    /^Unsupported cpio file type 0o10000 of "a\\nb"$/,
  ],
  [
    "gzip that does not inflate",
    file("c7.cpio.gz", new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff])),
    /^Not valid gzip data: /,
  ],
];

for (const [name, path, re] of listCases) {
  Deno.test(`volt initramfs --list: ${name} → exit 65, one line`, async () => {
    const r = await runCli(["initramfs", "--list", path], { timeout: BAD_INPUT_MS });
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^volt: /);
    assert.match(lines[0].slice(6), re);
    assert.equal(r.code, 65, r.stderr);
    assert.equal(r.stdout, "");
  });
}
