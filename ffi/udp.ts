/**
 * Non-blocking UDP sockets through libc, because `Deno.listenDatagram`
 * cannot bind to an interface (`SO_BINDTODEVICE`), and a multipath client
 * needs one socket per uplink whose packets leave through that uplink,
 * whatever the routing table says.
 *
 * Per datagram this costs one FFI call and no allocation beyond the result
 * object: the sockaddr buffers are reused, a sender's `Endpoint` is built
 * once and found again by its raw bytes, and a destination's sockaddr is
 * encoded once per `Endpoint` object.
 *
 * @module
 */
import { Endpoint, formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from "../lib/endpoint.ts";
import { PermissionError, SystemError, UserError } from "../lib/errors.ts";
import type { Received, UdpSocket } from "../lib/io.ts";
import {
  AF_INET,
  AF_INET6,
  closeQuietly,
  cString,
  Errno,
  errno,
  errnoName,
  interfaceNameProblem,
  IPPROTO_IPV6,
  IPV6_V6ONLY,
  libc,
  SO_BINDTODEVICE,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCKADDR_IN,
  SOCKADDR_IN6,
  SOL_SOCKET,
  writeSockaddrIn,
} from "./libc.ts";

/** Socket buffers: room for bursts of a fast link while the loop is busy with crypto. */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;
/** Distinct senders remembered per socket; a server has a few per client. */
const SENDER_CACHE_SIZE = 256;

/**
 * Opens a non-blocking UDP socket, optionally tied to one interface
 * (`device`, for a client uplink) and bound to `bind` (default: any address,
 * an ephemeral port). An IPv6 socket bound to `::` also serves IPv4 peers,
 * which then appear as plain IPv4 endpoints.
 *
 * @example
 * ```ts
 * using uplink = openUdpSocket({ family: 4, device: "wlan0" });
 * uplink.send(new Uint8Array([1, 2, 3]), new Endpoint("203.0.113.7", 51820)); // null: sent
 * ```
 */
export function openUdpSocket(
  opts: { family: 4 | 6; device?: string; bind?: Endpoint },
): UdpSocket & Disposable {
  const { family, device } = opts;
  const bind = opts.bind ?? new Endpoint(family === 4 ? "0.0.0.0" : "::", 0);
  const label = device ?? bind.key;
  if (device !== undefined) {
    const problem = interfaceNameProblem(device);
    if (problem) throw new UserError(`interface "${device}": ${problem}`);
  }
  const address = encodeSockaddr(family, bind);
  if (!address) throw new UserError(`cannot bind an IPv${family} socket to ${bind.key}`);

  const c = libc();
  const fd = c.socket(
    family === 4 ? AF_INET : AF_INET6,
    SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
    0,
  );
  if (fd < 0) {
    const code = errno();
    if (code === Errno.EAFNOSUPPORT) {
      throw new UserError(`IPv${family} is disabled on this machine`);
    }
    throw new SystemError("socket(SOCK_DGRAM)", code, errnoName(code), label);
  }
  try {
    enlargeBuffers(fd);
    if (device !== undefined) bindToDevice(fd, device);
    if (family === 6 && bind.address === "::") setInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    if (c.bind(fd, address, address.byteLength) < 0) throw bindError(errno(), bind, label);
    return new KernelUdpSocket(fd, family, label);
  } catch (error) {
    closeQuietly(fd);
    throw error;
  }
}

/**
 * The index of interface `name`, or 0 when there is none (`if_nametoindex`).
 *
 * @example
 * ```ts
 * if (interfaceIndex("wlan0") === 0) console.log("wlan0 is gone");
 * ```
 */
export function interfaceIndex(name: string): number {
  if (interfaceNameProblem(name)) return 0;
  return libc().if_nametoindex(cString(name));
}

class KernelUdpSocket implements UdpSocket, Disposable {
  #fd: number;
  readonly #libc = libc();

  /** The sender's sockaddr as the kernel wrote it, and its length (in and out). */
  readonly #from = new Uint8Array(SOCKADDR_IN6.size);
  readonly #fromWords = new Uint32Array(this.#from.buffer);
  readonly #fromLength = new Uint32Array(1);
  /**
   * Recent senders by a hash of their raw sockaddr. Not just the last one:
   * a multipath peer's datagrams arrive from each of its paths in turn.
   */
  readonly #senders = new Map<number, { words: Uint32Array; endpoint: Endpoint }>();
  /** Encoded destinations, kept as long as the peer's `Endpoint` object lives. */
  readonly #destinations = new WeakMap<Endpoint, Uint8Array>();

  constructor(fd: number, readonly family: 4 | 6, readonly label: string) {
    this.#fd = fd;
  }

  /** -1 once closed, so a reactor skips it. */
  get fd(): number {
    return this.#fd;
  }

  receive(buf: Uint8Array): Received | null {
    this.#fromLength[0] = SOCKADDR_IN6.size;
    const length = Number(
      this.#libc.recvfrom(this.#fd, buf, BigInt(buf.byteLength), 0, this.#from, this.#fromLength),
    );
    // EAGAIN: drained. Anything else (a queued ICMP error, a closed socket) is
    // consumed by this call and says nothing about the next datagram.
    if (length < 0) return null;
    return { length, from: this.#sender() };
  }

  send(datagram: Uint8Array, to: Endpoint): string | null {
    if (this.#fd < 0) return "EBADF";
    let address = this.#destinations.get(to);
    if (!address) {
      address = encodeSockaddr(this.family, to);
      if (!address) return "EAFNOSUPPORT";
      this.#destinations.set(to, address);
    }
    const length = BigInt(datagram.byteLength);
    const sent = this.#libc.sendto(this.#fd, datagram, length, 0, address, address.byteLength);
    return sent >= 0n ? null : errnoName(errno());
  }

  close(): void {
    if (this.#fd < 0) return;
    this.#libc.close(this.#fd);
    this.#fd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** The sender of the datagram just received; the same object while its bytes repeat. */
  #sender(): Endpoint {
    const words = this.#fromWords;
    // Little-endian: the low half of word 0 is sa_family. IPv4 needs only
    // family, port and address (2 words); IPv6 all 7 (flow info, scope id).
    const count = (words[0] & 0xffff) === AF_INET ? 2 : words.length;
    let hash = 0;
    for (let i = 0; i < count; i++) hash = Math.imul(hash ^ words[i], 0x01000193);
    const cached = this.#senders.get(hash);
    if (cached && cached.words.length === count) {
      let same = true;
      for (let i = 0; same && i < count; i++) same = cached.words[i] === words[i];
      if (same) return cached.endpoint;
    }
    // Forged senders cannot grow this without bound.
    if (this.#senders.size >= SENDER_CACHE_SIZE) this.#senders.clear();
    const endpoint = decodeSockaddr(this.#from);
    this.#senders.set(hash, { words: words.slice(0, count), endpoint });
    return endpoint;
  }
}

/**
 * `endpoint` as a sockaddr for a socket of `family`, or `undefined` when it
 * cannot be expressed (IPv6 on an IPv4 socket). IPv4 on an IPv6 socket
 * becomes `::ffff:a.b.c.d`.
 */
function encodeSockaddr(family: 4 | 6, endpoint: Endpoint): Uint8Array | undefined {
  const v4 = endpoint.family === 4 ? parseIpv4(endpoint.address) : undefined;
  if (family === 4) {
    if (v4 === undefined) return undefined;
    const into = new Uint8Array(SOCKADDR_IN.size);
    writeSockaddrIn(new DataView(into.buffer), 0, v4, endpoint.port);
    return into;
  }
  const into = new Uint8Array(SOCKADDR_IN6.size);
  const view = new DataView(into.buffer);
  view.setUint16(SOCKADDR_IN6.family, AF_INET6, true);
  view.setUint16(SOCKADDR_IN6.port, endpoint.port, false);
  if (v4 !== undefined) {
    view.setUint16(SOCKADDR_IN6.addr + 10, 0xffff, false);
    view.setUint32(SOCKADDR_IN6.addr + 12, v4, false);
  } else {
    const v6 = parseIpv6(endpoint.address);
    if (v6 === undefined) return undefined;
    into.set(v6, SOCKADDR_IN6.addr);
  }
  return into;
}

/** The endpoint in a sockaddr the kernel wrote; IPv4-mapped IPv6 comes back as IPv4. */
function decodeSockaddr(from: Uint8Array): Endpoint {
  const view = new DataView(from.buffer, from.byteOffset, from.byteLength);
  const port = view.getUint16(SOCKADDR_IN.port, false);
  if (view.getUint16(0, true) === AF_INET) {
    return new Endpoint(formatIpv4(view.getUint32(SOCKADDR_IN.addr, false)), port);
  }
  const address = from.subarray(SOCKADDR_IN6.addr, SOCKADDR_IN6.addr + 16);
  const mapped = address.subarray(0, 10).every((b) => b === 0) && address[10] === 0xff &&
    address[11] === 0xff;
  if (mapped) return new Endpoint(formatIpv4(view.getUint32(SOCKADDR_IN6.addr + 12, false)), port);
  return new Endpoint(formatIpv6(address), port);
}

/** Bigger socket buffers; beyond `net.core.[rw]mem_max` only with CAP_NET_ADMIN. Best effort. */
function enlargeBuffers(fd: number): void {
  for (const [force, plain] of [[SO_RCVBUFFORCE, SO_RCVBUF], [SO_SNDBUFFORCE, SO_SNDBUF]]) {
    if (!setInt(fd, SOL_SOCKET, force, SOCKET_BUFFER_BYTES)) {
      setInt(fd, SOL_SOCKET, plain, SOCKET_BUFFER_BYTES);
    }
  }
}

function setInt(fd: number, level: number, option: number, value: number): boolean {
  return libc().setsockopt(fd, level, option, new Int32Array([value]), 4) === 0;
}

function bindToDevice(fd: number, device: string): void {
  const name = cString(device);
  if (libc().setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, name, name.length) === 0) return;
  const code = errno();
  if (code === Errno.ENODEV) throw new UserError(`interface ${device} does not exist`);
  if (code === Errno.EPERM) {
    throw new PermissionError(
      `sending through interface ${device} needs root or CAP_NET_RAW; run tuxburst with sudo`,
    );
  }
  throw new SystemError("setsockopt(SO_BINDTODEVICE)", code, errnoName(code), device);
}

function bindError(code: number, bind: Endpoint, label: string): Error {
  switch (code) {
    case Errno.EADDRINUSE:
      return new UserError(`${bind.key} is already in use (is another tuxburst running?)`);
    case Errno.EADDRNOTAVAIL:
      return new UserError(`cannot listen on ${bind.key}: ${bind.address} is not an address here`);
    case Errno.EACCES:
    case Errno.EPERM:
      return new PermissionError(
        `listening on port ${bind.port} needs root or CAP_NET_BIND_SERVICE; run tuxburst with sudo`,
      );
    default:
      return new SystemError("bind", code, errnoName(code), label);
  }
}
