/**
 * The guest sources from a checkout and from a remote URL (as under
 * `jsr:@volt/vmm`): the file list is complete, and a remote copy is fetched
 * once, byte for byte.
 */
import assert from "node:assert/strict";
import { GUEST_FILES, guestDirFrom } from "../src/guest/guest_sources.ts";
import { VoltError } from "../src/errors.ts";
import { ROOT, tmpDir } from "./helpers.ts";

Deno.test("guest sources: the list names every file the guest build reads", () => {
  const found: string[] = [];
  const walk = (rel: string) => {
    for (const e of Deno.readDirSync(`${ROOT}/guest/${rel}`)) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) walk(p);
      else found.push(p);
    }
  };
  walk("");
  // What the build reads: volt-init's source, the kernel's script, config and patches.
  const read = found.filter((f) =>
    f === "init/volt-init.c" || (f.startsWith("kernel/") && !f.endsWith(".md"))
  ).sort();
  assert.deepEqual([...GUEST_FILES].sort(), read);
});

Deno.test("guest sources: from an http URL they are fetched once into the cache, byte for byte", async () => {
  let requests = 0;
  const ac = new AbortController();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen() {} },
    (req) => {
      requests++;
      const path = new URL(req.url).pathname;
      try {
        return new Response(Deno.readFileSync(`${ROOT}${path}`));
      } catch {
        return new Response("no", { status: 404 });
      }
    },
  );
  try {
    const base = new URL(`http://127.0.0.1:${server.addr.port}/guest/`);
    const cache = tmpDir();
    const dir = await guestDirFrom(base, cache);
    assert.ok(dir.startsWith(cache));
    for (const f of GUEST_FILES) {
      assert.deepEqual(
        Deno.readFileSync(`${dir}/${f}`),
        Deno.readFileSync(`${ROOT}/guest/${f}`),
        f,
      );
    }
    assert.equal(requests, GUEST_FILES.length);
    assert.equal(await guestDirFrom(base, cache), dir);
    assert.equal(requests, GUEST_FILES.length, "the second call fetched again");
    await assert.rejects(
      () => guestDirFrom(new URL(`http://127.0.0.1:${server.addr.port}/nothing/`), cache),
      (e: unknown) =>
        e instanceof VoltError &&
        /^Cannot fetch the guest sources \(.*\): HTTP 404$/.test(e.message),
    );
    // A checkout's own directory is used as it is.
    assert.equal(await guestDirFrom(new URL(`file://${ROOT}/guest/`)), `${ROOT}/guest`);
  } finally {
    ac.abort();
    await server.finished;
  }
});
