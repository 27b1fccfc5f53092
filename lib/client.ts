/**
 * The client role: one UDP socket per uplink, all aimed at the server; starts
 * sessions, probes every uplink, and follows the uplinks' interfaces as they
 * come, go, are made again or change address (and, for patterns like
 * `"wl*"`, gain or lose their default route).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { deriveSessionCiphers, HandshakeMac, randomBytes, randomSessionId } from "./crypto.ts";
import type { Endpoint } from "./endpoint.ts";
import { UserError } from "./errors.ts";
import { globMatch, type InterfaceInfo, isInterfacePattern } from "./interfaces.ts";
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
/**
 * How often the interfaces are checked (with `listInterfaces`): a missing
 * uplink that appears, one deleted and made again, a new address or a link
 * that comes up are acted on within this time, and patterns re-evaluated.
 */
export const WATCH_MS = 1000;
/** Handshakes whose answer is still accepted: answers may come late over a slow link. */
const PENDING_HANDSHAKES = 4;

export interface ClientOptions {
  server: Endpoint;
  /**
   * Every address of the server (IPv4 and IPv6), `server` when absent. Each
   * uplink sends to those of the families it has an address of.
   */
  servers?: readonly Endpoint[];
  /** Interface names, or shell-style patterns (`"*"`, `"wl*"`) matched against those with a default route. */
  interfaces: readonly string[];
  keepaliveMs: number;
  psk: Uint8Array;
  transport: Transport;
  /** Opens the socket of one uplink; throws a `UserError` when it cannot (interface missing). */
  openUplink(name: string): UdpSocket;
  /** Wall-clock milliseconds, for handshake timestamps (must grow across restarts). */
  wallClock?: () => number;
  /**
   * The machine's interfaces, checked every `WATCH_MS`. Without it, uplinks
   * are reopened only after send errors and patterns match nothing.
   */
  listInterfaces?: () => readonly InterfaceInfo[];
  /** Never used as uplinks, even when a pattern matches (the tunnel's own TUN). */
  exclude?: readonly string[];
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
  /** One per server address this uplink can reach (by the families of its addresses). */
  paths: Path[];
  /** The one the server last answered over: while set, only it is used. */
  active?: Path;
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
  /** The pattern it was found by; plain names have none and are never dropped. */
  pattern?: string;
  /** The ifindex its socket is tied to, when `listInterfaces` is known. */
  index?: number;
  /** Up-ness and addresses when last checked, to notice a change. */
  state?: string;
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
  #nextWatchAt = 0;
  readonly #patterns: readonly string[];

  private constructor(options: ClientOptions, mac: HandshakeMac) {
    this.#options = options;
    this.#mac = mac;
    this.#wallClock = options.wallClock ?? Date.now;
    this.#patterns = options.interfaces.filter(isInterfacePattern);
    this.uplinks = options.interfaces.filter((name) => !isInterfacePattern(name)).map((name) =>
      newUplink(name)
    );
  }

  /**
   * Opens every uplink it can. An uplink that is missing is reported and
   * retried later; if none can be opened, throws the first one's error.
   */
  static async create(options: ClientOptions, now: number): Promise<ClientRole> {
    const role = new ClientRole(options, await HandshakeMac.fromPsk(options.psk));
    const interfaces = role.#listInterfaces();
    if (interfaces) role.#matchPatterns(interfaces, now, true);
    role.#nextWatchAt = now + WATCH_MS;
    // Quiet: a start that fails must print its one error line, not a log of attempts.
    const errors = role.uplinks.map((uplink) =>
      role.#openUplink(uplink, now, true, interfaces?.find((i) => i.name === uplink.name))
    );
    // With a pattern, interfaces may come later (a laptop before its Wi-Fi is up): wait for them.
    if (role.#sockets.length === 0 && role.#patterns.length === 0) {
      const first = errors.find((e) => e !== undefined)!;
      throw first instanceof UserError && role.uplinks.length === 1 ? first : new UserError(
        `none of the uplinks can be used: ${errors.map((e) => e?.message).join("; ")}`,
      );
    }
    return role;
  }

