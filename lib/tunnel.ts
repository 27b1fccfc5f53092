/**
 * The data path, one for both roles: TUN → encrypt → every path of the peer
 * (outbound), and every socket → authenticate → first copy → TUN (inbound).
 * Client and server differ only in their `Role`: which sockets exist, where a
 * packet goes, and how sessions are made.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Endpoint } from "./endpoint.ts";
import type { Clock, Reactor, Tun, UdpSocket, Waitable } from "./io.ts";
import type { Session } from "./session.ts";
import type { Path, Transport } from "./transport.ts";
import {
  decodeProbe,
  MessageType,
  parseTransportHeader,
  type ProbeBody,
  TRANSPORT_OVERHEAD,
  type TransportHeader,
} from "./wire.ts";

/** Packets handled per read burst; crypto of one burst runs concurrently. */
export const BATCH_SIZE = 64;
/**
 * Bursts per source per wake-up before the others get their turn; the next
 * `poll()` returns at once while data is still waiting, so nothing is lost.
 */
const BURSTS_PER_WAKEUP = 4;
/** Room for any datagram, whatever the MTU. */
const RECEIVE_BUFFER_SIZE = 65536;

const log = getLogger(["tuxburst", "tunnel"]);

/** Where an outbound packet goes. */
export interface Destination {
  session: Session;
  /** Read when the datagram is ready, so paths learned meanwhile are included. */
  paths(): Iterable<Path>;
}

/** What makes a client a client and a server a server. */
export interface Role {
  /** The sockets to read; may change between wake-ups (an uplink reappears). */
  sockets(): readonly UdpSocket[];
  /** The session an inbound transport message names, if this side knows it. */
  session(id: number): Session | undefined;
  /** Where a packet read from the TUN goes; `undefined` drops it (no session yet). */
  destination(packet: Uint8Array): Destination | undefined;
  /**
   * Whether a decrypted Data packet of `session` may go to the TUN: the
   * server lets each peer send only from its own tunnel address.
   */
  accepts(session: Session, packet: Uint8Array): boolean;
  /**
   * An authenticated, first-copy transport message of `session` arrived on
   * this path; `data` when it carried an IP packet (not a probe).
   */
  heard(session: Session, socket: UdpSocket, from: Endpoint, now: number, data: boolean): void;
  /**
   * Any transport datagram of a known session arrived on this path, first
   * copy or not, before authentication (for per-link byte counts). Per packet: keep it cheap.
   */
  received?(session: Session, socket: UdpSocket, from: Endpoint, bytes: number): void;
  /** A probe of ours came back on this path. */
  probeAnswered(socket: UdpSocket, body: ProbeBody, now: number): void;
  /**
   * A datagram that is not a transport message of a known session
   * (handshakes, or transport for a session this side lost). `datagram` is
   * the role's own copy.
   */
  control(datagram: Uint8Array, socket: UdpSocket, from: Endpoint, now: number): Promise<void>;
  /** Timers (probes, retries, expiry); returns the time it wants to run again. */
  tick(now: number): Promise<number>;
  /** Called once when the tunnel stops. */
  close(): void;
}

interface Candidate {
  datagram: Uint8Array;
  header: TransportHeader;
  session: Session;
  socket: UdpSocket;
  from: Endpoint;
}

/**
 * Runs the loop until `stop()`.
 *
 * @example
 * ```ts
 * const tunnel = new Tunnel({ tun, reactor, clock, transport, role });
 * Deno.addSignalListener("SIGTERM", () => tunnel.stop());
 * await tunnel.run();
 * ```
 */
export class Tunnel {
  readonly #tun: Tun;
  readonly #reactor: Reactor;
  readonly #clock: Clock;
  readonly #transport: Transport;
  readonly #role: Role;
  /** Where bursts are read into: TUN packets outbound, datagrams inbound. */
  readonly #buffers: Uint8Array[];
  /**
   * Where a burst's datagrams are sealed into and its packets opened into,
   * by a cipher on this thread: reused for every burst, since the kernel
   * copies what is sent or written before the next burst begins.
   */
  readonly #sealBuffers: Uint8Array[];
  /** The length and sender of each datagram of an inbound burst. */
  readonly #lengths = new Uint32Array(BATCH_SIZE);
  readonly #senders: Endpoint[] = [];
  readonly #openBuffers: Uint8Array[];
  /** Per-packet debug logs; a plain boolean so that, when off, no message is ever built. */
  readonly #debug: boolean;
  #stopped = false;

