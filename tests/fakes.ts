/**
 * In-memory stand-ins for the kernel: a channel TUN, a network of UDP
 * sockets whose links can drop, duplicate, reorder, delay and corrupt, and a
 * reactor that wakes when any of them gets data. With these, the real data
 * path runs in unit tests without root.
 *
 * @module
 */
import { configureSync, type LogRecord } from "@logtape/logtape";
import type { Platform } from "../lib/app.ts";
import { Endpoint } from "../lib/endpoint.ts";
import { UserError } from "../lib/errors.ts";
import { makeFastestCipher } from "../ffi/ciphers.ts";
import type {
  BatchSent,
  Clock,
  DatagramShape,
  Reactor,
  Received,
  Tun,
  UdpSocket,
  Waitable,
} from "../lib/io.ts";
import type { InterfaceInfo } from "../lib/interfaces.ts";
import type { NatSpec } from "../lib/nat.ts";
import { seededRandom } from "../lib/random.ts";

/** Wakes every waiting fake reactor; spurious wake-ups are allowed by `Reactor`. */
class Doorbell {
  #waiters = new Set<() => void>();
  ring(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
  wait(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.min(timeoutMs, 2 ** 31 - 1));
      this.#waiters.add(done);
    });
  }
}

const doorbell = new Doorbell();

/** A fake source that can tell whether something is waiting in it. */
interface Pending {
  readonly pending?: boolean;
}

export class FakeReactor implements Reactor {
  #closed = false;
  /** The sources the last wait saw without input, as poll()'s revents would say. */
  #idle = new Set<Waitable>();

  async wait(sources: readonly Waitable[], timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    // Level-triggered like poll(): data that arrived while the loop was busy (the doorbell
    // rang with nobody waiting) must not wait for the next timeout.
    if (!sources.some((source) => (source as Pending).pending)) await doorbell.wait(timeoutMs);
    this.#idle = new Set(sources.filter((source) => !mayHaveInput(source)));
  }

  ready(source: Waitable): boolean {
    return !this.#idle.has(source);
  }
  wake(): void {
    doorbell.ring();
  }
  close(): void {
    this.#closed = true;
  }
}

/** For `ready`: a source without a `pending` flag may always have input. */
function mayHaveInput(source: Waitable): boolean {
  return (source as Pending).pending !== false;
}

/** A TUN whose "kernel side" is a pair of queues the test drives. */
export class ChannelTun implements Tun {
  readonly fd = -1;
  readonly #toTunnel: Uint8Array[] = [];
  readonly written: Uint8Array[] = [];
  #writeWaiters: Array<() => void> = [];
  closed = false;

  constructor(readonly name = "fake0", readonly mtu = 1400) {}

  /** Whether a packet waits to be read (what poll() would say). */
  get pending(): boolean {
    return this.#toTunnel.length > 0;
  }

  /** As if the kernel routed `packet` into the tunnel. */
  inject(packet: Uint8Array): void {
    this.#toTunnel.push(packet.slice());
    doorbell.ring();
  }

  read(buf: Uint8Array): number | null {
    const packet = this.#toTunnel.shift();
    if (!packet) return null;
    buf.set(packet);
    return packet.length;
  }

  write(packet: Uint8Array): boolean {
    this.written.push(packet.slice());
    const waiters = this.#writeWaiters;
    this.#writeWaiters = [];
    for (const wake of waiters) wake();
    return true;
  }

  /** Resolves once at least `count` packets were written, or after `timeoutMs`. */
  async waitForWritten(count: number, timeoutMs = 3000): Promise<Uint8Array[]> {
    const deadline = performance.now() + timeoutMs;
    while (this.written.length < count && performance.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - performance.now()));
        this.#writeWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.written;
  }

  close(): void {
    this.closed = true;
  }
}

/** What a link does to the datagrams sent over it; rates are probabilities 0..1. */
export interface Impairment {
  /** Everything is dropped (a dead uplink). */
  down?: boolean;
  loss?: number;
  duplicate?: number;
  /** Held back and delivered after the next datagram. */
  reorder?: number;
  /** One random byte flipped. */
  corrupt?: number;
  /** One-way delay in milliseconds. */
  delayMs?: number;
}

