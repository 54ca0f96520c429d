/**
 * Kernel modules for a distribution kernel's initramfs: each module's
 * dependencies from its `.modinfo` section (the package ships no
 * modules.dep, which depmod makes at install), and the order to load a set
 * of them in.
 *
 * @module
 */

import { ELF, ELF_MAGIC } from "../../ffi/bootparam.ts";
import { VoltError } from "../errors.ts";

/** A module's `.modinfo` entries (`key=value`, NUL-separated), e.g. `depends`. */
export function modinfo(ko: Uint8Array, name = "module"): Map<string, string> {
  const bad = (why: string) => new VoltError(`${name}: ${why}`, "input");
  if (ko.length < ELF.ehdr_size) throw bad("not an ELF file");
  const dv = new DataView(ko.buffer, ko.byteOffset, ko.byteLength);
  if (dv.getUint32(0, true) !== ELF_MAGIC) throw bad("not an ELF file");
  const shoff = Number(dv.getBigUint64(ELF.shoff, true));
  const shnum = dv.getUint16(ELF.shnum, true);
  const strndx = dv.getUint16(ELF.shstrndx, true);
  if (dv.getUint16(ELF.shentsize, true) !== ELF.shdr_size) throw bad("odd section headers");
  if (shoff + shnum * ELF.shdr_size > ko.length || strndx >= shnum) throw bad("truncated");
  const section = (i: number) => {
    const h = shoff + i * ELF.shdr_size;
    const off = Number(dv.getBigUint64(h + ELF.sh_offset, true));
    const size = Number(dv.getBigUint64(h + ELF.sh_size, true));
    if (off + size > ko.length) throw bad("truncated");
    return { name: dv.getUint32(h + ELF.sh_name, true), bytes: ko.subarray(off, off + size) };
  };
  const strtab = section(strndx).bytes;
  const dec = new TextDecoder();
  const nameAt = (at: number) => {
    const end = strtab.indexOf(0, at);
    return dec.decode(strtab.subarray(at, end < 0 ? strtab.length : end));
  };
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (nameAt(s.name) !== ".modinfo") continue;
    const out = new Map<string, string>();
    for (const kv of dec.decode(s.bytes).split("\0")) {
      const eq = kv.indexOf("=");
      if (eq > 0 && !out.has(kv.slice(0, eq))) out.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
    return out;
  }
  throw bad("has no .modinfo section");
}

/** A module's name as the kernel and `depends` spell it (`-` is `_`). */
export function moduleName(file: string): string {
  return file.replace(/^.*\//, "").replace(/\.ko$/, "").replaceAll("-", "_");
}

/**
 * The modules to load for `wanted`, dependencies first: each as its path
 * in `modules` (name → path), read with `read`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadOrder } from "./kmod.ts";
 * const deps: Record<string, string[]> = { a: ["b"], b: [] };
 * const order = loadOrder(["a"], new Map([["a", "a.ko"], ["b", "b.ko"]]), (p) => deps[p[0]]);
 * assert.deepEqual(order, ["b.ko", "a.ko"]);
 * ```
 */
export function loadOrder(
  wanted: readonly string[],
  modules: ReadonlyMap<string, string>,
  depends: (path: string) => string[],
): string[] {
  const order: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (name: string) => {
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting") {
      throw new VoltError(`Kernel modules depend on each other in a loop at ${name}`, "input");
    }
    const path = modules.get(name);
    if (!path) throw new VoltError(`The kernel package has no module ${name}`, "input");
    state.set(name, "visiting");
    for (const d of depends(path)) visit(d);
    state.set(name, "done");
    order.push(path);
  };
  for (const w of wanted) visit(w);
  return order;
}

/** The `depends` list of a module file's `.modinfo`. */
export function moduleDepends(ko: Uint8Array, name?: string): string[] {
  const d = modinfo(ko, name).get("depends") ?? "";
  return d.split(",").filter((s) => s.length > 0);
}
