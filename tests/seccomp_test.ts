import assert from "node:assert/strict";
import { KVM } from "../ffi/kvm.ts";
import { CLONE_NEW, CLONE_THREAD, CLONE_VM } from "../ffi/sched.ts";
import { SECCOMP_RET } from "../ffi/seccomp.ts";
import { TCGETS } from "../ffi/tty.ts";
import { execute, run } from "../src/sandbox/bpf.ts";
import { readThreadStatus } from "../src/sandbox/caps.ts";
import {
  actionValue,
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  buildFilter,
  formatPolicy,
  MAX_SYSCALL,
  MONITOR_POLICY,
  type Policy,
  syscallName,
  syscallNumber,
  type SyscallRule,
  SYSCALLS,
  VCPU_POLICY,
  X32_SYSCALL_BIT,
} from "../src/sandbox/seccomp.ts";
import { ROOT } from "./helpers.ts";

const ALLOW = SECCOMP_RET.ALLOW;
const KILL = SECCOMP_RET.KILL_PROCESS;
const program = buildFilter(MONITOR_POLICY);
const call = (name: string, args: bigint[] = []) =>
  run(program, { nr: syscallNumber(name), arch: AUDIT_ARCH_X86_64, args });

/** Thread-creating flags as glibc's pthread_create passes them to clone. */
const THREAD_FLAGS = BigInt(
  CLONE_VM | 0x200 | 0x400 | 0x800 | CLONE_THREAD | 0x40000 | 0x80000 |
    0x100000 | 0x200000,
);

Deno.test("seccomp: the syscall table is the kernel's", () => {
  assert.equal(SYSCALLS.read, 0);
  assert.equal(SYSCALLS.ioctl, 16);
  assert.equal(SYSCALLS.getppid, 110);
  assert.equal(SYSCALLS.seccomp, 317);
  assert.equal(SYSCALLS.landlock_create_ruleset, 444);
  assert.equal(syscallName(59), "execve");
  assert.throws(() => syscallNumber("nope"), /Unknown syscall: nope/);
  assert.ok(MAX_SYSCALL >= 446);
});

Deno.test("seccomp: every syscall number gets the verdict the policy gives it", () => {
  const rules = new Map<string, SyscallRule>(
    MONITOR_POLICY.rules.map((r) => typeof r === "string" ? [r, { name: r }] : [r.name, r]),
  );
  let allowed = 0;
  for (let nr = 0; nr <= MAX_SYSCALL + 10; nr++) {
    const name = syscallName(nr);
    const rule = name && rules.get(name);
    // All-zero arguments: an ioctl request of 0 is not on the list; clone
    // flags of 0 are a fork; tgkill of pid 0 is not this process; seccomp
    // op 0 is strict mode; socket family 0 is not AF_UNIX.
    let want = rule ? actionValue(rule.action ?? "allow") : KILL;
    if (["ioctl", "clone", "tgkill", "seccomp", "socket"].includes(name ?? "")) want = KILL;
    const got = run(program, { nr, arch: AUDIT_ARCH_X86_64, args: [0n, 0n, 0n, 0n, 0n, 0n] });
    assert.equal(got, want, `${name ?? nr}: got 0x${got.toString(16)}`);
    if (got === ALLOW) allowed++;
  }
  // ioctl, clone, tgkill, seccomp and socket need their arguments; clone3 answers ENOSYS.
  assert.equal(allowed, rules.size - 6);
});

Deno.test("seccomp: tgkill reaches this process's threads with the kick or abort only", () => {
  const pid = BigInt(Deno.pid);
  assert.equal(call("tgkill", [pid, 1234n, 12n]), ALLOW, "SIGUSR2, the vCPU kick");
  assert.equal(call("tgkill", [pid, 1234n, 6n]), ALLOW, "SIGABRT");
  assert.equal(call("tgkill", [pid, 1234n, 9n]), KILL, "SIGKILL");
  assert.equal(call("tgkill", [pid, 1234n, 15n]), KILL, "SIGTERM");
  assert.equal(call("tgkill", [1n, 1n, 12n]), KILL, "another process");
  assert.equal(call("tgkill", [pid + 1n, 1234n, 12n]), KILL, "the next pid");
});

