/**
 * Seccomp allow-lists: a {@linkcode Policy} names the syscalls a process
 * may make (some only with given arguments), {@linkcode buildFilter}
 * compiles it to classic BPF, {@linkcode installFilter} applies it to every
 * thread of the process.
 *
 * Filter shape (see {@linkcode buildFilter}): arch check, x32 check, then a
 * linear dispatch on the syscall number that puts the argument-checked
 * rules first. A binary search would save comparisons, but the kernel (5.11
 * and later) caches, per syscall number, whether a filter allows it
 * whatever the arguments: it emulates the filter once at install time over
 * nr and arch only. Every plain allow-list entry therefore costs nothing at
 * run time, and only the argument-checked syscalls (ioctl: KVM_RUN on every
 * exit) execute the filter; KVM_RUN gets its verdict after eight
 * instructions. A linear list also keeps the program short and its
 * disassembly readable.
 *
 * @module
 */

import {
  BPF_ABS,
  BPF_JEQ,
  BPF_JMP,
  BPF_JSET,
  BPF_K,
  BPF_LD,
  BPF_RET,
  BPF_W,
  SOCK_FILTER,
} from "../../ffi/bpf.ts";
import { errno, libc } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";
import { KVM } from "../../ffi/kvm.ts";
import { TUN } from "../../ffi/tun.ts";
import { AF_UNIX } from "../../ffi/socket.ts";
import { PR_SET_NO_NEW_PRIVS } from "../../ffi/prctl.ts";
import { CLONE_NEW_MASK, CLONE_SIGHAND, CLONE_THREAD, CLONE_VM } from "../../ffi/sched.ts";
import {
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  SECCOMP_DATA,
  SECCOMP_FILTER_FLAG_LOG,
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_RET,
  SECCOMP_RET_ACTION_FULL,
  SECCOMP_RET_DATA,
  SECCOMP_SET_MODE_FILTER,
  SOCK_FPROG,
  X32_SYSCALL_BIT,
} from "../../ffi/seccomp.ts";
import { MAX_SYSCALL, type SyscallName, SYSCALLS } from "../../ffi/syscalls.ts";
import { FIOCLEX, FIONBIO, TCGETS, TCSETS, TCSETSF, TCSETSW, TIOCGWINSZ } from "../../ffi/tty.ts";
import { VoltError } from "../errors.ts";
import { Assembler, disassemble, encode, type Field, type Program } from "./bpf.ts";

const LD_ABS = BPF_LD | BPF_W | BPF_ABS;
const RET_K = BPF_RET | BPF_K;
const JEQ_K = BPF_JMP | BPF_JEQ | BPF_K;
const JSET_K = BPF_JMP | BPF_JSET | BPF_K;

export { MAX_SYSCALL, type SyscallName, SYSCALLS };

/** Index of a syscall argument, `args[0]`..`args[5]`. */
export type ArgIndex = 0 | 1 | 2 | 3 | 4 | 5;

/**
 * A condition on one argument. Several conditions in a rule must all hold.
 *
 * - `eq32`: the low 32 bits equal one of the values (an array, or a record
 *   whose keys name the values for `--print`). For arguments the kernel
 *   reads as `int`/`unsigned int` (ioctl's request, fcntl's command), the
 *   upper half is garbage the kernel ignores, so it must not be checked.
 * - `eq`: the full 64-bit value equals one of the values.
 * - `clear`: none of the bits of the 64-bit mask is set.
 * - `set`: every bit of the 64-bit mask is set.
 */
export type ArgCheck =
  | { arg: ArgIndex; eq32: readonly number[] | Readonly<Record<string, number>> }
  | { arg: ArgIndex; eq: readonly bigint[] }
  | { arg: ArgIndex; clear: bigint }
  | { arg: ArgIndex; set: bigint };

/** A verdict of the filter. */
export type Action =
  | "allow"
  | "kill-process"
  | "kill-thread"
  | "trap"
  | "log"
  | { errno: number };

/** One allow-list entry. */
export interface SyscallRule {
  /** The syscall. */
  name: SyscallName;
  /** Conditions that must all hold; without them any arguments pass. */
  args?: readonly ArgCheck[];
  /** Verdict when the conditions hold (default "allow"). */
  action?: Action;
  /** Why the process needs it; shown by {@linkcode formatPolicy}. */
  why?: string;
}

