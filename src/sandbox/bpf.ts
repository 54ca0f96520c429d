/**
 * Classic BPF for seccomp: an assembler with labels, the 8-byte encoding
 * the kernel takes, a disassembler for `volt sandbox --print`, and an
 * emulator so tests can check a filter's decisions without installing it.
 *
 * Only what a seccomp filter can use is supported: 32-bit absolute loads
 * from `struct seccomp_data`, `and`, the four conditional jumps against a
 * constant, `ja` and `ret`.
 *
 * @module
 */

import {
  BPF_A,
  BPF_ABS,
  BPF_ALU,
  BPF_AND,
  BPF_JA,
  BPF_JEQ,
  BPF_JGE,
  BPF_JGT,
  BPF_JMP,
  BPF_JSET,
  BPF_K,
  BPF_LD,
  BPF_MAXINSNS,
  BPF_RET,
  BPF_W,
  SOCK_FILTER,
} from "../../ffi/bpf.ts";
import { SECCOMP_DATA } from "../../ffi/seccomp.ts";
import { VoltError } from "../errors.ts";

/** One `struct sock_filter`. */
export interface Insn {
  /** Opcode: class | size | mode, or class | op | source. */
  code: number;
  /** Relative forward jump when the condition holds. */
  jt: number;
  /** Relative forward jump when it does not. */
  jf: number;
  /** Constant operand. */
  k: number;
}

/** An assembled filter. */
export type Program = readonly Insn[];

/** A 32-bit word of `struct seccomp_data` a filter can load. */
export type Field =
  | "nr"
  | "arch"
  | "ip_lo"
  | "ip_hi"
  | `arg${0 | 1 | 2 | 3 | 4 | 5}_${"lo" | "hi"}`;

/**
 * Byte offset of a field: the data is little-endian, so the low word of a
 * u64 comes first.
 *
 * @example
 * ```ts
 * import { fieldOffset } from "./bpf.ts";
 * fieldOffset("arg1_lo"); // 24
 * ```
 */
export function fieldOffset(field: Field): number {
  if (field === "nr") return SECCOMP_DATA.nr;
  if (field === "arch") return SECCOMP_DATA.arch;
  if (field === "ip_lo") return SECCOMP_DATA.instruction_pointer;
  if (field === "ip_hi") return SECCOMP_DATA.instruction_pointer + 4;
  const arg = Number(field[3]);
  return SECCOMP_DATA.args + 8 * arg + (field.endsWith("_hi") ? 4 : 0);
}

/**
 * Readable name of a load offset, e.g. `args[1].lo`.
 *
 * @example
 * ```ts
 * import { fieldName } from "./bpf.ts";
 * fieldName(4); // "arch"
 * ```
 */
export function fieldName(offset: number): string {
  if (offset === SECCOMP_DATA.nr) return "nr";
  if (offset === SECCOMP_DATA.arch) return "arch";
  if (offset === SECCOMP_DATA.instruction_pointer) return "ip.lo";
  if (offset === SECCOMP_DATA.instruction_pointer + 4) return "ip.hi";
  const rel = offset - SECCOMP_DATA.args;
  return `args[${rel >> 3}].${rel & 4 ? "hi" : "lo"}`;
}

type Cond = "jeq" | "jgt" | "jge" | "jset";

const COND_OP: Record<Cond, number> = {
  jeq: BPF_JEQ,
  jgt: BPF_JGT,
  jge: BPF_JGE,
  jset: BPF_JSET,
};

/** Largest forward distance a conditional jump encodes (u8). */
const MAX_COND_JUMP = 255;

type Item =
  | { kind: "label"; name: string }
  | { kind: "op"; code: number; k: number }
  | { kind: "ja"; target: string }
  | { kind: "cond"; code: number; k: number; jt: string; jf: string };

