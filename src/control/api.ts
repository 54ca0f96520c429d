/**
 * Firecracker's REST API, as routes over one configuration document: before
 * `InstanceStart` the requests build the document (in the outer step,
 * which then opens what it names and jails itself); after it, the jailed
 * monitor answers the same GETs and drives the running VM (pause, resume).
 * Status codes and `{"fault_message"}` bodies follow Firecracker's.
 *
 * @module
 */

import * as v from "valibot";
import { VoltError } from "../errors.ts";
import type { HttpRequest, HttpResponse } from "./http.ts";
import {
  BootSource,
  check,
  Drive,
  Entropy,
  Logger,
  MachineConfig,
  Metrics,
  NetworkInterface,
  Vsock,
} from "./fc_config.ts";

/** A Firecracker configuration document, as `GET /vm/config` returns it. */
export type FcDocument = Record<string, unknown>;

/** Firecracker's instance states, by Volt's. */
export type ApiState = "Not started" | "Running" | "Paused";

/** What the routes act on; a missing action answers with a fault. */
export interface ApiTarget {
  /** The instance id (`--id`). */
  id: string;
  /** The version `GET /version` and `GET /` report. */
  version: string;
  /** Where the VM is. */
  state(): ApiState;
  /** Before the start: validates the whole document, opens what it names, and starts. */
  start?(doc: FcDocument): Promise<void> | void;
  pause?(): Promise<void>;
  resume?(): void;
  /** Writes a metrics line now; false if the VM has no metrics file. */
  flushMetrics?(): boolean;
  /** Presses Ctrl-Alt-Del on the guest's keyboard. */
  ctrlAltDel?(): void;
  /** Saves the paused VM (`PUT /snapshot/create`). */
  createSnapshot?(req: SnapshotCreate): void;
  /** Before the start: restores a VM from a snapshot instead (`PUT /snapshot/load`). */
  loadSnapshot?(req: SnapshotLoad): Promise<void> | void;
}

/** `PUT /snapshot/create`'s body. */
export const SnapshotCreate = v.strictObject({
  snapshot_path: v.pipe(v.string(), v.nonEmpty()),
  mem_file_path: v.pipe(v.string(), v.nonEmpty()),
  snapshot_type: v.optional(v.picklist(["Full", "Diff"])),
  version: v.optional(v.string()),
});
/** A checked `PUT /snapshot/create` body. */
export type SnapshotCreate = v.InferOutput<typeof SnapshotCreate>;

/** `PUT /snapshot/load`'s body: the memory file as `mem_backend` or the older `mem_file_path`. */
export const SnapshotLoad = v.strictObject({
  snapshot_path: v.pipe(v.string(), v.nonEmpty()),
  mem_backend: v.optional(v.strictObject({
    backend_type: v.picklist(["File", "Uffd"]),
    backend_path: v.pipe(v.string(), v.nonEmpty()),
  })),
  mem_file_path: v.optional(v.pipe(v.string(), v.nonEmpty())),
  enable_diff_snapshots: v.optional(v.boolean()),
  track_dirty_pages: v.optional(v.boolean()),
  resume_vm: v.optional(v.boolean()),
  network_overrides: v.optional(v.array(v.strictObject({
    iface_id: v.pipe(v.string(), v.nonEmpty()),
    host_dev_name: v.pipe(v.string(), v.nonEmpty()),
  }))),
  vsock_override: v.optional(v.strictObject({ uds_path: v.pipe(v.string(), v.nonEmpty()) })),
});
/** A checked `PUT /snapshot/load` body. */
export type SnapshotLoad = v.InferOutput<typeof SnapshotLoad>;

/** The memory file a load names, or a usage error for what Volt does not do. */
export function loadMemoryPath(req: SnapshotLoad): string {
  if (req.mem_backend && req.mem_file_path) {
    throw new VoltError("snapshot/load: give mem_backend or mem_file_path, not both", "usage");
  }
  if (req.mem_backend?.backend_type === "Uffd") {
    throw new VoltError("snapshot/load: the Uffd memory backend is not supported", "usage");
  }
  const path = req.mem_backend?.backend_path ?? req.mem_file_path;
  if (!path) throw new VoltError("snapshot/load: no memory file (mem_backend)", "usage");
  return path;
}