/** An allow-list: a plain name allows the syscall with any arguments. */
export interface Policy {
  /** Shown by {@linkcode formatPolicy}. */
  name: string;
  /** The allowed syscalls; a name may appear once. */
  rules: readonly (SyscallName | SyscallRule)[];
  /**
   * Verdict for everything else (default "kill-process"). "log" or "trap"
   * help calibrating; a foreign arch or x32 call is always killed.
   */
  defaultAction?: Action;
}

/**
 * The u32 a filter returns for an action.
 *
 * @example
 * ```ts
 * import { actionValue } from "./seccomp.ts";
 * actionValue({ errno: 38 }); // 0x50026
 * ```
 */
export function actionValue(action: Action): number {
  if (typeof action === "object") {
    if (!Number.isInteger(action.errno) || action.errno < 0 || action.errno > SECCOMP_RET_DATA) {
      throw new VoltError(`Seccomp errno ${action.errno} is out of range`, "internal");
    }
    return (SECCOMP_RET.ERRNO | action.errno) >>> 0;
  }
  switch (action) {
    case "allow":
      return SECCOMP_RET.ALLOW;
    case "kill-process":
      return SECCOMP_RET.KILL_PROCESS;
    case "kill-thread":
      return SECCOMP_RET.KILL_THREAD;
    case "trap":
      return SECCOMP_RET.TRAP;
    case "log":
      return SECCOMP_RET.LOG;
  }
}

/**
 * A filter result as text, e.g. `ALLOW` or `ERRNO(ENOSYS)`.
 *
 * @example
 * ```ts
 * import { actionName } from "./seccomp.ts";
 * actionName(0x80000000); // "KILL_PROCESS"
 * ```
 */
export function actionName(value: number): string {
  const action = (value & SECCOMP_RET_ACTION_FULL) >>> 0;
  const data = value & SECCOMP_RET_DATA;
  for (const [name, v] of Object.entries(SECCOMP_RET)) {
    if (v !== action) continue;
    if (name === "ERRNO") return `ERRNO(${errnoName(data)})`;
    return data ? `${name}(${data})` : name;
  }
  return `0x${(value >>> 0).toString(16)}`;
}

const NAME_BY_NR = new Map<number, SyscallName>(
  Object.entries(SYSCALLS).map(([n, nr]) => [nr, n as SyscallName]),
);

/**
 * The name of a syscall number, or undefined when the table lacks it.
 *
 * @example
 * ```ts
 * import { syscallName } from "./seccomp.ts";
 * syscallName(16); // "ioctl"
 * ```
 */
export function syscallName(nr: number): SyscallName | undefined {
  return NAME_BY_NR.get(nr);
}

/**
 * A syscall's number; throws a one-line error for an unknown name.
 *
 * @example
 * ```ts
 * import { syscallNumber } from "./seccomp.ts";
 * syscallNumber("getppid"); // 110
 * ```
 */
export function syscallNumber(name: string): number {
  const nr = (SYSCALLS as Record<string, number>)[name];
  if (nr === undefined) throw new VoltError(`Unknown syscall: ${name}`, "input");
  return nr;
}

function normalize(rules: Policy["rules"]): SyscallRule[] {
  const seen = new Set<string>();
  return rules.map((r) => {
    const rule = typeof r === "string" ? { name: r } : r;
    syscallNumber(rule.name);
    if (seen.has(rule.name)) {
      throw new VoltError(`Seccomp policy names ${rule.name} twice`, "internal");
    }
    seen.add(rule.name);
    for (const c of rule.args ?? []) {
      if (!Number.isInteger(c.arg) || c.arg < 0 || c.arg > 5) {
        throw new VoltError(`Seccomp rule for ${rule.name} checks args[${c.arg}]`, "internal");
      }
      const n = "eq32" in c ? eq32Values(c.eq32).length : "eq" in c ? c.eq.length : 1;
      if (n === 0) {
        throw new VoltError(`Seccomp rule for ${rule.name} lists no values`, "internal");
      }
    }
    return rule;
  });
}

