/**
 * Terminal and file ioctl requests (include/uapi/asm-generic/ioctls.h,
 * which x86 uses unchanged).
 *
 * @module
 */

/** Read termios (`tcgetattr`). */
export const TCGETS = 0x5401;
/** Write termios now (`tcsetattr(TCSANOW)`). */
export const TCSETS = 0x5402;
/** Write termios after output drains (`tcsetattr(TCSADRAIN)`). */
export const TCSETSW = 0x5403;
/** Write termios after draining and flushing input (`tcsetattr(TCSAFLUSH)`). */
export const TCSETSF = 0x5404;
/** Read the window size. */
export const TIOCGWINSZ = 0x5413;
/** Set or clear O_NONBLOCK. */
export const FIONBIO = 0x5421;
/** Clear close-on-exec. */
export const FIONCLEX = 0x5450;
/** Set close-on-exec. */
export const FIOCLEX = 0x5451;
