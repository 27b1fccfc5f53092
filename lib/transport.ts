/**
 * Sealing, opening and sending transport messages, shared by the data path
 * and by the roles' probes, with the counters the logs report.
 *
 * @module
 */
import { type CipherFactory, WebCryptoCipher } from "./crypto.ts";
import type { Endpoint } from "./endpoint.ts";
import type { UdpSocket } from "./io.ts";
import type { Session } from "./session.ts";
import { TRANSPORT_HEADER_SIZE, type TransportHeader, writeTransportHeader } from "./wire.ts";

/** Where a datagram goes: a socket and the remote address to send to from it. */
export interface Path {
  readonly socket: UdpSocket;
  readonly endpoint: Endpoint;
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
  /** Outbound packets dropped because no session or no path existed yet. */
  noRoute = 0;
  /** Sends the kernel refused (a dead link). */
  sendErrors = 0;
  /** Packets the kernel refused on the TUN. */
  tunWriteErrors = 0;
}

export class Transport {
  readonly counters = new Counters();

  /** `makeCipher` builds the per-session packet ciphers (see `CipherFactory`). */
  constructor(readonly makeCipher: CipherFactory = WebCryptoCipher.fromRaw) {}

  /** Encrypts `plaintext` as a transport message of `session`; `undefined` when the session is used up. */
  async seal(
    session: Session,
    type: TransportHeader["type"],
    plaintext: Uint8Array,
  ): Promise<Uint8Array | undefined> {
    const counter = session.takeCounter();
    if (counter === undefined) return undefined;
    const header = new Uint8Array(TRANSPORT_HEADER_SIZE);
    writeTransportHeader(header, type, session.id, counter);
    const sealed = await session.sendCipher.seal(counter, header, plaintext);
    const datagram = new Uint8Array(TRANSPORT_HEADER_SIZE + sealed.length);
    datagram.set(header);
    datagram.set(sealed, TRANSPORT_HEADER_SIZE);
    return datagram;
  }

  /** Decrypts a transport message whose header was already parsed; `null` when forged. */
  open(session: Session, counter: number, datagram: Uint8Array): Promise<Uint8Array | null> {
    return session.receiveCipher.open(
      counter,
      datagram.subarray(0, TRANSPORT_HEADER_SIZE),
      datagram.subarray(TRANSPORT_HEADER_SIZE),
    );
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
      this.counters.datagramsSent++;
    } else {
      this.counters.sendErrors++;
      onError?.(path, error);
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
