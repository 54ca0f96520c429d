/**
 * Memory overhead of a monitor: its resident memory minus the guest RAM
 * pages the guest touched, from /proc/PID/smaps.
 *
 * @module
 */

/** One mapping's size and resident set, in KiB. */
export interface Mapping {
  range: string;
  name: string;
  sizeKiB: number;
  rssKiB: number;
  /** Proportional set: shared pages divided among their sharers. */
  pssKiB: number;
  /** Private_Clean + Private_Dirty: pages no other process maps. */
  privateKiB: number;
}

/**
 * Parses /proc/PID/smaps text.
 *
 * @example
 * ```ts
 * import { parseSmaps } from "./smaps.ts";
 * parseSmaps("7f00-7f10 rw-p 00000000 00:00 0\nSize: 64 kB\nRss: 8 kB\n")[0].rssKiB; // 8
 * ```
 */
export function parseSmaps(text: string): Mapping[] {
  const maps: Mapping[] = [];
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+-[0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      maps.push({ range: head[1], name: head[2], sizeKiB: 0, rssKiB: 0, pssKiB: 0, privateKiB: 0 });
      continue;
    }
    const field = /^(Size|Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+) kB$/.exec(line);
    if (field && maps.length) {
      const m = maps[maps.length - 1];
      const kib = Number(field[2]);
      if (field[1] === "Size") m.sizeKiB = kib;
      else if (field[1] === "Rss") m.rssKiB = kib;
      else if (field[1] === "Pss") m.pssKiB = kib;
      else m.privateKiB += kib;
    }
  }
  return maps;
}

/** A process's memory at one moment. */
export interface MemoryUse {
  /** Resident set of the whole process, KiB. */
  rssKiB: number;
  /** Resident pages of guest RAM, KiB. */
  guestRssKiB: number;
  /** rss − guest, MiB. */
  overheadMiB: number;
  /** Private pages (clean and dirty) − the guest's, MiB: what this VM alone costs. */
  privateMiB: number;
  /** PSS − the guest's, MiB: its share of everything, shared pages split. */
  pssMiB: number;
}

/**
 * Reads `pid`'s memory; guest RAM is the anonymous mapping whose size is
 * closest to (and not below) `guestBytes`.
 *
 * @example
 * ```ts ignore
 * import { memoryUse } from "./smaps.ts";
 * memoryUse(pid, 128 << 20).overheadMiB;
 * ```
 */
export function memoryUse(pid: number, guestBytes: number): MemoryUse {
  const maps = parseSmaps(Deno.readTextFileSync(`/proc/${pid}/smaps`));
  const want = guestBytes / 1024;
  const guest = maps
    .filter((m) => m.sizeKiB >= want && !m.name.startsWith("/"))
    .sort((a, b) => a.sizeKiB - b.sizeKiB)[0];
  const rssKiB = maps.reduce((s, m) => s + m.rssKiB, 0);
  const guestRssKiB = guest?.rssKiB ?? 0;
  const sum = (f: (m: Mapping) => number) => maps.reduce((s, m) => s + f(m), 0);
  return {
    rssKiB,
    guestRssKiB,
    overheadMiB: (rssKiB - guestRssKiB) / 1024,
    privateMiB: (sum((m) => m.privateKiB) - (guest?.privateKiB ?? 0)) / 1024,
    pssMiB: (sum((m) => m.pssKiB) - (guest?.pssKiB ?? 0)) / 1024,
  };
}