  constructor(
    options: {
      tun: Tun;
      reactor: Reactor;
      clock: Clock;
      transport: Transport;
      role: Role;
      debug?: boolean;
    },
  ) {
    this.#debug = options.debug ?? false;
    this.#tun = options.tun;
    this.#reactor = options.reactor;
    this.#clock = options.clock;
    this.#transport = options.transport;
    this.#role = options.role;
    const size = Math.max(RECEIVE_BUFFER_SIZE, options.tun.mtu + TRANSPORT_OVERHEAD);
    this.#buffers = Array.from({ length: BATCH_SIZE }, () => new Uint8Array(size));
    // Room for a full-MTU packet; anything larger gets an array of its own.
    const packetSize = options.tun.mtu + TRANSPORT_OVERHEAD;
    this.#sealBuffers = Array.from({ length: BATCH_SIZE }, () => new Uint8Array(packetSize));
    this.#openBuffers = Array.from({ length: BATCH_SIZE }, () => new Uint8Array(packetSize));
  }

  /** Ends `run()` soon; safe from a signal handler. */
  stop(): void {
    this.#stopped = true;
    this.#reactor.wake();
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  async run(): Promise<void> {
    try {
      let deadline = await this.#role.tick(this.#clock.now());
      while (!this.#stopped) {
        const sources: Waitable[] = [this.#tun, ...this.#role.sockets()];
        await this.#reactor.wait(sources, Math.max(0, deadline - this.#clock.now()));
        if (this.#stopped) break;
        // Inbound first: a packet written to the TUN is often answered at once (the kernel
        // answers a ping inside the write), and the answer then leaves in this same wake-up.
        const delivered = await this.#inbound();
        if (delivered > 0 || this.#reactor.ready(this.#tun)) await this.#outbound();
        deadline = await this.#role.tick(this.#clock.now());
      }
    } finally {
      this.#role.close();
    }
  }

  /** TUN → seal once → send the same datagram over every path of the peer. */
  async #outbound(): Promise<void> {
    for (let burst = 0; burst < BURSTS_PER_WAKEUP; burst++) {
      const sealed: (Uint8Array | undefined | Promise<Uint8Array | undefined>)[] = [];
      const destinations: Destination[] = [];
      let waiting = false;
      let read = 0;
      while (read < BATCH_SIZE) {
        const buffer = this.#buffers[read];
        const length = this.#tun.read(buffer);
        if (length === null) break;
        read++;
        if (length === 0) continue;
        const packet = buffer.subarray(0, length);
        const destination = this.#role.destination(packet);
        if (!destination) {
          this.#transport.counters.noRoute++; // no session yet: TCP will retry
          if (this.#debug) log.debug("outbound packet dropped: no session or path yet");
          continue;
        }
        this.#transport.counters.outboundPackets++;
        // A worker-thread cipher copies the plaintext when called, so `buffer` is free again at once.
        const datagram = this.#transport.sealPacket(
          destination.session,
          MessageType.Data,
          packet,
          this.#sealBuffers[sealed.length],
        );
        if (datagram instanceof Promise) waiting = true;
        sealed.push(datagram);
        destinations.push(destination);
        // The first packet of a wake-up leaves at once: the read that finds the TUN
        // empty would otherwise delay every packet after a pause (a ping, a keystroke).
        if (burst === 0 && read === 1 && !waiting) this.#send(sealed, destinations);
      }
      // Worker-thread crypto finishes in any order; send in TUN order, or TCP sees reordering.
      this.#send(waiting ? await Promise.all(sealed) : sealed, destinations);
      if (read < BATCH_SIZE) return;
    }
  }

  /** Queues each sealed datagram for its destination's paths, sends them all, and empties both lists. */
  #send(
    sealed: (Uint8Array | undefined | Promise<Uint8Array | undefined>)[],
    destinations: Destination[],
  ): void {
    // All sent already: an empty flush would only discard the per-socket queues, made again next packet.
    if (sealed.length === 0) return;
    for (let i = 0; i < sealed.length; i++) {
      const datagram = sealed[i];
      if (datagram instanceof Uint8Array) this.#transport.queue(datagram, destinations[i].paths());
    }
    this.#transport.flush();
    sealed.length = 0;
    destinations.length = 0;
  }

  /**
   * Every ready socket → parse → drop duplicates before crypto → open →
   * first copy to the TUN. Returns how many packets went to the TUN.
   */
  async #inbound(): Promise<number> {
    const before = this.#transport.counters.inboundPackets;
    for (const socket of this.#role.sockets()) {
      if (!this.#reactor.ready(socket)) continue;
      for (let burst = 0; burst < BURSTS_PER_WAKEUP; burst++) {
        const candidates: Candidate[] = [];
        const control: Promise<void>[] = [];
        const read = socket.receiveBatch(this.#buffers, this.#lengths, this.#senders);
        for (let i = 0; i < read; i++) {
          const datagram = this.#buffers[i].subarray(0, this.#lengths[i]);
          const from = this.#senders[i];
          const header = parseTransportHeader(datagram);
          const session = header && this.#role.session(header.session);
          if (!header || !session) {
            control.push(this.#role.control(datagram.slice(), socket, from, this.#clock.now()));
            continue;
          }
          this.#role.received?.(session, socket, from, datagram.length);
          if (!session.window.check(header.counter)) {
            this.#transport.counters.duplicates++; // a later copy: the first was delivered
            if (this.#debug) {
              this.#logDrop("later copy or replay", session, header, socket, from);
            }
            continue;
          }
          candidates.push({ datagram, header, session, socket, from });
        }
        // Two awaits only when a control message came: the common burst allocates no array.
        await this.#openAndDeliver(candidates);
        if (control.length > 0) await Promise.all(control);
        if (read < BATCH_SIZE) break;
      }
    }
    return this.#transport.counters.inboundPackets - before;
  }

  /**
   * Decrypts each (session, counter) once: copies of one packet that arrived
   * in the same burst wait for a later round and are tried only if the first
   * copy failed to authenticate (a forgery must not hide the real packet).
   */
  async #openAndDeliver(candidates: Candidate[]): Promise<void> {
    let pending = candidates;
    while (pending.length > 0) {
      let round = pending;
      const later: Candidate[] = [];
      if (pending.length > 1) {
        round = [];
        const inRound = new Map<Session, Set<number>>();
        for (const candidate of pending) {
          let counters = inRound.get(candidate.session);
          if (!counters) inRound.set(candidate.session, counters = new Set());
          if (counters.has(candidate.header.counter)) {
            later.push(candidate);
          } else {
            counters.add(candidate.header.counter);
            round.push(candidate);
          }
        }
      }
      let waiting = false;
      const opening = round.map((c, i) => {
        const plaintext = this.#transport.openPacket(
          c.session,
          c.header.counter,
          c.datagram,
          this.#openBuffers[i],
        );
        if (plaintext instanceof Promise) waiting = true;
        return plaintext;
      });
      const opened = waiting ? await Promise.all(opening) : opening as (Uint8Array | null)[];
      const replies: Promise<void>[] = [];
      const now = this.#clock.now();
      for (let i = 0; i < round.length; i++) {
        const candidate = round[i];
        const plaintext = opened[i];
        if (plaintext === null) {
          this.#transport.counters.badAuth++; // forged, corrupted or another key
          if (this.#debug) this.#logCandidate("authentication failed", candidate);
          continue;
        }
        if (!candidate.session.window.accept(candidate.header.counter)) {
          this.#transport.counters.duplicates++;
          if (this.#debug) this.#logCandidate("later copy or replay", candidate);
          continue;
        }
        const reply = this.#deliver(candidate, plaintext, now);
        if (reply) replies.push(reply);
      }
      if (replies.length > 0) await Promise.all(replies);
      pending = later.length === 0 ? later : later.filter((c) => {
        if (c.session.window.check(c.header.counter)) return true; // its twin failed: try this copy
        this.#transport.counters.duplicates++;
        if (this.#debug) this.#logCandidate("later copy in the same burst", c);
        return false;
      });
    }
  }

  #deliver(candidate: Candidate, plaintext: Uint8Array, now: number): Promise<void> | undefined {
    const { session, socket, from } = candidate;
    const data = candidate.header.type === MessageType.Data;
    this.#role.heard(session, socket, from, now, data);
    if (this.#debug) {
      log.debug("inbound {session}:{counter} {kind}: first copy, via {socket} from {from}", {
        session: session.id,
        counter: candidate.header.counter,
        kind: data ? "data" : candidate.header.type === MessageType.Probe ? "probe" : "probe reply",
        socket: socket.label,
        from: from.key,
      });
    }
    switch (candidate.header.type) {
      case MessageType.Data:
        if (!this.#role.accepts(session, plaintext)) {
          this.#transport.counters.spoofed++; // a peer posing as another address
          return undefined;
        }
        this.#transport.counters.inboundPackets++;
        if (!this.#tun.write(plaintext)) {
          this.#transport.counters.tunWriteErrors++;
          if (this.#debug) log.debug("inbound packet dropped: the TUN refused it");
        }
        return undefined;
      case MessageType.Probe:
        // Answer on the path it came from only: the client measures each link.
        return this.#transport.sealAndSend(session, MessageType.ProbeReply, plaintext, [
          { socket, endpoint: from },
        ]);
      case MessageType.ProbeReply: {
        const body = decodeProbe(plaintext);
        if (body) this.#role.probeAnswered(socket, body, now);
        return undefined;
      }
    }
  }

  #logCandidate(reason: string, candidate: Candidate): void {
    this.#logDrop(reason, candidate.session, candidate.header, candidate.socket, candidate.from);
  }

  #logDrop(
    reason: string,
    session: Session,
    header: TransportHeader,
    socket: UdpSocket,
    from: Endpoint,
  ): void {
    log.debug("inbound {session}:{counter} dropped via {socket} from {from}: {reason}", {
      session: session.id,
      counter: header.counter,
      socket: socket.label,
      from: from.key,
      reason,
    });
  }
}
