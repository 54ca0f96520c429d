import assert from "node:assert/strict";
import {
  Assembler,
  decode,
  disassemble,
  encode,
  execute,
  fieldName,
  fieldOffset,
  type Program,
  run,
} from "../src/sandbox/bpf.ts";
import { VoltError } from "../src/errors.ts";

const X86_64 = 0xc000003e;
const ALLOW = 0x7fff0000;
const KILL = 0x80000000;

Deno.test("bpf: seccomp_data field offsets follow the kernel layout", () => {
  assert.equal(fieldOffset("nr"), 0);
  assert.equal(fieldOffset("arch"), 4);
  assert.equal(fieldOffset("ip_lo"), 8);
  assert.equal(fieldOffset("ip_hi"), 12);
  for (let i = 0; i < 6; i++) {
    assert.equal(fieldOffset(`arg${i}_lo` as "arg0_lo"), 16 + 8 * i);
    assert.equal(fieldOffset(`arg${i}_hi` as "arg0_hi"), 20 + 8 * i);
  }
  assert.equal(fieldName(28), "args[1].hi");
  assert.equal(fieldName(4), "arch");
});

Deno.test("bpf: labels resolve to relative forward offsets", () => {
  const a = new Assembler();
  a.ld("arch").jeq(X86_64, undefined, "kill");
  a.ld("nr").jeq(0, "allow").jeq(1, "allow", "kill");
  a.label("kill").ret(KILL);
  a.label("allow").ret(ALLOW);
  const p = a.assemble();
  assert.equal(p.length, 7);
  assert.deepEqual(p[1], { code: 0x15, jt: 0, jf: 3, k: X86_64 });
  assert.deepEqual(p[3], { code: 0x15, jt: 2, jf: 0, k: 0 });
  assert.deepEqual(p[4], { code: 0x15, jt: 1, jf: 0, k: 1 });
  assert.equal(run(p, { nr: 0, arch: X86_64 }), ALLOW);
  assert.equal(run(p, { nr: 1, arch: X86_64 }), ALLOW);
  assert.equal(run(p, { nr: 2, arch: X86_64 }), KILL);
  assert.equal(run(p, { nr: 0, arch: 0x40000003 }), KILL);
});

/** A program whose jumps must cross `filler` instructions. */
function farProgram(filler: number, bothFar: boolean): Program {
  const a = new Assembler();
  a.ld("nr").jeq(7, "yes", bothFar ? "no" : undefined);
  for (let i = 0; i < filler; i++) a.and(0xffffffff);
  if (!bothFar) a.ret(1);
  a.label(bothFar ? "no" : "unused").ret(2);
  a.label("yes").ret(3);
  return a.assemble();
}

Deno.test("bpf: a conditional jump beyond 255 goes through a ja trampoline", () => {
  const near = farProgram(250, false);
  assert.equal(near.length, 255);
  assert.equal(near.filter((i) => i.code === 0x05).length, 0);

  const p = farProgram(300, false);
  const ja = p.filter((i) => i.code === 0x05);
  assert.equal(ja.length, 1);
  for (const insn of p) assert.ok(insn.jt <= 255 && insn.jf <= 255);
  assert.equal(run(p, { nr: 7, arch: X86_64 }), 3);
  assert.equal(run(p, { nr: 8, arch: X86_64 }), 1);
  // The fall-through branch still reaches the instruction after the jump.
  // ld, jeq (skipping the trampoline), 300 ands, ret.
  assert.equal(execute(p, { nr: 8, arch: X86_64 }).steps, 2 + 300 + 1);

  const both = farProgram(600, true);
  assert.equal(both.filter((i) => i.code === 0x05).length, 2);
  assert.equal(run(both, { nr: 7, arch: X86_64 }), 3);
  assert.equal(run(both, { nr: 9, arch: X86_64 }), 2);
});

Deno.test("bpf: many far jumps settle (trampolines shift other jumps)", () => {
  const a = new Assembler();
  a.ld("nr");
  for (let i = 0; i < 400; i++) a.jeq(i, `t${i}`);
  a.ret(KILL);
  for (let i = 0; i < 400; i++) a.label(`t${i}`).ret(i);
  const p = a.assemble();
  for (const insn of p) assert.ok(insn.jt <= 255 && insn.jf <= 255);
  for (const nr of [0, 1, 150, 255, 256, 399]) assert.equal(run(p, { nr, arch: X86_64 }), nr);
  assert.equal(run(p, { nr: 400, arch: X86_64 }), KILL);
});

Deno.test("bpf: the assembler fails clearly on bad programs", () => {
  const err = (f: () => unknown, re: RegExp) =>
    assert.throws(f, (e) => e instanceof VoltError && re.test(e.message));
  err(() => new Assembler().ld("nr").jeq(1, "nope").ret(0).assemble(), /label nope is not defined/);
  err(() => new Assembler().label("x").label("x"), /defined twice/);
  err(
    () => new Assembler().label("back").ld("nr").jeq(1, "back").ret(0).assemble(),
    /only jumps forward/,
  );
  err(() => new Assembler().ld("nr").assemble(), /must end with ret/);
  err(() => new Assembler().ldAbs(64), /outside seccomp_data/);
  err(() => new Assembler().ldAbs(6), /outside seccomp_data/);
  err(() => new Assembler().ret(2 ** 32), /not a 32-bit value/);
  const big = new Assembler();
  for (let i = 0; i < 4096; i++) big.and(1);
  big.ret(0);
  err(() => big.assemble(), /at most 4096/);
});

