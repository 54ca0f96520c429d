/**
 * Fuzz targets of the seccomp filter: the BPF emulator's verdict for a
 * random call must be what the policy says, read from the Policy itself,
 * for the monitor's policy and for random ones the compiler has to lay out
 * (long value lists included, which need jump trampolines).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { execute, type SeccompInput } from "../../src/sandbox/bpf.ts";
import {
  type Action,
  actionValue,
  type ArgCheck,
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  buildFilter,
  MONITOR_POLICY,
  type Policy,
  type SyscallName,
  syscallName,
  type SyscallRule,
  SYSCALLS,
  VCPU_POLICY,
  X32_SYSCALL_BIT,
} from "../../src/sandbox/seccomp.ts";
import { defineTarget, type Target } from "./target.ts";

const u32 = fc.nat({ max: 0xffffffff });

const ALL_NAMES = Object.keys(SYSCALLS) as SyscallName[];
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

function argPasses(c: ArgCheck, arg: bigint): boolean {
  const v = BigInt.asUintN(64, arg);
  if ("eq32" in c) {
    const values = Array.isArray(c.eq32) ? c.eq32 as readonly number[] : Object.values(c.eq32);
    return values.some((x) => (x >>> 0) === Number(v & 0xffffffffn));
  }
  if ("eq" in c) return c.eq.some((x) => BigInt.asUintN(64, x) === v);
  if ("set" in c) return (v & BigInt.asUintN(64, c.set)) === BigInt.asUintN(64, c.set);
  return (v & BigInt.asUintN(64, c.clear)) === 0n;
}

/** What a policy says about one call, read from the Policy, not the filter. */
function policyVerdict(policy: Policy, input: SeccompInput): number {
  const kill = actionValue("kill-process");
  if ((input.arch >>> 0) !== AUDIT_ARCH_X86_64) return kill;
  const nr = input.nr >>> 0;
  if (nr & X32_SYSCALL_BIT) return kill;
  const deny = actionValue(policy.defaultAction ?? "kill-process");
  const rule = policy.rules.map((r): SyscallRule => typeof r === "string" ? { name: r } : r)
    .find((r) => SYSCALLS[r.name] === nr);
  if (!rule) return deny;
  const args = input.args ?? [];
  const pass = (rule.args ?? []).every((c) => argPasses(c, args[c.arg] ?? 0n));
  return pass ? actionValue(rule.action ?? "allow") : deny;
}

const action: fc.Arbitrary<Action> = fc.oneof(
  fc.constantFrom<Action>("allow", "allow", "kill-process", "kill-thread", "trap", "log"),
  fc.nat({ max: 0xffff }).map((errno) => ({ errno })),
);

const argIndex = fc.nat({ max: 5 }) as fc.Arbitrary<0 | 1 | 2 | 3 | 4 | 5>;
const argCheck: fc.Arbitrary<ArgCheck> = fc.oneof(
  // Up to 300 values: the dispatch then needs jumps longer than a u8, through trampolines.
  fc.record({ arg: argIndex, eq32: fc.array(u32, { minLength: 1, maxLength: 8 }) }),
  fc.record({ arg: argIndex, eq: fc.array(u64, { minLength: 1, maxLength: 4 }) }),
  fc.record({ arg: argIndex, clear: u64 }),
  fc.record({ arg: argIndex, set: u64 }),
);

const rule: fc.Arbitrary<SyscallRule> = fc.record({
  name: fc.constantFrom(...ALL_NAMES),
  args: fc.option(fc.array(argCheck, { maxLength: 3 }), { nil: undefined }),
  action: fc.option(action, { nil: undefined }),
}, { requiredKeys: ["name"] });

/** One rule whose value list alone is longer than a conditional jump reaches (255). */
const longRule: fc.Arbitrary<SyscallRule> = fc.record({
  name: fc.constantFrom(...ALL_NAMES),
  args: fc.tuple(argIndex, fc.array(u32, { minLength: 256, maxLength: 264 }))
    .map(([arg, eq32]): ArgCheck[] => [{ arg, eq32 }]),
  action: fc.option(action, { nil: undefined }),
}, { requiredKeys: ["name", "args"] });

