/**
 * Sealing, opening and sending transport messages, shared by the data path
 * and by the roles' probes, with the counters the logs report.
 *
 * @module
 */
import { type CipherFactory, type PacketCipher, WebCryptoCipher } from "./crypto.ts";
import type { Endpoint } from "./endpoint.ts";
import type { UdpSocket } from "./io.ts";
import type { LinkStats } from "./link_stats.ts";
import type { Session } from "./session.ts";
import {
  TAG_SIZE,
  TRANSPORT_HEADER_SIZE,
  TRANSPORT_OVERHEAD,
  type TransportHeader,
  writeTransportHeader,
} from "./wire.ts";

/** Where a datagram goes: a socket and the remote address to send to from it. */
export interface Path {
  readonly socket: UdpSocket;
  readonly endpoint: Endpoint;
  /** Where this path's sent bytes are counted, for `tuxburst status`. */
  readonly stats?: LinkStats;
}

/** Event counts since start; every silent drop has one. */
export class Counters {
  /** IP packets read from the TUN and sent out (once per packet, not per copy). */
  outboundPackets = 0;
  /** Datagrams sent, counting every copy. */
  datagramsSent = 0;
  /** IP packets delivered to the TUN (first copies). */
  inboundPackets = 0;
  /** Later copies of packets already delivered, and replays. */
  duplicates = 0;
  /** Datagrams that are not tuxburst messages at all. */
  garbage = 0;
  /** Messages whose tag or MAC did not verify: forged, corrupted or another key. */
  badAuth = 0;
  /** Transport messages naming a session this side does not know. */
  unknownSession = 0;
  /** Handshake and control messages dropped by a rate limit. */
  rateLimited = 0;
  /**
   * Handshake MACs the server computed for unauthenticated input (INITs
   * checked, UNKNOWN_SESSION answers signed): the work a flood can cause,
   * bounded by the server's rate limits.
   */
  handshakeMacs = 0;
  /**
   * Outbound packets dropped because no session or no path existed yet, or
   * (server) no peer has the packet's destination address (also in `noPeer`).
   */
  noRoute = 0;
  /** (Server) outbound packets whose destination is no peer's tunnel address. */
  noPeer = 0;
  /** (Server) inbound packets whose source is not the sending peer's tunnel address. */
  spoofed = 0;
  /** Sends the kernel refused (a dead link). */
  sendErrors = 0;
  /** Packets the kernel refused on the TUN. */
  tunWriteErrors = 0;
}

/**
 * Send errors that refuse every datagram of a socket alike: the socket's
 * buffer is full, or its interface or the socket is gone. The rest of a
 * burst is then dropped (and counted) rather than tried one by one.
 */
const SOCKET_WIDE_ERRORS: ReadonlySet<string> = new Set([
  "EAGAIN",
  "EWOULDBLOCK",
  "ENOBUFS",
  "ENODEV",
  "ENXIO",
  "ENETDOWN",
  "EBADF",
]);

/** The datagrams queued for one socket in the current burst, in order. */
interface SocketQueue {
  datagrams: Uint8Array[];
  to: Endpoint[];
  paths: Path[];
}

export class Transport {
  readonly counters = new Counters();
  /** `queue` collects a burst here; `flush` sends it with one `sendBatch` per socket. */
  readonly #queues = new Map<UdpSocket, SocketQueue>();

  /** `makeCipher` builds the per-session packet ciphers (see `CipherFactory`). */
  constructor(readonly makeCipher: CipherFactory = WebCryptoCipher.fromRaw) {}

