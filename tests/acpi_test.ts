/**
 * ACPI: the tables' layouts and checksums read back at the ACPI spec's own
 * field offsets (written out here, not taken from ffi/acpi.ts), the DSDT
 * through a small AML parser, the power-management registers, and small
 * guests that read the tables and power off or reset through them.
 */
import assert from "node:assert/strict";
import { createVm } from "../mod.ts";
import { acpiTables, buildMadt, writeAcpiTables } from "../src/arch/x86_64/acpi.ts";
import { integer, pkgLength } from "../src/arch/x86_64/aml.ts";
import { e820Map } from "../src/arch/x86_64/e820.ts";
import { AcpiPm } from "../src/devices/acpi_pm.ts";
import { GuestMemory } from "../src/memory/guest_memory.ts";
import * as g from "./guests.ts";
import { needsKvm, runCli } from "./helpers.ts";

const sum = (b: Uint8Array) => b.reduce((s, x) => (s + x) & 0xff, 0);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A table at `addr` in `mem`: its signature, bytes, and a view; the checksum and length checked. */
function tableAt(mem: GuestMemory, addr: number) {
  const head = new DataView(mem.bytes(addr, 36).slice().buffer);
  const length = head.getUint32(4, true);
  assert.ok(length >= 36 && length < 0x10000, `table at 0x${addr.toString(16)}: length ${length}`);
  const bytes = mem.bytes(addr, length).slice();
  assert.equal(sum(bytes), 0, `${text(bytes.subarray(0, 4))} checksum`);
  return { sig: text(bytes.subarray(0, 4)), bytes, dv: new DataView(bytes.buffer) };
}

/** An AML term as the parser below reads it. */
type Term =
  | { op: "name"; name: string; value: Value }
  | { op: "scope" | "device"; name: string; body: Term[] };
type Value = number | string | Uint8Array | Value[];

/** Parses the subset of AML (ACPI 6.5 §20) a microVM DSDT uses; throws on anything else. */
function parseAml(b: Uint8Array): Term[] {
  let at = 0;
  const pkgLen = (): number => {
    const lead = b[at];
    const extra = lead >> 6;
    let len = extra === 0 ? lead & 0x3f : lead & 0x0f;
    for (let i = 0; i < extra; i++) len |= b[at + 1 + i] << (4 + 8 * i);
    const end = at + len;
    at += 1 + extra;
    return end;
  };
  const nameSeg = () => text(b.subarray(at, at += 4));
  const value = (): Value => {
    const op = b[at++];
    const le = (n: number) => {
      let v = 0;
      for (let i = 0; i < n; i++) v += b[at + i] * 2 ** (8 * i);
      at += n;
      return v;
    };
    switch (op) {
      case 0x00:
        return 0;
      case 0x01:
        return 1;
      case 0x0a:
        return le(1);
      case 0x0b:
        return le(2);
      case 0x0c:
        return le(4);
      case 0x0d: {
        const end = b.indexOf(0, at);
        const s = text(b.subarray(at, end));
        at = end + 1;
        return s;
      }
      case 0x11: {
        const end = pkgLen();
        const size = value() as number;
        const out = b.slice(at, at + size);
        at = end;
        return out;
      }
      case 0x12: {
        const end = pkgLen();
        const n = b[at++];
        const out: Value[] = [];
        for (let i = 0; i < n; i++) out.push(value());
        assert.equal(at, end, "package length");
        return out;
      }
    }
    throw new Error(`AML op 0x${op.toString(16)} at ${at - 1}`);
  };
  const termList = (end: number): Term[] => {
    const out: Term[] = [];
    while (at < end) {
      const op = b[at++];
      if (op === 0x08) {
        out.push({ op: "name", name: nameSeg(), value: value() });
      } else if (op === 0x10) {
        const e = pkgLen();
        assert.equal(b[at++], 0x5c, "scope at the root");
        out.push({ op: "scope", name: nameSeg(), body: termList(e) });
      } else if (op === 0x5b && b[at] === 0x82) {
        at++;
        const e = pkgLen();
        out.push({ op: "device", name: nameSeg(), body: termList(e) });
      } else {
        throw new Error(`AML term 0x${op.toString(16)} at ${at - 1}`);
      }
    }
    assert.equal(at, end, "term list ends where its package does");
    return out;
  };
  return termList(b.length);
}