/** Firecracker's defaults for `GET /machine-config` before one is set. */
const DEFAULT_MACHINE = {
  vcpu_count: 1,
  mem_size_mib: 128,
  smt: false,
  track_dirty_pages: false,
  huge_pages: "None",
};

const fault = (status: number, message: string): HttpResponse => ({
  status,
  body: { fault_message: message },
});
const noContent: HttpResponse = { status: 204 };

const Action = v.strictObject({
  action_type: v.picklist(["InstanceStart", "SendCtrlAltDel", "FlushMetrics"]),
});
const VmState = v.strictObject({ state: v.picklist(["Paused", "Resumed"]) });

/** Sections `PUT /<name>` sets whole, with their schema. */
const SECTIONS = {
  "boot-source": BootSource,
  "machine-config": MachineConfig,
  vsock: Vsock,
  logger: Logger,
  metrics: Metrics,
  entropy: Entropy,
} as const;

/** Collections `PUT /<name>/{id}` adds to, with their schema and id field. */
const COLLECTIONS = {
  drives: { schema: Drive, key: "drive_id" },
  "network-interfaces": { schema: NetworkInterface, key: "iface_id" },
} as const;

/**
 * The API's routes over `doc` for `target`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ApiRoutes } from "./api.ts";
 * const api = new ApiRoutes({ id: "vm1", version: "0.1.0", state: () => "Not started" });
 * const body = new TextEncoder().encode('{"vcpu_count": 2, "mem_size_mib": 256}');
 * assert.equal((await api.handle({ method: "PUT", path: "/machine-config", body })).status, 204);
 * const got = await api.handle({ method: "GET", path: "/machine-config", body: new Uint8Array() });
 * assert.equal((got.body as { vcpu_count: number }).vcpu_count, 2);
 * ```
 */
export class ApiRoutes {
  readonly #target: ApiTarget;
  readonly #doc: FcDocument;
  #starting = false;
  /** Requests answered, and how many of them with a fault. */
  readonly stats = { requests: 0, faults: 0 };

  constructor(target: ApiTarget, doc: FcDocument = {}) {
    this.#target = target;
    this.#doc = structuredClone(doc);
  }

  /** The document so far. */
  get document(): FcDocument {
    return this.#doc;
  }

  /** Answers one request; never throws. */
  async handle(req: HttpRequest): Promise<HttpResponse> {
    let res: HttpResponse;
    try {
      res = await this.#route(req);
    } catch (e) {
      res = e instanceof VoltError
        ? fault(400, e.message)
        : fault(500, `Internal error: ${(e as Error)?.message ?? e}`);
    }
    this.stats.requests++;
    if (res.status >= 400) this.stats.faults++;
    return res;
  }

