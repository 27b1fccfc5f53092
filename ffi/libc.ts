/**
 * The C library as tuxburst uses it: one `Deno.dlopen` symbol table, errno,
 * and the constants and struct layouts of the calls in `ffi/`. Nothing above
 * `ffi/` ever sees a pointer, an errno number or an ioctl number.
 *
 * Portability: only x86_64 and aarch64 Linux with glibc. Both are LP64 and
 * little-endian, and both use the kernel's generic numbering for errno,
 * open/socket flags, socket options and ioctls, so one set of numbers and
 * offsets serves both (checked against the C headers with `offsetof` and
 * `sizeof` on x86_64). Variadic `ioctl` and `open` are declared with their
 * fixed arguments only: on both ABIs those travel exactly like the
 * arguments of a non-variadic call.
 *
 * 64-bit parameters (`size_t`, `unsigned long`) are passed as BigInt: the
 * types demand it, and it is also what keeps V8's fast call path (measured
 * 0.27 µs per `read()` with a BigInt length, 0.62 µs with a number).
 *
 * @module
 */
import { SystemError } from "../lib/errors.ts";

const SYMBOLS = {
  /** int *__errno_location(void); */
  __errno_location: { parameters: [], result: "pointer" },
  /** int open(const char *path, int flags, ...); */
  open: { parameters: ["buffer", "i32"], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int fd, const void *buf, size_t count); */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int ioctl(int fd, unsigned long request, ...); always with a pointer argument here. */
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int setsockopt(int fd, int level, int name, const void *value, socklen_t length); */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  /** int bind(int fd, const struct sockaddr *address, socklen_t length); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /**
   * int recvmmsg(int fd, struct mmsghdr *messages, unsigned int count, int flags,
   *              struct timespec *timeout);
   */
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "pointer"], result: "i32" },
  /** int sendmmsg(int fd, struct mmsghdr *messages, unsigned int count, int flags); */
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  /** unsigned int if_nametoindex(const char *name); */
  if_nametoindex: { parameters: ["buffer"], result: "u32" },
  /** int eventfd(unsigned int initval, int flags); */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); blocks the main thread (bounded). */
  poll: { parameters: ["buffer", "usize", "i32"], result: "i32" },
  /**
   * The same `poll`, run on Deno's blocking thread pool so that the event
   * loop (timers, signal listeners) stays alive meanwhile. Its errno belongs
   * to that thread and cannot be read.
   */
  poll_nonblocking: {
    name: "poll",
    parameters: ["buffer", "usize", "i32"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened C library; typed by the symbol table above. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let library: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
let errnoView: Deno.UnsafePointerView | undefined;

/**
 * The C library's symbols, opened on first use (so importing `ffi/` costs
 * nothing in tests that use fakes) and kept open for the process lifetime.
 *
 * @example
 * ```ts
 * const fd = libc().socket(AF_INET, SOCK_DGRAM, 0);
 * ```
 */
export function libc(): Libc {
  if (!library) {
    library = Deno.dlopen("libc.so.6", SYMBOLS);
    // Looked up now, not at the first failure, so reading errno makes no FFI call of its own
    // between the failing call and the read (a CI run once reported TUNSETIFF's EBUSY as a
    // missing /dev/net/tun, ENOENT or ENODEV, which only an overwritten errno explains).
    const location = library.symbols.__errno_location();
    if (location === null) throw new Error("__errno_location() returned NULL");
    errnoView = new Deno.UnsafePointerView(location);
  }
  return library.symbols;
}

/** The address of the bytes of a view, as the kernel sees it. Costs about 1 µs. */
export function addressOf(view: Uint8Array): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view)));
}

/**
 * The symbols of the first of `names` that loads (a library's versioned
 * name, then its development name), or `null` when none is installed.
 */
export function openFirst<S extends Deno.ForeignLibraryInterface>(
  names: readonly string[],
  symbols: S,
): Deno.DynamicLibrary<S>["symbols"] | null {
  for (const name of names) {
    try {
      return Deno.dlopen(name, symbols).symbols;
    } catch {
      // try the next name
    }
  }
  return null;
}

/**
 * errno of the main thread, as left by the last synchronous call. Read it
 * right after the failing call: any other call in between may overwrite it.
 * The location is thread-local but fixed per thread, so it is looked up once,
 * when libc is opened.
 */