function eq32Values(eq32: readonly number[] | Readonly<Record<string, number>>): number[] {
  return Array.isArray(eq32) ? [...eq32 as readonly number[]] : Object.values(eq32);
}

const lo = (v: bigint) => Number(BigInt.asUintN(32, v));
const hi = (v: bigint) => Number(BigInt.asUintN(32, v >> 32n));
const field = (arg: ArgIndex, half: "lo" | "hi") => `arg${arg}_${half}` as Field;

/**
 * Compiles a policy. Layout:
 *
 * 1. `arch != AUDIT_ARCH_X86_64` → KILL_PROCESS (a 32-bit `int 0x80` call
 *    has other numbers: checking nr alone would let those through);
 * 2. `nr & __X32_SYSCALL_BIT` → KILL_PROCESS (x32 shares the arch);
 * 3. one `jeq` per rule, argument-checked rules first (in policy order, so
 *    put the hottest first), then plain ones by number;
 * 4. anything else → the default action.
 *
 * @example
 * ```ts
 * import { buildFilter } from "./seccomp.ts";
 * const program = buildFilter({ name: "tiny", rules: ["read", "write", "exit_group"] });
 * console.log(program.length); // 9
 * ```
 */
export function buildFilter(policy: Policy): Program {
  const rules = normalize(policy.rules);
  const checked = rules.filter((r) => r.args?.length);
  const plain = rules.filter((r) => !r.args?.length)
    .sort((a, b) => SYSCALLS[a.name] - SYSCALLS[b.name]);
  const a = new Assembler();
  const verdicts = new Map<number, string>();
  const verdict = (action: Action) => {
    const v = actionValue(action);
    if (!verdicts.has(v)) verdicts.set(v, `ret_${v.toString(16)}`);
    return verdicts.get(v)!;
  };
  const kill = verdict("kill-process");
  const deny = verdict(policy.defaultAction ?? "kill-process");

  a.ld("arch").jeq(AUDIT_ARCH_X86_64, undefined, kill);
  a.ld("nr").jset(X32_SYSCALL_BIT, kill);
  const dispatch: Array<[number, string]> = [
    ...checked.map((r): [number, string] => [SYSCALLS[r.name], `check_${r.name}`]),
    ...plain.map((r): [number, string] => [SYSCALLS[r.name], verdict(r.action ?? "allow")]),
  ];
  if (dispatch.length === 0) a.ja(deny);
  dispatch.forEach(([nr, target], i) =>
    a.jeq(nr, target, i === dispatch.length - 1 ? deny : undefined)
  );

  for (const r of checked) {
    a.label(`check_${r.name}`);
    const pass = verdict(r.action ?? "allow");
    r.args!.forEach((c, i) => {
      const next = i === r.args!.length - 1 ? pass : `check_${r.name}_${i + 1}`;
      if ("eq32" in c) {
        const values = eq32Values(c.eq32);
        a.ld(field(c.arg, "lo"));
        values.forEach((v, j) => a.jeq(v, next, j === values.length - 1 ? deny : undefined));
      } else if ("eq" in c) {
        c.eq.forEach((v, j) => {
          const other = j === c.eq.length - 1 ? deny : `check_${r.name}_${i}_${j + 1}`;
          a.ld(field(c.arg, "lo")).jeq(lo(v), undefined, other);
          a.ld(field(c.arg, "hi")).jeq(hi(v), next, other);
          if (other !== deny) a.label(other);
        });
      } else if ("set" in c) {
        const halves = ([["lo", lo(c.set)], ["hi", hi(c.set)]] as const)
          .filter(([, m]) => m !== 0);
        if (halves.length === 0) a.ja(next);
        halves.forEach(([half, m], j) =>
          a.ld(field(c.arg, half)).and(m).jeq(m, j === halves.length - 1 ? next : undefined, deny)
        );
      } else {
        const halves = ([["lo", lo(c.clear)], ["hi", hi(c.clear)]] as const)
          .filter(([, m]) => m !== 0);
        if (halves.length === 0) a.ja(next);
        halves.forEach(([half, m], j) =>
          a.ld(field(c.arg, half)).jset(m, deny, j === halves.length - 1 ? next : undefined)
        );
      }
      if (next !== pass) a.label(next);
    });
  }
  for (const [value, label] of verdicts) a.label(label).ret(value);
  return a.assemble();
}

