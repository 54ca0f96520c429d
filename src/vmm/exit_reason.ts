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
  /**
   * The status the guest reported (`guest-exit` only), as it was: `code`
   * differs when the status is above {@linkcode GUEST_STATUS_MAX}.
   */
  status?: number;
}

/**
 * The largest guest status volt exits with unchanged. The monitor's own
 * codes are 64 and up (sysexits 64 to 78, the guest's fate as the monitor
 * saw it 80 to 86, 128 + n when a signal n stops or kills it, e.g. 159 when
 * seccomp kills it), so a guest allowed those could pose as a triple fault,
 * a SIGTERM or a seccomp kill. 0 to 63 is below sysexits' base, where a
 * program's own statuses usually are; volt-init reports a command killed
 * by a signal as 128 + n, which lands on `EXIT_CODE.guestStatus` with its
 * real value in the message.
 */
export const GUEST_STATUS_MAX = 63;

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
  const guest = status ?? 0;
  const codes: Record<StopCause, number> = {
    // One code for every status out of range: it names none of the monitor's outcomes.
    "guest-exit": Number.isInteger(guest) && guest >= 0 && guest <= GUEST_STATUS_MAX
      ? guest
      : EXIT_CODE.guestStatus,
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
  const exit: VmExit = { cause, code: codes[cause], message, cpu };
  if (cause === "guest-exit") exit.status = guest;
  return exit;
}

/**
 * The stop for a status the guest reported on the exit port; when the
 * status does not pass through, its message says so.
 *
 * @example
 * ```ts
 * import { guestExit } from "./exit_reason.ts";
 * guestExit(3, 0).code; // 3
 * guestExit(143, 0).message; // "Guest exited with status 143: outside 0 to 63, volt exits with 86"
 * ```
 */
export function guestExit(status: number, cpu?: number): VmExit {
  const exit = vmExit("guest-exit", `Guest exited with status ${status}`, cpu, status);
  if (exit.code === EXIT_CODE.guestStatus) {
    exit.message += `: outside 0 to ${GUEST_STATUS_MAX}, volt exits with ${exit.code}`;
  }
  return exit;
}
