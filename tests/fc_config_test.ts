/**
 * Firecracker's configuration file: the schema's mapping onto Volt's
 * config, every field Volt does not support refused by name, bad files as
 * one line, and `volt run --config-file` booting a small guest.
 */
import assert from "node:assert/strict";
import { CONFIG_FILE_MAX, fromFirecracker, readConfigFile } from "../src/control/fc_config.ts";
import { VoltError } from "../src/errors.ts";
import * as g from "./guests.ts";
import { inHelperVm, needsKvm, runCli, tmpDir } from "./helpers.ts";

const dir = tmpDir();
const write = (name: string, data: unknown) => {
  const p = `${dir}/${name}`;
  Deno.writeTextFileSync(p, typeof data === "string" ? data : JSON.stringify(data));
  return p;
};
const refused = (data: unknown, re: RegExp) =>
  assert.throws(
    () => fromFirecracker(data),
    (e: unknown) => e instanceof VoltError && e.kind === "usage" && re.test(e.message),
  );
const boot = { kernel_image_path: "/k/vmlinux" };

Deno.test("config file: every Firecracker section maps onto Volt's config", () => {
  const { config, logLevel, metricsPath } = fromFirecracker({
    "boot-source": {
      kernel_image_path: "/k/vmlinux",
      boot_args: "console=ttyS0 quiet",
      initrd_path: "/k/i.cpio",
    },
    drives: [
      {
        drive_id: "rootfs",
        path_on_host: "/d/root.ext4",
        is_root_device: true,
        is_read_only: false,
      },
      {
        drive_id: "data",
        path_on_host: "/d/data.img",
        is_root_device: false,
        cache_type: "Writeback",
        io_engine: "Sync",
      },
    ],
    "machine-config": { vcpu_count: 2, mem_size_mib: 256, smt: false, track_dirty_pages: false },
    "network-interfaces": [{
      iface_id: "eth0",
      host_dev_name: "tap0",
      guest_mac: "06:00:ac:10:00:02",
    }],
    vsock: { guest_cid: 3, uds_path: "/run/v.sock", vsock_id: "vsock0" },
    logger: { level: "Debug", show_level: true },
    metrics: { metrics_path: "/run/m.fifo" },
    entropy: {},
    volt: { append: "volt.exit", cpu_template: "none", boot_protocol: "pvh", console_mode: "raw" },
  });
  assert.deepEqual(config, {
    kernel: "/k/vmlinux",
    initrd: "/k/i.cpio",
    cmdline: "console=ttyS0 quiet",
    append: "volt.exit",
    cpus: 2,
    memory: 256 * 2 ** 20,
    cpuTemplate: "none",
    bootProtocol: "pvh",
    consoleMode: "raw",
    disks: [
      { path: "/d/root.ext4", readOnly: false, id: "rootfs", root: true },
      // No is_read_only: read-only, Volt's default for a disk.
      { path: "/d/data.img", readOnly: true, id: "data", root: false },
    ],
    nets: [{ tap: "tap0", id: "eth0", mac: "06:00:ac:10:00:02" }],
    vsock: { cid: 3, uds: "/run/v.sock" },
    entropy: true,
  });
  assert.equal(logLevel, "debug");
  assert.equal(metricsPath, "/run/m.fifo");
  assert.equal(
    fromFirecracker({ "boot-source": boot, metrics: { metrics_path: "/m" } }).metricsPath,
    "/m",
  );
  // The smallest file: a kernel, Volt's defaults for the rest.
  assert.deepEqual(fromFirecracker({ "boot-source": boot }).config, {
    kernel: "/k/vmlinux",
    disks: [],
    nets: [],
  });
});

Deno.test("config file: a field Volt does not support is refused by name, never ignored", () => {
  const cases: Array<[unknown, RegExp]> = [
    [
      { "boot-source": boot, balloon: { amount_mib: 1 } },
      /^Config: balloon is not supported by Volt yet$/,
    ],
    [{ "boot-source": boot, "mmds-config": {} }, /^Config: mmds-config is not supported/],
    [
      { "boot-source": boot, metrics: { metrics_path: "/m", period: 1 } },
      /^Config: metrics\.period is not a setting Volt knows$/,
    ],
    [
      {
        "boot-source": boot,
        drives: [{ drive_id: "a", path_on_host: "/a", is_root_device: false, rate_limiter: {} }],
      },
      /^Config: drives\[0\]\.rate_limiter is not supported by Volt yet$/,
    ],
    [
      {
        "boot-source": boot,
        drives: [{ drive_id: "a", path_on_host: "/a", is_root_device: false, io_engine: "Async" }],
      },
      /^Config: drives\[0\]\.io_engine is supported by Volt only as "Sync"$/,
    ],
    [
      { "boot-source": boot, "machine-config": { vcpu_count: 1, mem_size_mib: 128, smt: true } },
      /^Config: machine-config\.smt is supported by Volt only as false$/,
    ],
    [
      {
        "boot-source": boot,
        "machine-config": { vcpu_count: 1, mem_size_mib: 128, cpu_template: "T2" },
      },
      /^Config: machine-config\.cpu_template is supported by Volt only as "None"$/,
    ],
    [
      {
        "boot-source": boot,
        "network-interfaces": [{ iface_id: "e", host_dev_name: "t", tx_rate_limiter: {} }],
      },
      /^Config: network-interfaces\[0\]\.tx_rate_limiter is not supported/,
    ],
    [
      { "boot-source": boot, logger: { log_path: "/l" } },
      /^Config: logger\.log_path is not supported/,
    ],
    [{ "boot-source": boot, frobnicate: 1 }, /^Config: frobnicate is not a setting Volt knows$/],
    [
      { "boot-source": { ...boot, kernel_args: "x" } },
      /^Config: boot-source\.kernel_args is not a setting Volt knows$/,
    ],
  ];
  for (const [data, re] of cases) refused(data, re);
});