Deno.test("seccomp: a vCPU thread runs the guest, and opens, spawns and connects nothing", () => {
  const vcpu = buildFilter(VCPU_POLICY);
  const v = (name: string, args: bigint[] = []) =>
    run(vcpu, { nr: syscallNumber(name), arch: AUDIT_ARCH_X86_64, args });
  assert.equal(v("ioctl", [5n, BigInt(KVM.RUN)]), ALLOW);
  assert.equal(v("ioctl", [5n, BigInt(KVM.IRQ_LINE)]), ALLOW);
  for (const req of [KVM.CREATE_VM, KVM.SET_USER_MEMORY_REGION, KVM.SET_REGS, TCGETS]) {
    assert.equal(v("ioctl", [5n, BigInt(req)]), KILL, `ioctl 0x${req.toString(16)}`);
  }
  assert.equal(v("openat"), (SECCOMP_RET.ERRNO | 13) >>> 0, "openat answers EACCES");
  for (
    const name of ["socket", "connect", "execve", "clone", "fork", "ptrace", "mount", "seccomp"]
  ) {
    assert.equal(v(name), KILL, name);
  }
  for (const name of ["futex", "mmap", "munmap", "write", "rt_sigreturn", "exit"]) {
    assert.equal(v(name), ALLOW, name);
  }
  assert.ok(VCPU_POLICY.rules.length < MONITOR_POLICY.rules.length);
});

Deno.test("seccomp: plain entries decide on nr alone, so the kernel can cache them", () => {
  // The kernel caches "always allowed" per nr only when the filter's
  // verdict cannot depend on the arguments: random arguments must not
  // change any verdict outside the argument-checked rules.
  const checked = new Set(["ioctl", "clone", "tgkill", "seccomp"]);
  const random = () => BigInt.asUintN(64, BigInt(Math.floor(Math.random() * 2 ** 52)) << 12n);
  for (let nr = 0; nr <= MAX_SYSCALL; nr++) {
    if (checked.has(syscallName(nr) ?? "")) continue;
    const zero = run(program, { nr, arch: AUDIT_ARCH_X86_64 });
    const args = Array.from({ length: 6 }, random);
    assert.equal(run(program, { nr, arch: AUDIT_ARCH_X86_64, args }), zero);
  }
});

Deno.test("seccomp: dangerous syscalls are killed", () => {
  for (
    const name of [
      "execve",
      "execveat",
      "ptrace",
      "mount",
      "umount2",
      "socket", // of any family but AF_UNIX (vsock's host side)
      "bind",
      "kexec_load",
      "init_module",
      "finit_module",
      "bpf",
      "process_vm_writev",
      "personality",
      "keyctl",
      "add_key",
      "unshare",
      "setns",
      "getppid",
      "fork",
      "vfork",
      "userfaultfd",
      "perf_event_open",
      "io_uring_setup",
      "memfd_create",
      "chroot",
      "pivot_root",
    ]
  ) {
    assert.equal(call(name), KILL, name);
  }
});

Deno.test("seccomp: foreign arch and x32 calls are killed", () => {
  for (const name of ["read", "write", "futex", "exit_group"]) {
    const nr = syscallNumber(name);
    assert.equal(run(program, { nr, arch: AUDIT_ARCH_X86_64 }), ALLOW);
    assert.equal(run(program, { nr, arch: AUDIT_ARCH_I386 }), KILL, `i386 ${name}`);
    assert.equal(run(program, { nr, arch: 0 }), KILL);
    assert.equal(run(program, { nr: nr | X32_SYSCALL_BIT, arch: AUDIT_ARCH_X86_64 }), KILL);
  }
  assert.equal(run(program, { nr: -1, arch: AUDIT_ARCH_X86_64 }), KILL);
});

