/**
 * Host network: attaching to an existing TAP (`IFF_TAP | IFF_NO_PI |
 * IFF_VNET_HDR`, a 12-byte virtio header), parsing MAC addresses. The CLI
 * attaches before the jail and hands the monitor the descriptor, so the
 * monitor needs no `CAP_NET_ADMIN`; it never creates an interface.
 *
 * @module
 */

import { errno, libc, O_CLOEXEC, O_NONBLOCK, O_RDWR } from "../../ffi/libc.ts";
import { IFF, IFNAMSIZ, IFREQ, TUN, TUN_DEVICE } from "../../ffi/tun.ts";
import { NET } from "../../ffi/virtio.ts";
import { VoltError } from "../errors.ts";
import { errnoName } from "../../ffi/errno.ts";

/** Why `name` cannot be an interface name, or undefined if it can. */
export function badInterfaceName(name: string): string | undefined {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes === 0) return "a TAP needs a name";
  if (bytes >= IFNAMSIZ) return `TAP name "${name}" is longer than ${IFNAMSIZ - 1} bytes`;
  if (/[\s/:]/.test(name) || name === "." || name === "..") {
    return `TAP name "${name}" is not an interface name`;
  }
  return undefined;
}

/**
 * Attaches to the existing TAP `name`: a non-blocking descriptor whose
 * reads and writes are whole frames behind a virtio-net header. Refuses,
 * in one line each, a name that is not one, a missing interface, a TUN
 * (not TAP) and a TAP this process may not attach to. `inheritable` leaves
 * close-on-exec off (the CLI hands it across `execve`).
 *
 * @example
 * ```ts ignore
 * const fd = openTap("tap0");
 * ```
 */
export function openTap(name: string, opts: { inheritable?: boolean } = {}): number {
  const bad = badInterfaceName(name);
  if (bad) throw new VoltError(bad.charAt(0).toUpperCase() + bad.slice(1), "usage");
  const create = `ip tuntap add ${name} mode tap`;
  let flags: number;
  try {
    flags = parseInt(Deno.readTextFileSync(`/sys/class/net/${name}/tun_flags`).trim(), 16);
  } catch {
    const exists = (() => {
      try {
        Deno.statSync(`/sys/class/net/${name}`);
        return true;
      } catch {
        return false;
      }
    })();
    throw new VoltError(
      exists
        ? `Interface ${name} is not a TAP device`
        : `No TAP device named ${name} (make one first: ${create})`,
      "noinput",
    );
  }
  if (!(flags & IFF.TAP)) throw new VoltError(`Interface ${name} is a TUN, not a TAP`, "usage");
  const l = libc();
  const path = new TextEncoder().encode(`${TUN_DEVICE}\0`);
  const fd = l.open(path, O_RDWR | O_NONBLOCK | (opts.inheritable ? 0 : O_CLOEXEC), 0);
  if (fd < 0) {
    throw new VoltError(`Cannot open ${TUN_DEVICE}: ${errnoName(errno())}`, "noinput");
  }
  const ifr = new Uint8Array(IFREQ.size);
  ifr.set(new TextEncoder().encode(name), IFREQ.name);
  new DataView(ifr.buffer).setUint16(IFREQ.flags, IFF.TAP | IFF.NO_PI | IFF.VNET_HDR, true);
  if (l.ioctl_buf(fd, TUN.SETIFF, ifr) < 0) {
    const e = errnoName(errno());
    l.close(fd);
    const why = e === "EBUSY"
      ? "another process holds it"
      : e === "EPERM"
      ? "it belongs to another user (ip tuntap add ... user UID)"
      : e === "EINVAL"
      ? "its flags differ (a multi-queue TAP?)"
      : e;
    throw new VoltError(`Cannot attach to TAP ${name}: ${why}`, "noinput");
  }
  const size = new Int32Array([NET.HDR_SIZE]);
  if (l.ioctl_buf(fd, TUN.SETVNETHDRSZ, new Uint8Array(size.buffer)) < 0) {
    const e = errnoName(errno());
    l.close(fd);
    throw new VoltError(`Cannot set TAP ${name}'s header size: ${e}`, "noinput");
  }
  return fd;
}

/** The TAP's offload switch for the device: true if the TAP took `flags`. */
export function tapOffload(fd: number): (flags: number) => boolean {
  return (flags) => libc().ioctl(fd, TUN.SETOFFLOAD, BigInt(flags)) === 0;
}

/**
 * Parses `XX:XX:XX:XX:XX:XX`; a multicast address is refused (a NIC's
 * own address is unicast).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseMac } from "./tap.ts";
 * assert.deepEqual([...parseMac("06:00:ac:10:00:02")], [6, 0, 0xac, 0x10, 0, 2]);
 * ```
 */
export function parseMac(text: string): Uint8Array {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) {
    throw new VoltError(`Not a MAC address (XX:XX:XX:XX:XX:XX): "${text}"`, "usage");
  }
  const mac = Uint8Array.from(text.split(":"), (h) => parseInt(h, 16));
  if (mac[0] & 1) throw new VoltError(`MAC ${text} is a multicast address`, "usage");
  return mac;
}

/** A random locally administered unicast MAC, for a NIC the user gave none. */
export function randomMac(): Uint8Array {
  const mac = crypto.getRandomValues(new Uint8Array(6));
  mac[0] = (mac[0] & 0xfc) | 0x02;
  return mac;
}

/** `aa:bb:...` for `mac`. */
export function formatMac(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, "0")).join(":");
}