export function errno(): number {
  if (!errnoView) libc();
  return errnoView!.getInt32();
}

/** The errno values tuxburst meets, by number (the kernel's generic numbering). */
const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  28: "ENOSPC",
  32: "EPIPE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  77: "EBADFD",
  88: "ENOTSOCK",
  89: "EDESTADDRREQ",
  90: "EMSGSIZE",
  92: "ENOPROTOOPT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  104: "ECONNRESET",
  105: "ENOBUFS",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  112: "EHOSTDOWN",
  113: "EHOSTUNREACH",
};

/** errno numbers the code branches on. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EBADFD: 77,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EMSGSIZE: 90,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
} as const;

/** `"EAGAIN"` for 11; `"E<n>"` for numbers not in the table. */
export function errnoName(code: number): string {
  return ERRNO_NAMES[code] ?? `E${code}`;
}

/** Throws a `SystemError` for the current errno; call right after the failing call. */
export function throwErrno(call: string, detail = ""): never {
  const code = errno();
  throw new SystemError(call, code, errnoName(code), detail);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `text` as a NUL-terminated UTF-8 C string. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(encoder.encode(text).length + 1);
  encoder.encodeInto(text, bytes);
  return bytes;
}

/** Writes `text` NUL-terminated at `offset` of `into` (for fixed-size name fields). */
export function writeCString(into: Uint8Array, offset: number, text: string): void {
  const { written } = encoder.encodeInto(text, into.subarray(offset));
  into[offset + written] = 0;
}

/** The NUL-terminated string at `offset` of `from`, at most `max` bytes. */
export function readCString(from: Uint8Array, offset: number, max: number): string {
  const field = from.subarray(offset, offset + max);
  const end = field.indexOf(0);
  return decoder.decode(end < 0 ? field : field.subarray(0, end));
}

// ---------------------------------------------------------------------------
// Constants (identical on x86_64 and aarch64).

/** open(2) flags. */
export const O_RDWR = 0x2;
export const O_NONBLOCK = 0x800;
export const O_CLOEXEC = 0x80000;

/** Address families and socket types. */
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;

/** Socket options. */
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_BINDTODEVICE = 25;
/** Attaches a classic BPF program that each arriving datagram must pass (`struct sock_fprog`). */
export const SO_ATTACH_FILTER = 26;
/** Like SO_SNDBUF/SO_RCVBUF but above `net.core.[rw]mem_max`; needs CAP_NET_ADMIN. */
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const IPPROTO_IP = 0;
export const IPPROTO_IPV6 = 41;
export const IPV6_V6ONLY = 26;
/**
 * Ask for the local address each datagram was sent to, as a control message
 * of `recvmmsg` (`struct in_pktinfo` / `struct in6_pktinfo`); the same control
 * message type given to `sendmmsg` picks the source address of one datagram.
 * `IPV6_RECVPKTINFO` asks, `IPV6_PKTINFO` is the message (and the old,
 * RFC 2292 name of the option, which is why the two numbers differ).
 */
export const IP_PKTINFO = 8;
export const IPV6_RECVPKTINFO = 49;
export const IPV6_PKTINFO = 50;

/** eventfd(2) flags. */
export const EFD_NONBLOCK = O_NONBLOCK;
export const EFD_CLOEXEC = O_CLOEXEC;

/** poll(2) event bits. */
export const POLLIN = 0x1;

/**
 * ioctl requests: `_IOW('T', 202, int)` for TUN, the classic `SIOC*` for
 * interfaces and routes. BigInt because `unsigned long` is a 64-bit FFI type.
 */
export const TUNSETIFF = 0x400454can;
export const SIOCADDRT = 0x890bn;
export const SIOCGIFFLAGS = 0x8913n;
export const SIOCSIFFLAGS = 0x8914n;
export const SIOCSIFADDR = 0x8916n;
export const SIOCSIFNETMASK = 0x891cn;
export const SIOCSIFMTU = 0x8922n;

/** TUNSETIFF flags (`ifr_flags`). */
export const IFF_TUN = 0x0001;
export const IFF_NO_PI = 0x1000;
/** Fail with EBUSY instead of attaching to an existing device of that name. */
export const IFF_TUN_EXCL = 0x8000;

/** Interface flags (`ifr_flags` of SIOC[GS]IFFLAGS). */
export const IFF_UP = 0x1;
export const IFF_RUNNING = 0x40;