  async #route({ method, path, body }: HttpRequest): Promise<HttpResponse> {
    const t = this.#target;
    const parts = path.split("/").slice(1).map(decodeURIComponent);
    const started = t.state() !== "Not started";
    const json = () => parseBody(body);
    const key = `${method} /${parts[0] ?? ""}${parts.length > 1 ? "/{id}" : ""}`;
    switch (key) {
      case "GET /":
        return {
          status: 200,
          body: { id: t.id, state: t.state(), vmm_version: t.version, app_name: "Volt" },
        };
      case "GET /version":
        return { status: 200, body: { firecracker_version: t.version } };
      case "GET /machine-config":
        return {
          status: 200,
          body: { ...DEFAULT_MACHINE, ...(this.#doc["machine-config"] as object) },
        };
      case "GET /vm/{id}":
        if (parts[1] !== "config" || parts.length > 2) break;
        return { status: 200, body: this.#doc };
      case "PATCH /machine-config": {
        if (started) return afterStart();
        const merged = { ...(this.#doc["machine-config"] as object ?? {}), ...object(json()) };
        this.#doc["machine-config"] = check(MachineConfig, merged, "machine-config");
        return noContent;
      }
      case "PUT /actions": {
        const a = check(Action, json(), "actions").action_type;
        if (a === "InstanceStart") {
          if (started || this.#starting) return fault(400, "The microVM is already running");
          if (!t.start) return fault(400, "This monitor cannot start a microVM");
          this.#starting = true;
          try {
            await t.start(this.#doc);
          } finally {
            this.#starting = false;
          }
          return noContent;
        }
        if (!started) return fault(400, `${a}: the microVM is not running`);
        if (a === "FlushMetrics") {
          if (!t.flushMetrics?.()) {
            return fault(400, "No metrics file was configured (PUT /metrics)");
          }
          return noContent;
        }
        if (!t.ctrlAltDel) return fault(400, "This monitor cannot send Ctrl-Alt-Del");
        t.ctrlAltDel();
        return noContent;
      }
      case "PUT /snapshot/{id}": {
        if (parts.length > 2) break;
        if (parts[1] === "create") {
          const req = check(SnapshotCreate, json(), "snapshot/create");
          if (!started) return fault(400, "snapshot/create: the microVM is not running");
          if (t.state() !== "Paused") {
            return fault(400, "snapshot/create: pause the microVM first (PATCH /vm)");
          }
          if (!t.createSnapshot) return fault(400, "This monitor cannot create snapshots");
          t.createSnapshot(req);
          return noContent;
        }
        if (parts[1] === "load") {
          const req = check(SnapshotLoad, json(), "snapshot/load");
          if (started || this.#starting) {
            return fault(400, "Loading a snapshot is not allowed after the microVM has started");
          }
          loadMemoryPath(req);
          if (!t.loadSnapshot) return fault(400, "This monitor cannot load snapshots");
          this.#starting = true;
          try {
            await t.loadSnapshot(req);
          } finally {
            this.#starting = false;
          }
          return noContent;
        }
        break;
      }
      case "PATCH /vm": {
        const want = check(VmState, json(), "vm").state;
        if (!started) return fault(400, "The microVM is not running");
        if (want === "Paused") {
          if (!t.pause) return fault(400, "This monitor cannot pause");
          if (t.state() === "Paused") return noContent;
          await t.pause();
        } else {
          if (!t.resume) return fault(400, "This monitor cannot resume");
          if (t.state() === "Running") return noContent;
          t.resume();
        }
        return noContent;
      }
    }
    if (method === "PUT" && parts.length === 1 && parts[0] in SECTIONS) {
      if (started) return afterStart();
      const name = parts[0] as keyof typeof SECTIONS;
      this.#doc[name] = check(SECTIONS[name], json(), name);
      return noContent;
    }
    if ((method === "PUT" || method === "PATCH") && parts.length === 2 && parts[0] in COLLECTIONS) {
      if (started) return afterStart();
      const name = parts[0] as keyof typeof COLLECTIONS;
      const { schema, key: idKey } = COLLECTIONS[name];
      const list = (this.#doc[name] ??= []) as Record<string, unknown>[];
      const at = list.findIndex((x) => x[idKey] === parts[1]);
      const given = object(json());
      if (method === "PATCH" && at < 0) return fault(400, `${name}: no ${idKey} "${parts[1]}"`);
      const item = method === "PATCH" ? { ...list[at], ...given } : given;
      if (item[idKey] !== parts[1]) {
        return fault(400, "The id from the path does not match the id from the body!");
      }
      const checked = check(schema, item, `${name}/${parts[1]}`);
      if (at < 0) list.push(checked);
      else list[at] = checked;
      return noContent;
    }
    return fault(400, `Invalid request method and/or path: ${method} ${path}`);
  }
}

/** Firecracker's answer to a pre-boot request after the start. */
function afterStart(): HttpResponse {
  return fault(400, "The requested operation is not supported after starting the microVM.");
}

/** A request body as JSON; bad JSON is a usage error. */
function parseBody(body: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (e) {
    throw new VoltError(`Invalid JSON body: ${(e as Error).message.split("\n")[0]}`, "usage");
  }
}

/** `x` if it is a JSON object; a usage error otherwise. */
function object(x: unknown): Record<string, unknown> {
  if (x === null || typeof x !== "object" || Array.isArray(x)) {
    throw new VoltError("The body must be a JSON object", "usage");
  }
  return x as Record<string, unknown>;
}
