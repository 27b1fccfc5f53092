/**
 * The client role: one UDP socket per uplink, all aimed at the server; starts
 * sessions, probes every uplink, and reopens uplinks that were missing.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { deriveSessionCiphers, HandshakeMac, randomBytes, randomSessionId } from "./crypto.ts";
import type { Endpoint } from "./endpoint.ts";
import { UserError } from "./errors.ts";
import type { Clock, UdpSocket } from "./io.ts";
import { LinkStats, type PeerStatus, type StatusSource, withFirstShare } from "./link_stats.ts";
import { Session } from "./session.ts";
import type { Path, Transport } from "./transport.ts";
import type { Destination, Role } from "./tunnel.ts";
import {
  buildInit,
  encodeProbe,
  INIT_MAC_OFFSET,
  MessageType,
  parseResponse,
  parseUnknownSession,
  type ProbeBody,
} from "./wire.ts";

const log = getLogger(["tuxburst", "client"]);

/** How often an unanswered handshake is sent again. */
export const HANDSHAKE_RETRY_MS = 1000;
/** How often a missing uplink is looked for again. */
export const UPLINK_RETRY_MS = 2000;
/** Handshakes whose answer is still accepted: answers may come late over a slow link. */
const PENDING_HANDSHAKES = 4;

export interface ClientOptions {
  server: Endpoint;
  interfaces: readonly string[];
  keepaliveMs: number;
  psk: Uint8Array;
  transport: Transport;
  /** Opens the socket of one uplink; throws a `UserError` when it cannot (interface missing). */
  openUplink(name: string): UdpSocket;
  /** Wall-clock milliseconds, for handshake timestamps (must grow across restarts). */
  wallClock?: () => number;
  /**
   * The tunnel's clock, read when a probe leaves: the `now` a handshake
   * answer arrived with is stale by the key derivation, which would add to the first RTT.
   */
  clock?: Clock;
}

/** One configured uplink and what we know of it. */
export interface Uplink {
  readonly name: string;
  socket?: UdpSocket;
  path?: Path;
  /** When an authenticated message last arrived over it. */
  lastHeard: number;
  up: boolean;
  retryAt: number;
  /** The last error reported for it, so each distinct problem is logged once. */
  problem?: string;
  /** When its socket was opened; an uplink silent since then is reported once. */
  openedAt: number;
  /** Whether its silence was already logged (as "never reached" or "down"). */
  silenceReported: boolean;
  /** Smoothed probe RTT (the same as `stats.rttMs`). */
  rttMs?: number;
  /** Its health for `tuxburst status`; survives the socket being reopened. */
  readonly stats: LinkStats;
}

interface PendingHandshake {
  random: Uint8Array;
  /** Set while its answer is being checked, so two copies cannot make two sessions. */
  claimed: boolean;
}

export class ClientRole implements Role, StatusSource {
  readonly uplinks: Uplink[];
  readonly #options: ClientOptions;
  readonly #mac: HandshakeMac;
  readonly #pending = new Map<number, PendingHandshake>();
  readonly #wallClock: () => number;
  #current?: Session;
  #previous?: Session;
  #sockets: UdpSocket[] = [];
  #lastHeard = -Infinity;
  #handshakeWanted = true;
  #nextHandshakeAt = -Infinity;
  #lastTimestamp = 0;
  #nextProbeAt = Infinity;
  #probeSeq = 0;

  private constructor(options: ClientOptions, mac: HandshakeMac) {
    this.#options = options;
    this.#mac = mac;
    this.#wallClock = options.wallClock ?? Date.now;
    this.uplinks = options.interfaces.map((name) => ({
      name,
      lastHeard: -Infinity,
      up: false,
      retryAt: 0,
      openedAt: 0,
      silenceReported: false,
      stats: new LinkStats(),
    }));
  }