function u32(k: number, what: string): number {
  if (!Number.isInteger(k) || k < -0x80000000 || k > 0xffffffff) {
    throw new VoltError(`BPF ${what} operand ${k} is not a 32-bit value`, "internal");
  }
  return k >>> 0;
}

/**
 * Builds a filter from instructions and labels. Jumps name labels defined
 * later (classic BPF only jumps forward); a conditional jump whose target
 * is more than 255 instructions away goes through a `ja` trampoline
 * inserted right after it.
 *
 * @example
 * ```ts
 * import { Assembler } from "./bpf.ts";
 * const a = new Assembler();
 * a.ld("nr").jeq(39, "allow", "kill");
 * a.label("kill").ret(0x80000000);
 * a.label("allow").ret(0x7fff0000);
 * const program = a.assemble(); // 4 instructions
 * ```
 */
export class Assembler {
  #items: Item[] = [];
  #labels = new Set<string>();
  #anon = 0;

  /** Defines `name` at the next instruction. */
  label(name: string): this {
    if (this.#labels.has(name)) throw new VoltError(`BPF label ${name} defined twice`, "internal");
    this.#labels.add(name);
    this.#items.push({ kind: "label", name });
    return this;
  }

  /** A = the 32-bit field of `seccomp_data`. */
  ld(field: Field): this {
    return this.ldAbs(fieldOffset(field));
  }

  /** A = the u32 at byte `offset` of `seccomp_data` (aligned, in bounds). */
  ldAbs(offset: number): this {
    if (!Number.isInteger(offset) || offset < 0 || offset >= SECCOMP_DATA.size || offset & 3) {
      throw new VoltError(`BPF load offset ${offset} is outside seccomp_data`, "internal");
    }
    this.#items.push({ kind: "op", code: BPF_LD | BPF_W | BPF_ABS, k: offset });
    return this;
  }

  /** A &= k. */
  and(k: number): this {
    this.#items.push({ kind: "op", code: BPF_ALU | BPF_AND | BPF_K, k: u32(k, "and") });
    return this;
  }

  /** Returns k: the filter's verdict. */
  ret(k: number): this {
    this.#items.push({ kind: "op", code: BPF_RET | BPF_K, k: u32(k, "ret") });
    return this;
  }

  /** Jumps to `target` unconditionally (32-bit reach). */
  ja(target: string): this {
    this.#items.push({ kind: "ja", target });
    return this;
  }

  /** If A == k go to `jt`, else to `jf`; an omitted label is the next instruction. */
  jeq(k: number, jt?: string, jf?: string): this {
    return this.#cond("jeq", k, jt, jf);
  }

  /** If A > k (unsigned) go to `jt`, else to `jf`. */
  jgt(k: number, jt?: string, jf?: string): this {
    return this.#cond("jgt", k, jt, jf);
  }

  /** If A >= k (unsigned) go to `jt`, else to `jf`. */
  jge(k: number, jt?: string, jf?: string): this {
    return this.#cond("jge", k, jt, jf);
  }

  /** If A & k != 0 go to `jt`, else to `jf`. */
  jset(k: number, jt?: string, jf?: string): this {
    return this.#cond("jset", k, jt, jf);
  }

  #cond(op: Cond, k: number, jt?: string, jf?: string): this {
    // "Next instruction" becomes a real label now, so a trampoline inserted
    // after this jump later cannot capture a branch meant to fall through.
    const next = jt === undefined || jf === undefined ? this.#fresh("next") : undefined;
    this.#items.push({
      kind: "cond",
      code: BPF_JMP | COND_OP[op] | BPF_K,
      k: u32(k, op),
      jt: jt ?? next!,
      jf: jf ?? next!,
    });
    if (next) this.#items.push({ kind: "label", name: next });
    return this;
  }

  #fresh(prefix: string): string {
    return `.${prefix}${this.#anon++}`;
  }

  /** Resolves labels and returns the program; throws on a bad label or size. */
  assemble(): Program {
    const items = [...this.#items];
    const labels = new Set(this.#labels);
    for (const it of items) {
      if (it.kind === "label") labels.add(it.name);
    }
    for (const it of items) {
      for (const t of it.kind === "ja" ? [it.target] : it.kind === "cond" ? [it.jt, it.jf] : []) {
        if (!labels.has(t)) throw new VoltError(`BPF label ${t} is not defined`, "internal");
      }
    }
    // Each pass adds at most two trampolines per jump and never lengthens a
    // branch that already targets its own trampoline, so this terminates.
    for (;;) {
      const pos = positions(items);
      let inserted = false;
      for (let i = 0; i < items.length && !inserted; i++) {
        const it = items[i];
        if (it.kind !== "cond") continue;
        const at = pos.insn[i];
        const far = (t: string) => pos.label.get(t)! - (at + 1) > MAX_COND_JUMP;
        const farT = far(it.jt), farF = far(it.jf);
        if (!farT && !farF) continue;
        const extra: Item[] = [];
        const via = (target: string) => {
          const name = this.#fresh("tramp");
          extra.push({ kind: "label", name }, { kind: "ja", target });
          return name;
        };
        const jt = farT ? via(it.jt) : it.jt;
        const jf = farF ? via(it.jf) : it.jf;
        items.splice(i, 1, { ...it, jt, jf }, ...extra);
        inserted = true;
      }
      if (!inserted) break;
    }
    const pos = positions(items);
    const out: Insn[] = [];
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (it.kind === "label") continue;
      const at = pos.insn[i];
      const rel = (t: string) => {
        const d = pos.label.get(t)! - (at + 1);
        if (d < 0) {
          throw new VoltError(
            `BPF label ${t} is behind the jump at ${at}: classic BPF only jumps forward`,
            "internal",
          );
        }
        return d;
      };
      if (it.kind === "op") out.push({ code: it.code, jt: 0, jf: 0, k: it.k });
      else if (it.kind === "ja") {
        out.push({ code: BPF_JMP | BPF_JA, jt: 0, jf: 0, k: rel(it.target) });
      } else out.push({ code: it.code, jt: rel(it.jt), jf: rel(it.jf), k: it.k });
    }
    for (const [name, at] of pos.label) {
      if (at >= out.length) {
        throw new VoltError(`BPF label ${name} is past the last instruction`, "internal");
      }
    }
    if (out.length === 0) throw new VoltError("BPF program is empty", "internal");
    if (out.length > BPF_MAXINSNS) {
      throw new VoltError(
        `BPF program has ${out.length} instructions; the kernel takes at most ${BPF_MAXINSNS}`,
        "internal",
      );
    }
    if ((out[out.length - 1].code & 0x07) !== BPF_RET) {
      throw new VoltError("BPF program must end with ret", "internal");
    }
    return out;
  }
}

