/**
 * Devices a script writes in TypeScript (mod.ts's `devices`): a port
 * device the guest writes to and the script reads from, an MMIO one that
 * answers reads, an interrupt line, and a device that throws.
 */
import assert from "node:assert/strict";
import { type BusDevice, createVm, type Trigger } from "../mod.ts";
import { assembleElf, needsKvm } from "./helpers.ts";
import { mapMmioGap } from "./virtio_driver.ts";

/** Sends "hi!" to port 0x510, reads port 0x511 (a byte count) and MMIO 0xd0100000, echoes both to COM1. */
const guest = () =>
  assembleElf(`
  lea rsi, [rip + msg]
  mov dx, 0x510
1: lodsb
  test al, al
  jz 2f
  out dx, al
  jmp 1b
2: mov dx, 0x511
  in al, dx
  mov dx, 0x3f8
  out dx, al
  mov eax, dword ptr [0xd0100004]
  out dx, al
  shr eax, 8
  out dx, al
  mov dx, 0xf4
  mov eax, 0
  out dx, eax
  hlt
msg: .asciz "hi!"`);

Deno.test({
  ...needsKvm,
  name: "user devices: the guest writes a TS port device, reads it and a TS MMIO device",
  async fn() {
    const seen: number[] = [];
    let irq: Trigger | undefined;
    const port: BusDevice & { attach(t: Trigger | undefined): void } = {
      read: (offset, data) => void (data[0] = offset === 1 ? seen.length + 0x30 : 0),
      write: (offset, data) => void (offset === 0 && seen.push(data[0])),
      attach: (t) => void (irq = t),
    };
    const reads: Array<[number, number]> = [];
    const mmio: BusDevice = {
      read: (offset, data) => {
        reads.push([offset, data.length]);
        new DataView(data.buffer, data.byteOffset, data.byteLength).setUint32(0, 0x4b4f, true);
      },
      write() {},
    };
    const vm = await createVm({ kernel: guest(), console: "message" }, {
      devices: [
        { bus: "pio", base: 0x510, size: 2, irq: true, device: port },
        { bus: "mmio", base: 0xd0100000, size: 0x1000, device: mmio },
      ],
    });
    mapMmioGap(vm.built.memory);
    let out = "";
    vm.onConsole = (b) => (out += new TextDecoder().decode(b));
    const exit = await vm.run(30_000);
    assert.equal(exit.cause, "guest-exit", exit.message);
    assert.equal(new TextDecoder().decode(new Uint8Array(seen)), "hi!");
    assert.equal(out, "3OK");
    assert.deepEqual(reads, [[4, 4]]);
    assert.ok(irq, "an interrupt line was attached");
  },
});

Deno.test({
  ...needsKvm,
  name: "user devices: a device that throws stops the VM with its message, the guest does not hang",
  async fn() {
    const vm = await createVm({ kernel: guest(), console: "message" }, {
      devices: [{
        bus: "pio",
        base: 0x510,
        size: 2,
        device: {
          read: (_o, d) => void d.fill(0),
          write: () => {
            throw new Error("device bug");
          },
        },
      }],
    });
    const exit = await vm.run(30_000);
    assert.equal(exit.cause, "monitor-error");
    assert.match(exit.message, /^Device at 0x510 threw: device bug$/);
  },
});

Deno.test("user devices: ranges that clash or fall outside their bus are refused", async () => {
  const device: BusDevice = { read() {}, write() {} };
  const cases: Array<[Parameters<typeof createVm>[1], RegExp]> = [
    [{ devices: [{ bus: "pio", base: 0x3f8, size: 1, device }] }, /overlaps one at 0x3f8/],
    [{ devices: [{ bus: "pio", base: 0xffff, size: 2, device }] }, /past 0xffff/],
    [{ devices: [{ bus: "mmio", base: 0x1000, size: 16, device }] }, /outside the MMIO gap/],
    [{ devices: [{ bus: "mmio", base: 0xd0000000, size: 16, device }] }, /overlaps/],
  ];
  for (const [opts, re] of cases) {
    await assert.rejects(createVm({ kernel: guest() }, opts), re);
  }
});