/** Reads a `_CRS` buffer's fixed memory ranges and interrupts (§6.4). */
function resources(crs: Uint8Array) {
  const dv = new DataView(crs.buffer, crs.byteOffset, crs.byteLength);
  const out = {
    mem: [] as Array<[number, number]>,
    irqs: [] as number[],
    ports: [] as Array<[number, number]>,
  };
  for (let at = 0; at < crs.length;) {
    const tag = crs[at];
    if (tag === 0x79) return out;
    if (tag === 0x47) {
      // Small I/O descriptor: decode, min, max, alignment, length.
      assert.equal(dv.getUint16(at + 2, true), dv.getUint16(at + 4, true), "fixed ports");
      out.ports.push([dv.getUint16(at + 2, true), crs[at + 7]]);
      at += 8;
      continue;
    }
    assert.ok(tag & 0x80, `small resource 0x${tag.toString(16)}`);
    const len = dv.getUint16(at + 1, true);
    if (tag === 0x86) out.mem.push([dv.getUint32(at + 4, true), dv.getUint32(at + 8, true)]);
    if (tag === 0x89) {
      assert.equal(crs[at + 3] & 0x03, 0x03, "consumer, edge-triggered");
      for (let i = 0; i < crs[at + 4]; i++) out.irqs.push(dv.getUint32(at + 5 + 4 * i, true));
    }
    at += 3 + len;
  }
  throw new Error("resource template without an end tag");
}

const DEVICES = [
  { base: 0xd0000000, size: 0x1000, irq: 5 },
  { base: 0xd0001000, size: 0x1000, irq: 6 },
  { base: 0xd0002000, size: 0x1000, irq: 7 },
];

