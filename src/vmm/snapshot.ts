/**
 * What a snapshot holds, how it is taken from a paused VM and how a state
 * file is checked before anything is restored from it. The guest's RAM goes
 * to its own file (sparse: pages that are all zero are holes), mapped
 * privately on restore; the state file holds the rest (see
 * `src/snapshot/state_file.ts`).
 *
 * @module
 */

import * as v from "valibot";
import type { CpuidEntry } from "../arch/x86_64/cpuid.ts";
import { VoltError } from "../errors.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";
import { readStateFile, type StateValue, writeStateFile } from "../snapshot/state_file.ts";
import { setLength, writeFrom, writeWhole } from "../snapshot/file_out.ts";
import type { BuiltVm } from "./builder.ts";
import type { ResolvedConfig } from "./config.ts";
import type { DeviceSpec } from "./device_manager.ts";
import { saveVcpu, type VcpuState, vcpuStateProblem } from "./vcpu_state.ts";
import { saveVmState, type VmState, vmStateProblem } from "./vm_state.ts";

/** A saved device: where it was and its shared registers. */
export interface SavedDevice {
  kind: string;
  base: number;
  irq: number | null;
  state: Uint8Array | null;
}

/** A disk as the snapshot remembers it (it is opened again on restore). */
export interface SavedDisk {
  path: string;
  readOnly: boolean;
  id: string | null;
  root: boolean;
}

/** A network interface as the snapshot remembers it (its TAP is attached again on restore). */
export interface SavedNet {
  tap: string;
  mac: string;
  id: string | null;
}

/** The whole state file document. */
export interface SnapshotDoc {
  /** What the guest saw of its host: the template and each vCPU's CPUID. */
  host: {
    template: string;
    tscKhz: number;
    xsaveSize: number;
    /** Per vCPU, each entry as [function, index, flags, eax, ebx, ecx, edx]. */
    cpuid: number[][][];
  };
  /** What rebuilds the same machine. */
  config: {
    memory: number;
    cpus: number;
    entropy: boolean;
    disks: SavedDisk[];
    nets: SavedNet[];
    /** The vsock device: its CID, and the socket it listened on. */
    vsock: { cid: number; uds: string } | null;
    cmdline: string;
  };
  vcpus: VcpuState[];
  vm: VmState;
  devices: SavedDevice[];
}

const bytes = v.instance(Uint8Array);
const uint = v.pipe(v.number(), v.integer(), v.minValue(0));
const docSchema = v.object({
  host: v.object({
    template: v.string(),
    tscKhz: uint,
    xsaveSize: uint,
    cpuid: v.array(v.array(v.pipe(v.array(uint), v.length(7)))),
  }),
  config: v.object({
    memory: uint,
    cpus: v.pipe(uint, v.minValue(1)),
    entropy: v.boolean(),
    disks: v.array(v.object({
      path: v.string(),
      readOnly: v.boolean(),
      id: v.nullable(v.string()),
      root: v.boolean(),
    })),
    nets: v.array(v.object({ tap: v.string(), mac: v.string(), id: v.nullable(v.string()) })),
    vsock: v.nullable(v.object({ cid: uint, uds: v.string() })),
    cmdline: v.string(),
  }),
  vcpus: v.array(v.record(v.string(), bytes)),
  vm: v.object({ irqchips: v.array(bytes), pit: bytes, clock: bytes }),
  devices: v.array(v.object({
    kind: v.string(),
    base: uint,
    irq: v.nullable(uint),
    state: v.nullable(bytes),
  })),
});

/** Why the VM's devices cannot be saved yet, or undefined. */
export function unsnapshottable(specs: readonly DeviceSpec[]): string | undefined {
  for (const s of specs) {
    if (s.kind === "hosted") return "a device written in TypeScript by the script";
  }
  return undefined;
}

const cpuidRow = (e: CpuidEntry) => [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx];

/** CPUID entries from their saved rows. */
export function cpuidFromRows(rows: number[][]): CpuidEntry[] {
  return rows.map(([fn, index, flags, eax, ebx, ecx, edx]) => ({
    function: fn,
    index,
    flags,
    eax,
    ebx,
    ecx,
    edx,
  }));
}

/**
 * Takes the state of `b`, whose every vCPU is parked with its last exit
 * completed: the vCPUs' and the VM's KVM state and each device's registers.
 */