/** Route flags (`rt_flags` of struct rtentry). */
export const RTF_UP = 0x1;
export const RTF_GATEWAY = 0x2;

export { IFNAMSIZ, interfaceNameProblem } from "../lib/interface_name.ts";

// ---------------------------------------------------------------------------
// Struct layouts (LP64; checked with offsetof on x86_64 glibc 2.36).

/**
 * struct ifreq, 40 bytes: `char ifr_name[16]` then a union at 16 that holds
 * `short ifr_flags`, `int ifr_mtu` or `struct sockaddr ifr_addr`; the union
 * is 24 bytes because of `struct ifmap`.
 */
export const IFREQ = { size: 40, name: 0, flags: 16, mtu: 16, addr: 16 } as const;

/**
 * struct sockaddr_in, 16 bytes: family (host order), port and address
 * (network order), 8 bytes of zero. struct sockaddr_in6, 28 bytes: family,
 * port, flowinfo at 4, address at 8, scope id at 24.
 */
export const SOCKADDR_IN = { size: 16, family: 0, port: 2, addr: 4 } as const;
export const SOCKADDR_IN6 = {
  size: 28,
  family: 0,
  port: 2,
  flowinfo: 4,
  addr: 8,
  scopeId: 24,
} as const;

/**
 * struct rtentry, 120 bytes on LP64. The `unsigned long` and pointer fields
 * are 8 bytes and 8-aligned, which leaves holes: 4 bytes after `rt_pad2`
 * (at 60) and 6 after `rt_metric` (at 82).
 *
 * ```text
 *   0 unsigned long   rt_pad1
 *   8 struct sockaddr rt_dst       (16)
 *  24 struct sockaddr rt_gateway   (16)
 *  40 struct sockaddr rt_genmask   (16)
 *  56 unsigned short  rt_flags
 *  58 short           rt_pad2
 *  64 unsigned long   rt_pad3
 *  72 void           *rt_pad4
 *  80 short           rt_metric    the kernel stores rt_metric - 1
 *  88 char           *rt_dev       pointer to the device's name
 *  96 unsigned long   rt_mtu
 * 104 unsigned long   rt_window
 * 112 unsigned short  rt_irtt
 * ```
 */
export const RTENTRY = {
  size: 120,
  dst: 8,
  gateway: 24,
  genmask: 40,
  flags: 56,
  metric: 80,
  dev: 88,
} as const;

/**
 * struct in6_ifreq, 24 bytes (linux/ipv6.h), for SIOCSIFADDR on an AF_INET6
 * socket: the address, `__u32 ifr6_prefixlen`, `int ifr6_ifindex`.
 */
export const IN6_IFREQ = { size: 24, addr: 0, prefixLength: 16, ifindex: 20 } as const;

/**
 * struct in6_rtmsg, 80 bytes on LP64 (linux/ipv6_route.h), for SIOCADDRT on
 * an AF_INET6 socket; 4 bytes of padding before the `unsigned long`.
 *
 * ```text
 *  0 struct in6_addr rtmsg_dst
 * 16 struct in6_addr rtmsg_src
 * 32 struct in6_addr rtmsg_gateway
 * 48 __u32           rtmsg_type      RTN_UNICAST
 * 52 __u16           rtmsg_dst_len
 * 54 __u16           rtmsg_src_len
 * 56 __u32           rtmsg_metric    as given (0 means 1024)
 * 64 unsigned long   rtmsg_info
 * 72 __u32           rtmsg_flags
 * 76 int             rtmsg_ifindex
 * ```
 */
export const IN6_RTMSG = {
  size: 80,
  dst: 0,
  gateway: 32,
  type: 48,
  dstLength: 52,
  metric: 56,
  flags: 72,
  ifindex: 76,
} as const;
/** `rtmsg_type` of an ordinary route. */
export const RTN_UNICAST = 1;

/**
 * struct msghdr, 56 bytes on LP64, with holes after the two 4-byte fields:
 *
 * ```text
 *  0 void         *msg_name        the peer's sockaddr
 *  8 socklen_t     msg_namelen     in and out (4 bytes, then 4 of padding)
 * 16 struct iovec *msg_iov
 * 24 size_t        msg_iovlen
 * 32 void         *msg_control     the control messages (struct cmsghdr)
 * 40 size_t        msg_controllen  in: room; out: bytes written
 * 48 int           msg_flags       out: MSG_TRUNC, MSG_CTRUNC, …
 * ```
 */
