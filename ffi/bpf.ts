/**
 * Classic BPF encoding (include/uapi/linux/bpf_common.h, linux/filter.h):
 * the opcode fields the seccomp assembler emits and the layout of
 * `struct sock_filter`.
 *
 * @module
 */

/** Instruction classes: `BPF_CLASS(code)`. */
export const BPF_LD = 0x00;
/** Load into X. */
export const BPF_LDX = 0x01;
/** Arithmetic on A. */
export const BPF_ALU = 0x04;
/** Jumps. */
export const BPF_JMP = 0x05;
/** Return. */
export const BPF_RET = 0x06;
/** Register transfers. */
export const BPF_MISC = 0x07;

/** Operand size `BPF_SIZE(code)`: 32-bit word, the only size seccomp accepts. */
export const BPF_W = 0x00;
/** Addressing mode `BPF_MODE(code)`: absolute offset into `seccomp_data`. */
export const BPF_ABS = 0x20;
/** Immediate. */
export const BPF_IMM = 0x00;

/** `BPF_OP(code)` for ALU: bitwise and. */
export const BPF_AND = 0x50;
/** `BPF_OP(code)` for jumps: unconditional. */
export const BPF_JA = 0x00;
/** Jump if A == operand. */
export const BPF_JEQ = 0x10;
/** Jump if A > operand (unsigned). */
export const BPF_JGT = 0x20;
/** Jump if A >= operand (unsigned). */
export const BPF_JGE = 0x30;
/** Jump if A & operand != 0. */
export const BPF_JSET = 0x40;

/** `BPF_SRC(code)`: the operand is the constant k. */
export const BPF_K = 0x00;
/** `BPF_SRC(code)`: the operand is register X. */
export const BPF_X = 0x08;
/** `BPF_RVAL(code)` for ret: return register A. */
export const BPF_A = 0x10;

/** Longest program the kernel accepts (`BPF_MAXINSNS`). */
export const BPF_MAXINSNS = 4096;

/** `struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }`. */
export const SOCK_FILTER = { code: 0, jt: 2, jf: 3, k: 4, size: 8 } as const;
