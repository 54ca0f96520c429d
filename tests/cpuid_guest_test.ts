/**
 * What a guest really sees when it executes `cpuid`, reported by a small
 * guest on the serial port: where KVM applies the vCPU's table (hardware
 * KVM, the helper VM) exactly the table; on PVM the host's own CPU, so the
 * kernel command line must hide what PVM's emulator lacks. And where the
 * table offers XSAVE, the sizes the guest reads back after loading XCR0
 * agree with the state components (Linux's "XSAVE consistency" check).
 */
import assert from "node:assert/strict";
import { createVm } from "../mod.ts";
import {
  cmdlineMasks,
  type CpuidEntry,
  FEATURES,
  PVM_UNEMULATED,
  vcpuCpuid,
} from "../src/arch/x86_64/cpuid.ts";
import { XSAVE_LEGACY_SIZE } from "../src/arch/x86_64/xstate.ts";
import { selectTemplate } from "../src/vmm/builder.ts";
import { Kvm } from "../src/vmm/kvm.ts";
import { cpuidProbe } from "./guests.ts";
import { needsFullKvm, needsKvm, pvmHost } from "./helpers.ts";

const LEAVES: Array<[number, number]> = [[1, 0], [7, 0], [0xd, 0], [0x80000001, 0]];

/** Boots the probe; returns the guest's view by "leaf.sub" and the table it was given. */
async function probe(xcr0?: number) {
  const vm = await createVm({ kernel: cpuidProbe(LEAVES, xcr0), console: "message" });
  let out = "";
  vm.onConsole = (b) => (out += new TextDecoder().decode(b));
  const exit = await vm.run(60_000);
  assert.equal(exit.code, 0, `${exit.message}\n${out}`);
  const seen = new Map<string, number[]>();
  for (const m of out.matchAll(/^([0-9a-f]{8})\.([0-9a-f]{8}) ((?:[0-9a-f]{8} ?){4})$/gm)) {
    seen.set(
      `${parseInt(m[1], 16)}.${parseInt(m[2], 16)}`,
      m[3].trim().split(" ").map((h) => parseInt(h, 16)),
    );
  }
  return { out, seen, cmdline: vm.built.cmdline, template: vm.built.template };
}

function tableOf(template: ReturnType<typeof selectTemplate>): CpuidEntry[] {
  const kvm = Kvm.open();
  try {
    return vcpuCpuid(kvm.supportedCpuid(), { cpu: 0, cpus: 1, template });
  } finally {
    kvm.close();
  }
}

const REG = { eax: 0, ebx: 1, ecx: 2, edx: 3 } as const;
/** Set by the guest's own CR4 (OSXSAVE, OSPKE), not by the table. */
const DYNAMIC = new Set(["osxsave", "ospke"]);

Deno.test({
  ...needsKvm,
  name: "CPUID in the guest: the table where KVM applies it, else masked on the command line (PVM)",
  async fn() {
    const { seen, cmdline, template } = await probe();
    assert.equal(seen.size, LEAVES.length, "the probe reported every leaf");
    const table = tableOf(template);
    const bit = (name: string, view: "guest" | "table") => {
      const [leaf, sub, reg, b] = FEATURES[name];
      const regs = view === "guest" ? seen.get(`${leaf}.${sub}`) : (() => {
        const e = table.find((x) => x.function === leaf && x.index === sub);
        return e && [e.eax, e.ebx, e.ecx, e.edx];
      })();
      return regs ? (regs[REG[reg]] >>> b) & 1 : 0;
    };
    const probed = Object.keys(FEATURES).filter((n) =>
      LEAVES.some(([l, s]) => FEATURES[n][0] === l && FEATURES[n][1] === s) && !DYNAMIC.has(n)
    );
    if (!pvmHost) {
      for (const n of probed) assert.equal(bit(n, "guest"), bit(n, "table"), n);
      return;
    }
    // PVM: the guest's cpuid reads the host's CPU. What PVM's emulator
    // lacks must then be hidden from the kernel by its command line.
    const masked = cmdlineMasks(cmdline);
    for (const n of PVM_UNEMULATED) {
      if (bit(n, "guest")) {
        assert.ok(masked.has(n), `the guest sees ${n}; the command line must hide it`);
      }
      assert.equal(bit(n, "table"), 0, `the table hides ${n} too`);
    }
  },
});

Deno.test({
  // PVM's emulator has no XSETBV (the kernel is told noxsave): in the helper VM there.
  ...needsFullKvm,
  name: "CPUID in the guest: after loading XCR0, leaf 0xD's size matches its components",
  async fn() {
    const template = selectTemplate("auto");
    const table = tableOf(template);
    const d0 = table.find((e) => e.function === 0xd && e.index === 0);
    const { out, seen } = await probe(d0?.eax ?? 1);
    if (!d0 || d0.eax === 0) {
      assert.match(out, /^no xsave$/m, "no XSAVE in the table: the guest sees none");
      return;
    }
    assert.equal(parseInt(/^xcr0 ([0-9a-f]{8})$/m.exec(out)![1], 16), d0.eax);
    let size = XSAVE_LEGACY_SIZE;
    for (const e of table) {
      if (e.function === 0xd && e.index >= 2 && ((d0.eax >>> e.index) & 1)) {
        size = Math.max(size, e.ebx + e.eax);
      }
    }
    // The nested KVM of the helper VM without its template reported 576 here.
    assert.equal(seen.get("13.0")![1], size, `XCR0 ${d0.eax.toString(16)}: ${out}`);
  },
});
