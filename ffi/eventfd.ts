/**
 * `eventfd(2)` and `epoll(7)` constants and the `epoll_event` layout
 * (include/uapi/linux/eventfd.h, include/uapi/linux/eventpoll.h).
 *
 * @module
 */

/** `EFD_CLOEXEC` (= O_CLOEXEC). */
export const EFD_CLOEXEC = 0o2000000;
/** `EFD_NONBLOCK` (= O_NONBLOCK). */
export const EFD_NONBLOCK = 0o4000;

/** `EPOLL_CLOEXEC`. */
export const EPOLL_CLOEXEC = 0o2000000;
/** `EPOLL_CTL_ADD`. */
export const EPOLL_CTL_ADD = 1;
/** `EPOLL_CTL_DEL`. */
export const EPOLL_CTL_DEL = 2;
/** `EPOLLIN`. */
export const EPOLLIN = 0x001;
/** `EPOLLOUT`. */
export const EPOLLOUT = 0x004;
/** `EPOLLERR`. */
export const EPOLLERR = 0x008;
/** `EPOLLHUP`. */
export const EPOLLHUP = 0x010;
/** `EPOLLRDHUP`: the peer shut down its writing end. */
export const EPOLLRDHUP = 0x2000;
/** `EPOLLET`: report a change of readiness once, not while it lasts. */
export const EPOLLET = 0x80000000;

/**
 * `struct epoll_event` on x86-64: `__u32 events; __u64 data;`, packed
 * (`EPOLL_PACKED` is `__attribute__((packed))` there), so 12 bytes.
 */
export const EPOLL_EVENT = { size: 12, events: 0, data: 4 } as const;

/** `lseek` whence: the end of the file. */
export const SEEK_END = 2;