function describeCheck(c: ArgCheck): string {
  if ("eq32" in c) {
    const items = Array.isArray(c.eq32)
      ? (c.eq32 as readonly number[]).map((v) => `0x${v.toString(16)}`)
      : Object.entries(c.eq32).map(([n, v]) => `${n}=0x${v.toString(16)}`);
    return `args[${c.arg}] (low 32 bits) in {${items.join(", ")}}`;
  }
  if ("eq" in c) return `args[${c.arg}] in {${c.eq.map((v) => `0x${v.toString(16)}`).join(", ")}}`;
  if ("set" in c) return `args[${c.arg}] & 0x${c.set.toString(16)} == 0x${c.set.toString(16)}`;
  return `args[${c.arg}] & 0x${c.clear.toString(16)} == 0`;
}

/**
 * The policy for humans (`volt sandbox --print`): each syscall with its
 * number and argument rules, then the filter's disassembly.
 *
 * @example
 * ```ts
 * import { formatPolicy } from "./seccomp.ts";
 * console.log(formatPolicy({ name: "tiny", rules: ["read", "exit_group"] }));
 * ```
 */
export function formatPolicy(policy: Policy): string {
  const rules = normalize(policy.rules);
  const program = buildFilter(policy);
  const lines = [
    `Seccomp policy ${policy.name}: ${rules.length} syscalls, default ${
      actionName(actionValue(policy.defaultAction ?? "kill-process"))
    }, ${program.length} BPF instructions`,
  ];
  const width = Math.max(...rules.map((r) => r.name.length)) + 6;
  for (const r of [...rules].sort((x, y) => SYSCALLS[x.name] - SYSCALLS[y.name])) {
    const parts: string[] = [];
    if (r.args?.length) parts.push(r.args.map(describeCheck).join(" and "));
    if (r.action && r.action !== "allow") parts.push(`-> ${actionName(actionValue(r.action))}`);
    if (r.why) parts.push(`(${r.why})`);
    const head = `${r.name} ${SYSCALLS[r.name]}`;
    lines.push(`  ${parts.length ? head.padEnd(width) + parts.join(" ") : head}`);
  }
  const valueNames = new Map<number, string>();
  for (const r of rules) {
    for (const c of r.args ?? []) {
      if ("eq32" in c && !Array.isArray(c.eq32)) {
        for (const [n, v] of Object.entries(c.eq32)) valueNames.set(v >>> 0, n);
      }
    }
  }
  // The A register's content is known from the last load in program order:
  // every block of buildFilter starts with its own load.
  let loaded = "";
  const annotate = (insn: Program[number]): string | undefined => {
    if (insn.code === LD_ABS) {
      loaded = insn.k === SECCOMP_DATA.nr ? "nr" : insn.k === SECCOMP_DATA.arch ? "arch" : "arg";
      return undefined;
    }
    if (insn.code === RET_K) return actionName(insn.k);
    if (insn.code === JEQ_K) {
      if (loaded === "nr") return syscallName(insn.k);
      if (loaded === "arch") return insn.k === AUDIT_ARCH_X86_64 ? "AUDIT_ARCH_X86_64" : undefined;
      return valueNames.get(insn.k);
    }
    if (insn.code === JSET_K && loaded === "nr" && insn.k === X32_SYSCALL_BIT) return "x32";
    return undefined;
  };
  lines.push("", disassemble(program, annotate));
  return lines.join("\n");
}

/** Options of {@linkcode installFilter}. */
export interface InstallOptions {
  /** Apply to every thread of the process (default true). */
  tsync?: boolean;
  /** Ask the kernel to log every non-ALLOW verdict (calibration). */
  log?: boolean;
}

// The kernel copies the filter during the call; holding the last buffers
// here keeps them reachable until then whatever the optimizer decides.
const pinned = new Set<unknown>();

