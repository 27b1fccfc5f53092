/**
 * The server role: one socket; answers handshakes, remembers every address
 * an authenticated packet of the client came from, sends each packet for the
 * client to all of them, and forgets addresses that fall silent.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { deriveSessionCiphers, HandshakeMac, randomBytes } from "./crypto.ts";
import type { Endpoint } from "./endpoint.ts";
import type { UdpSocket } from "./io.ts";
import { TokenBucket } from "./rate_limit.ts";
import { Session } from "./session.ts";
import type { Path, Transport } from "./transport.ts";
import type { Destination, Role } from "./tunnel.ts";
import {
  buildResponse,
  buildUnknownSession,
  MessageType,
  parseInit,
  parseTransportHeader,
  RESPONSE_MAC_OFFSET,
  UNKNOWN_MAC_OFFSET,
} from "./wire.ts";

const log = getLogger(["tuxburst", "server"]);

/** An answered handshake the client has not used yet is forgotten after this. */
export const PENDING_LIFETIME_MS = 10_000;
/** The session a client replaced still delivers its stragglers this long. */
export const PREVIOUS_LIFETIME_MS = 10_000;
/** Unanswered handshakes kept per client. */
const PENDING_PER_PEER = 4;
/**
 * Handshakes and "unknown session" answers cost HMACs (and HKDF); a flood of
 * them must not cost more than this many per second, whatever arrives.
 */
export const HANDSHAKES_PER_SECOND = 50;
export const UNKNOWN_ANSWERS_PER_SECOND = 20;

export interface ServerOptions {
  socket: UdpSocket;
  psk: Uint8Array;
  pathTimeoutMs: number;
  transport: Transport;
}

/** One client address the server sends to. */
export interface ServerPath extends Path {
  lastHeard: number;
}

interface SessionRecord {
  clientRandom: Uint8Array;
  createdAt: number;
  /** Undefined while its keys are being derived. */
  session?: Session;
  response?: Uint8Array;
}

/** What the server knows of its client. */
class PeerState {
  current?: Session;
  previous?: Session;
  previousUntil = 0;
  newestInitTimestamp = -1;
  readonly paths = new Map<string, ServerPath>();
  constructor(readonly name: string, readonly psk: Uint8Array, readonly mac: HandshakeMac) {}
}

export class ServerRole implements Role {
  readonly #options: ServerOptions;
  readonly #peer: PeerState;
  readonly #records = new Map<number, SessionRecord>();
  readonly #sockets: readonly UdpSocket[];
  readonly #handshakeLimit = new TokenBucket(HANDSHAKES_PER_SECOND, HANDSHAKES_PER_SECOND);
  readonly #unknownLimit = new TokenBucket(UNKNOWN_ANSWERS_PER_SECOND, UNKNOWN_ANSWERS_PER_SECOND);

  private constructor(options: ServerOptions, mac: HandshakeMac) {
    this.#options = options;
    this.#peer = new PeerState("client", options.psk, mac);
    this.#sockets = [options.socket];
  }

  static async create(options: ServerOptions): Promise<ServerRole> {
    return new ServerRole(options, await HandshakeMac.fromPsk(options.psk));
  }

