/**
 * Entry of the single-file bundle: the same file runs the CLI on the main
 * thread and a vCPU in each worker.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { main } from "./main.ts";
import { setVcpuWorkerUrl } from "../vmm/machine.ts";
import { installVcpuThread } from "../vmm/vcpu_thread.ts";
import { markStandalone } from "../sandbox/monitor.ts";
import { setGuestSourcesUrl } from "../guest/guest_sources.ts";

// deno-lint-ignore no-explicit-any
const inWorker = typeof (globalThis as any).WorkerGlobalScope !== "undefined" &&
  // deno-lint-ignore no-explicit-any
  self instanceof (globalThis as any).WorkerGlobalScope;

if (inWorker) {
  installVcpuThread();
} else {
  // tools/bundle.ts puts the vCPU module's own bundle in front of this one.
  // deno-lint-ignore no-explicit-any
  const workerCode: unknown = (globalThis as any).__voltVcpuWorker;
  setVcpuWorkerUrl(
    typeof workerCode === "string"
      ? new URL(URL.createObjectURL(new Blob([workerCode], { type: "text/javascript" })))
      : new URL(import.meta.url),
  );
  setGuestSourcesUrl(new URL("./guest/", import.meta.url));
  markStandalone();
  Deno.exit(await main(Deno.args));
}
