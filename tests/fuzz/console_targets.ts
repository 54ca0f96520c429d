/**
 * Fuzz target of the console filter: whatever a guest prints, `safe` mode
 * lets no string sequence, terminal query, charset switch or C1 control
 * through, gives the same bytes however the output is split, and keeps
 * printable text that holds no escape.
 */

import fc from "fast-check";
import { ConsoleFilter } from "../../src/vmm/console_filter.ts";
import { defineTarget, type Target } from "./target.ts";

/** Fragments that make up hostile console output, mixed with random bytes. */
const FRAGMENTS = [
  "\x1b]52;c;ZXZpbA==\x07",
  "\x1b]0;title\x1b\\",
  "\x1bP$qm\x1b\\",
  "\x1b_apc\x1b\\",
  "\x1b[6n",
  "\x1b[c",
  "\x1b[>c",
  "\x1b[21t",
  "\x1b[?1049h",
  "\x1b[?1000h",
  "\x1b(0",
  "\x0e",
  "\x1b[1;31m",
  "\x1b[2J",
  "\x1b[H",
  "\x1b[?25l",
  "\u009b6n",
  "\u009d52;c;x\u009c",
  "\x1b#8",
  "\x1bZ",
  "\x1bc",
  "\x1b[",
  "\x1b]",
  "\x1b",
  "é",
  "ok\n",
].map((s) => new TextEncoder().encode(s));

const output = fc.array(
  fc.oneof(
    fc.constantFrom(...FRAGMENTS),
    fc.uint8Array({ maxLength: 16 }),
  ),
  { maxLength: 40 },
).map((parts) => {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
});

/** Where in the output an escape introduces anything but a kept sequence. */
function unsafeAt(out: Uint8Array): number {
  for (let i = 0; i < out.length; i++) {
    const b = out[i];
    if (b === 0xc2 && i + 1 < out.length && out[i + 1] >= 0x80 && out[i + 1] <= 0x9f) return i;
    if (b < 0x20 && ![0x07, 0x08, 0x09, 0x0a, 0x0d, 0x1b].includes(b)) return i;
    if (b === 0x7f) return i;
    if (b !== 0x1b) continue;
    const next = out[i + 1];
    if (next === undefined) return i;
    if ([0x37, 0x38, 0x44, 0x45, 0x4d].includes(next)) continue;
    if (next !== 0x5b) return i;
    let j = i + 2;
    while (
      j < out.length && ((out[j] >= 0x30 && out[j] <= 0x39) || out[j] === 0x3b || out[j] === 0x3f)
    ) j++;
    const final = String.fromCharCode(out[j] ?? 0);
    const params = new TextDecoder().decode(out.subarray(i + 2, j));
    if (params.includes("?")) {
      if (!(params === "?25" && (final === "h" || final === "l"))) return i;
    } else if (!"ABCDEFGHJKSTdfm@LMPX".includes(final)) return i;
  }
  return -1;
}

function checkConsole(bytes: Uint8Array): void {
  const whole = new ConsoleFilter().filter(bytes);
  const at = unsafeAt(whole);
  if (at >= 0) {
    throw new Error(`Unsafe output at ${at}: ${JSON.stringify(new TextDecoder().decode(whole))}`);
  }
  // Split anywhere: the same bytes.
  const f = new ConsoleFilter();
  const parts: number[] = [];
  for (let i = 0; i < bytes.length; i += 1 + (i % 3)) {
    parts.push(...f.filter(bytes.subarray(i, i + 1 + (i % 3))));
  }
  if (parts.length !== whole.length || parts.some((b, i) => b !== whole[i])) {
    throw new Error("Split output differs from whole output");
  }
}

/** The console filter. */
export const CONSOLE_TARGETS: Target[] = [
  defineTarget({
    name: "console-safe",
    about:
      "safe console mode passes no OSC/DCS, query, private mode, charset switch or C1, split or whole",
    arbitrary: output,
    check: checkConsole,
  }),
];