/** Instruction index of every item and label, labels taking no space. */
function positions(items: Item[]): { insn: number[]; label: Map<string, number> } {
  const insn: number[] = [];
  const label = new Map<string, number>();
  let n = 0;
  for (const it of items) {
    insn.push(n);
    if (it.kind === "label") label.set(it.name, n);
    else n++;
  }
  return { insn, label };
}

/**
 * The program as the kernel reads it: 8 little-endian bytes per instruction.
 *
 * @example
 * ```ts
 * import { encode } from "./bpf.ts";
 * encode([{ code: 6, jt: 0, jf: 0, k: 0x7fff0000 }]); // Uint8Array(8)
 * ```
 */
export function encode(program: Program): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(program.length * SOCK_FILTER.size);
  const v = new DataView(out.buffer);
  program.forEach((insn, i) => {
    const o = i * SOCK_FILTER.size;
    v.setUint16(o + SOCK_FILTER.code, insn.code, true);
    v.setUint8(o + SOCK_FILTER.jt, insn.jt);
    v.setUint8(o + SOCK_FILTER.jf, insn.jf);
    v.setUint32(o + SOCK_FILTER.k, insn.k >>> 0, true);
  });
  return out;
}

/**
 * The inverse of {@linkcode encode}.
 *
 * @example
 * ```ts
 * import { decode, encode } from "./bpf.ts";
 * decode(encode([{ code: 6, jt: 0, jf: 0, k: 0 }])); // [{ code: 6, jt: 0, jf: 0, k: 0 }]
 * ```
 */
