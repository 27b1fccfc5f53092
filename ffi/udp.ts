/**
 * Non-blocking UDP sockets through libc, because `Deno.listenDatagram`
 * cannot bind to an interface (`SO_BINDTODEVICE`), and a multipath client
 * needs one socket per uplink whose packets leave through that uplink,
 * whatever the routing table says.
 *
 * A server bound to every address (`0.0.0.0` or `[::]`) answers each peer
 * from the local address that peer wrote to, as the NATs on the way expect
 * (`IP_PKTINFO`/`IPV6_PKTINFO`): routing alone would pick one address per
 * route and the NAT would drop the answers from the others.
 *
 * Every receive and send goes through `recvmmsg`/`sendmmsg` (a single
 * datagram is a burst of one): one FFI call per burst and no allocation per
 * datagram: the message vectors are reused, each buffer's address is looked
 * up once, a sender's `Endpoint` is built once and found again by its raw
 * bytes, and a destination's sockaddr is encoded once per `Endpoint` object.
 *
 * @module
 */
import { Endpoint, formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from "../lib/endpoint.ts";
import { PermissionError, SystemError, UserError } from "../lib/errors.ts";
import type { BatchSent, DatagramShape, Received, UdpSocket } from "../lib/io.ts";
import {
  addressOf,
  AF_INET,
  AF_INET6,
  BPF,
  closeQuietly,
  cmsgAlign,
  CMSGHDR,
  cString,
  Errno,
  errno,
  errnoName,
  IN6_PKTINFO,
  IN_PKTINFO,
  interfaceNameProblem,
  IOVEC,
  IP_PKTINFO,
  IPPROTO_IP,
  IPPROTO_IPV6,
  IPV6_PKTINFO,
  IPV6_RECVPKTINFO,
  IPV6_V6ONLY,
  libc,
  MMSGHDR,
  MSGHDR,
  SO_ATTACH_FILTER,
  SO_BINDTODEVICE,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_FILTER,
  SOCK_FPROG,
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
 * A server socket (a wildcard address, a fixed port, no `device`) answers
 * each peer from the local address the peer last wrote to. Other sockets
 * leave the source address to routing: a client's must follow its routes
 * when they change, and a `device` already pins the path.
 *
 * @example
 * ```ts
 * using uplink = openUdpSocket({ family: 4, device: "wlan0" });
 * uplink.send(new Uint8Array([1, 2, 3]), new Endpoint("203.0.113.7", 51820)); // null: sent
 * ```
 */
export function openUdpSocket(
  opts: { family: 4 | 6; device?: string; bind?: Endpoint; accept?: DatagramShape },
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
  const wildcard = bind.address === "0.0.0.0" || bind.address === "::";
  const answerFromDestination = wildcard && bind.port !== 0 && device === undefined;

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
    if (answerFromDestination) enablePacketInfo(fd, family, label);
    if (opts.accept) attachShapeFilter(fd, opts.accept, label);
    if (c.bind(fd, address, address.byteLength) < 0) throw bindError(errno(), bind, label);
    const packetInfo = answerFromDestination ? new PacketInfo(family) : undefined;
    return new KernelUdpSocket(fd, family, label, packetInfo);
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

/**
 * A sender seen recently: its raw sockaddr (the significant words, see
 * `significantWords`), its `Endpoint`, and for sockets with `PacketInfo`
 * the local address it last wrote to.
 */
interface Sender {
  readonly words: Uint32Array;
  readonly endpoint: Endpoint;
  /** As the kernel gave it: IPv4 socket, word 0; IPv6 socket, 4 words. */
  readonly local: Uint32Array;
  /** Whether `local` holds the address to answer from. */
  answerFrom: boolean;
}

/** A destination's sockaddr, encoded once per `Endpoint` object, with its words' hash. */
interface Destination {
  readonly sockaddr: Uint8Array;
  /** Its significant words (see `significantWords`). */
  readonly words: Uint32Array;
  readonly hash: number;
}

const NO_LOCAL_ADDRESS = new Uint32Array(0);

/**
 * Errors of a send from a chosen source that mean the remembered local
 * address is no longer ours: IPv6 says EINVAL, IPv4 ENETUNREACH (its route
 * lookup finds no interface that holds the source), EADDRNOTAVAIL is the
 * classic name for it. The same datagram is then sent again with the source
 * left to routing, which tells whether the peer is reachable.
 */
const SOURCE_GONE: ReadonlySet<number> = new Set([
  Errno.EINVAL,
  Errno.EADDRNOTAVAIL,
  Errno.ENETUNREACH,
]);

class KernelUdpSocket implements UdpSocket, Disposable {
  #fd: number;
  readonly #libc = libc();
  /** Set on server sockets, which answer each peer from the address it wrote to. */
  readonly #packetInfo: PacketInfo | undefined;

  /** Where `receive` (a batch of one) leaves its datagram's length and sender. */
  readonly #oneLength = new Uint32Array(1);
  readonly #oneSender: Endpoint[] = [];
  /**
   * Recent senders by a hash of their raw sockaddr. Not just the last one:
   * a multipath peer's datagrams arrive from each of its paths in turn.
   * `send` finds the local address to answer from here, by the bytes of the
   * destination rather than by its `Endpoint` object: the data path may
   * hold an older object for the same address.
   */
  readonly #senders = new Map<number, Sender>();
  /** Encoded destinations, kept as long as the peer's `Endpoint` object lives. */
  readonly #destinations = new WeakMap<Endpoint, Destination>();
  /** The message vectors of `receiveBatch` and `sendBatch`, made on first use. */
  #inVector?: MessageVector;
  #outVector?: MessageVector;

  constructor(
    fd: number,
    readonly family: 4 | 6,
    readonly label: string,
    packetInfo: PacketInfo | undefined,
  ) {
    this.#fd = fd;
    this.#packetInfo = packetInfo;
  }

  /** -1 once closed, so a reactor skips it. */
  get fd(): number {
    return this.#fd;
  }

  /** One datagram: the same `recvmmsg` path as a burst, with one message. */
  receive(buf: Uint8Array): Received | null {
    if (this.receiveBatch([buf], this.#oneLength, this.#oneSender) === 0) return null;
    return { length: this.#oneLength[0], from: this.#oneSender[0] };
  }

  /** One datagram: the same `sendmmsg` path as a burst, with one message. */
  send(datagram: Uint8Array, to: Endpoint): string | null {
    const { sent, error } = this.sendBatch([datagram], [to], 0, 1);
    return sent === 1 ? null : error ?? "EAGAIN";
  }

  receiveBatch(buffers: readonly Uint8Array[], lengths: Uint32Array, senders: Endpoint[]): number {
    const vector = this.#inVector ??= new MessageVector(this.#packetInfo?.controlRoom ?? 0);
    const count = Math.min(buffers.length, lengths.length, vector.capacity);
    if (this.#fd < 0 || count === 0) return 0;
    vector.prepareReceive(buffers, count);
    const received = this.#libc.recvmmsg(this.#fd, vector.messages[0], count, 0, null);
    // EAGAIN: drained. Anything else (a queued ICMP error, a closed socket) is
    // consumed by this call and says nothing about the next datagram.
    if (received <= 0) return 0;
    vector.received(received);
    const packetInfo = this.#packetInfo;
    for (let i = 0; i < received; i++) {
      lengths[i] = vector.length(i);
      const sender = this.#senderOf(vector.names[i], vector.nameWords[i]);
      // Every datagram: a peer may write to another of our addresses at any time.
      if (packetInfo) {
        sender.answerFrom = packetInfo.localAddressIn(
          vector.words,
          vector.control(i),
          vector.controlLength(i),
          sender.local,
        );
      }
      senders[i] = sender.endpoint;
    }
    return received;
  }

  sendBatch(
    datagrams: readonly Uint8Array[],
    to: readonly Endpoint[],
    start: number,
    end: number,
  ): BatchSent {
    if (this.#fd < 0) return { sent: 0, error: "EBADF" };
    const vector = this.#outVector ??= new MessageVector(this.#packetInfo?.controlRoom ?? 0);
    const count = Math.min(end - start, vector.capacity);
    if (count <= 0) return { sent: 0, error: null };
    const packetInfo = this.#packetInfo;
    const answering: (Sender | undefined)[] = [];
    for (let i = 0; i < count; i++) {
      const destination = this.#destination(to[start + i]);
      // Only a datagram the kernel cannot address at all fails here; the ones before it go.
      if (!destination) return this.#sendPrepared(vector, i, answering, "EAFNOSUPPORT");
      vector.prepareSend(i, datagrams[start + i], destination.sockaddr);
      const sender = packetInfo && this.#senderAt(destination);
      if (packetInfo && sender?.answerFrom) {
        packetInfo.writeSource(vector.words, vector.control(i), sender.local);
        vector.setControlLength(i, packetInfo.controlLength);
        answering[i] = sender;
      } else {
        vector.setControlLength(i, 0);
        answering[i] = undefined;
      }
    }
    return this.#sendPrepared(vector, count, answering, null);
  }

  close(): void {
    if (this.#fd < 0) return;
    this.#libc.close(this.#fd);
    this.#fd = -1;
  }

  /**
   * `sendmmsg` of the first `count` prepared messages. A first message whose
   * remembered source address is gone (see `SOURCE_GONE`) is sent again
   * with the source left to routing, as `send` does.
   */
  #sendPrepared(
    vector: MessageVector,
    count: number,
    answering: (Sender | undefined)[],
    errorAfter: string | null,
  ): BatchSent {
    let first = 0;
    while (first < count) {
      const sent = this.#libc.sendmmsg(this.#fd, vector.messages[first], count - first, 0);
      if (sent > 0) {
        first += sent;
        if (first < count) return { sent: first, error: null }; // the caller asks again
        break;
      }
      const code = errno();
      const sender = answering[first];
      if (sender && SOURCE_GONE.has(code)) {
        sender.answerFrom = false;
        answering[first] = undefined;
        vector.setControlLength(first, 0);
        continue;
      }
      return { sent: first, error: errnoName(code) };
    }
    return { sent: count, error: errorAfter };
  }

  /** `to`'s sockaddr, encoded once per `Endpoint` object; `undefined` for the wrong family. */
  #destination(to: Endpoint): Destination | undefined {
    let destination = this.#destinations.get(to);
    if (!destination) {
      const sockaddr = encodeSockaddr(this.family, to);
      if (!sockaddr) return undefined;
      const all = new Uint32Array(sockaddr.buffer, sockaddr.byteOffset, sockaddr.byteLength / 4);
      const words = all.subarray(0, significantWords(all));
      destination = { sockaddr, words, hash: hashWords(words, words.length) };
      this.#destinations.set(to, destination);
    }
    return destination;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** The sender whose sockaddr the kernel just wrote; the same object while its bytes repeat. */
  #senderOf(from: Uint8Array, words: Uint32Array): Sender {
    const count = significantWords(words);
    const hash = hashWords(words, count);
    const cached = this.#senders.get(hash);
    if (cached && sameWords(cached.words, words, count)) return cached;
    // Forged senders cannot grow this without bound.
    if (this.#senders.size >= SENDER_CACHE_SIZE) this.#senders.clear();
    const sender: Sender = {
      words: words.slice(0, count),
      endpoint: decodeSockaddr(from),
      local: this.#packetInfo ? new Uint32Array(4) : NO_LOCAL_ADDRESS,
      answerFrom: false,
    };
    this.#senders.set(hash, sender);
    return sender;
  }

  /** The recent sender at `destination`, if there is one. */
  #senderAt(destination: Destination): Sender | undefined {
    const sender = this.#senders.get(destination.hash);
    const { words } = destination;
    return sender && sameWords(sender.words, words, words.length) ? sender : undefined;
  }
}

/**
 * How many leading words of a sockaddr tell peers apart. Little-endian: the
 * low half of word 0 is sa_family. IPv4 needs only family, port and
 * address (2 words); IPv6 all 7 (flow info, scope id).
 */
function significantWords(sockaddr: Uint32Array): number {
  return (sockaddr[0] & 0xffff) === AF_INET ? 2 : SOCKADDR_IN6.size / 4;
}

function hashWords(words: Uint32Array, count: number): number {
  let hash = 0;
  for (let i = 0; i < count; i++) hash = Math.imul(hash ^ words[i], 0x01000193);
  return hash;
}

/** Whether `remembered` is the first `count` words of `words`. */
function sameWords(remembered: Uint32Array, words: Uint32Array, count: number): boolean {
  if (remembered.length !== count) return false;
  for (let i = 0; i < count; i++) if (remembered[i] !== words[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Packet info (the local address of each datagram), for server sockets.

/** Room for the control messages of one datagram: one IP_PKTINFO (32) and one IPV6_PKTINFO (40). */
const CONTROL_ROOM = cmsgAlign(CMSGHDR.size + IN_PKTINFO.size) +
  cmsgAlign(CMSGHDR.size + IN6_PKTINFO.size);

/** Writes a 64-bit pointer as two little-endian words at `index`. */
function writePointer(words: Uint32Array, index: number, address: number): void {
  words[index] = address >>> 0;
  words[index + 1] = (address / 0x1_0000_0000) >>> 0;
}

/**
 * Where each ArrayBuffer received into lives, so that `UnsafePointer.of`
 * runs once per buffer, not per datagram. Sound because an ArrayBuffer's
 * memory does not move while it lives (V8 moves a small typed array's bytes
 * off its heap for good the first time `.buffer` or the address is taken),
 * and a detached or shrunk buffer shows in the view's `byteLength`, which
 * is the length given to the kernel on every call.
 */
const bufferAddresses = new WeakMap<ArrayBufferLike, number>();

/**
 * The control messages that tell the local address each datagram was sent
 * to (`recvmmsg`), and send a datagram from a chosen local address
 * (`sendmmsg`). An IPv4 socket uses IP_PKTINFO; an IPv6 one IPV6_PKTINFO,
 * which the kernel also gives for IPv4 peers of a dual-stack socket, as
 * `::ffff:a.b.c.d`, and accepts back in that form.
 */
class PacketInfo {
  readonly #level: number;
  readonly #type: number;
  /** CMSG_LEN of the one control message we use. */
  readonly #messageLength: number;
  /** Where its address starts (in words from the message's start), and how many words. */
  readonly #addressWord: number;
  readonly #addressWords: number;

  constructor(family: 4 | 6) {
    const v4 = family === 4;
    this.#level = v4 ? IPPROTO_IP : IPPROTO_IPV6;
    this.#type = v4 ? IP_PKTINFO : IPV6_PKTINFO;
    this.#messageLength = CMSGHDR.size + (v4 ? IN_PKTINFO.size : IN6_PKTINFO.size);
    // IPv4: ipi_spec_dst, received as the kernel's choice of source for an
    // answer (the destination itself, unless that was a broadcast), sent as
    // the source. IPv6: ipi6_addr, the destination, then the source.
    this.#addressWord = (CMSGHDR.data + (v4 ? IN_PKTINFO.specDst : IN6_PKTINFO.addr)) / 4;
    this.#addressWords = v4 ? 1 : 4;
  }

  /** Room for the control messages of one received datagram. */
  get controlRoom(): number {
    return CONTROL_ROOM;
  }

  /** The control length of one sent datagram with its source address. */
  get controlLength(): number {
    return cmsgAlign(this.#messageLength);
  }

  /**
   * Copies the local address of a received datagram, from the control
   * messages the kernel wrote at byte `at` of `words` (`length` bytes),
   * into `into`; false when the kernel gave none (then routing will choose).
   */
  localAddressIn(words: Uint32Array, at: number, length: number, into: Uint32Array): boolean {
    const end = at + Math.min(length, CONTROL_ROOM);
    while (at + CMSGHDR.size <= end) {
      const messageLength = words[(at + CMSGHDR.length) / 4];
      if (messageLength < CMSGHDR.size || at + messageLength > end) return false; // malformed: trust none
      if (
        words[(at + CMSGHDR.level) / 4] === this.#level &&
        words[(at + CMSGHDR.type) / 4] === this.#type && messageLength >= this.#messageLength
      ) {
        const first = at / 4 + this.#addressWord;
        for (let i = 0; i < this.#addressWords; i++) into[i] = words[first + i];
        return true;
      }
      at += cmsgAlign(messageLength);
    }
    return false;
  }

  /** Writes the one control message that sends from local address `from`, at byte `at` of `words`. */
  writeSource(words: Uint32Array, at: number, from: Uint32Array): void {
    const word = at / 4;
    words[word + CMSGHDR.length / 4] = this.#messageLength;
    words[word + CMSGHDR.length / 4 + 1] = 0;
    words[word + CMSGHDR.level / 4] = this.#level;
    words[word + CMSGHDR.type / 4] = this.#type;
    // ifindex 0 (IPv4: the word before the address; IPv6: the word after it) lets routing pick the interface.
    for (let i = CMSGHDR.data / 4; i < cmsgAlign(this.#messageLength) / 4; i++) words[word + i] = 0;
    const first = word + this.#addressWord;
    for (let i = 0; i < this.#addressWords; i++) words[first + i] = from[i];
  }
}

// ---------------------------------------------------------------------------
// recvmmsg/sendmmsg: one call for a burst of datagrams.

/** Datagrams per `recvmmsg`/`sendmmsg` call: the data path's burst. */
const VECTOR_CAPACITY = 64;
/** Room for a sockaddr_in6 (28 bytes), kept 8-aligned. */
const NAME_ROOM = 32;

/**
 * The structures of one `recvmmsg` or `sendmmsg` call for up to
 * `VECTOR_CAPACITY` datagrams, in one off-heap ArrayBuffer whose memory
 * never moves, so the pointers between them are written once:
 *
 * ```text
 * [struct mmsghdr × N][struct iovec × N][sockaddr room × N][control room × N]
 * ```
 *
 * Per call only the lengths, the sockaddrs of a send, and the iovecs whose
 * buffer changed are written.
 */
class MessageVector {
  readonly capacity = VECTOR_CAPACITY;
  readonly words: Uint32Array;
  /** Views starting at message `i`, for a call that starts there. */
  readonly messages: Uint8Array[] = [];
  /** The sockaddr of message `i`, as bytes and as words. */
  readonly names: Uint8Array[] = [];
  readonly nameWords: Uint32Array[] = [];
  readonly #iovAt: number;
  readonly #controlAt: number;
  readonly #controlRoom: number;
  /** What each iovec points at, so that a buffer used again is not looked up again. */
  readonly #iovTargets: (Uint8Array | undefined)[] = [];
  /** Leading messages whose name and control lengths must be set before the next receive. */
  #changedByReceive = VECTOR_CAPACITY;

  constructor(controlRoom: number) {
    const n = this.capacity;
    this.#controlRoom = controlRoom;
    this.#iovAt = n * MMSGHDR.size;
    const nameAt = this.#iovAt + n * IOVEC.size;
    this.#controlAt = nameAt + n * NAME_ROOM;
    const buffer = new ArrayBuffer(this.#controlAt + n * controlRoom);
    const words = this.words = new Uint32Array(buffer);
    const base = addressOf(new Uint8Array(buffer));
    for (let i = 0; i < n; i++) {
      const at = i * MMSGHDR.size;
      const name = nameAt + i * NAME_ROOM;
      this.messages.push(new Uint8Array(buffer, at));
      this.names.push(new Uint8Array(buffer, name, SOCKADDR_IN6.size));
      this.nameWords.push(new Uint32Array(buffer, name, SOCKADDR_IN6.size / 4));
      writePointer(words, (at + MSGHDR.name) / 4, base + name);
      writePointer(words, (at + MSGHDR.iov) / 4, base + this.#iovAt + i * IOVEC.size);
      words[(at + MSGHDR.iovLength) / 4] = 1;
      if (controlRoom > 0) {
        writePointer(words, (at + MSGHDR.control) / 4, base + this.control(i));
      }
    }
  }

  /**
   * Messages `0..count-1` receive into `buffers`, with room for any sender
   * and its control messages. Only the lengths a `recvmmsg` changed since
   * (see `received`) are written again: a burst of one datagram then touches
   * one message, not all 64, which an idle tunnel's latency notices.
   */
  prepareReceive(buffers: readonly Uint8Array[], count: number): void {
    const changed = this.#changedByReceive;
    for (let i = 0; i < count; i++) {
      this.#setIov(i, buffers[i]);
      if (i >= changed) continue;
      const at = i * MMSGHDR.size;
      this.words[(at + MSGHDR.nameLength) / 4] = SOCKADDR_IN6.size;
      this.words[(at + MSGHDR.controlLength) / 4] = this.#controlRoom;
    }
    // Messages from `count` on keep what an earlier call changed.
    this.#changedByReceive = changed > count ? changed : 0;
  }

  /** The kernel filled the first `count` messages (and wrote their lengths). */
  received(count: number): void {
    if (count > this.#changedByReceive) this.#changedByReceive = count;
  }

  /** Message `i` sends `datagram` to `sockaddr`; its control length is set separately. */
  prepareSend(i: number, datagram: Uint8Array, sockaddr: Uint8Array): void {
    this.#setIov(i, datagram);
    this.names[i].set(sockaddr);
    this.words[(i * MMSGHDR.size + MSGHDR.nameLength) / 4] = sockaddr.byteLength;
  }

  setControlLength(i: number, length: number): void {
    this.words[(i * MMSGHDR.size + MSGHDR.controlLength) / 4] = length;
  }

  /** The bytes the kernel wrote as control messages of message `i`. */
  controlLength(i: number): number {
    return this.words[(i * MMSGHDR.size + MSGHDR.controlLength) / 4];
  }

  /** The byte offset of message `i`'s control room. */
  control(i: number): number {
    return this.#controlAt + i * this.#controlRoom;
  }

  /** The bytes received or sent by message `i` (`msg_len`). */
  length(i: number): number {
    return this.words[(i * MMSGHDR.size + MMSGHDR.length) / 4];
  }

  #setIov(i: number, view: Uint8Array): void {
    if (this.#iovTargets[i] === view) return; // same bytes, same length: nothing to write
    const word = (this.#iovAt + i * IOVEC.size) / 4;
    writePointer(this.words, word + IOVEC.base / 4, addressOfBytes(view));
    this.words[word + IOVEC.length / 4] = view.byteLength;
    this.#iovTargets[i] = view;
  }
}

/** The address of a view's bytes, with the lookup of its ArrayBuffer done once per buffer. */
function addressOfBytes(view: Uint8Array): number {
  if (view.byteLength === 0) return 0; // the kernel reads or writes nothing there
  const buffer = view.buffer;
  let base = bufferAddresses.get(buffer);
  if (base === undefined) {
    base = addressOf(view) - view.byteOffset;
    bufferAddresses.set(buffer, base);
  }
  return base + view.byteOffset;
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

/** A UDP header precedes the payload in what a socket filter sees. */
const UDP_HEADER_SIZE = 8;

/**
 * The classic BPF program that accepts only datagrams of `shape` (see
 * `DatagramShape`). A socket filter runs on each datagram before it is
 * queued, and sees it from the UDP header on:
 *
 * ```text
 *   0        ld   len                  A = UDP header + payload
 *   1        jge  #8+minLength, 2, drop
 *   2        ld   [8]                  A = the payload's first word (a shorter one drops)
 *   3..3+n-1 jeq  #word_i, accept, next
 *   3+n      ret  #0                   drop
 *   4+n      ret  #0xffffffff          accept all of it
 * ```
 */
export function shapeFilter(shape: DatagramShape): Uint8Array {
  const words = shape.firstWords;
  const program: [number, number, number, number][] = [
    [BPF.LD_W_LEN, 0, 0, 0],
    [BPF.JGE_K, 0, 1 + words.length, UDP_HEADER_SIZE + shape.minLength],
    [BPF.LD_W_ABS, 0, 0, UDP_HEADER_SIZE],
    ...words.map((word, i): [number, number, number, number] => [
      BPF.JEQ_K,
      words.length - i,
      0,
      word,
    ]),
    [BPF.RET_K, 0, 0, 0],
    [BPF.RET_K, 0, 0, 0xffff_ffff],
  ];
  const bytes = new Uint8Array(new ArrayBuffer(program.length * SOCK_FILTER.size));
  const view = new DataView(bytes.buffer);
  program.forEach(([code, jt, jf, k], i) => {
    const at = i * SOCK_FILTER.size;
    view.setUint16(at + SOCK_FILTER.code, code, true);
    view.setUint8(at + SOCK_FILTER.jt, jt);
    view.setUint8(at + SOCK_FILTER.jf, jf);
    view.setUint32(at + SOCK_FILTER.k, k, true);
  });
  return bytes;
}

/** Lets the kernel drop, before queueing, every datagram that is not of `shape`. */
function attachShapeFilter(fd: number, shape: DatagramShape, label: string): void {
  const filter = shapeFilter(shape);
  const program = new Uint8Array(new ArrayBuffer(SOCK_FPROG.size));
  const words = new Uint32Array(program.buffer);
  new DataView(program.buffer).setUint16(SOCK_FPROG.length, filter.length / SOCK_FILTER.size, true);
  writePointer(words, SOCK_FPROG.filter / 4, addressOf(filter));
  if (libc().setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, program, program.byteLength) === 0) {
    return;
  }
  const code = errno();
  throw new SystemError("setsockopt(SO_ATTACH_FILTER)", code, errnoName(code), label);
}

/** Asks the kernel for the local address of each datagram (see `PacketInfo`). */
function enablePacketInfo(fd: number, family: 4 | 6, label: string): void {
  const [level, option] = family === 4
    ? [IPPROTO_IP, IP_PKTINFO]
    : [IPPROTO_IPV6, IPV6_RECVPKTINFO];
  if (setInt(fd, level, option, 1)) return;
  const code = errno();
  throw new SystemError(
    family === 4 ? "setsockopt(IP_PKTINFO)" : "setsockopt(IPV6_RECVPKTINFO)",
    code,
    errnoName(code),
    label,
  );
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
