/**
 * The server role: one socket, several peers (clients), each with its own
 * key, tunnel address, sessions and paths. It tells peers apart by the key
 * their handshake's MAC verifies with, answers handshakes, remembers every
 * address an authenticated packet of a peer came from, sends each packet for
 * a peer (chosen by the packet's destination address) to all of that peer's
 * addresses, and forgets addresses that fall silent.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { deriveSessionCiphers, HandshakeMac, randomBytes } from "./crypto.ts";
import type { PeerConfig } from "./config.ts";
import { type Endpoint, parseIpv4 } from "./endpoint.ts";
import { type AddressKey, destinationOf, sourceOf } from "./ip_header.ts";
import type { UdpSocket } from "./io.ts";
import { LinkStats, type PeerStatus, type StatusSource, withFirstShare } from "./link_stats.ts";
import { KeyedTokenBuckets, TokenBucket } from "./rate_limit.ts";
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

/** An answered handshake the peer has not used yet is forgotten after this. */
export const PENDING_LIFETIME_MS = 10_000;
/** The session a client replaced still delivers its stragglers this long. */
export const PREVIOUS_LIFETIME_MS = 10_000;
/** Unanswered handshakes kept per peer. */
const PENDING_PER_PEER = 4;
/**
 * Handshakes and "unknown session" answers cost HMACs (and HKDF); a flood of
 * them must not cost more than this many per second, whatever arrives. An
 * INIT costs one HMAC per peer (the key that verifies it names the peer).
 */
export const HANDSHAKES_PER_SECOND = 50;
export const UNKNOWN_ANSWERS_PER_SECOND = 20;
/**
 * Of that budget, one sender address gets at most this many INITs per second
 * (a client sends one per uplink per second while it connects; several
 * clients may share one NAT address), so a flood from one address cannot
 * keep other clients from connecting.
 */
export const HANDSHAKES_PER_SENDER_PER_SECOND = 10;
/** Senders remembered for that; beyond, the longest silent are forgotten. */
const HANDSHAKE_SENDERS = 4096;

export interface ServerOptions {
  socket: UdpSocket;
  /** The peers to accept, each with its own key (see `PeerConfig`). */
  peers: readonly PeerConfig[];
  pathTimeoutMs: number;
  transport: Transport;
}

/** One peer address the server sends to. */
export interface ServerPath extends Path {
  lastHeard: number;
  readonly stats: LinkStats;
}

/** What tests and logs see of a peer. */
export interface PeerPaths {
  name: string;
  /** The peer's confirmed session, if any. */
  session?: number;
  paths: readonly ServerPath[];
}

/** What the server knows of one peer. A changed key makes a new one: the old sessions go. */
class PeerState {
  current?: Session;
  previous?: Session;
  previousUntil = 0;
  newestInitTimestamp = -1;
  readonly paths = new Map<string, ServerPath>();
  /** Set when a reload removed the peer; work still in flight for it is dropped. */
  removed = false;

  constructor(public config: PeerConfig, readonly mac: HandshakeMac) {}

  get name(): string {
    return this.config.name;
  }
}

interface SessionRecord {
  peer: PeerState;
  clientRandom: Uint8Array;
  createdAt: number;
  /** Undefined while its keys are being derived. */
  session?: Session;
  response?: Uint8Array;
}

/** One peer for `tuxburst status`: its session and every address it is sent to. */
function peerStatusOf(peer: PeerState, now: number): PeerStatus {
  const session = peer.current;
  return {
    name: peer.name,
    address: null,
    session: session ? { id: session.id, ageSeconds: (now - session.createdAt) / 1000 } : null,
    // A path is sent to until path_timeout, but is down once the client's probes stop.
    links: withFirstShare(
      [...peer.paths.values()].map((path) => ({
        name: path.endpoint.key,
        up: !path.stats.peerProbesMissed(now),
        ...path.stats.snapshot(now),
      })),
    ),
  };
}