/**
 * Sets no_new_privs, then installs `program` with `seccomp(2)`; with
 * `tsync` (the default) every thread of the process gets it, including the
 * threads Deno started before user code.
 *
 * @example
 * ```ts ignore
 * import { buildFilter, installFilter, MONITOR_POLICY } from "./seccomp.ts";
 * installFilter(buildFilter(MONITOR_POLICY));
 * ```
 */
export function installFilter(program: Program, opts: InstallOptions = {}): void {
  installEncoded(encode(program), opts);
}

/**
 * {@linkcode installFilter} for a program already encoded as `sock_filter`
 * bytes: a vCPU thread gets its filter from the main thread this way.
 *
 * @example
 * ```ts ignore
 * import { buildFilter, encodeFilter, installEncoded, VCPU_POLICY } from "./seccomp.ts";
 * installEncoded(encodeFilter(buildFilter(VCPU_POLICY)), { tsync: false });
 * ```
 */
export function installEncoded(filter: Uint8Array<ArrayBuffer>, opts: InstallOptions = {}): void {
  const l = libc();
  if (l.prctl(PR_SET_NO_NEW_PRIVS, 1n, 0n, 0n, 0n) !== 0) {
    throw new VoltError(`Setting no_new_privs failed: ${errnoName(errno())}`, "internal");
  }
  const fprog = new Uint8Array(SOCK_FPROG.size);
  const v = new DataView(fprog.buffer);
  v.setUint16(SOCK_FPROG.len, filter.length / SOCK_FILTER.size, true);
  v.setBigUint64(
    SOCK_FPROG.filter,
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(filter))),
    true,
  );
  const keep = [filter, fprog];
  pinned.add(keep);
  const flags = (opts.tsync ?? true ? SECCOMP_FILTER_FLAG_TSYNC : 0) |
    (opts.log ? SECCOMP_FILTER_FLAG_LOG : 0);
  const r = l.syscall3_buf(
    BigInt(SYSCALLS.seccomp),
    BigInt(SECCOMP_SET_MODE_FILTER),
    BigInt(flags),
    fprog,
  );
  const e = errno();
  pinned.delete(keep);
  if (r < 0n) {
    throw new VoltError(`Installing the seccomp filter failed: ${errnoName(e)}`, "internal");
  }
  if (r > 0n) {
    // TSYNC answers with the id of a thread that has a filter of its own.
    throw new VoltError(
      `Installing the seccomp filter failed: thread ${r} could not be synchronized`,
      "internal",
    );
  }
}

/** A program as the `sock_filter` bytes {@linkcode installEncoded} takes. */
export const encodeFilter: (program: Program) => Uint8Array<ArrayBuffer> = encode;

/** Arch values and the x32 marker, for feeding the emulator. */
export { AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT };

/** The ioctls of a vCPU's run loop: the exits, the serial IRQ, register dumps for error reports. */
const RUN_LOOP_IOCTLS = {
  KVM_RUN: KVM.RUN,
  KVM_IRQ_LINE: KVM.IRQ_LINE,
  KVM_GET_REGS: KVM.GET_REGS,
  KVM_GET_SREGS: KVM.GET_SREGS,
} as const;

/**
 * What `PUT /snapshot/create` reads of a paused VM, on the main thread:
 * each only reads KVM's state; the ioctls that set state run before the
 * filter (a restore builds the VM first).
 */
const SNAPSHOT_IOCTLS = {
  KVM_CHECK_EXTENSION: KVM.CHECK_EXTENSION,
  KVM_GET_MSR_INDEX_LIST: KVM.GET_MSR_INDEX_LIST,
  KVM_GET_MSRS: KVM.GET_MSRS,
  KVM_GET_TSC_KHZ: KVM.GET_TSC_KHZ,
  KVM_GET_XSAVE: KVM.GET_XSAVE,
  KVM_GET_XSAVE2: KVM.GET_XSAVE2,
  KVM_GET_XCRS: KVM.GET_XCRS,
  KVM_GET_LAPIC: KVM.GET_LAPIC,
  KVM_GET_VCPU_EVENTS: KVM.GET_VCPU_EVENTS,
  KVM_GET_MP_STATE: KVM.GET_MP_STATE,
  KVM_GET_DEBUGREGS: KVM.GET_DEBUGREGS,
  KVM_GET_IRQCHIP: KVM.GET_IRQCHIP,
  KVM_GET_PIT2: KVM.GET_PIT2,
  KVM_GET_CLOCK: KVM.GET_CLOCK,
  // Reads and clears KVM's log of written pages (a diff snapshot).
  KVM_GET_DIRTY_LOG: KVM.GET_DIRTY_LOG,
} as const;