// Up to 30 small rules and, in one policy of three, a long one: well under BPF_MAXINSNS,
// and few enough instructions that the assembler's trampoline passes stay cheap.
const policy: fc.Arbitrary<Policy> = fc.record({
  name: fc.constant("fuzz"),
  rules: fc.tuple(
    fc.uniqueArray(rule, { selector: (r) => r.name, maxLength: 30 }),
    fc.oneof(
      { arbitrary: fc.constant(undefined), weight: 2 },
      { arbitrary: longRule, weight: 1 },
    ),
  ).map(([rules, long]) =>
    long && !rules.some((r) => r.name === long.name) ? [long, ...rules] : rules
  ),
  defaultAction: fc.option(action, { nil: undefined }),
}, { requiredKeys: ["name", "rules"] });

/** Calls aimed at a policy: its own syscalls with its own argument values half the time. */
function calls(p: Policy): fc.Arbitrary<SeccompInput[]> {
  const rules = p.rules.map((r): SyscallRule => typeof r === "string" ? { name: r } : r);
  const values = rules.flatMap((r) =>
    (r.args ?? []).flatMap((c) =>
      "eq32" in c
        ? (Array.isArray(c.eq32) ? c.eq32 as number[] : Object.values(c.eq32)).map(BigInt)
        : "eq" in c
        ? [...c.eq]
        : "set" in c
        ? [c.set, c.set & ~(c.set & -c.set), 2n ** 64n - 1n, 0n]
        : [c.clear, ~c.clear & (2n ** 64n - 1n), 0n]
    )
  );
  const arg = values.length
    ? fc.oneof(
      fc.constantFrom(...values),
      fc.constantFrom(...values).map((v) => v | (v << 32n)),
      u64,
    )
    : u64;
  const nr = fc.oneof(
    {
      arbitrary: rules.length
        ? fc.constantFrom(...rules.map((r) => SYSCALLS[r.name]))
        : fc.nat({ max: 450 }),
      weight: 4,
    },
    { arbitrary: fc.nat({ max: 460 }), weight: 2 },
    { arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), weight: 1 },
    { arbitrary: fc.nat({ max: 460 }).map((n) => n | X32_SYSCALL_BIT), weight: 1 },
  );
  const arch = fc.oneof(
    { arbitrary: fc.constant(AUDIT_ARCH_X86_64), weight: 8 },
    { arbitrary: fc.constant(AUDIT_ARCH_I386), weight: 1 },
    { arbitrary: u32, weight: 1 },
  );
  return fc.array(
    fc.record({ nr, arch, ip: u64, args: fc.array(arg, { minLength: 6, maxLength: 6 }) }),
    { minLength: 1, maxLength: 16 },
  );
}

function checkSeccomp(p: Policy, inputs: SeccompInput[], program = buildFilter(p)): void {
  for (const input of inputs) {
    const got = execute(program, input);
    const want = policyVerdict(p, input);
    assert.equal(
      got.value,
      want,
      `${syscallName(input.nr >>> 0) ?? input.nr}: filter says 0x${
        got.value.toString(16)
      }, policy 0x${want.toString(16)}`,
    );
    // Classic BPF only jumps forward: never more steps than instructions.
    assert.ok(got.steps <= program.length);
  }
}

const MONITOR_PROGRAM = buildFilter(MONITOR_POLICY);
const VCPU_PROGRAM = buildFilter(VCPU_POLICY);

/** The seccomp targets. */
export const SECCOMP_TARGETS: Target[] = [
  defineTarget({
    name: "seccomp-monitor",
    about: "the monitor's filter, emulated, gives each random call the verdict MONITOR_POLICY says",
    arbitrary: calls(MONITOR_POLICY),
    check: (inputs: SeccompInput[]) => checkSeccomp(MONITOR_POLICY, inputs, MONITOR_PROGRAM),
  }),
  defineTarget({
    name: "seccomp-vcpu",
    about:
      "each vCPU thread's filter, emulated, gives each random call the verdict VCPU_POLICY says",
    arbitrary: calls(VCPU_POLICY),
    check: (inputs: SeccompInput[]) => checkSeccomp(VCPU_POLICY, inputs, VCPU_PROGRAM),
  }),
  defineTarget({
    name: "seccomp-policies",
    about: "random policies compiled and emulated give the verdicts the policy says",
    arbitrary: policy.chain((p) => calls(p).map((inputs) => ({ p, inputs }))),
    check: ({ p, inputs }: { p: Policy; inputs: SeccompInput[] }) => checkSeccomp(p, inputs),
  }),
];
