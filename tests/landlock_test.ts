import assert from "node:assert/strict";
import { ACCESS_FS, fsRightsForAbi, LANDLOCK_SCOPE_ABI } from "../ffi/landlock.ts";
import { accessRights, landlockAbi } from "../src/sandbox/landlock.ts";
import { jailChild, tmpDir } from "./helpers.ts";

const abi = landlockAbi();
const reason = typeof abi === "number" ? undefined : abi.unsupported;
if (reason) console.error(`Landlock tests skipped: ${reason}`);

/** A file every user may read that the jail does not allow. */
function forbiddenFile(): string {
  for (const p of ["/etc/hostname", "/etc/passwd"]) {
    try {
      Deno.readFileSync(p);
      return p;
    } catch { /* next */ }
  }
  throw new Error("No readable file under /etc to probe with");
}

const child = jailChild;

Deno.test("landlock: rights follow the ABI", () => {
  assert.equal(fsRightsForAbi(0), 0n);
  assert.equal(fsRightsForAbi(1), 0x1fffn);
  assert.equal(fsRightsForAbi(2), 0x3fffn);
  assert.equal(fsRightsForAbi(3), 0x7fffn);
  assert.equal(fsRightsForAbi(4), 0x7fffn);
  assert.equal(fsRightsForAbi(5), 0xffffn);
  assert.equal(fsRightsForAbi(7), 0xffffn);
  assert.equal(accessRights("read", 1), ACCESS_FS.READ_FILE | ACCESS_FS.READ_DIR);
  assert.equal(
    accessRights("exec-read", 3),
    ACCESS_FS.READ_FILE | ACCESS_FS.READ_DIR | ACCESS_FS.EXECUTE,
  );
  // readwrite on an old ABI must not name rights the kernel does not know.
  assert.equal(accessRights("readwrite", 1), 0x1fffn & ~ACCESS_FS.EXECUTE);
  assert.ok(accessRights("readwrite", 5) & ACCESS_FS.IOCTL_DEV);
  assert.ok(!(accessRights("readwrite", 5) & ACCESS_FS.EXECUTE));
});

Deno.test("landlock: the ABI query answers a number or a reason", () => {
  if (typeof abi === "number") assert.ok(abi >= 1);
  else assert.match(abi.unsupported, /^Landlock /);
});

Deno.test({
  name: "landlock: applying on one thread reports the ABI and its cost",
  ignore: reason !== undefined,
  fn: async () => {
    const dir = tmpDir();
    const r = await child(["landlock-inplace", dir]);
    assert.equal(r.abi, abi);
    console.log(`applyLandlock (ABI ${r.abi}): ${(r.landlockMs as number).toFixed(2)} ms`);
  },
});

Deno.test({
  name: "landlock: the signal scope stops signals leaving the domain; the probe sees the domain",
  ignore: reason !== undefined,
  fn: async () => {
    const r = await child(["landlock-scope", String(Deno.pid)]);
    assert.equal(r.before, "ok");
    assert.equal(r.enforcedBefore, false);
    assert.equal(r.enforcedAfter, true);
    assert.equal(r.self, "ok", "its own process is inside the domain");
    if ((r.abi as number) >= LANDLOCK_SCOPE_ABI) {
      assert.equal(r.scoped, true);
      assert.equal(r.after, "EPERM", "kill(test runner, 0) from the scoped domain");
      const u = await child(["landlock-scope", String(Deno.pid), "unscoped"]);
      assert.equal(u.after, "ok", "without the scope the signal goes through");
    } else {
      assert.equal(r.scoped, false);
    }
  },
});

Deno.test({
  name: "landlock: through the jail, the main thread and pool threads are confined",
  ignore: reason !== undefined,
  fn: async () => {
    const dir = tmpDir();
    const file = `${dir}/allowed.txt`;
    Deno.writeTextFileSync(file, "allowed\n");
    const forbidden = forbiddenFile();
    const r = await child(["landlock-jail", file, forbidden]);
    assert.equal(r.allowed, "ok");
    assert.equal(r.allowedAsync, "ok");
    assert.equal(r.cacheWrite, "PermissionDenied", "writing Deno's cache");
    assert.equal(r.sync, "PermissionDenied", "readFileSync from the main thread");
    assert.equal(r.async, "PermissionDenied", "Deno.readFile served by a pool thread");
    assert.deepEqual(r.many, Array(8).fill("PermissionDenied"));
    console.log(`jail with Landlock → exec → probe: ${r.execMs} ms`);
  },
});
