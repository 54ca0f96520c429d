import assert from "node:assert/strict";
import { parseSize, resolveConfig } from "../src/vmm/config.ts";
import { VoltError } from "../src/errors.ts";

Deno.test("sizes: bytes and K/M/G suffixes, with or without iB", () => {
  assert.equal(parseSize("128M"), 128 << 20);
  assert.equal(parseSize("1G"), 1 << 30);
  assert.equal(parseSize("512MiB"), 512 << 20);
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize(8 << 20), 8 << 20);
  for (const bad of ["", "abc", "12Q", "-1M", "1.5G"]) {
    assert.throws(() => parseSize(bad), VoltError, bad);
  }
});

Deno.test("config: defaults and range checks", () => {
  const c = resolveConfig({ kernel: "k" });
  assert.deepEqual([c.memory, c.cpus, c.bootProtocol, c.cpuTemplate, c.console], [
    128 << 20,
    1,
    "auto",
    "auto",
    "stdout",
  ]);
  assert.throws(() => resolveConfig({ kernel: "k", memory: "4M" }), /too small/);
  assert.throws(() => resolveConfig({ kernel: "k", memory: "1T" }), /too large/);
  assert.throws(() => resolveConfig({ kernel: "k", cpus: 0 }), /1 to 32/);
  assert.throws(() => resolveConfig({ kernel: "k", cpus: 33 }), /1 to 32/);
  assert.throws(() => resolveConfig({ kernel: "" }), /No kernel/);
  assert.throws(
    () => resolveConfig({ kernel: "k", bootProtocol: "efi" as "pvh" }),
    /Unknown boot protocol/,
  );
});