export class ServerRole implements Role, StatusSource {
  readonly #options: ServerOptions;
  /** By name, in config order (the order unknown-session answers go out). */
  #peers = new Map<string, PeerState>();
  /** Tunnel address (IPv4 and IPv6) → peer. */
  #routes = new Map<AddressKey, PeerState>();
  /** The one peer of a config with `server.key`: it takes and sends every address. */
  #everything?: PeerState;
  readonly #records = new Map<number, SessionRecord>();
  readonly #owners = new WeakMap<Session, PeerState>();
  readonly #sockets: readonly UdpSocket[];
  readonly #handshakeLimit = new TokenBucket(HANDSHAKES_PER_SECOND, HANDSHAKES_PER_SECOND);
  readonly #handshakesPerSender = new KeyedTokenBuckets(
    HANDSHAKES_PER_SENDER_PER_SECOND,
    HANDSHAKES_PER_SENDER_PER_SECOND,
    HANDSHAKE_SENDERS,
  );
  readonly #unknownLimit = new TokenBucket(UNKNOWN_ANSWERS_PER_SECOND, UNKNOWN_ANSWERS_PER_SECOND);
  /** Where the next round of unknown-session answers starts, so every peer gets its turn. */
  #unknownCursor = 0;

  private constructor(options: ServerOptions) {
    this.#options = options;
    this.#sockets = [options.socket];
  }

  static async create(options: ServerOptions): Promise<ServerRole> {
    const role = new ServerRole(options);
    // Quietly: a server that fails to start says one line, and `startServer` lists the peers.
    await role.#apply(options.peers, false);
    return role;
  }

  /** Every peer address the server currently sends to, of all peers. */
  get paths(): readonly ServerPath[] {
    return [...this.#peers.values()].flatMap((peer) => [...peer.paths.values()]);
  }

  /** The peers, in config order. */
  get peers(): readonly PeerPaths[] {
    return [...this.#peers.values()].map((peer) => ({
      name: peer.name,
      session: peer.current?.id,
      paths: [...peer.paths.values()],
    }));
  }

  /**
   * Switches to a new list of peers (SIGHUP): new names are added, missing
   * ones removed with their sessions, a changed key replaces the peer (its
   * sessions were made with the old key), and peers whose key is unchanged
   * keep their sessions and paths, with their addresses updated.
   */
  reload(configs: readonly PeerConfig[]): Promise<void> {
    return this.#apply(configs, true);
  }

  async #apply(configs: readonly PeerConfig[], announce: boolean): Promise<void> {
    // The MAC keys first: the tunnel runs on meanwhile, and the switch below happens at once.
    const next = await Promise.all(configs.map(async (config) => {
      const old = this.#peers.get(config.name);
      if (old && equalBytes(old.config.key, config.key)) return old;
      return new PeerState(config, await HandshakeMac.fromPsk(config.key));
    }));
    const kept = new Set(next);
    for (const old of this.#peers.values()) {
      if (kept.has(old)) continue;
      old.removed = true;
      for (const [id, record] of this.#records) {
        if (record.peer === old) this.#records.delete(id);
      }
      const replaced = configs.some((config) => config.name === old.name);
      if (!announce) continue;
      log.info(
        replaced
          ? "peer {peer}: key changed, its sessions dropped"
          : "peer {peer} removed, its sessions dropped",
        { peer: old.name },
      );
    }
    const before = new Set(this.#peers.values());
    this.#peers = new Map();
    this.#routes = new Map();
    this.#everything = undefined;
    for (let i = 0; i < next.length; i++) {
      const peer = next[i];
      const changed = peer.config.tunAddress !== configs[i].tunAddress ||
        peer.config.tunAddress6 !== configs[i].tunAddress6;
      peer.config = configs[i];
      this.#peers.set(peer.name, peer);
      const { tunAddress, tunAddress6 } = peer.config;
      if (tunAddress === undefined) this.#everything = peer;
      else this.#routes.set(parseIpv4(tunAddress)!, peer);
      if (tunAddress6 !== undefined) this.#routes.set(tunAddress6, peer);
      const addresses = [tunAddress ?? "every address", tunAddress6].filter(Boolean).join(", ");
      if (!announce) continue;
      if (!before.has(peer)) {
        log.info("peer {peer} added ({addresses})", { peer: peer.name, addresses });
      } else if (changed) {
        log.info("peer {peer}: tunnel address now {addresses}", { peer: peer.name, addresses });
      }
    }
  }

  sockets(): readonly UdpSocket[] {
    return this.#sockets;
  }

  session(id: number): Session | undefined {
    return this.#records.get(id)?.session;
  }

  /** The peer whose tunnel address the packet is for; none: dropped and counted (`noPeer`). */
  destination(packet: Uint8Array): Destination | undefined {
    const peer = this.#everything ?? this.#routes.get(destinationOf(packet) ?? -1);
    if (!peer) {
      this.#options.transport.counters.noPeer++;
      return undefined;
    }
    if (!peer.current || peer.paths.size === 0) return undefined;
    return { session: peer.current, paths: () => peer.paths.values() };
  }

  /**
   * A peer may send only from its own tunnel address: otherwise one client
   * could pose as another (or as anyone) towards the server's network.
   */
  accepts(session: Session, packet: Uint8Array): boolean {
    const peer = this.#owners.get(session);
    if (!peer || peer.removed) return false;
    if (peer === this.#everything) return true;
    const source = sourceOf(packet);
    return source !== undefined && this.#routes.get(source) === peer;
  }

  heard(session: Session, socket: UdpSocket, from: Endpoint, now: number, data = false): void {
    const peer = this.#owners.get(session);
    if (!peer || peer.removed) return;
    if (!session.confirmed) this.#confirm(peer, session, now);
    const path = peer.paths.get(from.key);
    if (path) {
      path.lastHeard = now;
      path.stats.heard(now, data);
    } else if (session === peer.current) {
      // Only the newest session teaches addresses: an old one may come from a dead process.
      const stats = new LinkStats();
      stats.heard(now, data);
      peer.paths.set(from.key, { socket, endpoint: from, lastHeard: now, stats });
      log.info("peer {peer} path {address} learned ({count} in use)", {
        peer: peer.name,
        address: from.key,
        count: peer.paths.size,
      });
    }
  }

  received(session: Session, _socket: UdpSocket, from: Endpoint, bytes: number): void {
    // Only remembered addresses are counted: unknown senders must not grow any table.
    this.#owners.get(session)?.paths.get(from.key)?.stats.received(bytes);
  }

  /** Every peer with its paths, in config order. */
  peerStatus(now: number): PeerStatus[] {
    return [...this.#peers.values()].map((peer) => peerStatusOf(peer, now));
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
      // The sender's own share first: a flood from one address then leaves the rest to others.
      if (!this.#handshakesPerSender.take(from.address, now) || !this.#handshakeLimit.take(now)) {
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
    // Probably a peer that talked to us before a restart: ask it for a new handshake. Which
    // peer cannot be known (a restarted server knows no session), so one answer goes out per
    // peer key, and the peer whose key verifies it acts on it (the others count a bad MAC).
    // Every answer takes a token, so however many peers there are, a flood of forged
    // transport messages gets at most UNKNOWN_ANSWERS_PER_SECOND 32-byte answers a second,
    // each no larger than the (at least 32-byte) datagram it answers. With more peers than
    // one burst covers, the next round starts where this one stopped; a peer that never gets
    // its answer still starts over when it hears nothing for a while.
    const peers = [...this.#peers.values()];
    for (let i = 0; i < peers.length; i++) {
      if (!this.#unknownLimit.take(now)) {
        counters.rateLimited++;
        return;
      }
      const peer = peers[this.#unknownCursor++ % peers.length];
      const answer = buildUnknownSession(header.session, header.counter);
      counters.handshakeMacs++;
      answer.set(await peer.mac.mac(answer.subarray(0, UNKNOWN_MAC_OFFSET)), UNKNOWN_MAC_OFFSET);
      this.#options.transport.sendOne(answer, { socket, endpoint: from });
    }
  }

  tick(now: number): Promise<number> {
    let next = Infinity;
    for (const peer of this.#peers.values()) {
      for (const [key, path] of peer.paths) {
        const expires = path.lastHeard + this.#options.pathTimeoutMs;
        if (now >= expires) {
          peer.paths.delete(key);
          log.info(
            "peer {peer} path {address} forgotten after {seconds} s of silence ({count} left)",
            {
              peer: peer.name,
              address: key,
              seconds: this.#options.pathTimeoutMs / 1000,
              count: peer.paths.size,
            },
          );
        } else {
          next = Math.min(next, expires);
        }
      }
    }
    for (const [id, record] of this.#records) {
      const session = record.session;
      const peer = record.peer;
      if (session && session === peer.current) continue;
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

  /** The peer whose key verifies the INIT's MAC (one HMAC per peer), if any. */
  async #identify(mac: Uint8Array, signed: Uint8Array): Promise<PeerState | undefined> {
    const peers = [...this.#peers.values()];
    this.#options.transport.counters.handshakeMacs += peers.length;
    const verified = await Promise.all(peers.map((peer) => peer.mac.verify(mac, signed)));
    const peer = peers[verified.indexOf(true)];
    return peer && !peer.removed ? peer : undefined;
  }

  async #onInit(
    datagram: Uint8Array,
    socket: UdpSocket,
    from: Endpoint,
    now: number,
  ): Promise<void> {
    const counters = this.#options.transport.counters;
    const init = parseInit(datagram);
    if (!init) {
      counters.garbage++;
      return;
    }
    const peer = await this.#identify(init.mac, init.signed);
    if (!peer) {
      counters.badAuth++; // no peer's key, or forged
      return;
    }
    const existing = this.#records.get(init.session);
    if (existing) {
      // The same handshake over another uplink: answer it the same way.
      if (
        existing.peer === peer && existing.response &&
        equalBytes(existing.clientRandom, init.clientRandom)
      ) {
        this.#options.transport.sendOne(existing.response, { socket, endpoint: from });
      } else {
        counters.duplicates++; // or another peer's session id, which it must not take over
      }
      return;
    }
    if (init.timestamp <= peer.newestInitTimestamp) {
      counters.duplicates++; // a replayed handshake: older than one we already took
      return;
    }
    peer.newestInitTimestamp = init.timestamp;
    // Reserve the id before the first await, so a copy cannot make a second session.
    const record: SessionRecord = {
      peer,
      clientRandom: init.clientRandom.slice(),
      createdAt: now,
    };
    this.#records.set(init.session, record);
    this.#dropOldPending(peer);

    const serverRandom = randomBytes();
    const ciphers = await deriveSessionCiphers(
      peer.config.key,
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
    // A reload may have removed the peer meanwhile.
    if (this.#records.get(init.session) !== record) return;
    const session = new Session(
      init.session,
      ciphers.serverToClient,
      ciphers.clientToServer,
      now,
    );
    this.#owners.set(session, peer);
    record.session = session;
    record.response = response;
    this.#options.transport.sendOne(response, { socket, endpoint: from });
    log.debug("peer {peer}: handshake from {address} answered, session {session}", {
      peer: peer.name,
      address: from.key,
      session: init.session,
    });
  }

  /** The peer proved it holds the new keys: switch to the new session. */
  #confirm(peer: PeerState, session: Session, now: number): void {
    session.confirmed = true;
    if (peer.previous) this.#records.delete(peer.previous.id);
    peer.previous = peer.current;
    peer.previousUntil = now + PREVIOUS_LIFETIME_MS;
    peer.current = session;
    // The peer's addresses are learned again from the new session (it may be a new process).
    peer.paths.clear();
    log.info("peer {peer} session {session} started", { peer: peer.name, session: session.id });
  }

  #dropOldPending(peer: PeerState): void {
    const pending = [...this.#records.entries()].filter(([, r]) =>
      r.peer === peer && r.session !== peer.current && r.session !== peer.previous
    );
    for (const [id] of pending.slice(0, Math.max(0, pending.length - PENDING_PER_PEER))) {
      this.#records.delete(id);
    }
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
