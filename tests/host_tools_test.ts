import assert from "node:assert/strict";
import { runTool } from "../src/guest/host_tools.ts";
import { VoltError } from "../src/errors.ts";

Deno.test("host tools: a tool past its time limit is stopped with one line", () => {
  const t0 = performance.now();
  assert.throws(
    () => runTool("sleep", ["30"], { limitSec: 1 }),
    (e) =>
      e instanceof VoltError &&
      /^sleep 30 did not finish within 1 s and was stopped$/.test(e.message),
  );
  assert.ok(performance.now() - t0 < 10_000);
});

Deno.test("host tools: output within the limit; a missing tool is named with its package", () => {
  assert.equal(runTool("echo", ["hi"], { limitSec: 5 }), "hi\n");
  assert.throws(
    () => runTool("volt-no-such-tool", [], { limitSec: 5, pkg: "volt-pkg" }),
    /volt-no-such-tool.*volt-pkg/,
  );
});
