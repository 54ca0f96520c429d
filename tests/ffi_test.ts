import assert from "node:assert/strict";
import { KVM } from "../ffi/kvm.ts";
import { ioc, IOC_READ, IOC_WRITE } from "../ffi/ioctl.ts";
import { errnoName } from "../ffi/errno.ts";
import { check, cstr, libc, SysError } from "../ffi/libc.ts";

Deno.test("ioctl numbers match the values the kernel headers produce", () => {
  // Values printed by a C program including <linux/kvm.h> on x86_64.
  const expected: Record<string, number> = {
    GET_API_VERSION: 0xae00,
    CREATE_VM: 0xae01,
    CHECK_EXTENSION: 0xae03,
    GET_VCPU_MMAP_SIZE: 0xae04,
    GET_SUPPORTED_CPUID: 0xc008ae05,
    CREATE_VCPU: 0xae41,
    SET_USER_MEMORY_REGION: 0x4020ae46,
    SET_TSS_ADDR: 0xae47,
    SET_IDENTITY_MAP_ADDR: 0x4008ae48,
    CREATE_IRQCHIP: 0xae60,
    IRQ_LINE: 0x4008ae61,
    CREATE_PIT2: 0x4040ae77,
    RUN: 0xae80,
    GET_REGS: 0x8090ae81,
    SET_REGS: 0x4090ae82,
    GET_SREGS: 0x8138ae83,
    SET_SREGS: 0x4138ae84,
    SET_MSRS: 0x4008ae89,
    GET_FPU: 0x81a0ae8c,
    SET_FPU: 0x41a0ae8d,
    GET_LAPIC: 0x8400ae8e,
    SET_LAPIC: 0x4400ae8f,
    SET_CPUID2: 0x4008ae90,
  };
  for (const [name, value] of Object.entries(expected)) {
    assert.equal(KVM[name as keyof typeof KVM], value, name);
  }
});

Deno.test("ioc stays unsigned for read/write requests and rejects oversized structs", () => {
  assert.ok(ioc(IOC_READ | IOC_WRITE, 0xae, 5, 8) > 0);
  assert.throws(() => ioc(IOC_WRITE, 0xae, 1, 1 << 14), RangeError);
});

Deno.test("errno names", () => {
  assert.equal(errnoName(16), "EBUSY");
  assert.equal(errnoName(2), "ENOENT");
  assert.equal(errnoName(9999), "errno 9999");
});

Deno.test("a failing libc call reports its errno by name", () => {
  const fd = libc().open(cstr("/nonexistent/volt"), 0, 0);
  assert.equal(fd, -1);
  assert.throws(() => check(fd, "open /nonexistent/volt"), (e: unknown) => {
    assert.ok(e instanceof SysError);
    assert.equal(e.message, "open /nonexistent/volt failed: ENOENT");
    return true;
  });
});