/** EACCES (asm-generic/errno-base.h): permission denied. */
const EACCES = 13;

/** ENOSYS (asm-generic/errno.h): "no such syscall", which makes glibc fall back. */
const ENOSYS = 38;

/**
 * The allow-list of the monitor with process id `pid`, once the VM is
 * built and its workers run: the syscalls that kept a Deno monitor alive
 * (DESIGN.md §4), with ioctl narrowed to the requests the run loop makes,
 * `clone` to namespace-free threads, and `tgkill` to the process's own
 * threads and the signals it sends. Edit here, one entry per line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildFilter, monitorPolicy } from "./seccomp.ts";
 * assert.ok(buildFilter(monitorPolicy(Deno.pid)).length > 60);
 * ```
 */
export function monitorPolicy(pid: number): Policy {
  return {
    name: "monitor",
    rules: [
      // Argument-checked, hottest first: every guest exit is an ioctl.
      {
        name: "ioctl",
        args: [{
          arg: 1,
          eq32: {
            ...RUN_LOOP_IOCTLS,
            ...SNAPSHOT_IOCTLS,
            TCGETS,
            TCSETS,
            TCSETSW,
            TCSETSF,
            TIOCGWINSZ,
            FIONBIO,
            FIOCLEX,
            TUNSETOFFLOAD: TUN.SETOFFLOAD,
          },
        }],
        why:
          "vCPU run loop, IRQ injection, register dumps for error reports, raw terminal, the TAP's offloads, snapshots' reads of KVM state",
      },
      {
        name: "clone",
        args: [
          { arg: 0, clear: BigInt(CLONE_NEW_MASK) },
          { arg: 0, set: BigInt(CLONE_THREAD | CLONE_VM | CLONE_SIGHAND) },
        ],
        why: "new threads (Deno's pool grows on demand): never a process, never new namespaces",
      },
      {
        name: "seccomp",
        args: [
          { arg: 0, eq32: { SECCOMP_SET_MODE_FILTER } },
          { arg: 1, eq: [0n, BigInt(SECCOMP_FILTER_FLAG_LOG)] },
        ],
        why:
          "each vCPU thread stacks its own, smaller filter (no TSYNC: it binds that thread alone)",
      },
      {
        name: "clone3",
        action: { errno: ENOSYS },
        why: "its flags live in memory seccomp cannot read; glibc falls back to clone",
      },
      "read",
      "write",
      "close",
      {
        name: "stat",
        why: "Deno's caches at exit: its glibc ABI (__xstat) makes the old stat syscall",
      },
      "fstat",
      "lseek",
      "mmap",
      "mprotect",
      {
        name: "pkey_mprotect",
        why: "V8 flips JIT pages with protection keys on CPUs that have PKU",
      },
      "munmap",
      "brk",
      "rt_sigaction",
      "rt_sigprocmask",
      "rt_sigreturn",
      "pread64",
      "pwrite64",
      { name: "preadv", why: "a virtio-blk read, one call for all of a request's buffers" },
      { name: "pwritev", why: "a virtio-blk write, likewise" },
      { name: "fallocate", why: "virtio-blk discard and write-zeroes on a writable disk" },
      { name: "readv", why: "virtio-net: a frame from the TAP into the guest's buffers" },
      { name: "writev", why: "virtio-net: a frame from the guest's buffers to the TAP" },
      {
        name: "socket",
        args: [{ arg: 0, eq32: { AF_UNIX } }],
        why: "vsock: a guest connection to <uds>_P (unix sockets only)",
      },
      { name: "connect", why: "vsock: a guest connection to <uds>_P" },
      { name: "accept4", why: "vsock: a host client on the listening socket" },
      { name: "shutdown", why: "vsock: the guest stopped sending" },
      "sched_yield",
      "mremap",
      "madvise",
      "getpid",
      "sendto",
      "recvfrom",
      "socketpair",
      "exit",
      "fcntl",
      "fsync",
      {
        name: "fdatasync",
        why: "a virtio-blk flush reaches the disk",
      },
      "ftruncate",
      "rename",
      {
        name: "unlink",
        why: "SQLite deletes its journal in Deno's cache at exit; Landlock bounds where",
      },
      "sysinfo",
      "sigaltstack",
      "sched_getparam",
      "sched_getscheduler",
      "prctl",
      "gettid",
      "futex",
      "sched_getaffinity",
      "clock_nanosleep",
      "exit_group",
      "epoll_wait",
      "epoll_ctl",
      {
        name: "tgkill",
        args: [{ arg: 0, eq32: [pid] }, { arg: 2, eq32: { SIGABRT, SIGUSR2 } }],
        why: "the vCPU kick (SIGUSR2) and abort, to this process's own threads only",
      },
      "openat",
      "newfstatat",
      "set_robust_list",
      "eventfd2",
      "epoll_create1",
      "getrandom",
      "statx",
      "rseq",
      // A signal (the vCPU kick) interrupting a timed wait restarts it here.
      "restart_syscall",
    ],
  };
}

