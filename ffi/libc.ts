/**
 * The one `Deno.dlopen` of libc. Every native call the monitor makes goes
 * through the symbols below; nothing else in the tree opens a library.
 *
 * @module
 */

import { errnoName } from "./errno.ts";

/** Candidate absolute paths: `--allow-ffi` resolves bare names against the cwd. */
export const LIBC_CANDIDATES = [
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/usr/lib/x86_64-linux-gnu/libc.so.6",
  "/lib64/libc.so.6",
  "/usr/lib64/libc.so.6",
];

const symbols = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  // fcntl is variadic: the int-argument form.
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  dup3: { parameters: ["i32", "i32", "i32"], result: "i32" },
  umask: { parameters: ["u32"], result: "u32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  madvise: { parameters: ["usize", "usize", "i32"], result: "i32" },
  // ioctl is variadic: one fixed-arity alias per argument kind.
  ioctl: { parameters: ["i32", "u32", "usize"], result: "i32" },
  ioctl_buf: { name: "ioctl", parameters: ["i32", "u32", "buffer"], result: "i32" },
  mmap: {
    parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
    result: "pointer",
  },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  syscall3: { name: "syscall", parameters: ["i64", "i64", "i64", "i64"], result: "i64" },
  syscall3_buf: {
    name: "syscall",
    parameters: ["i64", "i64", "i64", "buffer"],
    result: "i64",
  },
  // syscall is variadic too: aliases for the sandbox's pointer positions
  // (landlock_create_ruleset takes it first, landlock_add_rule third).
  syscall3_buf1: {
    name: "syscall",
    parameters: ["i64", "buffer", "i64", "i64"],
    result: "i64",
  },
  syscall4_buf3: {
    name: "syscall",
    parameters: ["i64", "i64", "i64", "buffer", "i64"],
    result: "i64",
  },
  capget: { parameters: ["buffer", "buffer"], result: "i32" },
  capset: { parameters: ["buffer", "buffer"], result: "i32" },
  execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  gettid: { parameters: [], result: "i32" },
  getpid: { parameters: [], result: "i32" },
  getuid: { parameters: [], result: "u32" },
  tgkill: { parameters: ["i32", "i32", "i32"], result: "i32" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // The data path: addresses are host addresses of guest RAM, passed as
  // numbers (see dataPath below), and results are read as i32 (callers
  // move at most IO_CHUNK at once), so a request allocates no BigInt.
  read_addr: { name: "read", parameters: ["i32", "usize", "usize"], result: "i32" },
  write_addr: { name: "write", parameters: ["i32", "usize", "usize"], result: "i32" },
  pread: { name: "pread64", parameters: ["i32", "usize", "usize", "i64"], result: "i32" },
  pwrite: { name: "pwrite64", parameters: ["i32", "usize", "usize", "i64"], result: "i32" },
  readv: { parameters: ["i32", "usize", "i32"], result: "i32" },
  writev: { parameters: ["i32", "usize", "i32"], result: "i32" },
  preadv: { name: "preadv64", parameters: ["i32", "usize", "i32", "i64"], result: "i32" },
  pwritev: { name: "pwritev64", parameters: ["i32", "usize", "i32", "i64"], result: "i32" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  ftruncate: { name: "ftruncate64", parameters: ["i32", "i64"], result: "i32" },
  rename: { parameters: ["buffer", "buffer"], result: "i32" },
  unlink: { parameters: ["buffer"], result: "i32" },
  fallocate: { name: "fallocate64", parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  lseek: { name: "lseek64", parameters: ["i32", "i64", "i32"], result: "i64" },
  getrandom: { parameters: ["usize", "usize", "u32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  // On Deno's blocking pool: the I/O loop waits without holding the main thread.
  epoll_wait_nb: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The bound libc symbols. */
export type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];

let bound: Libc | undefined;
// Each symbol's own library handle, kept so none is ever collected.
const handles: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];
let libPath: string | undefined;

/** Error raised by a failed libc call; carries the errno name. */
export class SysError extends Error {
  /** Numeric errno. */
  readonly errno: number;
  /** Symbolic errno, e.g. `EBUSY`. */
  readonly code: string;
  constructor(what: string, errno: number) {
    const code = errnoName(errno);
    super(`${what} failed: ${code}`);
    this.name = "SysError";
    this.errno = errno;
    this.code = code;
  }
}

/** Path of the libc that {@linkcode libc} opens (first existing candidate). */
export function libcPath(): string {
  if (libPath) return libPath;
  for (const p of LIBC_CANDIDATES) {
    try {
      Deno.statSync(p);
      libPath = p;
      return p;
    } catch { /* try the next one */ }
  }
  throw new Error(`No libc found (looked in ${LIBC_CANDIDATES.join(", ")})`);
}

/**
 * The libc symbols, opened on first use.
 *
 * @example
 * ```ts
 * import { libc } from "./libc.ts";
 * console.log(libc().getpid());
 * ```
 */
export function libc(): Libc {
  if (bound) return bound;
  // Bound one by one on first use: binding all of them costs a runtime ~7
  // ms, and the outer step uses a few. A later dlopen finds libc loaded, so
  // it opens no file (Landlock), but its call trampoline is new executable
  // memory (mmap, mprotect): a thread binds the rest with bindAllLibc()
  // before its seccomp filter.
  const path = libcPath();
  const lazy: Record<string, unknown> = {};
  for (const name of Object.keys(symbols) as (keyof typeof symbols)[]) {
    Object.defineProperty(lazy, name, {
      configurable: true,
      enumerable: true,
      get() {
        const lib = Deno.dlopen(path, { [name]: symbols[name] } as Deno.ForeignLibraryInterface);
        handles.push(lib);
        const fn = lib.symbols[name];
        Object.defineProperty(lazy, name, { value: fn, enumerable: true });
        return fn;
      },
    });
  }
  bound = lazy as Libc;
  return bound;
}

/**
 * Binds every libc symbol not bound yet: a thread calls it before its
 * seccomp filter, which would refuse the mmap and mprotect of a binding.
 *
 * @example
 * ```ts
 * import { bindAllLibc, libc } from "./libc.ts";
 * bindAllLibc();
 * console.log(libc().getpid());
 * ```
 */
export function bindAllLibc(): void {
  const l = libc() as Record<string, unknown>;
  const all: Record<string, unknown> = {};
  for (const name of Object.keys(symbols)) all[name] = l[name];
  // A plain object from here on: the lazy one, rewritten property by
  // property, is slower to look up in the vCPU exit loop.
  bound = all as Libc;
}

/** errno of the calling thread; read right after the failing call. */
export function errno(): number {
  const p = libc().__errno_location();
  return new Deno.UnsafePointerView(p!).getInt32();
}

/** Throws a {@linkcode SysError} for `what` if `ret` is negative, else returns it. */
export function check(ret: number, what: string): number {
  if (ret < 0) throw new SysError(what, errno());
  return ret;
}

/** A NUL-terminated copy of `s` for `buffer` parameters. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** `open(2)` flags used by the monitor. */
export const O_RDONLY = 0;
/** Open for reading and writing. */
export const O_RDWR = 2;
/** Close on exec. */
export const O_CLOEXEC = 0o2000000;
/** Reads and writes that would block fail with EAGAIN instead. */
export const O_NONBLOCK = 0o4000;

/** `mmap(2)` protection and flags. */
export const PROT_READ = 1;
/** Writable mapping. */
export const PROT_WRITE = 2;
/** Shared mapping. */
export const MAP_SHARED = 0x01;
/** Private mapping. */
export const MAP_PRIVATE = 0x02;
/** Anonymous mapping. */
export const MAP_ANONYMOUS = 0x20;
/** Do not reserve swap: guest RAM is touched lazily. */
export const MAP_NORESERVE = 0x4000;
/**
 * `madvise(2)`: fault a range in, writable, in one call (Linux 5.14;
 * include/uapi/asm-generic/mman-common.h).
 */
export const MADV_POPULATE_WRITE = 23;
/** `madvise(2)`: leave the range out of core dumps (Linux 3.4). */
export const MADV_DONTDUMP = 16;

/**
 * Opens `path` with libc (Deno's own open would need broad permissions for
 * device files).
 */
export function openPath(path: string, flags: number): number {
  return check(libc().open(cstr(path), flags | O_CLOEXEC, 0), `open ${path}`);
}

/**
 * Opens `path` for a program this process executes next: without
 * close-on-exec, so the descriptor survives `execve`. Returns -1 on failure.
 */
export function openInheritable(path: string, flags: number): number {
  return libc().open(cstr(path), flags, 0);
}

/**
 * Memory at a fixed host address for as long as the returned object lives,
 * for addresses kept across calls (the data path's scratch words and
 * iovecs). A small typed array's bytes live inside V8's heap and move when
 * the collector runs: an address taken once would go stale, and a `read`
 * into it would corrupt the heap. An `ArrayBuffer` made on its own keeps
 * its bytes outside the heap.
 */
export class PinnedBuffer {
  readonly buffer: ArrayBuffer;
  /** Host address of byte 0. */
  readonly addr: number;
  constructor(bytes: number) {
    this.buffer = new ArrayBuffer(Math.max(bytes, 8));
    this.addr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.buffer)));
  }
}

/** Bytes one data-path call moves at most, so its result fits an i32. */
export const IO_CHUNK = 1 << 30;

/**
 * The data-path calls with plain-number arguments (Deno passes a number
 * to a 64-bit parameter as is; only the declared types say bigint).
 * Each returns the call's result, negative on error (see errno()).
 */
export const dataPath = {
  read: (fd: number, addr: number, len: number): number =>
    libc().read_addr(fd, addr as unknown as bigint, len as unknown as bigint),
  write: (fd: number, addr: number, len: number): number =>
    libc().write_addr(fd, addr as unknown as bigint, len as unknown as bigint),
  pread: (fd: number, addr: number, len: number, offset: number): number =>
    libc().pread(
      fd,
      addr as unknown as bigint,
      len as unknown as bigint,
      offset as unknown as bigint,
    ),
  pwrite: (fd: number, addr: number, len: number, offset: number): number =>
    libc().pwrite(
      fd,
      addr as unknown as bigint,
      len as unknown as bigint,
      offset as unknown as bigint,
    ),
  readv: (fd: number, iov: number, count: number): number =>
    libc().readv(fd, iov as unknown as bigint, count),
  writev: (fd: number, iov: number, count: number): number =>
    libc().writev(fd, iov as unknown as bigint, count),
  preadv: (fd: number, iov: number, count: number, offset: number): number =>
    libc().preadv(fd, iov as unknown as bigint, count, offset as unknown as bigint),
  pwritev: (fd: number, iov: number, count: number, offset: number): number =>
    libc().pwritev(fd, iov as unknown as bigint, count, offset as unknown as bigint),
  fallocate: (fd: number, mode: number, offset: number, len: number): number =>
    libc().fallocate(fd, mode, offset as unknown as bigint, len as unknown as bigint),
  getrandom: (addr: number, len: number): number =>
    libc().getrandom(addr as unknown as bigint, len as unknown as bigint, 0),
};

/** Maps `len` bytes; throws on MAP_FAILED. */
export function mmap(
  len: number,
  prot: number,
  flags: number,
  fd = -1,
  offset = 0n,
): Deno.PointerObject {
  const p = libc().mmap(null, BigInt(len), prot, flags, fd, offset);
  // MAP_FAILED is (void*)-1.
  if (p === null || Deno.UnsafePointer.value(p) === 0xffffffffffffffffn) {
    throw new SysError("mmap", errno());
  }
  return p;
}
