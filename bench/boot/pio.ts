/**
 * PIO exit handling: Volt's vCPU loop against a minimal C loop, on the
 * same kind of guest (a tight loop of 1-byte writes to port 0x80).
 *
 * @module
 */

import { createVm } from "../../mod.ts";
import { assembleElf, tmpDir } from "../../tests/asm.ts";

/** Exits handled and the time they took. */
export interface PioRate {
  exits: number;
  seconds: number;
  /** Exits per second. */
  rate: number;
}

async function voltRun(n: number): Promise<number> {
  const kernel = assembleElf(`
  mov ecx, ${n}
  test ecx, ecx
  jz 2f
1: out 0x80, al
  dec ecx
  jnz 1b
2: mov dx, 0xf4
  xor eax, eax
  out dx, eax
  hlt`);
  const vm = await createVm({ kernel, console: "message" });
  const t0 = performance.now();
  vm.start();
  const exit = await vm.wait();
  await vm.settled();
  const t1 = performance.now();
  vm.cleanup();
  if (exit.code !== 0) throw new Error(`PIO guest: ${exit.message}`);
  return (t1 - t0) / 1000;
}

/**
 * Volt's rate: the difference between a run of `n` writes and an empty
 * run, so VM start and stop do not count.
 *
 * @example
 * ```ts ignore
 * import { voltPioRate } from "./pio.ts";
 * console.log((await voltPioRate(100_000)).rate);
 * ```
 */
export async function voltPioRate(n: number): Promise<PioRate> {
  const empty = await voltRun(0);
  const full = await voltRun(n);
  const seconds = full - empty;
  return { exits: n, seconds, rate: n / seconds };
}

/**
 * The C loop's rate (bench/boot/pio_loop.c, built with `cc -O2`).
 *
 * @example
 * ```ts ignore
 * import { cPioRate } from "./pio.ts";
 * console.log(cPioRate(100_000).rate);
 * ```
 */
export function cPioRate(n: number): PioRate {
  const exe = `${tmpDir()}/pio_loop`;
  const src = new URL("./pio_loop.c", import.meta.url).pathname;
  const cc = new Deno.Command("cc", { args: ["-O2", "-o", exe, src] }).outputSync();
  if (!cc.success) throw new Error(`cc pio_loop.c: ${new TextDecoder().decode(cc.stderr)}`);
  const out = new Deno.Command(exe, { args: [String(n)] }).outputSync();
  if (!out.success) throw new Error(`pio_loop: ${new TextDecoder().decode(out.stderr)}`);
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  return { exits: r.exits, seconds: r.seconds, rate: r.exits / r.seconds };
}