Deno.test("seccomp: ioctl passes only listed requests", () => {
  const ioctl = (req: bigint) => call("ioctl", [3n, req, 0n]);
  for (const req of [KVM.RUN, KVM.IRQ_LINE, KVM.GET_REGS, KVM.GET_SREGS, TCGETS]) {
    assert.equal(ioctl(BigInt(req)), ALLOW, `0x${req.toString(16)}`);
  }
  // The kernel reads the request as unsigned int: garbage above is ignored.
  assert.equal(ioctl(0xdeadbeef_00000000n | BigInt(KVM.RUN)), ALLOW);
  for (
    const req of [KVM.CREATE_VM, KVM.SET_USER_MEMORY_REGION, KVM.SET_REGS, 0x5412 /* TIOCSTI */]
  ) {
    assert.equal(ioctl(BigInt(req)), KILL, `0x${req.toString(16)}`);
  }
  // KVM_RUN is the hot path: it must reach its verdict quickly.
  const steps = execute(program, {
    nr: SYSCALLS.ioctl,
    arch: AUDIT_ARCH_X86_64,
    args: [5n, BigInt(KVM.RUN)],
  }).steps;
  assert.ok(steps <= 8, `KVM_RUN takes ${steps} instructions`);
});

Deno.test("seccomp: clone creates threads but no namespaces; clone3 answers ENOSYS", () => {
  assert.equal(call("clone", [THREAD_FLAGS]), ALLOW);
  // fork() and vfork-style posix_spawn: a new process, not a thread.
  assert.equal(call("clone", [0x11n]), KILL, "fork (SIGCHLD)");
  assert.equal(call("clone", [BigInt(CLONE_VM | 0x4000 | 0x11)]), KILL, "CLONE_VM|CLONE_VFORK");
  assert.equal(call("clone", [THREAD_FLAGS & ~BigInt(CLONE_THREAD)]), KILL, "no CLONE_THREAD");
  assert.equal(call("clone", [THREAD_FLAGS | (1n << 32n)]), ALLOW, "upper half ignored");
  for (const [name, flag] of Object.entries(CLONE_NEW)) {
    assert.equal(call("clone", [THREAD_FLAGS | BigInt(flag)]), KILL, `CLONE_NEW${name}`);
  }
  assert.equal(call("clone3"), (SECCOMP_RET.ERRNO | 38) >>> 0);
});

Deno.test("seccomp: 64-bit equality and high-word masks", () => {
  const policy: Policy = {
    name: "args",
    rules: [
      { name: "mmap", args: [{ arg: 2, clear: 0x4n }, { arg: 3, clear: 0x1_0000_0000n }] },
      { name: "lseek", args: [{ arg: 0, eq: [5n, 0x1_0000_0005n] }] },
      { name: "fcntl", args: [{ arg: 1, eq32: [1, 2] }], action: { errno: 1 } },
    ],
    defaultAction: "trap",
  };
  const p = buildFilter(policy);
  const x = (name: string, args: bigint[]) =>
    run(p, { nr: syscallNumber(name), arch: AUDIT_ARCH_X86_64, args });
  assert.equal(x("mmap", [0n, 4096n, 3n, 0x22n]), ALLOW);
  assert.equal(x("mmap", [0n, 4096n, 7n, 0x22n]), SECCOMP_RET.TRAP); // PROT_EXEC
  assert.equal(x("mmap", [0n, 4096n, 3n, 0x1_0000_0022n]), SECCOMP_RET.TRAP);
  assert.equal(x("lseek", [5n]), ALLOW);
  assert.equal(x("lseek", [0x1_0000_0005n]), ALLOW);
  assert.equal(x("lseek", [0x2_0000_0005n]), SECCOMP_RET.TRAP);
  assert.equal(x("lseek", [6n]), SECCOMP_RET.TRAP);
  assert.equal(x("fcntl", [0n, 2n]), (SECCOMP_RET.ERRNO | 1) >>> 0);
  assert.equal(x("fcntl", [0n, 3n]), SECCOMP_RET.TRAP);
  assert.equal(x("read", []), SECCOMP_RET.TRAP);
  // The arch check kills whatever the default.
  assert.equal(run(p, { nr: 0, arch: AUDIT_ARCH_I386 }), KILL);
});

Deno.test("seccomp: a policy names each syscall once", () => {
  assert.throws(() => buildFilter({ name: "dup", rules: ["read", "read"] }), /names read twice/);
  assert.throws(
    () => buildFilter({ name: "bad", rules: ["nope" as "read"] }),
    /Unknown syscall: nope/,
  );
  assert.throws(
    () => buildFilter({ name: "empty", rules: [{ name: "ioctl", args: [{ arg: 1, eq32: [] }] }] }),
    /ioctl lists no values/,
  );
  assert.throws(
    () =>
      buildFilter({ name: "arg", rules: [{ name: "ioctl", args: [{ arg: 6 as 0, eq: [1n] }] }] }),
    /checks args\[6\]/,
  );
});

