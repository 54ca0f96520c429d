/**
 * Checks every ioctl number and struct offset in ffi/ against the kernel's
 * own headers, compiled by the C compiler on this machine.
 */
import assert from "node:assert/strict";
import * as kvm from "../ffi/kvm.ts";
import * as bp from "../ffi/bootparam.ts";
import * as fcntl from "../ffi/fcntl.ts";
import * as libc from "../ffi/libc.ts";
import * as prctl from "../ffi/prctl.ts";
import * as resource from "../ffi/resource.ts";
import * as socket from "../ffi/socket.ts";
import { ccAvailable, tmpDir } from "./helpers.ts";

const tables: Record<string, Record<string, number>> = {
  KVM: kvm.KVM,
  SIZE: kvm.SIZE,
  CAP: kvm.CAP,
  IRQCHIP: kvm.IRQCHIP,
  KVM_MEM: { LOG_DIRTY_PAGES: kvm.KVM_MEM_LOG_DIRTY_PAGES },
  RUN: kvm.RUN,
  SREGS: kvm.SREGS,
  SEGMENT: kvm.SEGMENT,
  CPUID_ENTRY: kvm.CPUID_ENTRY,
  FPU: kvm.FPU,
  REGS: kvm.REGS,
  BOOT_PARAMS: bp.BOOT_PARAMS,
  SETUP: bp.SETUP,
  FCNTL: { ...fcntl, O_CLOEXEC: libc.O_CLOEXEC, O_RDWR: libc.O_RDWR },
  MMAN: {
    MADV_POPULATE_WRITE: libc.MADV_POPULATE_WRITE,
    MADV_DONTDUMP: libc.MADV_DONTDUMP,
    MAP_NORESERVE: libc.MAP_NORESERVE,
    MAP_ANONYMOUS: libc.MAP_ANONYMOUS,
    MAP_PRIVATE: libc.MAP_PRIVATE,
    MAP_SHARED: libc.MAP_SHARED,
  },
  PRCTL: prctl,
  RESOURCE: {
    RLIMIT_CORE: resource.RLIMIT_CORE,
    RLIMIT_NOFILE: resource.RLIMIT_NOFILE,
    CLOSE_RANGE_CLOEXEC: resource.CLOSE_RANGE_CLOEXEC,
  },
  RLIMIT_STRUCT: resource.RLIMIT_STRUCT,
  SOCKET: {
    SOL_SOCKET: socket.SOL_SOCKET,
    SCM_RIGHTS: socket.SCM_RIGHTS,
    MSG_CTRUNC: socket.MSG_CTRUNC,
    MSG_DONTWAIT: socket.MSG_DONTWAIT,
    MSG_NOSIGNAL: socket.MSG_NOSIGNAL,
    MSG_CMSG_CLOEXEC: socket.MSG_CMSG_CLOEXEC,
    POLLIN: socket.POLLIN,
    POLLERR: socket.POLLERR,
    POLLHUP: socket.POLLHUP,
    POLLNVAL: socket.POLLNVAL,
  },
  IOVEC: socket.IOVEC,
  MSGHDR: socket.MSGHDR,
  CMSGHDR: socket.CMSGHDR,
  POLLFD: socket.POLLFD,
};
const scalars: Record<string, number> = {
  BOOT_PARAMS_SIZE: bp.BOOT_PARAMS_SIZE,
  E820_ENTRY_SIZE: bp.E820_ENTRY_SIZE,
  CMSG_SPACE_12: socket.cmsgSpace(12),
};

Deno.test({
  name: "ffi/ layouts and ioctl numbers equal <linux/kvm.h>, <asm/bootparam.h> and <fcntl.h>",
  ignore: !ccAvailable(),
  fn() {
    const dir = tmpDir();
    const exe = `${dir}/abi_probe`;
    const src = new URL("./fixtures/abi_probe.c", import.meta.url).pathname;
    const cc = new Deno.Command("cc", { args: ["-o", exe, src] }).outputSync();
    assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const out = new Deno.Command(exe).outputSync();
    const probe: Record<string, number> = JSON.parse(new TextDecoder().decode(out.stdout));
    delete probe.end;
    let checked = 0;
    for (const [key, value] of Object.entries(probe)) {
      const [table, field] = key.split(".");
      const ours = field === undefined ? scalars[table] : tables[table]?.[field];
      assert.equal(ours, value, `${key}: ours ${ours}, kernel ${value}`);
      checked++;
    }
    assert.ok(checked > 100, `only ${checked} values checked`);
  },
});