  /**
   * Opens every uplink it can. An uplink that is missing is reported and
   * retried later; if none can be opened, throws the first one's error.
   */
  static async create(options: ClientOptions, now: number): Promise<ClientRole> {
    const role = new ClientRole(options, await HandshakeMac.fromPsk(options.psk));
    // Quiet: a start that fails must print its one error line, not a log of attempts.
    const errors = role.uplinks.map((uplink) => role.#openUplink(uplink, now, true));
    if (role.#sockets.length === 0) {
      const first = errors.find((e) => e !== undefined)!;
      throw first instanceof UserError && role.uplinks.length === 1 ? first : new UserError(
        `none of the uplinks can be used: ${errors.map((e) => e?.message).join("; ")}`,
      );
    }
    return role;
  }

  /** Logs what `create` found, once the whole start has succeeded. */
  reportUplinks(): void {
    for (const uplink of this.uplinks) {
      if (uplink.problem) this.#reportProblem(uplink);
      else log.info("uplink {uplink} opened", { uplink: uplink.name });
    }
  }

  /** The session packets are sent with, once the handshake is done. */
  get currentSession(): Session | undefined {
    return this.#current;
  }

  sockets(): readonly UdpSocket[] {
    return this.#sockets;
  }

  session(id: number): Session | undefined {
    if (this.#current?.id === id) return this.#current;
    if (this.#previous?.id === id) return this.#previous; // stragglers sent before the server switched
    return undefined;
  }

  destination(): Destination | undefined {
    const session = this.#current;
    if (!session) return undefined;
    return { session, paths: () => this.#paths() };
  }

  heard(_session: Session, socket: UdpSocket, _from: Endpoint, now: number, data = false): void {
    this.#lastHeard = now;
    const uplink = this.uplinks.find((u) => u.socket === socket);
    if (!uplink) return;
    uplink.lastHeard = now;
    uplink.stats.heard(now, data);
    if (!uplink.up) {
      uplink.up = true;
      uplink.silenceReported = false;
      uplink.problem = undefined;
      log.info("uplink {uplink} is up", { uplink: uplink.name });
    }
  }

  received(_session: Session, socket: UdpSocket, _from: Endpoint, bytes: number): void {
    for (const uplink of this.uplinks) {
      if (uplink.socket === socket) return uplink.stats.received(bytes);
    }
  }

  probeAnswered(socket: UdpSocket, body: ProbeBody, now: number): void {
    const uplink = this.uplinks.find((u) => u.socket === socket);
    if (!uplink) return;
    if (uplink.stats.probeAnswered(body.seq, body.sentAt, now)) uplink.rttMs = uplink.stats.rttMs;
  }

  /** One peer, the server, with one link per configured uplink. */
  peerStatus(now: number): PeerStatus[] {
    const session = this.#current;
    return [{
      name: "server",
      address: this.#options.server.key,
      session: session ? { id: session.id, ageSeconds: (now - session.createdAt) / 1000 } : null,
      links: withFirstShare(this.uplinks.map((uplink) => ({
        name: uplink.name,
        up: uplink.up,
        ...uplink.stats.snapshot(now),
      }))),
    }];
  }

  async control(
    datagram: Uint8Array,
    socket: UdpSocket,
    _from: Endpoint,
    now: number,
  ): Promise<void> {
    const counters = this.#options.transport.counters;
    switch (datagram[0]) {
      case MessageType.Response:
        return await this.#onResponse(datagram, now);
      case MessageType.UnknownSession: {
        const message = parseUnknownSession(datagram);
        const current = this.#current;
        // Only an echo of something this session really sent can ask for a new handshake.
        if (
          !message || !current || message.session !== current.id || message.counter >= current.sent
        ) {
          counters.garbage++;
          return;
        }
        if (!(await this.#mac.verify(message.mac, message.signed))) {
          counters.badAuth++;
          return;
        }
        if (!this.#handshakeWanted) {
          log.info(
            "server does not know our session (it restarted?); starting a new one via {uplink}",
            {
              uplink: this.uplinks.find((u) => u.socket === socket)?.name,
            },
          );
          this.#handshakeWanted = true;
        }
        return;
      }
      case MessageType.Data:
      case MessageType.Probe:
      case MessageType.ProbeReply:
        counters.unknownSession++; // from a session we already replaced
        return;
      default:
        counters.garbage++;
    }
  }

  async tick(now: number): Promise<number> {
    let next = Infinity;
    for (const uplink of this.uplinks) {
      if (!uplink.socket) {
        if (now >= uplink.retryAt) this.#openUplink(uplink, now);
        if (!uplink.socket) next = Math.min(next, uplink.retryAt);
      }
    }

    const current = this.#current;
    const silentFor = now - this.#lastHeard;
    const deadAfter = this.#deadAfterMs();
    if (current && (silentFor > deadAfter || current.worn)) this.#handshakeWanted = true;
    if (this.#handshakeWanted) {
      if (now >= this.#nextHandshakeAt) await this.#sendInit(now);
      next = Math.min(next, this.#nextHandshakeAt);
    }

    if (this.#current) {
      if (now >= this.#nextProbeAt) await this.#probeAll(now);
      next = Math.min(next, this.#nextProbeAt);
    }

    for (const uplink of this.uplinks) {
      if (uplink.up && now - uplink.lastHeard > deadAfter) {
        uplink.up = false;
        uplink.silenceReported = true;
        log.warn("uplink {uplink} is down: nothing heard for {seconds} s{reason}", {
          uplink: uplink.name,
          seconds: Math.round((now - uplink.lastHeard) / 100) / 10,
          reason: uplink.problem ? ` (sending fails: ${uplink.problem})` : "",
        });
      }
      if (uplink.up) next = Math.min(next, uplink.lastHeard + deadAfter + 1);
      if (uplink.socket && !uplink.up && !uplink.silenceReported) {
        // Open but never answered: an interface that is down, or has no route to the server.
        if (now - uplink.openedAt > deadAfter) {
          uplink.silenceReported = true;
          log.warn(
            "uplink {uplink} has not reached the server in {seconds} s{reason}; still trying",
            {
              uplink: uplink.name,
              seconds: Math.round(deadAfter / 100) / 10,
              reason: uplink.problem ? ` (sending fails: ${uplink.problem})` : "",
            },
          );
        } else {
          next = Math.min(next, uplink.openedAt + deadAfter + 1);
        }
      }
    }
    return next;
  }

  close(): void {
    for (const socket of this.#sockets) socket.close();
    this.#sockets = [];
  }

  /** An uplink counts as down when no probe was answered over it for three intervals. */
  #deadAfterMs(): number {
    return Math.max(3 * this.#options.keepaliveMs, 3000);
  }

  #paths(): Path[] {
    const paths: Path[] = [];
    for (const uplink of this.uplinks) if (uplink.path) paths.push(uplink.path);
    return paths;
  }

  #openUplink(uplink: Uplink, now: number, quiet = false): Error | undefined {
    try {
      const socket = this.#options.openUplink(uplink.name);
      uplink.socket = socket;
      uplink.path = { socket, endpoint: this.#options.server, stats: uplink.stats };
      uplink.problem = undefined;
      uplink.openedAt = now;
      uplink.silenceReported = false;
      this.#sockets = [...this.#sockets, socket];
      if (!quiet) log.info("uplink {uplink} opened", { uplink: uplink.name });
      if (this.#current) this.#nextProbeAt = now; // tell the server about the new path at once
      return undefined;
    } catch (error) {
      if (!(error instanceof Error)) throw error;
      uplink.retryAt = now + UPLINK_RETRY_MS;
      if (uplink.problem !== error.message) {
        uplink.problem = error.message;
        if (!quiet) this.#reportProblem(uplink);
      }
      return error;
    }
  }

  #reportProblem(uplink: Uplink): void {
    log.warn("uplink {uplink} cannot be used, retrying every {seconds} s: {problem}", {
      uplink: uplink.name,
      seconds: UPLINK_RETRY_MS / 1000,
      problem: uplink.problem,
    });
  }

  /** Closes an uplink whose interface vanished, so it is reopened when it returns. */
  #onSendError = (path: Path, code: string): void => {
    const uplink = this.uplinks.find((u) => u.path === path);
    if (!uplink) return;
    if (code === "ENODEV" || code === "ENXIO") {
      uplink.socket?.close();
      this.#sockets = this.#sockets.filter((s) => s !== uplink.socket);
      uplink.socket = undefined;
      uplink.path = undefined;
      uplink.up = false;
      uplink.retryAt = 0;
      log.warn("uplink {uplink} disappeared; looking for it again", { uplink: uplink.name });
    } else if (uplink.problem !== code) {
      uplink.problem = code;
      log.debug("sending over {uplink} failed: {code}", { uplink: uplink.name, code });
    }
  };

  async #sendInit(now: number): Promise<void> {
    this.#nextHandshakeAt = now + HANDSHAKE_RETRY_MS;
    const id = randomSessionId();
    const random = randomBytes();
    // Strictly growing, so the server can reject replays of older handshakes.
    const timestamp = Math.max(this.#wallClock(), this.#lastTimestamp + 1);
    this.#lastTimestamp = timestamp;
    const init = buildInit(id, random, timestamp);
    init.set(await this.#mac.mac(init.subarray(0, INIT_MAC_OFFSET)), INIT_MAC_OFFSET);
    this.#pending.set(id, { random, claimed: false });
    for (const oldest of this.#pending.keys()) {
      if (this.#pending.size <= PENDING_HANDSHAKES) break;
      this.#pending.delete(oldest);
    }
    this.#options.transport.sendAll(init, this.#paths(), this.#onSendError);
    log.debug("handshake sent, session {session}", { session: id });
  }

  async #onResponse(datagram: Uint8Array, now: number): Promise<void> {
    const counters = this.#options.transport.counters;
    const response = parseResponse(datagram);
    const pending = response && this.#pending.get(response.session);
    if (!response || !pending || pending.claimed) {
      counters.duplicates++; // a copy over another uplink, or an answer we no longer wait for
      return;
    }
    pending.claimed = true;
    if (!(await this.#mac.verify(response.mac, response.signed, pending.random))) {
      pending.claimed = false;
      counters.badAuth++;
      return;
    }
    const ciphers = await deriveSessionCiphers(
      this.#options.psk,
      response.session,
      pending.random,
      response.serverRandom,
      this.#options.transport.makeCipher,
    );
    const renewed = this.#current !== undefined;
    this.#previous = this.#current;
    this.#current = new Session(
      response.session,
      ciphers.clientToServer,
      ciphers.serverToClient,
      now,
    );
    this.#pending.clear();
    this.#handshakeWanted = false;
    this.#nextHandshakeAt = -Infinity;
    this.#lastHeard = now;
    log.info(renewed ? "session renewed ({session})" : "connected to {server}, session {session}", {
      server: this.#options.server.key,
      session: response.session,
    });
    await this.#probeAll(now); // confirms the session and shows the server every path at once
  }

  async #probeAll(now: number): Promise<void> {
    this.#nextProbeAt = now + this.#options.keepaliveMs;
    const session = this.#current;
    if (!session) return;
    // Each uplink gets its own probe (own counter), so each reply measures that link.
    await Promise.all(
      this.uplinks.map((uplink) => {
        if (!uplink.path) return;
        const seq = this.#probeSeq++;
        const sentAt = this.#options.clock?.now() ?? now;
        uplink.stats.probeSent(seq, sentAt);
        return this.#options.transport.sealAndSend(
          session,
          MessageType.Probe,
          encodeProbe({ seq, sentAt }),
          [uplink.path],
          this.#onSendError,
        );
      }),
    );
  }
}