Deno.test("ACPI: RSDP, XSDT, FADT, MADT and DSDT at the spec's offsets, every checksum zero", () => {
  const mem = GuestMemory.fromBuffer(new ArrayBuffer(2 << 20));
  const rsdp = writeAcpiTables(mem, { cpus: 4, devices: DEVICES });
  assert.equal(rsdp, 0xe0000);
  // In the reserved part of the e820 map, where no kernel allocates.
  const reserved = e820Map(mem).find((e) => e.type === 2)!;
  for (const t of acpiTables({ cpus: 4, devices: DEVICES })) {
    assert.ok(t.addr >= reserved.addr && t.addr + t.bytes.length <= reserved.addr + reserved.size);
  }

  // RSDP (§5.2.5.3): signature, 20-byte checksum, revision 2, length, XSDT, extended checksum.
  const r = mem.bytes(rsdp, 36).slice();
  const rv = new DataView(r.buffer);
  assert.equal(text(r.subarray(0, 8)), "RSD PTR ");
  assert.equal(sum(r.subarray(0, 20)), 0);
  assert.equal(r[15], 2);
  assert.equal(rv.getUint32(20, true), 36);
  assert.equal(sum(r), 0);

  // XSDT (§5.2.8): 64-bit pointers after the 36-byte header.
  const xsdt = tableAt(mem, Number(rv.getBigUint64(24, true)));
  assert.equal(xsdt.sig, "XSDT");
  const pointed = [];
  for (let off = 36; off < xsdt.bytes.length; off += 8) {
    pointed.push(tableAt(mem, Number(xsdt.dv.getBigUint64(off, true))));
  }
  assert.deepEqual(pointed.map((t) => t.sig).sort(), ["APIC", "FACP"]);

  // FADT (§5.2.9): revision 6, 276 bytes, hardware-reduced with a reset register.
  const fadt = pointed.find((t) => t.sig === "FACP")!;
  assert.equal(fadt.bytes.length, 276);
  assert.equal(fadt.bytes[8], 6);
  const flags = fadt.dv.getUint32(112, true);
  assert.ok(flags & (1 << 20), "HW_REDUCED_ACPI");
  assert.ok(flags & (1 << 10), "RESET_REG_SUP");
  assert.ok(fadt.dv.getUint16(109, true) & (1 << 1), "8042 present");
  const gas = (off: number) => ({
    space: fadt.bytes[off],
    width: fadt.bytes[off + 1],
    address: Number(fadt.dv.getBigUint64(off + 4, true)),
  });
  assert.deepEqual(gas(116), { space: 1, width: 8, address: 0x602 }, "reset register");
  assert.equal(fadt.bytes[128], 1, "reset value");
  assert.deepEqual(gas(244), { space: 1, width: 8, address: 0x600 }, "sleep control");
  assert.deepEqual(gas(256), { space: 1, width: 8, address: 0x601 }, "sleep status");
  assert.equal(fadt.dv.getUint32(40, true), 0, "no 32-bit DSDT pointer to disagree");

  // MADT (§5.2.12): the local APIC base, 4 enabled local APICs, the I/O APIC.
  const madt = pointed.find((t) => t.sig === "APIC")!;
  assert.equal(madt.dv.getUint32(36, true), 0xfee00000);
  const apics: number[] = [], ioapics: Array<[number, number]> = [], overrides: number[] = [];
  for (let off = 44; off < madt.bytes.length; off += madt.bytes[off + 1]) {
    const type = madt.bytes[off];
    assert.ok(madt.bytes[off + 1] > 0, "entry length");
    if (type === 0) {
      assert.equal(madt.dv.getUint32(off + 4, true) & 1, 1, "enabled");
      apics.push(madt.bytes[off + 3]);
    }
    if (type === 1) ioapics.push([madt.bytes[off + 2], madt.dv.getUint32(off + 4, true)]);
    if (type === 2) {
      assert.equal(madt.dv.getUint32(off + 4, true), madt.bytes[off + 3], "identity routing");
      overrides.push(madt.bytes[off + 3]);
    }
  }
  assert.deepEqual(apics, [0, 1, 2, 3]);
  assert.deepEqual(ioapics, [[4, 0xfec00000]]);
  assert.deepEqual(overrides, [0, 1, 4]);

  // DSDT through the FADT's X_DSDT (offset 140), parsed.
  const dsdt = tableAt(mem, Number(fadt.dv.getBigUint64(140, true)));
  assert.equal(dsdt.sig, "DSDT");
  const terms = parseAml(dsdt.bytes.subarray(36));
  const s5 = terms.find((t) => t.op === "name" && t.name === "_S5_");
  assert.ok(s5 && s5.op === "name" && Array.isArray(s5.value) && s5.value[0] === 5, "_S5_ = 5");
  const sb = terms.find((t) => t.op === "scope" && t.name === "_SB_");
  assert.ok(sb && sb.op === "scope");
  const devices = sb.body.map((d) => {
    assert.equal(d.op, "device");
    const names = new Map(
      (d as { body: Term[] }).body.map((t) => [t.name, (t as { value: Value }).value]),
    );
    return { name: d.name, names, crs: resources(names.get("_CRS") as Uint8Array) };
  });
  const found = devices.filter((d) => d.names.get("_HID") === "LNRO0005").map((d) => ({
    uid: d.names.get("_UID"),
    base: d.crs.mem[0][0],
    size: d.crs.mem[0][1],
    irq: d.crs.irqs[0],
  }));
  assert.deepEqual(found, DEVICES.map((d, i) => ({ uid: i, ...d })));
  // COM1 and the i8042 as PNP devices: a hardware-reduced kernel maps their lines from these.
  // EISAID("PNP0501") is 0x0105d041 and EISAID("PNP0303") 0x0303d041 (ACPI 6.5 §6.1.5).
  const legacy = devices.filter((d) => d.names.get("_HID") !== "LNRO0005").map((d) => ({
    name: d.name,
    hid: d.names.get("_HID"),
    ports: d.crs.ports,
    irqs: d.crs.irqs,
  }));
  assert.deepEqual(legacy, [
    { name: "COM1", hid: 0x0105d041, ports: [[0x3f8, 8]], irqs: [4] },
    { name: "PS2K", hid: 0x0303d041, ports: [[0x60, 1], [0x64, 1]], irqs: [1] },
  ]);
});

