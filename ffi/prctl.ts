/**
 * `prctl(2)` options the sandbox uses (include/uapi/linux/prctl.h).
 *
 * @module
 */

/** Read the process's dumpable flag. */
export const PR_GET_DUMPABLE = 3;
/** Set the dumpable flag: 0 means no core dump, no ptrace attach, /proc files owned by root. */
export const PR_SET_DUMPABLE = 4;
/** Read the seccomp mode of the calling thread. */
export const PR_GET_SECCOMP = 21;
/** Is a capability in the bounding set? */
export const PR_CAPBSET_READ = 23;
/** Remove a capability from the bounding set (needs CAP_SETPCAP). */
export const PR_CAPBSET_DROP = 24;
/** Set no_new_privs: execve can no longer grant privileges; seccomp and Landlock need it. */
export const PR_SET_NO_NEW_PRIVS = 38;
/** Read no_new_privs. */
export const PR_GET_NO_NEW_PRIVS = 39;
/** Ambient capability operations. */
export const PR_CAP_AMBIENT = 47;
/** `PR_CAP_AMBIENT` sub-operation: is a capability ambient? */
export const PR_CAP_AMBIENT_IS_SET = 1;
/** `PR_CAP_AMBIENT` sub-operation: empty the ambient set. */
export const PR_CAP_AMBIENT_CLEAR_ALL = 4;