  /** Logs what `create` found, once the whole start has succeeded. */
  reportUplinks(): void {
    if (this.#patterns.length > 0 && this.uplinks.length === 0) {
      log.warn("no interface with a default route matches {patterns} yet; waiting for one", {
        patterns: this.#patterns.join(", "),
      });
    }
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

  accepts(): boolean {
    return true; // everything from the server: it is the gateway to the whole network
  }

  heard(_session: Session, socket: UdpSocket, from: Endpoint, now: number, data = false): void {
    this.#lastHeard = now;
    const uplink = this.uplinks.find((u) => u.socket === socket);
    if (!uplink) return;
    uplink.lastHeard = now;
    // The first address that answers is kept: the server answers over every
    // path it knows, so switching on each answer would flip between families.
    if (!uplink.active) {
      uplink.active = uplink.paths.find((p) => p.endpoint.key === from.key);
      if (uplink.active && uplink.paths.length > 1) {
        log.info("uplink {uplink} reaches the server at {server}", {
          uplink: uplink.name,
          server: from.key,
        });
      }
    }
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
    if (this.#options.listInterfaces) {
      // The watch reopens missing uplinks as soon as their interface exists.
      if (now >= this.#nextWatchAt) this.#watch(now);
      next = this.#nextWatchAt;
    } else {
      for (const uplink of this.uplinks) {
        if (!uplink.socket) {
          if (now >= uplink.retryAt) this.#openUplink(uplink, now);
          if (!uplink.socket) next = Math.min(next, uplink.retryAt);
        }
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
        uplink.active = undefined; // try every server address again
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
    for (const uplink of this.uplinks) {
      if (uplink.active) paths.push(uplink.active);
      else paths.push(...uplink.paths);
    }
    return paths;
  }

  #openUplink(
    uplink: Uplink,
    now: number,
    quiet = false,
    info?: InterfaceInfo,
  ): Error | undefined {
    try {
      const socket = this.#options.openUplink(uplink.name);
      uplink.socket = socket;
      uplink.index = info?.index;
      uplink.state = info && interfaceState(info);
      uplink.paths = this.#targets(info).map((endpoint) => ({
        socket,
        endpoint,
        stats: uplink.stats,
      }));
      uplink.active = undefined;
      uplink.problem = undefined;
      uplink.openedAt = now;
      uplink.silenceReported = false;
      this.#sockets = [...this.#sockets, socket];
      if (!quiet) log.info("uplink {uplink} opened", { uplink: uplink.name });
      this.#pathChanged(now);
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
      seconds: (this.#options.listInterfaces ? WATCH_MS : UPLINK_RETRY_MS) / 1000,
      problem: uplink.problem,
    });
  }