export function captureState(b: BuiltVm, cfg: ResolvedConfig): SnapshotDoc {
  const msrs = b.kvm.msrIndexList();
  const xsaveSize = b.kvm.xsaveSize;
  return {
    host: {
      template: b.template.name,
      tscKhz: b.vcpus.length ? Math.max(0, b.vcpus[0].tscKhz()) : 0,
      xsaveSize,
      cpuid: b.cpuid.map((t) => t.map(cpuidRow)),
    },
    config: {
      memory: cfg.memory,
      cpus: cfg.cpus,
      entropy: cfg.entropy,
      disks: cfg.disks.map((d) => ({
        path: d.path,
        readOnly: d.readOnly ?? true,
        id: d.id ?? null,
        root: d.root ?? false,
      })),
      nets: b.devices.virtio.flatMap((d) =>
        d.backend.type === "net" ? [{ tap: d.backend.tap, mac: d.backend.mac, id: null }] : []
      ).map((n, i) => ({ ...n, id: cfg.nets[i]?.id ?? null })),
      vsock: cfg.vsock ? { cid: cfg.vsock.cid, uds: cfg.vsock.uds } : null,
      cmdline: b.cmdline,
    },
    vcpus: b.vcpus.map((cpu) => saveVcpu(cpu.fd, msrs, xsaveSize)),
    vm: saveVmState(b.vm.fd),
    devices: b.devices.specs.map((s) => ({
      kind: s.kind,
      base: s.base,
      irq: s.irq ?? null,
      state: s.state ? new Uint8Array(s.state).slice() : null,
    })),
  };
}

/** Writes `doc` as the state file at `path` (whole or not at all). */
export function writeSnapshot(path: string, doc: SnapshotDoc): void {
  writeStateFile(path, doc as unknown as StateValue);
}

/**
 * Reads and checks the state file at `path`: its container (magic,
 * version, checksum), then that the document has every part a restore
 * needs, with each KVM structure of the right size. One-line errors.
 */
export function readSnapshot(path: string): SnapshotDoc {
  const raw = readStateFile(path);
  const r = v.safeParse(docSchema, raw);
  if (!r.success) {
    const issue = r.issues[0];
    const where = v.getDotPath(issue) ?? "the document";
    throw new VoltError(
      `Snapshot ${path} is not a VM's state (${where}: ${issue.message})`,
      "input",
    );
  }
  const doc = r.output as unknown as SnapshotDoc;
  const bad = (why: string) =>
    new VoltError(`Snapshot ${path} is not a VM's state (${why})`, "input");
  if (doc.vcpus.length !== doc.config.cpus || doc.host.cpuid.length !== doc.config.cpus) {
    throw bad(`${doc.vcpus.length} vCPU states for ${doc.config.cpus} vCPUs`);
  }
  for (const [i, s] of doc.vcpus.entries()) {
    const why = vcpuStateProblem(s, doc.host.xsaveSize);
    if (why) throw bad(`vCPU ${i}: ${why}`);
  }
  const why = vmStateProblem(doc.vm);
  if (why) throw bad(why);
  return doc;
}

const PAGE = 4096;

/**
 * Writes `path` as a sparse file of RAM's size holding, each at its
 * offset and straight from the mapping, the runs of pages `keep` selects;
 * the rest are holes. Whole or not at all.
 */
function writePages(mem: GuestMemory, path: string, keep: (page: number) => boolean): void {
  const base = mem.hostAddr === 0n
    ? Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(mem.host as Uint8Array<ArrayBuffer>)))
    : Number(mem.hostAddr);
  const pages = Math.ceil(mem.size / PAGE);
  writeWhole(path, "memory file", (fd) => {
    setLength(fd, mem.size);
    for (let p = 0; p < pages;) {
      if (!keep(p)) {
        p++;
        continue;
      }
      let end = p + 1;
      while (end < pages && keep(end)) end++;
      const from = p * PAGE, to = Math.min(end * PAGE, mem.size);
      writeFrom(fd, base + from, to - from, from);
      p = end;
    }
  });
}

/**
 * Writes the pages of guest RAM that `mem` recorded as written (see
 * `GuestMemory.trackWrites`) to `path`, each at its offset, zero pages
 * too, holes elsewhere: a diff, laid onto its base with
 * `rebaseMemoryFile` (src/snapshot/rebase.ts).
 */
export function writeDiffMemoryFile(mem: GuestMemory, path: string): void {
  const dirty = mem.dirtyPages;
  writePages(mem, path, (p) => (dirty[p >>> 5] & (1 << (p & 31))) !== 0);
}

/**
 * Writes guest RAM to `path` as a sparse file of exactly its size: pages
 * that hold anything are written, all-zero pages stay holes, so the file
 * of a mostly idle guest is small and cheap to map.
 */
export function writeMemoryFile(mem: GuestMemory, path: string): void {
  const words = new Int32Array(mem.host.buffer, mem.host.byteOffset, mem.host.byteLength >> 2);
  const pageWords = PAGE >> 2;
  writePages(mem, path, (page) => {
    for (let i = page * pageWords, end = i + pageWords; i < end; i++) {
      if (words[i] !== 0) return true;
    }
    return false;
  });
}
