/**
 * The TUN device and the default route through it, by ioctl: no `ip`
 * binary, no netlink. The device is never persistent, so the kernel deletes
 * it, its address and every route through it as soon as the fd closes, also
 * when the process is killed with SIGKILL: a crashed tuxburst leaves
 * nothing behind.
 *
 * @module
 */
import { formatIpv6, parseIpv4, parseIpv6 } from "../lib/endpoint.ts";
import { PermissionError, SystemError, UserError } from "../lib/errors.ts";
import type { Tun } from "../lib/io.ts";
import {
  AF_INET,
  AF_INET6,
  closeQuietly,
  cString,
  Errno,
  errno,
  errnoName,
  IFF_NO_PI,
  IFF_RUNNING,
  IFF_TUN,
  IFF_TUN_EXCL,
  IFF_UP,
  IFNAMSIZ,
  IFREQ,
  IN6_IFREQ,
  IN6_RTMSG,
  interfaceNameProblem,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  readCString,
  RTENTRY,
  RTF_GATEWAY,
  RTF_UP,
  RTN_UNICAST,
  SIOCADDRT,
  SIOCGIFFLAGS,
  SIOCSIFADDR,
  SIOCSIFFLAGS,
  SIOCSIFMTU,
  SIOCSIFNETMASK,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  TUNSETIFF,
  writeCString,
  writeSockaddrIn,
} from "./libc.ts";

const TUN_DEVICE = "/dev/net/tun";
/** `rt_metric` is a C `short` and the kernel subtracts one, so this is the largest metric. */
const MAX_ROUTE_METRIC = 0x7fff - 1;

/**
 * Creates TUN device `name` (IPv4 packets without packet-info header),
 * gives it `address/prefixLength` and `mtu`, and brings it up.
 *
 * Errors the user can fix are `UserError`s (`PermissionError` without
 * CAP_NET_ADMIN); if any step fails, the fd is closed first, so no
 * half-configured device stays behind.
 *
 * @example
 * ```ts
 * using tun = openTun({ name: "tuxburst0", address: "10.99.0.2", prefixLength: 24, mtu: 1400 });
 * const packet = new Uint8Array(65536);
 * const length = tun.read(packet); // null when nothing is waiting
 * ```
 */