/**
 * The allow-list a vCPU thread stacks on the monitor's right before its
 * first KVM_RUN (Firecracker's vCPU filter): the run loop's ioctls, and
 * what a Deno worker's runtime does on its own thread (memory, futexes,
 * its event loop, the signal pipe the kick writes to, thread exit). No
 * file is opened, no thread or socket made, no other ioctl: a guest that
 * takes over the vCPU thread through a device bug gets this much.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { vcpuPolicy } from "./seccomp.ts";
 * assert.ok(!vcpuPolicy(1).rules.includes("openat"));
 * ```
 */
export function vcpuPolicy(pid: number): Policy {
  return {
    name: "vcpu",
    rules: [
      {
        name: "ioctl",
        args: [{
          arg: 1,
          eq32: RUN_LOOP_IOCTLS,
        }],
        why: "the run loop, the serial IRQ, register dumps for error reports",
      },
      {
        name: "tgkill",
        args: [{ arg: 0, eq32: [pid] }, { arg: 2, eq32: { SIGABRT, SIGUSR2 } }],
        why: "abort, to this process only",
      },
      {
        name: "openat",
        action: { errno: EACCES },
        why:
          "glibc's malloc asks /proc/sys/vm/overcommit_memory once, from whichever thread trims a heap first; it copes",
      },
      "sched_getparam",
      "sched_getscheduler",
      "futex",
      "read",
      "write",
      "sendto",
      "recvfrom",
      "epoll_wait",
      "epoll_ctl",
      "close",
      "mmap",
      "mprotect",
      {
        name: "pkey_mprotect",
        why: "V8 flips JIT pages with protection keys on CPUs that have PKU",
      },
      "munmap",
      "madvise",
      "mremap",
      "brk",
      "rt_sigaction",
      "rt_sigprocmask",
      "rt_sigreturn",
      "sigaltstack",
      "sched_yield",
      "sched_getaffinity",
      "getpid",
      "gettid",
      "getrandom",
      "clock_nanosleep",
      "prctl",
      "rseq",
      "set_robust_list",
      "exit",
      "exit_group",
      "restart_syscall",
    ],
  };
}

/** SIGABRT and SIGUSR2 (asm-generic/signal.h). */
const SIGABRT = 6;
const SIGUSR2 = 12;

/**
 * {@linkcode monitorPolicy} for this process: what the monitor installs on
 * itself, and what `volt sandbox --print` shows.
 *
 * @example
 * ```ts
 * import { buildFilter, MONITOR_POLICY } from "./seccomp.ts";
 * console.log(buildFilter(MONITOR_POLICY).length);
 * ```
 */
export const MONITOR_POLICY: Policy = monitorPolicy(Deno.pid);

/** {@linkcode vcpuPolicy} for this process. */
export const VCPU_POLICY: Policy = vcpuPolicy(Deno.pid);
