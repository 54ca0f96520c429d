import assert from "node:assert/strict";
import { CAP_SETPCAP } from "../ffi/capability.ts";
import { capLastCap, parseStatus, readThreadStatus } from "../src/sandbox/caps.ts";
import { jailChild } from "./helpers.ts";

/** Why the capability tests cannot show anything here, if they cannot. */
function unprivileged(): string | undefined {
  const eff = readThreadStatus()[0]?.capEff ?? 0n;
  if (!(eff & (1n << BigInt(CAP_SETPCAP)))) return "not root (no CAP_SETPCAP)";
  return undefined;
}
const reason = unprivileged();
if (reason) console.error(`Capability drop tests skipped: ${reason}`);

interface Thread {
  tid: number;
  name: string;
  capInh: string;
  capPrm: string;
  capEff: string;
  capBnd: string;
  capAmb: string;
  noNewPrivs: number;
  seccomp: number;
}

const child = (mode: string) => jailChild([mode]);

Deno.test("caps: status lines parse to masks", () => {
  const s = parseStatus(
    "Name:\ttokio-runtime-w\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n" +
      "CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n" +
      "NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n",
  );
  assert.equal(s.name, "tokio-runtime-w");
  assert.equal(s.capEff, 0x1ffffffffffn);
  assert.equal(s.capInh, 0n);
  assert.equal(s.noNewPrivs, 1);
  assert.equal(s.seccomp, 2);
  assert.ok(readThreadStatus().length >= 1);
  assert.ok(capLastCap() >= 40);
});

Deno.test({
  name: "caps: dropping on the main thread leaves Deno's other threads privileged",
  ignore: reason !== undefined,
  fn: async () => {
    const r = await child("caps-inplace");
    const threads = r.threads as Thread[];
    const main = threads.find((t) => t.tid === r.pid)!;
    for (const k of ["capEff", "capPrm", "capInh", "capAmb", "capBnd"] as const) {
      assert.equal(main[k], "0", `main ${k}`);
    }
    const others = threads.filter((t) => t.tid !== r.pid);
    assert.ok(others.length >= 1);
    // The trap: capset and PR_CAPBSET_DROP act on the calling thread only.
    assert.ok(
      others.some((t) => t.capEff !== "0" && t.capBnd !== "0"),
      `no privileged thread left: ${JSON.stringify(others)}`,
    );
    console.log(
      `dropCapabilities on one thread: ${(r.dropMs as number).toFixed(2)} ms; ` +
        `${
          others.filter((t) => t.capEff !== "0").length
        }/${others.length} other threads kept theirs`,
    );
  },
});

Deno.test({
  name: "caps: through the jail every thread of the new image has none",
  ignore: reason !== undefined,
  fn: async () => {
    const r = await child("caps-jail");
    const threads = r.threads as Thread[];
    assert.ok(threads.length >= 3, `only ${threads.length} threads`);
    for (const t of threads) {
      for (const k of ["capEff", "capPrm", "capInh", "capAmb", "capBnd"] as const) {
        assert.equal(t[k], "0", `thread ${t.tid} (${t.name}) ${k}`);
      }
      assert.equal(t.noNewPrivs, 1, `thread ${t.tid} NoNewPrivs`);
    }
    console.log(`jail → exec → report: ${r.execMs} ms, ${threads.length} threads all at zero`);
  },
});

Deno.test({
  name: "caps: a jail whose program cannot be executed throws one line",
  ignore: reason !== undefined,
  fn: async () => {
    const r = await child("jail-missing");
    assert.equal(r.name, "VoltError");
    assert.equal(r.message, "Executing /nonexistent/volt in the jail failed: ENOENT");
  },
});
