/**
 * The monitor's error type and exit codes: every failure a user can cause
 * maps to one line and one code.
 *
 * @module
 */

/**
 * Exit codes by cause. A guest-reported status of 0 to 63 passes through
 * as itself; any other is `guestStatus` (see src/vmm/exit_reason.ts).
 */
export const EXIT_CODE = {
  ok: 0,
  usage: 64,
  input: 65,
  noinput: 66,
  kvm: 69,
  internal: 70,
  cantCreate: 73,
  tripleFault: 80,
  failEntry: 81,
  internalError: 82,
  guestCrash: 83,
  unexpectedExit: 84,
  noUserspace: 85,
  guestStatus: 86,
  sighup: 129,
  sigint: 130,
  sigquit: 131,
  sigterm: 143,
} as const;

/** A cause of failure. */
export type ErrorKind = "usage" | "input" | "noinput" | "kvm" | "internal" | "cantCreate";

/**
 * An expected failure: the CLI prints its message alone and exits with the
 * kind's code.
 *
 * @example
 * ```ts
 * import { VoltError } from "./errors.ts";
 * throw new VoltError("Kernel not found: /nope", "noinput");
 * ```
 */
export class VoltError extends Error {
  /** What went wrong, for the exit code. */
  readonly kind: ErrorKind;
  /** A one-line `message` (sentence case, no trailing period) and its kind. */
  constructor(message: string, kind: ErrorKind = "input") {
    super(message);
    this.name = "VoltError";
    this.kind = kind;
  }

  /** The process exit code for this error. */
  get exitCode(): number {
    return EXIT_CODE[this.kind];
  }
}