Deno.test("seccomp: --print shows the syscalls, their rules and the disassembly", () => {
  const text = formatPolicy(MONITOR_POLICY);
  const lines = text.split("\n");
  assert.match(lines[0], new RegExp(`${program.length} BPF instructions`));
  assert.ok(
    lines.some((l) => /^ {2}ioctl 16 +args\[1\] \(low 32 bits\) in \{KVM_RUN=0xae80/.test(l)),
  );
  assert.ok(lines.some((l) => /^ {2}clone3 435 +-> ERRNO\(ENOSYS\)/.test(l)));
  assert.ok(lines.includes("  futex 202"));
  assert.match(text, /0001: jeq #0xc000003e, 0002, \d{4} +; AUDIT_ARCH_X86_64/);
  assert.match(text, /jeq #0xae80, \d{4}, \d{4} +; KVM_RUN/);
  assert.match(text, /ret #0x80000000 +; KILL_PROCESS/);
  assert.equal(lines.filter((l) => /^\d{4}: /.test(l)).length, program.length);
});

// --- A real filter, in a child process ------------------------------------

const CHILD = `${ROOT}/tests/fixtures/sandbox_seccomp_child.ts`;

interface Ready {
  pid: number;
  workerTid: number;
  instructions: number;
  buildMs: number;
  installMs: number;
}

/**
 * Starts the child, waits for its filter, hands the parent's view of its
 * threads to `inspect`, sends `command`, and returns how the child ended.
 */
async function sandboxed(command: string, inspect?: (ready: Ready) => void) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CHILD],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const first = out.slice(0, out.indexOf("\n"));
  let ready: Ready | undefined;
  try {
    ready = JSON.parse(first);
    inspect?.(ready!);
  } finally {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(`${command}\n`));
    await w.close();
  }
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const status = await child.status;
  return { status, ready: ready!, rest: out.slice(first.length + 1), stderr: await stderr };
}

Deno.test("seccomp: TSYNC puts every thread under the filter", async () => {
  const r = await sandboxed("work", (ready) => {
    const threads = readThreadStatus(ready.pid);
    assert.ok(threads.length >= 3, `only ${threads.length} threads`);
    assert.ok(threads.some((t) => t.tid === ready.workerTid), "the worker thread is listed");
    for (const t of threads) {
      assert.equal(t.seccomp, 2, `thread ${t.tid} (${t.name}) Seccomp`);
      assert.equal(t.noNewPrivs, 1, `thread ${t.tid} (${t.name}) NoNewPrivs`);
    }
  });
  // Timers, sync and async file reads, a growing thread pool, worker
  // messages and Deno's exit all live within the policy.
  assert.equal(r.status.code, 0, r.stderr);
  assert.equal(r.rest.trim(), "worked true");
  console.log(
    `MONITOR_POLICY: ${r.ready.instructions} instructions, build ${
      r.ready.buildMs.toFixed(2)
    } ms, ` +
      `install ${r.ready.installMs.toFixed(2)} ms`,
  );
});

for (
  const [command, what] of [
    ["main getppid", "getppid from the main thread"],
    ["main socket", "socket from the main thread"],
    ["worker getppid", "getppid from a Worker started before the filter"],
    ["worker ptrace", "ptrace from a Worker started before the filter"],
    ["main clone", "clone without CLONE_THREAD (a fork)"],
    ["main tgkill", "tgkill of another process"],
  ]
) {
  Deno.test(`seccomp: ${what} kills the process with SIGSYS`, async () => {
    const r = await sandboxed(command);
    assert.equal(r.status.signal, "SIGSYS", `code ${r.status.code}: ${r.rest} ${r.stderr}`);
    assert.equal(r.status.code, 128 + 31);
    assert.doesNotMatch(r.rest, /survived/);
  });
}

Deno.test("seccomp: clone3 fails softly with ENOSYS", async () => {
  const r = await sandboxed("main clone3");
  assert.equal(r.status.code, 0, r.stderr);
  assert.equal(r.rest.trim(), "survived clone3 ENOSYS");
});
