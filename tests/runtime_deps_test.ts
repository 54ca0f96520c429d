/**
 * What replaced the Node built-ins and the logging package in the
 * monitor's runtime (sha256, option parsing, paths, log lines), checked
 * against the real thing where there is one.
 */
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { sha256 } from "../src/snapshot/sha256.ts";
import { parse } from "../src/cli/options.ts";
import { resolvePath } from "../src/cli/paths.ts";
import { configureLogging, formatLine, logger } from "../src/log.ts";
import { VoltError } from "../src/errors.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("sha256 equals WebCrypto's at every padding boundary and over split parts", async () => {
  const lengths = [...Array(200).keys(), 1000, 4095, 4096, 65537, 1 << 20];
  for (const n of lengths) {
    const data = new Uint8Array(n).map((_, i) => (i * 31 + n) & 0xff);
    const want = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
    assert.equal(hex(sha256([data])), want, `length ${n}`);
    const cut = Math.floor(n / 3);
    assert.equal(
      hex(sha256([data.subarray(0, cut), new Uint8Array(0), data.subarray(cut)])),
      want,
      `length ${n}, in parts`,
    );
  }
});

const OPTS = {
  kernel: { type: "string" },
  disk: { type: "string", multiple: true },
  rw: { type: "boolean" },
  output: { type: "string", short: "o" },
} as const;

Deno.test("parse: values, repeats, short names; every misuse is a one-line usage error", () => {
  assert.deepEqual(
    parse(["--kernel=k", "--disk", "a", "--disk=b,rw", "--rw", "-o", "x"], OPTS).values,
    { kernel: "k", disk: ["a", "b,rw"], rw: true, output: "x" },
  );
  assert.deepEqual(parse(["-ofile", "--kernel", "-"], OPTS).values, {
    output: "file",
    kernel: "-",
  });
  assert.deepEqual(parse(["--kernel="], OPTS).values, { kernel: "" });
  const bad: [string[], RegExp][] = [
    [["--frob"], /^Unknown option '--frob'$/],
    [["-x"], /^Unknown option '-x'$/],
    [["--kernel"], /^Option '--kernel <value>' argument missing$/],
    [["--kernel", "--rw"], /ambiguous: to give a value starting with a dash, use '--kernel=--rw'$/],
    [["--rw=yes"], /^Option '--rw' does not take an argument$/],
    [["stray"], /^Unexpected argument 'stray'/],
    [["--"], /^Unexpected argument '--'/],
    [["--__proto__"], /^Unknown option '--__proto__'$/],
    [["--toString", "x"], /^Unknown option '--toString'$/],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parse(args, OPTS),
      (e) => e instanceof VoltError && e.kind === "usage" && re.test(e.message),
      args.join(" "),
    );
  }
});

Deno.test("resolvePath equals node:path's resolve", () => {
  const cases = [
    ["a"],
    ["/a/b/../c"],
    ["/a", "b", "../c/./d//"],
    ["/a", "/b", "c"],
    ["x/y", "../../.."],
    ["/"],
    ["/a/.."],
    ["/tmp", "/run/volt/pool.sock"],
  ];
  for (const c of cases) assert.equal(resolvePath(...c), resolve(...c), c.join(" "));
});

Deno.test("log lines: level tag, category, placeholders, literal braces, level filter", () => {
  assert.equal(
    formatLine("warning", "pool", "{n} of {what}: {obj} {{x}} {missing}", {
      n: 3,
      what: "monitors",
      obj: { a: [1] },
    }),
    "[WRN] volt·pool: 3 of monitors: { a: [ 1 ] } {x} undefined\n",
  );
  assert.equal(formatLine("trace", "", "x"), "[TRC] volt: x\n");
  // The filter: what is below the level never reaches stderr (a throwing stderr would tell).
  configureLogging("error");
  logger("t").info("{boom}", {
    get boom() {
      throw new Error("formatted below the level");
    },
  });
  configureLogging("warning");
});