Deno.test("config file: wrong types, missing fields and repeated ids name the field", () => {
  refused({}, /^Config: boot-source is missing$/);
  refused("vm", /^Config: the document: expected Object, got "vm"$/);
  refused(
    { "boot-source": { kernel_image_path: 7 } },
    /^Config: boot-source\.kernel_image_path: expected string, got 7$/,
  );
  refused(
    { "boot-source": { kernel_image_path: "" } },
    /^Config: boot-source\.kernel_image_path needs a path$/,
  );
  refused(
    { "boot-source": boot, "machine-config": { vcpu_count: 0, mem_size_mib: 128 } },
    /^Config: machine-config\.vcpu_count: expected >=1, got 0$/,
  );
  refused(
    { "boot-source": boot, "machine-config": { vcpu_count: 1.5, mem_size_mib: 128 } },
    /^Config: machine-config\.vcpu_count: expected /,
  );
  refused({ "boot-source": boot, "machine-config": { vcpu_count: 1 } }, /mem_size_mib is missing/);
  refused(
    { "boot-source": boot, drives: [{ drive_id: "a", path_on_host: "/a", is_root_device: "yes" }] },
    /^Config: drives\[0\]\.is_root_device: expected boolean, got "yes"$/,
  );
  refused(
    {
      "boot-source": boot,
      drives: [
        { drive_id: "a", path_on_host: "/a", is_root_device: false },
        { drive_id: "a", path_on_host: "/b", is_root_device: false },
      ],
    },
    /^Config: drive_id: "a" is given twice$/,
  );
  refused(
    { "boot-source": boot, vsock: { guest_cid: 2, uds_path: "/v" } },
    /^Config: vsock\.guest_cid: expected >=3, got 2$/,
  );
});

Deno.test("config file: missing, not JSON, not UTF-8 or too large is one line", () => {
  const err = (path: string, re: RegExp, kind: string) =>
    assert.throws(
      () => readConfigFile(path),
      (e: unknown) => e instanceof VoltError && e.kind === kind && re.test(e.message),
    );
  err(`${dir}/nope.json`, /^Config file not found: .*nope\.json$/, "noinput");
  err(dir, /^Config file is not a file: /, "usage");
  err(write("bad.json", '{"boot-source": '), /^Config file .*bad\.json is not JSON: /, "input");
  const latin1 = `${dir}/latin1.json`;
  Deno.writeFileSync(latin1, new Uint8Array([0x7b, 0xff, 0x7d]));
  err(latin1, /is not JSON: /, "input");
  err(write("big.json", " ".repeat(CONFIG_FILE_MAX + 1)), /is larger than 1 MiB/, "input");
});

const CLI_MS = inHelperVm ? 120_000 : 30_000;

Deno.test("volt run --config-file: bad files, conflicting flags and --no-api alone are one line", async () => {
  const good = write("good.json", { "boot-source": { kernel_image_path: `${dir}/nope` } });
  const cases: Array<[string[], number, RegExp]> = [
    [["--config-file", `${dir}/missing.json`], 66, /^volt: Config file not found: /],
    [["--config-file", write("x.json", "not json")], 65, /is not JSON/],
    [
      ["--config-file", write("b.json", { "boot-source": boot, balloon: {} })],
      64,
      /balloon is not supported/,
    ],
    [
      ["--config-file", good, "--memory", "256M"],
      64,
      /^volt: --memory conflicts with --config-file/,
    ],
    [["--config-file", good, "--disk", "/x"], 64, /^volt: --disk conflicts with --config-file/],
    [["--no-api"], 64, /^volt: --no-api needs --config-file$/],
    [["--config-file", good], 66, /^volt: Kernel not found: .*nope$/],
  ];
  for (const [args, code, re] of cases) {
    const r = await runCli(["run", ...args], { timeout: CLI_MS });
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr.trim(), re);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

Deno.test({
  ...needsKvm,
  name: "volt run --config-file --no-api: boots the file's kernel with its memory, vCPUs and disk",
  async fn() {
    const disk = `${dir}/d.img`;
    Deno.writeFileSync(disk, new Uint8Array(4096));
    const before = Deno.readFileSync(disk);
    const file = write("vm.json", {
      "boot-source": { kernel_image_path: g.exitWith(5) },
      "machine-config": { vcpu_count: 2, mem_size_mib: 64 },
      drives: [{ drive_id: "data", path_on_host: disk, is_root_device: false }],
      entropy: {},
    });
    const r = await runCli(
      ["run", "--no-api", "--config-file", file, "--log-level", "info"],
      { timeout: CLI_MS },
    );
    assert.match(r.stdout, /exiting/);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /64 MiB, 2 vCPU/);
    assert.deepEqual(Deno.readFileSync(disk), before);
  },
});