/** A small deterministic PRNG (mulberry32), so impaired runs repeat; lives in `lib/random.ts`. */
export { seededRandom };

/** A UDP network in memory: sockets bound to addresses, with per-socket impairment on send. */
export class FakeNetwork {
  readonly #bound = new Map<string, FakeSocket>();
  readonly random: () => number;
  #nextPort = 50000;
  /** Every datagram sent, for replay tests: what an on-path attacker records. */
  readonly captured: Array<{ from: Endpoint; to: Endpoint; data: Uint8Array }> = [];

  constructor(seed = 1) {
    this.random = seededRandom(seed);
  }

  /** Opens a socket at `address` (an ephemeral port when `port` is omitted). */
  open(address: string, port?: number, label = address): FakeSocket {
    const endpoint = new Endpoint(address, port ?? this.#nextPort++);
    if (this.#bound.has(endpoint.key)) throw new UserError(`${endpoint.key} is already in use`);
    const socket = new FakeSocket(this, endpoint, label);
    this.#bound.set(endpoint.key, socket);
    return socket;
  }

  unbind(socket: FakeSocket): void {
    if (this.#bound.get(socket.address.key) === socket) this.#bound.delete(socket.address.key);
  }

  /**
   * Moves `socket` to another address (by default keeping its port), as when
   * its interface's address changes, or as a roaming client (or a NAT's new
   * mapping) looks.
   */
  rebind(socket: FakeSocket, address: string, port = socket.address.port): void {
    const endpoint = new Endpoint(address, port);
    if (this.#bound.has(endpoint.key)) throw new UserError(`${endpoint.key} is already in use`);
    this.unbind(socket);
    socket.address = endpoint;
    this.#bound.set(endpoint.key, socket);
  }

  /** Delivers as if sent by `from` (no impairment): the attacker's injection. */
  inject(data: Uint8Array, from: Endpoint, to: Endpoint): void {
    this.#bound.get(to.key)?.enqueue(data.slice(), from);
  }

  transmit(from: FakeSocket, data: Uint8Array, to: Endpoint): void {
    this.captured.push({ from: from.address, to, data: data.slice() });
    const target = this.#bound.get(to.key);
    const impairment = from.impairment;
    if (!target || impairment.down) return;
    if (impairment.loss && this.random() < impairment.loss) return;
    const copies = impairment.duplicate && this.random() < impairment.duplicate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const copy = data.slice();
      if (impairment.corrupt && this.random() < impairment.corrupt) {
        copy[Math.floor(this.random() * copy.length)] ^= 1 << Math.floor(this.random() * 8);
      }
      if (impairment.reorder && this.random() < impairment.reorder && !from.heldBack) {
        from.heldBack = { data: copy, to: target };
        continue;
      }
      const deliver = (d: Uint8Array) => {
        if (impairment.delayMs) {
          setTimeout(() => target.enqueue(d, from.address), impairment.delayMs);
        } else target.enqueue(d, from.address);
      };
      deliver(copy);
      const held = from.heldBack;
      if (held) {
        from.heldBack = undefined;
        deliver(held.data);
      }
    }
  }
}

export class FakeSocket implements UdpSocket {
  readonly fd = -1;
  impairment: Impairment = {};
  heldBack?: { data: Uint8Array; to: FakeSocket };
  readonly #queue: Array<{ data: Uint8Array; from: Endpoint }> = [];
  closed = false;
  sendError: string | null = null;
  /** Per destination: an errno for some (a family this link has no route for), else null. */
  sendErrorTo?: (to: Endpoint) => string | null;

  constructor(readonly network: FakeNetwork, public address: Endpoint, readonly label: string) {}

  /** What the kernel's socket filter lets through (see `DatagramShape`); everything when unset. */
  shape?: DatagramShape;
  /** Datagrams the shape filter dropped. */
  filtered = 0;

  enqueue(data: Uint8Array, from: Endpoint): void {
    if (this.closed) return;
    if (this.shape && !fitsShape(data, this.shape)) {
      this.filtered++;
      return;
    }
    this.#queue.push({ data, from });
    doorbell.ring();
  }

  /** Whether a datagram waits to be read (what poll() would say). */
  get pending(): boolean {
    return this.#queue.length > 0;
  }

  receive(buf: Uint8Array): Received | null {
    const item = this.#queue.shift();
    if (!item) return null;
    buf.set(item.data);
    return { length: item.data.length, from: item.from };
  }

  send(datagram: Uint8Array, to: Endpoint): string | null {
    if (this.closed) return "EBADF";
    if (this.sendError) return this.sendError;
    const refused = this.sendErrorTo?.(to);
    if (refused) return refused;
    this.network.transmit(this, datagram, to);
    return null;
  }

  /** The most one `sendBatch` call takes, like a short `sendmmsg`. */
  batchLimit = Infinity;

  receiveBatch(buffers: readonly Uint8Array[], lengths: Uint32Array, senders: Endpoint[]): number {
    let count = 0;
    while (count < buffers.length && count < lengths.length) {
      const received = this.receive(buffers[count]);
      if (!received) break;
      lengths[count] = received.length;
      senders[count++] = received.from;
    }
    return count;
  }

  sendBatch(
    datagrams: readonly Uint8Array[],
    to: readonly Endpoint[],
    start: number,
    end: number,
  ): BatchSent {
    const last = Math.min(end, start + this.batchLimit);
    for (let i = start; i < last; i++) {
      const error = this.send(datagrams[i], to[i]);
      if (error) return { sent: i - start, error };
    }
    return { sent: last - start, error: null };
  }

  close(): void {
    this.closed = true;
    this.network.unbind(this);
  }
}

/**
 * A machine's interfaces that a test changes while the client runs (see
 * `fakePlatform`'s `interfaces`): sockets opened on one are tied to its
 * index, and die (ENODEV) when it is deleted, as SO_BINDTODEVICE sockets do.
 */
export class FakeInterfaces {
  readonly #table = new Map<
    string,
    { index: number; address: string; up: boolean; defaultRoute: boolean }
  >();
  readonly #sockets = new Map<string, Array<{ socket: FakeSocket; index: number }>>();
  #nextIndex = 2;

  /** Adds (or re-creates, with a new index) interface `name` with one address. */
  add(name: string, address: string, options: { defaultRoute?: boolean; up?: boolean } = {}): void {
    this.remove(name);
    this.#table.set(name, {
      index: this.#nextIndex++,
      address,
      up: options.up ?? true,
      defaultRoute: options.defaultRoute ?? true,
    });
  }

  /** Deletes `name`: its sockets fail with ENODEV from now on, also after it is added again. */
  remove(name: string): void {
    this.#table.delete(name);
    for (const { socket } of this.#sockets.get(name) ?? []) socket.sendError = "ENODEV";
    this.#sockets.delete(name);
  }

  /** A new address: the interface's sockets send from it from now on (the kernel picks the source). */
  setAddress(name: string, address: string): void {
    const entry = this.#table.get(name);
    if (!entry) return;
    entry.address = address;
    for (const { socket } of this.#sockets.get(name) ?? []) socket.network.rebind(socket, address);
  }

  /** Down: sends fail with ENETDOWN; up again: they work. */
  setUp(name: string, up: boolean): void {
    const entry = this.#table.get(name);
    if (!entry) return;
    entry.up = up;
    for (const { socket } of this.#sockets.get(name) ?? []) {
      socket.sendError = up ? null : "ENETDOWN";
    }
  }

  setDefaultRoute(name: string, defaultRoute: boolean): void {
    const entry = this.#table.get(name);
    if (entry) entry.defaultRoute = defaultRoute;
  }

  index(name: string): number {
    return this.#table.get(name)?.index ?? 0;
  }

  /** Opens a socket tied to `name`, or throws as the kernel would when it is missing. */
  open(network: FakeNetwork, name: string): FakeSocket {
    const entry = this.#table.get(name);
    if (!entry) throw new UserError(`interface ${name} does not exist`);
    const socket = network.open(entry.address, undefined, name);
    if (!entry.up) socket.sendError = "ENETDOWN";
    this.#sockets.set(name, [...(this.#sockets.get(name) ?? []), { socket, index: entry.index }]);
    return socket;
  }

  list(): InterfaceInfo[] {
    return [...this.#table].map(([name, e]) => ({
      name,
      index: e.index,
      up: e.up,
      addresses: [e.address],
      defaultRoute: e.defaultRoute,
    }));
  }
}

/** What the BPF program of `ffi/udp.ts`'s `shapeFilter` decides, in TypeScript. */
export function fitsShape(data: Uint8Array, shape: DatagramShape): boolean {
  if (data.length < shape.minLength || data.length < 4) return false;
  const first = new DataView(data.buffer, data.byteOffset, 4).getUint32(0);
  return shape.firstWords.includes(first);
}

/**
 * Sends tuxburst's log (from `level` up) to the returned array, one message
 * per entry (after its level and a space with `withLevel`), for tests that
 * check what was logged; `resetSync()` ends it.
 */
export function captureLogs(level: "debug" | "info", { withLevel = false } = {}): string[] {
  const logs: string[] = [];
  configureSync({
    sinks: {
      memory: (record: LogRecord) => {
        const message = record.message.map(String).join("");
        logs.push(withLevel ? `${record.level} ${message}` : message);
      },
    },
    loggers: [
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["memory"] },
      { category: ["tuxburst"], lowestLevel: level, sinks: ["memory"] },
    ],
  });
  return logs;
}

