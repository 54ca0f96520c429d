/**
 * A network namespace a test or benchmark makes for itself, with one TAP and an
 * address on it, so network tests touch nothing of the host's. Needs root,
 * `ip` and /dev/net/tun; {@linkcode netnsIgnore} says when they are missing.
 */

/** Why namespace tests cannot run here, or false when they can. */
export const netnsIgnore: boolean = (() => {
  try {
    Deno.statSync("/dev/net/tun");
    return Deno.uid() !== 0 ||
      !new Deno.Command("ip", { args: ["-V"], stdout: "null", stderr: "null" }).outputSync()
        .success;
  } catch {
    return true;
  }
})();

/** A namespace with TAP `tap` at `hostIp/24`, link up, IPv6 off (no stray frames). */
export interface Netns {
  name: string;
  tap: string;
  hostIp: string;
  /** `ip netns exec NAME`: put before a command to run it inside. */
  wrap: string[];
  /** Runs `cmd` inside; throws with its stderr if it fails. */
  run(cmd: string[]): string;
  /** `deno run -A SCRIPT ARGS...` inside, as a command to spawn or run. */
  deno(script: string, args: string[], opts?: Deno.CommandOptions): Deno.Command;
  /** Deletes the namespace (and the TAP in it). */
  close(): void;
}

function ip(args: string[]): string {
  const out = new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/**
 * Makes the namespace; `close()` it in a `finally`. `mac` gives the TAP
 * that address instead of a random one: clones of one snapshot, each on
 * its own TAP, reach a host side with the MAC their ARP cache holds.
 */
export function makeNetns(hostIp = "10.99.0.1", tap = "vt0", mac?: string): Netns {
  const name = `volt-test-${Deno.pid}-${Math.floor(Math.random() * 1e6)}`;
  ip(["netns", "add", name]);
  const wrap = ["ip", "netns", "exec", name];
  const run = (cmd: string[]) => ip(["netns", "exec", name, ...cmd]);
  try {
    for (const key of ["all", "default"]) {
      run(["sh", "-c", `echo 1 > /proc/sys/net/ipv6/conf/${key}/disable_ipv6`]);
    }
    ip(["-n", name, "link", "set", "lo", "up"]);
    ip(["-n", name, "tuntap", "add", tap, "mode", "tap"]);
    if (mac !== undefined) ip(["-n", name, "link", "set", tap, "address", mac]);
    ip(["-n", name, "addr", "add", `${hostIp}/24`, "dev", tap]);
    ip(["-n", name, "link", "set", tap, "up"]);
  } catch (e) {
    ip(["netns", "del", name]);
    throw e;
  }
  const deno = (script: string, args: string[], opts: Deno.CommandOptions = {}) =>
    new Deno.Command("ip", {
      ...opts,
      args: ["netns", "exec", name, Deno.execPath(), "run", "-A", script, ...args],
      env: { DENO_NO_UPDATE_CHECK: "1", ...opts.env },
    });
  return { name, tap, hostIp, wrap, run, deno, close: () => ip(["netns", "del", name]) };
}
