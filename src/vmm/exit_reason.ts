/**
 * How a VM stopped, and the one line and exit code each cause gets.
 *
 * @module
 */

import { EXIT_CODE } from "../errors.ts";

/** Why the VM stopped. */
export type StopCause =
  | "guest-exit"
  | "reset"
  | "power-off"
  | "triple-fault"
  | "fail-entry"
  | "internal-error"
  | "guest-crash"
  | "guest-userspace-unsupported"
  | "unexpected-exit"
  | "host-signal"
  | "host-stop"
  | "monitor-error";

/** The outcome of a run. */
export interface VmExit {
  /** Why the VM stopped. */
  cause: StopCause;
  /** Process exit code for this outcome. */
  code: number;
  /** One line for the user. */
  message: string;
  /** vCPU that saw it, when one did. */
  cpu?: number;
}

/**
 * Builds a {@linkcode VmExit}.
 *
 * @example
 * ```ts
 * import { vmExit } from "./exit_reason.ts";
 * vmExit("triple-fault", "Guest triple fault at rip 0x1000", 0).code; // 80
 * ```
 */
export function vmExit(
  cause: StopCause,
  message: string,
  cpu?: number,
  status?: number,
): VmExit {
  const codes: Record<StopCause, number> = {
    "guest-exit": status ?? 0,
    "reset": EXIT_CODE.ok,
    "power-off": EXIT_CODE.ok,
    "triple-fault": EXIT_CODE.tripleFault,
    "fail-entry": EXIT_CODE.failEntry,
    "internal-error": EXIT_CODE.internalError,
    "guest-crash": EXIT_CODE.guestCrash,
    "guest-userspace-unsupported": EXIT_CODE.noUserspace,
    "unexpected-exit": EXIT_CODE.unexpectedExit,
    "host-signal": status ?? EXIT_CODE.sigterm,
    "host-stop": status ?? EXIT_CODE.ok,
    "monitor-error": EXIT_CODE.internal,
  };
  return { cause, code: codes[cause], message, cpu };
}