export const MSGHDR = {
  size: 56,
  name: 0,
  nameLength: 8,
  iov: 16,
  iovLength: 24,
  control: 32,
  controlLength: 40,
  flags: 48,
} as const;

/**
 * struct mmsghdr, 64 bytes, for `recvmmsg`/`sendmmsg`: a `struct msghdr`,
 * then `unsigned int msg_len` (out: the bytes received or sent), then 4
 * bytes of padding.
 */
export const MMSGHDR = { size: 64, length: 56 } as const;

/**
 * Classic BPF, as `SO_ATTACH_FILTER` takes it: `struct sock_filter` is 8
 * bytes (`u16 code`, `u8 jt`, `u8 jf`, `u32 k`); `struct sock_fprog` is 16
 * (`unsigned short len`, padding, `struct sock_filter *filter`).
 */
export const SOCK_FILTER = { size: 8, code: 0, jt: 2, jf: 3, k: 4 } as const;
export const SOCK_FPROG = { size: 16, length: 0, filter: 8 } as const;
/** The BPF instructions we use: load length, load word, jumps, return. */
export const BPF = {
  LD_W_LEN: 0x80, // A = skb->len
  LD_W_ABS: 0x20, // A = big-endian u32 at offset k
  JGE_K: 0x35, // A >= k ? jt : jf
  JEQ_K: 0x15, // A == k ? jt : jf
  RET_K: 0x06, // accept k bytes (0: drop)
} as const;

/** struct iovec, 16 bytes: `void *iov_base`, `size_t iov_len`. */
export const IOVEC = { size: 16, base: 0, length: 8 } as const;

/**
 * struct cmsghdr, 16 bytes: `size_t cmsg_len` (header plus data, without
 * the trailing padding), `int cmsg_level`, `int cmsg_type`, then the data.
 * Messages follow each other at `CMSG_ALIGN(cmsg_len)` bytes.
 *
 * ```text
 *  0 size_t cmsg_len     = CMSG_LEN(data) = 16 + data
 *  8 int    cmsg_level   IPPROTO_IP or IPPROTO_IPV6
 * 12 int    cmsg_type    IP_PKTINFO or IPV6_PKTINFO
 * 16 data…               padded to CMSG_SPACE(data) = 16 + CMSG_ALIGN(data)
 * ```
 */
export const CMSGHDR = { size: 16, length: 0, level: 8, type: 12, data: 16 } as const;

/** `CMSG_ALIGN`: control messages are aligned to `size_t` (8 bytes). */
export function cmsgAlign(length: number): number {
  return (length + 7) & ~7;
}

/**
 * struct in_pktinfo, 12 bytes: `int ipi_ifindex`, `struct in_addr
 * ipi_spec_dst` (received: the local address to answer from; sent: the
 * source address), `struct in_addr ipi_addr` (received: the header's
 * destination). struct in6_pktinfo, 20 bytes: `struct in6_addr ipi6_addr`
 * (received: the destination; sent: the source), `int ipi6_ifindex`.
 * Addresses in network order; ifindex 0 means "let routing choose".
 */
export const IN_PKTINFO = { size: 12, ifindex: 0, specDst: 4, addr: 8 } as const;
export const IN6_PKTINFO = { size: 20, addr: 0, ifindex: 16 } as const;

/** struct pollfd, 8 bytes: `int fd`, `short events`, `short revents`. */
export const POLLFD = { size: 8, fd: 0, events: 4, revents: 6 } as const;

/**
 * Writes a `struct sockaddr_in` for `address` (a 32-bit value, see
 * `parseIpv4`) and `port` at `offset` of `view`.
 */
export function writeSockaddrIn(view: DataView, offset: number, address: number, port = 0): void {
  for (let i = 0; i < SOCKADDR_IN.size; i++) view.setUint8(offset + i, 0);
  view.setUint16(offset + SOCKADDR_IN.family, AF_INET, true);
  view.setUint16(offset + SOCKADDR_IN.port, port, false);
  view.setUint32(offset + SOCKADDR_IN.addr, address, false);
}

/** Closes `fd`, ignoring errors: for cleanup paths that are already failing. */
export function closeQuietly(fd: number): void {
  if (fd >= 0) libc().close(fd);
}