  /** The client's addresses the server currently sends to. */
  get paths(): readonly ServerPath[] {
    return [...this.#peer.paths.values()];
  }

  sockets(): readonly UdpSocket[] {
    return this.#sockets;
  }

  session(id: number): Session | undefined {
    return this.#records.get(id)?.session;
  }

  destination(): Destination | undefined {
    const peer = this.#peer;
    if (!peer.current || peer.paths.size === 0) return undefined;
    return { session: peer.current, paths: () => peer.paths.values() };
  }

  heard(session: Session, socket: UdpSocket, from: Endpoint, now: number): void {
    const peer = this.#peer;
    if (!session.confirmed) this.#confirm(peer, session, now);
    const path = peer.paths.get(from.key);
    if (path) {
      path.lastHeard = now;
    } else if (session === peer.current) {
      // Only the newest session teaches addresses: an old one may come from a dead process.
      peer.paths.set(from.key, { socket, endpoint: from, lastHeard: now });
      log.info("client path {address} learned ({count} in use)", {
        address: from.key,
        count: peer.paths.size,
      });
    }
  }

  probeAnswered(): void {
    // The server does not probe; clients do.
  }

  async control(
    datagram: Uint8Array,
    socket: UdpSocket,
    from: Endpoint,
    now: number,
  ): Promise<void> {
    const counters = this.#options.transport.counters;
    if (datagram[0] === MessageType.Init) {
      if (!this.#handshakeLimit.take(now)) {
        counters.rateLimited++;
        return;
      }
      return await this.#onInit(datagram, socket, from, now);
    }
    const header = parseTransportHeader(datagram);
    if (!header) {
      counters.garbage++;
      return;
    }
    counters.unknownSession++;
    if (!this.#unknownLimit.take(now)) {
      counters.rateLimited++;
      return;
    }
    // Probably a client that talked to us before a restart: ask it for a new handshake.
    counters.handshakeMacs++;
    const answer = buildUnknownSession(header.session, header.counter);
    answer.set(
      await this.#peer.mac.mac(answer.subarray(0, UNKNOWN_MAC_OFFSET)),
      UNKNOWN_MAC_OFFSET,
    );
    this.#options.transport.sendOne(answer, { socket, endpoint: from });
  }

  tick(now: number): Promise<number> {
    const peer = this.#peer;
    let next = Infinity;
    for (const [key, path] of peer.paths) {
      const expires = path.lastHeard + this.#options.pathTimeoutMs;
      if (now >= expires) {
        peer.paths.delete(key);
        log.info("client path {address} forgotten after {seconds} s of silence ({count} left)", {
          address: key,
          seconds: this.#options.pathTimeoutMs / 1000,
          count: peer.paths.size,
        });
      } else {
        next = Math.min(next, expires);
      }
    }
    for (const [id, record] of this.#records) {
      const session = record.session;
      if (session === peer.current) continue;
      if (session && session === peer.previous) {
        if (now >= peer.previousUntil) {
          this.#records.delete(id);
          peer.previous = undefined;
        } else {
          next = Math.min(next, peer.previousUntil);
        }
        continue;
      }
      const expires = record.createdAt + PENDING_LIFETIME_MS;
      if (now >= expires) this.#records.delete(id);
      else next = Math.min(next, expires);
    }
    return Promise.resolve(next);
  }

  close(): void {
    for (const socket of this.#sockets) socket.close();
  }

  async #onInit(
    datagram: Uint8Array,
    socket: UdpSocket,
    from: Endpoint,
    now: number,
  ): Promise<void> {
    const counters = this.#options.transport.counters;
    const peer = this.#peer;
    const init = parseInit(datagram);
    if (!init) {
      counters.garbage++;
      return;
    }
    counters.handshakeMacs++;
    if (!(await peer.mac.verify(init.mac, init.signed))) {
      counters.badAuth++; // another key, or forged
      return;
    }
    const existing = this.#records.get(init.session);
    if (existing) {
      // The same handshake over another uplink: answer it the same way.
      if (existing.response && equalBytes(existing.clientRandom, init.clientRandom)) {
        this.#options.transport.sendOne(existing.response, { socket, endpoint: from });
      } else {
        counters.duplicates++;
      }
      return;
    }
    if (init.timestamp <= peer.newestInitTimestamp) {
      counters.duplicates++; // a replayed handshake: older than one we already took
      return;
    }
    peer.newestInitTimestamp = init.timestamp;
    // Reserve the id before the first await, so a copy cannot make a second session.
    const record: SessionRecord = { clientRandom: init.clientRandom.slice(), createdAt: now };
    this.#records.set(init.session, record);
    this.#dropOldPending(peer);

    const serverRandom = randomBytes();
    const ciphers = await deriveSessionCiphers(
      peer.psk,
      init.session,
      record.clientRandom,
      serverRandom,
      this.#options.transport.makeCipher,
    );
    const response = buildResponse(init.session, serverRandom);
    response.set(
      await peer.mac.mac(response.subarray(0, RESPONSE_MAC_OFFSET), record.clientRandom),
      RESPONSE_MAC_OFFSET,
    );
    record.session = new Session(init.session, ciphers.serverToClient, ciphers.clientToServer, now);
    record.response = response;
    this.#options.transport.sendOne(response, { socket, endpoint: from });
    log.debug("handshake from {address} answered, session {session}", {
      address: from.key,
      session: init.session,
    });
  }

  /** The client proved it holds the new keys: switch to the new session. */
  #confirm(peer: PeerState, session: Session, now: number): void {
    session.confirmed = true;
    if (peer.previous) this.#records.delete(peer.previous.id);
    peer.previous = peer.current;
    peer.previousUntil = now + PREVIOUS_LIFETIME_MS;
    peer.current = session;
    // The client's addresses are learned again from the new session (it may be a new process).
    peer.paths.clear();
    log.info("client session {session} started", { session: session.id });
  }

  #dropOldPending(peer: PeerState): void {
    const pending = [...this.#records.entries()].filter(([, r]) =>
      r.session !== peer.current && r.session !== peer.previous
    );
    for (const [id] of pending.slice(0, Math.max(0, pending.length - PENDING_PER_PEER))) {
      this.#records.delete(id);
    }
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