export function decode(bytes: Uint8Array): Program {
  if (bytes.length % SOCK_FILTER.size) {
    throw new VoltError(`BPF bytes length ${bytes.length} is not a multiple of 8`, "internal");
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Insn[] = [];
  for (let o = 0; o < bytes.length; o += SOCK_FILTER.size) {
    out.push({
      code: v.getUint16(o + SOCK_FILTER.code, true),
      jt: v.getUint8(o + SOCK_FILTER.jt),
      jf: v.getUint8(o + SOCK_FILTER.jf),
      k: v.getUint32(o + SOCK_FILTER.k, true),
    });
  }
  return out;
}

const COND_NAME = new Map<number, string>([
  [BPF_JMP | BPF_JEQ | BPF_K, "jeq"],
  [BPF_JMP | BPF_JGT | BPF_K, "jgt"],
  [BPF_JMP | BPF_JGE | BPF_K, "jge"],
  [BPF_JMP | BPF_JSET | BPF_K, "jset"],
]);

const hex = (k: number) => `#0x${(k >>> 0).toString(16)}`;
const addr = (n: number) => n.toString().padStart(4, "0");

/**
 * One line per instruction, jump targets as absolute indices:
 * `0003: jeq #0xc000003e, 0004, 0010`. `annotate` may add a comment.
 *
 * @example
 * ```ts
 * import { Assembler, disassemble } from "./bpf.ts";
 * const p = new Assembler().ld("arch").ret(0).assemble();
 * console.log(disassemble(p)); // 0000: ld [4]   ...   ; arch
 * //                               0001: ret #0x0
 * ```
 */
export function disassemble(
  program: Program,
  annotate?: (insn: Insn, pc: number) => string | undefined,
): string {
  const lines = program.map((insn, pc) => {
    let text: string;
    let note: string | undefined;
    const cond = COND_NAME.get(insn.code);
    if (insn.code === (BPF_LD | BPF_W | BPF_ABS)) {
      text = `ld [${insn.k}]`;
      note = fieldName(insn.k);
    } else if (insn.code === (BPF_ALU | BPF_AND | BPF_K)) {
      text = `and ${hex(insn.k)}`;
    } else if (insn.code === (BPF_JMP | BPF_JA)) {
      text = `ja ${addr(pc + 1 + insn.k)}`;
    } else if (cond) {
      text = `${cond} ${hex(insn.k)}, ${addr(pc + 1 + insn.jt)}, ${addr(pc + 1 + insn.jf)}`;
    } else if (insn.code === (BPF_RET | BPF_K)) {
      text = `ret ${hex(insn.k)}`;
    } else if (insn.code === (BPF_RET | BPF_A)) {
      text = "ret a";
    } else {
      text = `.insn code=${hex(insn.code)} jt=${insn.jt} jf=${insn.jf} k=${hex(insn.k)}`;
    }
    note = annotate?.(insn, pc) ?? note;
    return `${addr(pc)}: ${note ? `${text.padEnd(32)}; ${note}` : text}`;
  });
  return lines.join("\n");
}

/** The `seccomp_data` a filter runs over. */
export interface SeccompInput {
  /** Syscall number (an int: x32 calls set bit 30). */
  nr: number;
  /** `AUDIT_ARCH_*` of the calling convention. */
  arch: number;
  /** Instruction pointer; 0 when omitted. */
  ip?: bigint;
  /** Up to six arguments, as the kernel stores them: full 64-bit. */
  args?: readonly bigint[];
}

/** What {@linkcode execute} reports. */
export interface Execution {
  /** The returned verdict (u32). */
  value: number;
  /** Instructions executed, the cost the kernel pays per syscall. */
  steps: number;
}

/** Serializes `seccomp_data` exactly as the kernel lays it out. */
function seccompData(d: SeccompInput): DataView {
  const v = new DataView(new ArrayBuffer(SECCOMP_DATA.size));
  v.setInt32(SECCOMP_DATA.nr, d.nr | 0, true);
  v.setUint32(SECCOMP_DATA.arch, d.arch >>> 0, true);
  v.setBigUint64(SECCOMP_DATA.instruction_pointer, BigInt.asUintN(64, d.ip ?? 0n), true);
  const args = d.args ?? [];
  if (args.length > 6) throw new VoltError("seccomp_data holds at most 6 arguments", "internal");
  args.forEach((a, i) => v.setBigUint64(SECCOMP_DATA.args + 8 * i, BigInt.asUintN(64, a), true));
  return v;
}

/**
 * Runs `program` over one syscall like the kernel's interpreter and
 * reports the verdict and the number of instructions executed.
 *
 * @example
 * ```ts
 * import { Assembler, execute } from "./bpf.ts";
 * const p = new Assembler().ld("nr").jeq(39, "ok").ret(0).label("ok").ret(1).assemble();
 * execute(p, { nr: 39, arch: 0xc000003e }); // { value: 1, steps: 3 }
 * ```
 */
export function execute(program: Program, input: SeccompInput): Execution {
  const data = seccompData(input);
  let a = 0;
  let pc = 0;
  let steps = 0;
  const jump = (off: number) => {
    pc += 1 + off;
    if (pc >= program.length) {
      throw new VoltError(`BPF jump past the end from ${addr(pc - 1 - off)}`, "internal");
    }
  };
  while (pc < program.length) {
    const insn = program[pc];
    steps++;
    switch (insn.code) {
      case BPF_LD | BPF_W | BPF_ABS:
        if (insn.k >= SECCOMP_DATA.size || insn.k & 3) {
          throw new VoltError(`BPF load at ${addr(pc)} is outside seccomp_data`, "internal");
        }
        a = data.getUint32(insn.k, true);
        pc++;
        break;
      case BPF_ALU | BPF_AND | BPF_K:
        a = (a & insn.k) >>> 0;
        pc++;
        break;
      case BPF_JMP | BPF_JA:
        jump(insn.k);
        break;
      case BPF_JMP | BPF_JEQ | BPF_K:
        jump(a === insn.k >>> 0 ? insn.jt : insn.jf);
        break;
      case BPF_JMP | BPF_JGT | BPF_K:
        jump(a > insn.k >>> 0 ? insn.jt : insn.jf);
        break;
      case BPF_JMP | BPF_JGE | BPF_K:
        jump(a >= insn.k >>> 0 ? insn.jt : insn.jf);
        break;
      case BPF_JMP | BPF_JSET | BPF_K:
        jump((a & insn.k) !== 0 ? insn.jt : insn.jf);
        break;
      case BPF_RET | BPF_K:
        return { value: insn.k >>> 0, steps };
      case BPF_RET | BPF_A:
        return { value: a, steps };
      default:
        throw new VoltError(
          `BPF opcode ${hex(insn.code)} at ${addr(pc)} is not supported`,
          "internal",
        );
    }
  }
  throw new VoltError("BPF program ran past its last instruction", "internal");
}

/**
 * The verdict of `program` for one syscall.
 *
 * @example
 * ```ts
 * import { Assembler, run } from "./bpf.ts";
 * run(new Assembler().ret(0x7fff0000).assemble(), { nr: 0, arch: 0 }); // 0x7fff0000
 * ```
 */
export function run(program: Program, input: SeccompInput): number {
  return execute(program, input).value;
}