export function openTun(
  opts: {
    name: string;
    address: string;
    prefixLength: number;
    mtu: number;
    /** An IPv6 address for the device too; without it, IPv6 is off on the device. */
    address6?: { address: string; prefixLength: number };
  },
): Tun & Disposable {
  const nameProblem = interfaceNameProblem(opts.name);
  if (nameProblem) throw new UserError(`cannot create TUN device "${opts.name}": ${nameProblem}`);
  const address = parseIpv4(opts.address);
  if (address === undefined) {
    throw new UserError(`TUN address "${opts.address}" is not an IPv4 address`);
  }
  if (!Number.isInteger(opts.prefixLength) || opts.prefixLength < 0 || opts.prefixLength > 32) {
    throw new UserError(`TUN prefix length must be 0-32, got ${opts.prefixLength}`);
  }
  const address6 = opts.address6 && parseIpv6(opts.address6.address);
  if (opts.address6) {
    const length = opts.address6.prefixLength;
    if (address6 === undefined) {
      throw new UserError(`TUN address "${opts.address6.address}" is not an IPv6 address`);
    }
    if (!Number.isInteger(length) || length < 1 || length > 128) {
      throw new UserError(`TUN IPv6 prefix length must be 1-128, got ${length}`);
    }
  }

  const c = libc();
  const fd = c.open(cString(TUN_DEVICE), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw tunError("open", errno(), opts.name);
  try {
    const ifr = new Uint8Array(IFREQ.size);
    writeCString(ifr, IFREQ.name, opts.name);
    // EXCL: never adopt an existing (perhaps persistent) device of that name,
    // because only a device we created goes away when we close it.
    new DataView(ifr.buffer).setInt16(IFREQ.flags, IFF_TUN | IFF_NO_PI | IFF_TUN_EXCL, true);
    if (c.ioctl(fd, TUNSETIFF, ifr) < 0) throw tunError("TUNSETIFF", errno(), opts.name);
    const name = readCString(ifr, IFREQ.name, IFNAMSIZ);
    if (address6) quietIpv6(name);
    else disableIpv6(name);
    configure(name, address, opts.prefixLength, opts.mtu);
    if (address6) addIpv6Address(name, address6, opts.address6!.prefixLength);
    return new KernelTun(fd, name, opts.mtu);
  } catch (error) {
    closeQuietly(fd);
    throw error;
  }
}

class KernelTun implements Tun, Disposable {
  #fd: number;
  readonly #libc = libc();

  constructor(fd: number, readonly name: string, readonly mtu: number) {
    this.#fd = fd;
  }

  /** -1 once closed, so a reactor skips it. */
  get fd(): number {
    return this.#fd;
  }

  read(buf: Uint8Array): number | null {
    const length = Number(this.#libc.read(this.#fd, buf, BigInt(buf.byteLength)));
    if (length >= 0) return length;
    const code = errno();
    if (code === Errno.EAGAIN || code === Errno.EINTR || this.#fd < 0) return null;
    if (code === Errno.EBADFD) {
      // Someone ran `ip link del`: poll() reports the fd ready forever, so stop rather than spin.
      throw new UserError(`TUN device ${this.name} was deleted while tuxburst was using it`);
    }
    throw new SystemError("read", code, errnoName(code), `TUN device ${this.name}`);
  }

  write(packet: Uint8Array): boolean {
    if (this.#fd < 0) return false;
    const length = packet.byteLength;
    return Number(this.#libc.write(this.#fd, packet, BigInt(length))) === length;
  }

  close(): void {
    if (this.#fd < 0) return;
    this.#libc.close(this.#fd);
    this.#fd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The tunnel carries IPv4 only; without this the kernel gives the device a
 * link-local IPv6 address and sends router solicitations through the tunnel.
 * Best effort: a kernel without IPv6 has no such file, and that is fine.
 */
function disableIpv6(name: string): void {
  try {
    Deno.writeTextFileSync(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, "1");
  } catch {
    // No IPv6 in this kernel or namespace: nothing to silence.
  }
}

/**
 * IPv6 on, but without what a TUN device does not need and would send
 * through the tunnel: no link-local address (addr_gen_mode 1), no router
 * solicitations or advertisements, no duplicate address detection (the only
 * other host on this link is the peer). Best effort, before the device is up.
 */
function quietIpv6(name: string): void {
  const settings: Array<[string, string]> = [
    ["addr_gen_mode", "1"],
    ["accept_ra", "0"],
    ["router_solicitations", "0"],
    ["accept_dad", "0"],
    ["disable_ipv6", "0"],
  ];
  for (const [key, value] of settings) {
    try {
      Deno.writeTextFileSync(`/proc/sys/net/ipv6/conf/${name}/${key}`, value);
    } catch {
      // An older kernel without the setting: a little noise, nothing worse.
    }
  }
}

/** `address/prefixLength` on the device, as ifconfig(8) does for IPv6. */
function addIpv6Address(name: string, address: Uint8Array, prefixLength: number): void {
  const ifindex = libc().if_nametoindex(cString(name));
  if (ifindex === 0) throw new UserError(`TUN device ${name} vanished while being configured`);
  const request = new Uint8Array(IN6_IFREQ.size);
  request.set(address, IN6_IFREQ.addr);
  const view = new DataView(request.buffer);
  view.setUint32(IN6_IFREQ.prefixLength, prefixLength, true);
  view.setInt32(IN6_IFREQ.ifindex, ifindex, true);
  withControlSocket((socket) => {
    if (libc().ioctl(socket, SIOCSIFADDR, request) >= 0) return;
    const code = errno();
    if (code === Errno.EAFNOSUPPORT) {
      throw new UserError(`IPv6 is disabled on this machine; remove tun_addr6`);
    }
    if (code === Errno.EACCES) {
      // The kernel's answer when disable_ipv6 is 1 for the device (and writing 0 failed).
      throw new UserError(
        `IPv6 is disabled on ${name} (net.ipv6.conf.${name}.disable_ipv6 = 1); ` +
          `enable IPv6 (sysctl net.ipv6.conf.default.disable_ipv6=0) or remove tun_addr6`,
      );
    }
    throw configureError("SIOCSIFADDR", code, name, `IPv6 address ${formatIpv6(address)}`);
  }, AF_INET6);
}

/** Address, netmask, MTU and flags, the way ifconfig(8) sets them. */
function configure(name: string, address: number, prefixLength: number, mtu: number): void {
  withControlSocket((socket) => {
    const ifr = new Uint8Array(IFREQ.size);
    const view = new DataView(ifr.buffer);
    const request = (call: string, code: bigint, what: string) => {
      if (libc().ioctl(socket, code, ifr) < 0) throw configureError(call, errno(), name, what);
    };
    writeCString(ifr, IFREQ.name, name);

    writeSockaddrIn(view, IFREQ.addr, address);
    request("SIOCSIFADDR", SIOCSIFADDR, "address");
    writeSockaddrIn(view, IFREQ.addr, prefixMask(prefixLength));
    request("SIOCSIFNETMASK", SIOCSIFNETMASK, "netmask");

    ifr.fill(0, IFREQ.mtu);
    view.setInt32(IFREQ.mtu, mtu, true);
    request("SIOCSIFMTU", SIOCSIFMTU, `MTU ${mtu}`);

    ifr.fill(0, IFREQ.flags);
    request("SIOCGIFFLAGS", SIOCGIFFLAGS, "flags");
    view.setInt16(IFREQ.flags, view.getInt16(IFREQ.flags, true) | IFF_UP | IFF_RUNNING, true);
    request("SIOCSIFFLAGS", SIOCSIFFLAGS, "flags");
  });
}

/**
 * Adds `default via gateway dev device metric metric`, as route(8) does.
 * The route lives as long as the device: closing the TUN removes it.
 *
 * @example
 * ```ts
 * addDefaultRoute({ device: "tuxburst0", gateway: "10.99.0.1", metric: 5 });
 * ```
 */
export function addDefaultRoute(opts: { device: string; gateway: string; metric: number }): void {
  const nameProblem = interfaceNameProblem(opts.device);
  if (nameProblem) throw new UserError(`cannot route via "${opts.device}": ${nameProblem}`);
  if (opts.gateway.includes(":")) return addIpv6DefaultRoute(opts);
  const gateway = parseIpv4(opts.gateway);
  if (gateway === undefined) {
    throw new UserError(`route gateway "${opts.gateway}" is not an IPv4 address`);
  }
  const { metric } = opts;
  if (!Number.isInteger(metric) || metric < 0 || metric > MAX_ROUTE_METRIC) {
    throw new UserError(`route metric must be 0-${MAX_ROUTE_METRIC}, got ${metric}`);
  }

  // The device name lives in the same buffer, right after the struct, so it
  // is alive for exactly as long as the ioctl that follows `rt_dev` to it.
  const rt = new Uint8Array(RTENTRY.size + IFNAMSIZ);
  const view = new DataView(rt.buffer);
  writeSockaddrIn(view, RTENTRY.dst, 0);
  writeSockaddrIn(view, RTENTRY.gateway, gateway);
  writeSockaddrIn(view, RTENTRY.genmask, 0);
  view.setUint16(RTENTRY.flags, RTF_UP | RTF_GATEWAY, true);
  // The kernel stores rt_metric - 1 (0 means "no metric", also 0), so pass one more.
  view.setInt16(RTENTRY.metric, metric + 1, true);
  writeCString(rt, RTENTRY.size, opts.device);
  const dev = Deno.UnsafePointer.offset(Deno.UnsafePointer.of(rt)!, RTENTRY.size);
  view.setBigUint64(RTENTRY.dev, BigInt(Deno.UnsafePointer.value(dev)), true);

  withControlSocket((socket) => {
    if (libc().ioctl(socket, SIOCADDRT, rt) >= 0) return;
    const code = errno();
    const route = `default route via ${opts.gateway} dev ${opts.device} metric ${metric}`;
    switch (code) {
      case Errno.EPERM:
      case Errno.EACCES:
        throw new PermissionError(
          `adding a ${route} needs root or CAP_NET_ADMIN; run tuxburst with sudo`,
        );
      case Errno.EEXIST:
        throw new UserError(
          `a default route with metric ${metric} already exists on ${opts.device}; ` +
            `choose another metric or remove that route`,
        );
      case Errno.ENODEV:
        throw new UserError(`cannot add ${route}: interface ${opts.device} does not exist`);
      case Errno.ENETUNREACH:
        throw new UserError(
          `cannot add ${route}: ${opts.gateway} is not reachable through ${opts.device}; ` +
            `the gateway must be in the TUN subnet`,
        );
      default:
        throw new SystemError("ioctl(SIOCADDRT)", code, errnoName(code), route);
    }
  });
}

/** `default via gateway dev device metric metric` for IPv6 (route(8)'s `-A inet6`). */
function addIpv6DefaultRoute(opts: { device: string; gateway: string; metric: number }): void {
  const gateway = parseIpv6(opts.gateway);
  if (gateway === undefined) {
    throw new UserError(`route gateway "${opts.gateway}" is not an IPv6 address`);
  }
  const { metric } = opts;
  if (!Number.isInteger(metric) || metric < 1 || metric > 0xffffffff) {
    throw new UserError(`IPv6 route metric must be 1-4294967295, got ${metric}`);
  }
  const ifindex = libc().if_nametoindex(cString(opts.device));
  const route = `IPv6 default route via ${opts.gateway} dev ${opts.device} metric ${metric}`;
  if (ifindex === 0) {
    throw new UserError(`cannot add ${route}: interface ${opts.device} does not exist`);
  }
  const rt = new Uint8Array(IN6_RTMSG.size);
  const view = new DataView(rt.buffer);
  rt.set(gateway, IN6_RTMSG.gateway);
  view.setUint32(IN6_RTMSG.type, RTN_UNICAST, true);
  view.setUint16(IN6_RTMSG.dstLength, 0, true);
  view.setUint32(IN6_RTMSG.metric, metric, true);
  view.setUint32(IN6_RTMSG.flags, RTF_UP | RTF_GATEWAY, true);
  view.setInt32(IN6_RTMSG.ifindex, ifindex, true);
  withControlSocket((socket) => {
    if (libc().ioctl(socket, SIOCADDRT, rt) >= 0) return;
    const code = errno();
    switch (code) {
      case Errno.EPERM:
      case Errno.EACCES:
        throw new PermissionError(
          `adding an ${route} needs root or CAP_NET_ADMIN; run tuxburst with sudo`,
        );
      case Errno.EEXIST:
        throw new UserError(
          `an IPv6 default route with metric ${metric} already exists on ${opts.device}; ` +
            `choose another metric or remove that route`,
        );
      default:
        throw new SystemError("ioctl(SIOCADDRT)", code, errnoName(code), route);
    }
  }, AF_INET6);
}

/** The 32-bit netmask of a prefix length: 24 → 255.255.255.0. */
function prefixMask(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/**
 * Interface and route ioctls go through any socket of the family they are
 * about (AF_INET, or AF_INET6 for IPv6); this one lives for one call.
 */
function withControlSocket(use: (socket: number) => void, family = AF_INET): void {
  const socket = libc().socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (socket < 0) {
    const code = errno();
    if (family === AF_INET6 && code === Errno.EAFNOSUPPORT) {
      throw new UserError("IPv6 is disabled on this machine; remove tun_addr6 and tun_gateway6");
    }
    const name = family === AF_INET ? "AF_INET" : "AF_INET6";
    throw new SystemError(`socket(${name}, SOCK_DGRAM)`, code, errnoName(code));
  }
  try {
    use(socket);
  } finally {
    closeQuietly(socket);
  }
}

function tunError(call: string, code: number, name: string): Error {
  switch (code) {
    case Errno.EPERM:
    case Errno.EACCES:
      return new PermissionError(
        `creating TUN device ${name} needs root or CAP_NET_ADMIN; run tuxburst with sudo`,
      );
    case Errno.ENOENT:
    case Errno.ENODEV:
    case Errno.ENXIO:
      return new UserError(
        `${TUN_DEVICE} is missing, so TUN device ${name} cannot be created; ` +
          `load the TUN driver with "modprobe tun"`,
      );
    case Errno.EBUSY:
      return new UserError(
        `another process already uses TUN device ${name} (or an interface of that name exists); ` +
          `stop it or choose another tun_name`,
      );
    default:
      return new SystemError(call, code, errnoName(code), `TUN device ${name}`);
  }
}

function configureError(call: string, code: number, name: string, what: string): Error {
  if (code === Errno.EPERM || code === Errno.EACCES) {
    return new PermissionError(
      `configuring TUN device ${name} needs root or CAP_NET_ADMIN; run tuxburst with sudo`,
    );
  }
  if (code === Errno.EINVAL && what.startsWith("MTU")) {
    return new UserError(`TUN device ${name} does not accept ${what}`);
  }
  return new SystemError(`ioctl(${call})`, code, errnoName(code), `${what} of ${name}`);
}