  /**
   * Encrypts `plaintext` as a transport message of `session`; `undefined`
   * when the session is used up. A cipher that runs on this thread writes
   * the datagram into `into` when it fits (the result is then a view of it,
   * valid until `into` is reused) and answers at once; others answer with a
   * promise of a new array.
   */
  sealPacket(
    session: Session,
    type: TransportHeader["type"],
    plaintext: Uint8Array,
    into?: Uint8Array,
  ): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const counter = session.takeCounter();
    if (counter === undefined) return undefined;
    const cipher = session.sendCipher;
    const size = TRANSPORT_OVERHEAD + plaintext.length;
    if (cipher.sealInto) {
      const datagram = into && into.length >= size ? into.subarray(0, size) : new Uint8Array(size);
      writeTransportHeader(datagram, type, session.id, counter);
      const header = datagram.subarray(0, TRANSPORT_HEADER_SIZE);
      cipher.sealInto(counter, header, plaintext, datagram.subarray(TRANSPORT_HEADER_SIZE));
      return datagram;
    }
    return this.#sealAsync(cipher, session.id, counter, type, plaintext);
  }

  /** `sealPacket` into a new array, always as a promise (probes and other rare messages). */
  async seal(
    session: Session,
    type: TransportHeader["type"],
    plaintext: Uint8Array,
  ): Promise<Uint8Array | undefined> {
    return await this.sealPacket(session, type, plaintext);
  }

  /**
   * Decrypts a transport message whose header was already parsed; `null`
   * when forged. Like `sealPacket`, a cipher on this thread writes into
   * `into` when it fits and answers at once.
   */
  openPacket(
    session: Session,
    counter: number,
    datagram: Uint8Array,
    into?: Uint8Array,
  ): Uint8Array | null | Promise<Uint8Array | null> {
    const cipher = session.receiveCipher;
    const header = datagram.subarray(0, TRANSPORT_HEADER_SIZE);
    const sealed = datagram.subarray(TRANSPORT_HEADER_SIZE);
    if (cipher.openInto) {
      if (sealed.length < TAG_SIZE) return null;
      const size = sealed.length - TAG_SIZE;
      const plaintext = into && into.length >= size ? into.subarray(0, size) : new Uint8Array(size);
      return cipher.openInto(counter, header, sealed, plaintext) ? plaintext : null;
    }
    return cipher.open(counter, header, sealed);
  }

  /** `openPacket` into a new array, always as a promise. */
  async open(session: Session, counter: number, datagram: Uint8Array): Promise<Uint8Array | null> {
    return await this.openPacket(session, counter, datagram);
  }

  async #sealAsync(
    cipher: PacketCipher,
    sessionId: number,
    counter: number,
    type: TransportHeader["type"],
    plaintext: Uint8Array,
  ): Promise<Uint8Array> {
    const header = new Uint8Array(TRANSPORT_HEADER_SIZE);
    writeTransportHeader(header, type, sessionId, counter);
    const sealed = await cipher.seal(counter, header, plaintext);
    const datagram = new Uint8Array(TRANSPORT_HEADER_SIZE + sealed.length);
    datagram.set(header);
    datagram.set(sealed, TRANSPORT_HEADER_SIZE);
    return datagram;
  }

  /** Queues `datagram` for every path; nothing is sent before `flush()`. */
  queue(datagram: Uint8Array, paths: Iterable<Path>): void {
    for (const path of paths) {
      let queue = this.#queues.get(path.socket);
      if (!queue) this.#queues.set(path.socket, queue = { datagrams: [], to: [], paths: [] });
      queue.datagrams.push(datagram);
      queue.to.push(path.endpoint);
      queue.paths.push(path);
    }
  }

  /**
   * Sends what `queue` collected: per socket in the order queued, with as
   * few `sendBatch` calls as the kernel allows. A datagram the kernel
   * refuses alone is counted and skipped; when the socket refuses all (a
   * full buffer, a vanished interface) the rest of its burst is dropped and
   * counted, as a full link drops. Each failing path is reported to
   * `onError` once per flush. Queued datagrams must stay unchanged until
   * this returns.
   */
  flush(onError?: (path: Path, code: string) => void): void {
    for (const [socket, queue] of this.#queues) {
      const { datagrams, to, paths } = queue;
      const count = datagrams.length;
      if (count === 0) {
        this.#queues.delete(socket); // unused for a whole burst: maybe closed, do not keep it
        continue;
      }
      let next = 0;
      while (next < count) {
        const { sent, error } = socket.sendBatch(datagrams, to, next, count);
        for (let i = next; i < next + sent; i++) this.#sent(datagrams[i], paths[i]);
        next += sent;
        if (next >= count) break;
        if (error === null && sent > 0) continue; // a short batch: the kernel takes the rest next
        const code = error ?? "EAGAIN";
        if (SOCKET_WIDE_ERRORS.has(code)) {
          this.counters.sendErrors += count - next;
          if (onError) {
            const reported = new Set<Path>();
            for (let i = next; i < count; i++) {
              if (!reported.has(paths[i])) onError(paths[i], code);
              reported.add(paths[i]);
            }
          }
          break;
        }
        // This datagram only (no route to its address, too large): the others still go.
        this.counters.sendErrors++;
        onError?.(paths[next], code);
        next++;
      }
      datagrams.length = 0;
      to.length = 0;
      paths.length = 0;
    }
  }

  /**
   * Sends one datagram over every path. A failing path is counted and
   * reported to `onError`; it never stops the others.
   */
  sendAll(
    datagram: Uint8Array,
    paths: Iterable<Path>,
    onError?: (path: Path, code: string) => void,
  ): void {
    for (const path of paths) this.sendOne(datagram, path, onError);
  }

  sendOne(datagram: Uint8Array, path: Path, onError?: (path: Path, code: string) => void): void {
    const error = path.socket.send(datagram, path.endpoint);
    if (error === null) {
      this.#sent(datagram, path);
    } else {
      this.counters.sendErrors++;
      onError?.(path, error);
    }
  }

  /** Counts a datagram the kernel took, in the totals and in its path's link statistics. */
  #sent(datagram: Uint8Array, path: Path): void {
    this.counters.datagramsSent++;
    const stats = path.stats;
    if (stats) {
      stats.txBytes += datagram.length;
      stats.txDatagrams++;
    }
  }

  /** Seals once and sends the same bytes over every path (the replication). */
  async sealAndSend(
    session: Session,
    type: TransportHeader["type"],
    plaintext: Uint8Array,
    paths: Iterable<Path>,
    onError?: (path: Path, code: string) => void,
  ): Promise<void> {
    const datagram = await this.seal(session, type, plaintext);
    if (datagram) this.sendAll(datagram, paths, onError);
  }
}
