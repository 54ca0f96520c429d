/**
 * The console's safe mode: what a guest prints reaches the terminal as
 * text, colours and cursor movement, never as a sequence the terminal
 * would act on outside the console or answer into the user's shell.
 */
import assert from "node:assert/strict";
import {
  autoConsoleMode,
  ConsoleFilter,
  PrivateModeWatch,
  terminalReset,
} from "../src/vmm/console_filter.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const safe = (s: string) => dec.decode(new ConsoleFilter().filter(enc.encode(s)));

Deno.test("console safe mode: text, UTF-8, colours and cursor movement pass", () => {
  const kept =
    "login: \x1b[1;32mroot\x1b[0m é ü 日本 \x1b[2J\x1b[H\x1b[10;5H\x1b[K\x1b[?25l\x1b[?25h" +
    "\x1b7\x1b8\x1bM\r\n\t\x08\x07";
  assert.equal(safe(kept), kept);
});

Deno.test("console safe mode: clipboard, title, reports and queries are dropped", () => {
  for (
    const [what, seq] of [
      ["OSC 52 clipboard write (BEL)", "\x1b]52;c;ZXZpbA==\x07"],
      ["OSC 52 clipboard write (ST)", "\x1b]52;c;ZXZpbA==\x1b\\"],
      ["window title", "\x1b]0;pwned\x07"],
      ["OSC 8 hyperlink", "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"],
      ["DECRQSS", "\x1bP$qm\x1b\\"],
      ["APC", "\x1b_G;data\x1b\\"],
      ["cursor position report", "\x1b[6n"],
      ["device status", "\x1b[5n"],
      ["device attributes", "\x1b[c"],
      ["secondary device attributes", "\x1b[>c"],
      ["title report", "\x1b[21t"],
      ["window ops", "\x1b[8;1;1t"],
      ["DECRQM", "\x1b[?2026$p"],
      ["DECID", "\x1bZ"],
      ["alternate screen", "\x1b[?1049h"],
      ["mouse reporting", "\x1b[?1000h"],
      ["bracketed paste", "\x1b[?2004h"],
      ["line-feed mode", "\x1b[20h"],
      ["G0 line drawing", "\x1b(0"],
      ["shift out", "\x0e"],
      ["DEC screen alignment", "\x1b#8"],
      ["full reset", "\x1bc"],
      ["C1 CSI (UTF-8)", "\u009b6n"],
      ["C1 OSC (UTF-8)", "\u009d52;c;x\u009c"],
      ["repeat", "\x1b[999999999b"],
    ]
  ) {
    const f = new ConsoleFilter();
    const out = dec.decode(f.filter(enc.encode(`a${seq}b`)));
    // A C1 introducer's parameters are plain text once the introducer is gone.
    const want = seq.startsWith("\u009b")
      ? "a6nb"
      : seq.startsWith("\u009d")
      ? "a52;c;xb"
      : seq.includes("link")
      ? "alinkb"
      : "ab";
    assert.equal(out, want, what);
    assert.ok(f.dropped >= 1, what);
  }
});

Deno.test("console safe mode: a sequence split at every byte gives the same output", () => {
  const input = enc.encode("\x1b[1mA\x1b]52;c;x\x07B\x1b[6nC\x1bP1$r\x1b\\D\u009b\x1b[0mé");
  const whole = new ConsoleFilter().filter(input);
  const f = new ConsoleFilter();
  const parts = [...input].flatMap((b) => [...f.filter(new Uint8Array([b]))]);
  assert.deepEqual(new Uint8Array(parts), whole);
  assert.equal(dec.decode(whole), "\x1b[1mABCD\x1b[0mé");
});

Deno.test("console safe mode: an endless sequence holds no memory and ends", () => {
  const f = new ConsoleFilter();
  // A megabyte of CSI parameters, then an unterminated OSC: nothing comes out.
  assert.equal(f.filter(enc.encode(`\x1b[${"1;".repeat(1 << 19)}m`)).length, 0);
  assert.equal(
    f.filter(new Uint8Array(1 << 20).fill(0x41).map((b, i) => i === 0 ? 0x1b : i === 1 ? 0x5d : b))
      .length,
    0,
  );
  // The string ends; text after it passes again.
  assert.equal(dec.decode(f.filter(enc.encode("\x07after"))), "after");
});

Deno.test("console modes: auto is safe only for a terminal that is not the guest's shell", () => {
  assert.equal(autoConsoleMode(true, false), "safe");
  assert.equal(autoConsoleMode(true, true), "raw");
  assert.equal(autoConsoleMode(false, true), "raw");
  assert.equal(autoConsoleMode(false, false), "raw");
  const reset = dec.decode(terminalReset(true));
  for (const s of ["\x1b[0m", "\x1b(B", "\x1b[?25h", "\x1b[?1049l", "\x1b[?1000l"]) {
    assert.ok(reset.includes(s), JSON.stringify(s));
  }
  // No alternate screen to leave: the cursor stays where the guest left it.
  assert.ok(!dec.decode(terminalReset(false)).includes("1049"));
  const w = new PrivateModeWatch();
  for (const b of enc.encode("\x1b[1m\x1b\x1b[")) w.watch(new Uint8Array([b]));
  assert.equal(w.seen, false);
  w.watch(enc.encode("?1000h"));
  assert.equal(w.seen, true);
});
