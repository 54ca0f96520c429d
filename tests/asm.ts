/**
 * Small guest programs assembled with binutils, and temporary directories:
 * no side effects at import, so benchmarks use them too.
 */

/** A fresh temporary directory. */
export function tmpDir(): string {
  return Deno.makeTempDirSync({ prefix: "volt-test-" });
}

/**
 * Assembles 64-bit code (GNU as, Intel syntax) into a static ELF linked at
 * `base`, the form `volt run --kernel` boots through the 64-bit entry.
 */
export function assembleElf(source: string, base = 0x200000, ldArgs: string[] = []): string {
  const dir = tmpDir();
  Deno.writeTextFileSync(
    `${dir}/g.s`,
    `.intel_syntax noprefix\n.code64\n.globl _start\n_start:\n${source}\n`,
  );
  const as = new Deno.Command("as", { args: ["--64", "-o", `${dir}/g.o`, `${dir}/g.s`] })
    .outputSync();
  if (!as.success) throw new Error(new TextDecoder().decode(as.stderr));
  const ld = new Deno.Command("ld", {
    args: [
      "-static",
      "-nostdlib",
      `-Ttext=0x${base.toString(16)}`,
      ...ldArgs,
      "-e",
      "_start",
      "-o",
      `${dir}/g.elf`,
      `${dir}/g.o`,
    ],
  }).outputSync();
  if (!ld.success) throw new Error(new TextDecoder().decode(ld.stderr));
  return `${dir}/g.elf`;
}