Deno.test("bpf: encode gives struct sock_filter bytes and decode inverts it", () => {
  const p = new Assembler().ld("arch").jeq(X86_64, "ok", "bad").label("ok").ret(ALLOW)
    .label("bad").ret(KILL).assemble();
  const bytes = encode(p);
  assert.equal(bytes.length, 8 * p.length);
  // BPF_STMT(BPF_LD|BPF_W|BPF_ABS, 4), BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, X86_64, 0, 1)
  assert.deepEqual([...bytes.subarray(0, 16)], [
    0x20,
    0,
    0,
    0,
    4,
    0,
    0,
    0,
    0x15,
    0,
    0,
    1,
    0x3e,
    0,
    0,
    0xc0,
  ]);
  assert.deepEqual([...bytes.subarray(16, 24)], [0x06, 0, 0, 0, 0, 0, 0xff, 0x7f]);
  assert.deepEqual(decode(bytes), p);
  assert.throws(() => decode(new Uint8Array(7)), /multiple of 8/);
});

Deno.test("bpf: disassembly is one readable line per instruction", () => {
  const a = new Assembler();
  a.ld("arch").jeq(X86_64, undefined, "kill");
  a.ld("nr").jset(0x40000000, "kill");
  a.ld("arg1_lo").and(0xff).jgt(3, "kill").jge(2, "allow").ja("kill");
  a.label("kill").ret(KILL);
  a.label("allow").ret(ALLOW);
  const text = disassemble(a.assemble());
  assert.deepEqual(text.split("\n"), [
    "0000: ld [4]                          ; arch",
    "0001: jeq #0xc000003e, 0002, 0009",
    "0002: ld [0]                          ; nr",
    "0003: jset #0x40000000, 0009, 0004",
    "0004: ld [24]                         ; args[1].lo",
    "0005: and #0xff",
    "0006: jgt #0x3, 0009, 0007",
    "0007: jge #0x2, 0010, 0008",
    "0008: ja 0009",
    "0009: ret #0x80000000",
    "0010: ret #0x7fff0000",
  ]);
  const noted = disassemble(a.assemble(), (insn) => insn.k === ALLOW ? "ALLOW" : undefined);
  assert.match(noted, /0010: ret #0x7fff0000 +; ALLOW/);
});

Deno.test("bpf: the emulator loads 64-bit arguments by halves and compares unsigned", () => {
  const a = new Assembler();
  a.ld("arg2_hi").jeq(0xdeadbeef, undefined, "no");
  a.ld("arg2_lo").jge(0x80000000, "big", "no");
  a.label("big").ld("arg0_lo").jset(0x10, "yes", "no");
  a.label("no").ret(0);
  a.label("yes").ret(1);
  const p = a.assemble();
  const args = (a0: bigint, a2: bigint) => [a0, 0n, a2];
  assert.equal(run(p, { nr: 0, arch: X86_64, args: args(0x10n, 0xdeadbeef_80000000n) }), 1);
  assert.equal(run(p, { nr: 0, arch: X86_64, args: args(0x10n, 0xdeadbeef_7fffffffn) }), 0);
  assert.equal(run(p, { nr: 0, arch: X86_64, args: args(0x0fn, 0xdeadbeef_ffffffffn) }), 0);
  assert.equal(run(p, { nr: 0, arch: X86_64, args: args(0x10n, 0x80000000n) }), 0);
  // Negative arguments are stored as the kernel does: two's complement u64.
  assert.equal(run(p, { nr: 0, arch: X86_64, args: args(-1n, -0x21524110_80000000n) }), 1);
  // nr is an int: -1 loads as 0xffffffff.
  const nr = new Assembler().ld("nr").jeq(0xffffffff, "m").ret(0).label("m").ret(1).assemble();
  assert.equal(run(nr, { nr: -1, arch: X86_64 }), 1);
  const ip = new Assembler().ld("ip_hi").jeq(0x7fff, "m").ret(0).label("m").ret(1).assemble();
  assert.equal(run(ip, { nr: 0, arch: X86_64, ip: 0x7fff_12345678n }), 1);
});

Deno.test("bpf: the emulator refuses what the kernel would", () => {
  const off: Program = [{ code: 0x15, jt: 5, jf: 0, k: 0 }, { code: 0x06, jt: 0, jf: 0, k: 0 }];
  assert.throws(() => run(off, { nr: 0, arch: 0 }), /jump past the end/);
  const ldx: Program = [{ code: 0x01, jt: 0, jf: 0, k: 0 }, { code: 0x06, jt: 0, jf: 0, k: 0 }];
  assert.throws(() => run(ldx, { nr: 0, arch: 0 }), /not supported/);
  const fall: Program = [{ code: 0x20, jt: 0, jf: 0, k: 0 }];
  assert.throws(() => run(fall, { nr: 0, arch: 0 }), /past its last instruction/);
});