  /** Closes an uplink whose interface vanished, so it is reopened when it returns. */
  #onSendError = (path: Path, code: string): void => {
    const uplink = this.uplinks.find((u) => u.paths.includes(path));
    if (!uplink) return;
    if (code === "ENODEV" || code === "ENXIO") {
      this.#closeUplink(uplink);
      uplink.retryAt = 0;
      log.warn("uplink {uplink} is down: its interface disappeared; looking for it again", {
        uplink: uplink.name,
      });
    } else {
      // The address it used to reach may be gone (its family lost its route): try them all again.
      if (path === uplink.active) uplink.active = undefined;
      if (uplink.problem === code) return;
      // Once per distinct error: an uplink without IPv6 fails every send to an IPv6 address.
      uplink.problem = code;
      log.debug("sending over {uplink} to {server} failed: {code}", {
        uplink: uplink.name,
        server: path.endpoint.key,
        code,
      });
    }
  };

  #closeUplink(uplink: Uplink): void {
    const socket = uplink.socket;
    socket?.close();
    this.#sockets = this.#sockets.filter((s) => s !== socket);
    uplink.socket = undefined;
    uplink.paths = [];
    uplink.active = undefined;
    uplink.up = false;
    uplink.silenceReported = true;
    uplink.index = undefined;
    uplink.state = undefined;
  }

  /** A path appeared or changed: probe at once, so the server learns it now, not at the next keepalive. */
  #pathChanged(now: number): void {
    if (this.#current) this.#nextProbeAt = now;
    else if (this.#handshakeWanted) this.#nextHandshakeAt = now;
  }

  /**
   * The server addresses an uplink sends to: those of the families it has an
   * address of; all of them when that is not known (or none fits, so the
   * send errors say why).
   */
  #targets(info: InterfaceInfo | undefined): Endpoint[] {
    const servers = this.#options.servers ?? [this.#options.server];
    if (!info || info.addresses.length === 0) return [...servers];
    const families = new Set(info.addresses.map((a) => a.includes(":") ? 6 : 4));
    const reachable = servers.filter((server) => families.has(server.family));
    return reachable.length > 0 ? reachable : [...servers];
  }

  #listInterfaces(): readonly InterfaceInfo[] | undefined {
    const list = this.#options.listInterfaces;
    if (!list) return undefined;
    try {
      return list();
    } catch (error) {
      log.debug("cannot list interfaces: {error}", { error: String(error) });
      return undefined;
    }
  }

  /**
   * Compares each uplink with its interface now: gone (close, look for it
   * again), made again with a new index (its socket is dead: reopen),
   * up/down or addresses changed (probe at once), back (open).
   */
  #watch(now: number): void {
    this.#nextWatchAt = now + WATCH_MS;
    const interfaces = this.#listInterfaces();
    if (!interfaces) return;
    this.#matchPatterns(interfaces, now, false);
    const byName = new Map(interfaces.map((i) => [i.name, i]));
    for (const uplink of this.uplinks) {
      const info = byName.get(uplink.name);
      if (!uplink.socket) {
        if (info) this.#openUplink(uplink, now, false, info);
        continue;
      }
      if (!info) {
        this.#closeUplink(uplink);
        uplink.retryAt = now + WATCH_MS;
        log.warn("uplink {uplink} is down: its interface is gone; looking for it again", {
          uplink: uplink.name,
        });
      } else if (uplink.index !== undefined && info.index !== uplink.index) {
        const old = uplink.index;
        this.#closeUplink(uplink);
        log.warn("uplink {uplink} was re-created (index {old} -> {index}); reopening it", {
          uplink: uplink.name,
          old,
          index: info.index,
        });
        this.#openUplink(uplink, now, false, info);
      } else if (interfaceState(info) !== uplink.state) {
        log.info("uplink {uplink} changed: {state}", {
          uplink: uplink.name,
          state: describeInterface(info),
        });
        uplink.index = info.index;
        uplink.state = interfaceState(info);
        uplink.problem = undefined;
        // Its families may have changed (an IPv6 address came or went): choose server addresses again.
        const socket = uplink.socket;
        uplink.paths = this.#targets(info).map((endpoint) => ({
          socket,
          endpoint,
          stats: uplink.stats,
        }));
        uplink.active = undefined;
        this.#pathChanged(now);
      }
    }
  }

  /** Adds interfaces that now match a pattern, and drops those found by one that no longer do. */
  #matchPatterns(interfaces: readonly InterfaceInfo[], now: number, quiet: boolean): void {
    if (this.#patterns.length === 0) return;
    const excluded = new Set(["lo", ...(this.#options.exclude ?? [])]);
    const wanted = new Map<string, string>();
    for (const info of interfaces) {
      if (!info.defaultRoute || excluded.has(info.name)) continue;
      const pattern = this.#patterns.find((p) => globMatch(p, info.name));
      if (pattern !== undefined) wanted.set(info.name, pattern);
    }
    for (const uplink of [...this.uplinks]) {
      if (uplink.pattern === undefined || wanted.has(uplink.name)) continue;
      this.#closeUplink(uplink);
      this.uplinks.splice(this.uplinks.indexOf(uplink), 1);
      const gone = !interfaces.some((i) => i.name === uplink.name);
      log.info("uplink {uplink} dropped: {reason}", {
        uplink: uplink.name,
        reason: gone ? "the interface is gone" : "it has no default route any more",
      });
    }
    for (const [name, pattern] of wanted) {
      if (this.uplinks.some((u) => u.name === name)) continue;
      const uplink = newUplink(name);
      uplink.pattern = pattern;
      this.uplinks.push(uplink);
      if (!quiet) {
        log.info("uplink {uplink} added: it matches {pattern} and has a default route", {
          uplink: name,
          pattern,
        });
        this.#openUplink(uplink, now, false, interfaces.find((i) => i.name === name));
      }
    }
  }

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
      server: (this.#options.servers ?? [this.#options.server]).map((s) => s.key).join(", "),
      session: response.session,
    });
    await this.#probeAll(now); // confirms the session and shows the server every path at once
  }

  async #probeAll(now: number): Promise<void> {
    this.#nextProbeAt = now + this.#options.keepaliveMs;
    const session = this.#current;
    if (!session) return;
    // Each uplink gets its own probe (own counter), so each reply measures that link; until
    // the server answered over one of its addresses, the probe goes to each of them.
    await Promise.all(
      this.uplinks.map((uplink) => {
        const paths = uplink.active ? [uplink.active] : uplink.paths;
        if (paths.length === 0) return;
        const seq = this.#probeSeq++;
        const sentAt = this.#options.clock?.now() ?? now;
        uplink.stats.probeSent(seq, sentAt);
        return this.#options.transport.sealAndSend(
          session,
          MessageType.Probe,
          encodeProbe({ seq, sentAt }),
          paths,
          this.#onSendError,
        );
      }),
    );
  }
}

function newUplink(name: string): Uplink {
  return {
    name,
    paths: [],
    lastHeard: -Infinity,
    up: false,
    retryAt: 0,
    openedAt: 0,
    silenceReported: false,
    stats: new LinkStats(),
  };
}

/** What of an interface, when it changes, may change the path to the server. */
function interfaceState(info: InterfaceInfo): string {
  return `${info.up ? "up" : "down"} ${info.addresses.join(",")}`;
}

function describeInterface(info: InterfaceInfo): string {
  const addresses = info.addresses.length > 0 ? info.addresses.join(", ") : "no address";
  return `${info.up ? "up" : "down"}, ${addresses}`;
}