Deno.test("ACPI: AML lengths and integers take their long forms past the short ones", () => {
  assert.deepEqual([...pkgLength(10)], [11]);
  // 100 payload bytes + 2 length bytes = 102 = 0x66: lead 0x40 | 6, then 0x6.
  assert.deepEqual([...pkgLength(100)], [0x46, 0x06]);
  assert.deepEqual([...pkgLength(5000)], [0x80 | ((5003) & 0xf), (5003 >> 4) & 0xff, 5003 >> 12]);
  assert.deepEqual([...integer(0x1234)], [0x0b, 0x34, 0x12]);
  assert.deepEqual([...integer(0xd0000000)], [0x0c, 0, 0, 0, 0xd0]);
  assert.throws(() => buildMadt(0), RangeError);
  assert.throws(() => buildMadt(255), RangeError);
  // A full MADT and a DSDT of ten devices still fit below 1 MiB.
  const ten = Array.from(
    { length: 10 },
    (_, i) => ({ ...DEVICES[0], base: 0xd0000000 + i * 4096 }),
  );
  assert.ok(acpiTables({ cpus: 254, devices: ten }).length === 5);
});

Deno.test("ACPI registers: S5 with SLP_EN powers off, the reset value resets, garbage does nothing", () => {
  const seen: string[] = [];
  const pm = new AcpiPm({ powerOff: () => seen.push("off"), reset: () => seen.push("reset") }, 1);
  const w = (off: number, ...bytes: number[]) => pm.write(off, new Uint8Array(bytes));
  for (let type = 0; type < 8; type++) w(0, type << 2); // no SLP_EN
  w(0, (3 << 2) | 0x20); // S3: not offered
  w(1, 0xff);
  w(2, 0xfe);
  w(2, 0x00);
  w(3, 1);
  w(0, 0x1c, 0x1c, 0x1c, 0x1c);
  const r = new Uint8Array(4).fill(0xaa);
  pm.read(0, r);
  assert.deepEqual([...r], [0, 0, 0, 0]);
  assert.deepEqual(seen, []);
  w(0, (5 << 2) | 0x20);
  w(2, 1);
  assert.deepEqual(seen, ["off", "reset"]);
});

Deno.test({
  ...needsKvm,
  name: "ACPI: a guest finds the RSDP, survives its garbage, and powers off through SLP_TYP 5",
  async fn() {
    const vm = await createVm({ kernel: g.acpiPower("off"), console: "message" });
    let out = "";
    vm.onConsole = (b) => (out += new TextDecoder().decode(b));
    const exit = await vm.run(30_000);
    assert.equal(out, "rsdp found\ngarbage written\n");
    assert.equal(exit.cause, "power-off", exit.message);
    assert.equal(exit.code, 0);
  },
});

Deno.test({
  ...needsKvm,
  name: "ACPI: the reset register resets the VM; through the CLI, exit 0 and no message",
  async fn() {
    const vm = await createVm({ kernel: g.acpiPower("reset"), console: "message" });
    const exit = await vm.run(30_000);
    assert.equal(exit.cause, "reset", exit.message);
    const r = await runCli(["run", "--kernel", g.acpiPower("off")]);
    assert.equal(r.stdout, "rsdp found\ngarbage written\n");
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0);
  },
});