/** What `fakePlatform`'s `enableNat` was asked to do, and undo, in order. */
export interface FakeNat {
  enabled: NatSpec[];
  disabled: NatSpec[];
}

/**
 * A `Platform` on the fake network. Uplink names map to the client-side
 * address each socket gets; names not in `uplinks` do not exist.
 */
export function fakePlatform(
  network: FakeNetwork,
  options: {
    uplinks?: Record<string, string>;
    tun?: ChannelTun;
    /** Uplinks whose sends fail with this errno from the start (an interface that is down). */
    sendErrors?: Record<string, string>;
    /** `enableNat` throws this (a missing uplink, no nftables). */
    natError?: Error;
    /** Overrides the production cipher (libsodium), e.g. with WebCrypto's worker threads. */
    makeCipher?: Platform["makeCipher"];
    /** Interfaces that come and go (instead of `uplinks`); also gives `listInterfaces`. */
    interfaces?: FakeInterfaces;
  } = {},
): Platform & { tun: ChannelTun; sockets: Map<string, FakeSocket>; nat: FakeNat } {
  const tun = options.tun ?? new ChannelTun();
  const sockets = new Map<string, FakeSocket>();
  const clock: Clock = { now: () => performance.now() };
  const nat: FakeNat = { enabled: [], disabled: [] };
  return {
    tun,
    sockets,
    clock,
    nat,
    enableNat: (spec) => {
      if (options.natError) return Promise.reject(options.natError);
      nat.enabled.push(spec);
      return Promise.resolve(() => {
        nat.disabled.push(spec);
        return Promise.resolve();
      });
    },
    openTun: () => tun,
    openUdp: ({ device, bind, accept }) => {
      if (device !== undefined && options.interfaces) {
        const socket = options.interfaces.open(network, device);
        socket.shape = accept;
        sockets.set(device, socket);
        return socket;
      }
      if (device !== undefined) {
        const address = options.uplinks?.[device];
        if (!address) throw new UserError(`interface ${device} does not exist`);
        const socket = network.open(address, undefined, device);
        socket.sendError = options.sendErrors?.[device] ?? null;
        socket.shape = accept;
        sockets.set(device, socket);
        return socket;
      }
      const socket = network.open(bind!.address, bind!.port);
      socket.shape = accept;
      sockets.set(bind!.key, socket);
      return socket;
    },
    listInterfaces: options.interfaces && (() => options.interfaces!.list()),
    addDefaultRoute: () => {},
    loosenReversePathFilter: () => undefined,
    // The cipher production uses, so the data-path tests cover it.
    makeCipher: options.makeCipher ?? makeFastestCipher,
    createReactor: () => new FakeReactor(),
    resolveHost: (host) => Promise.reject(new Error(`no DNS in tests (${host})`)),
  };
}
