/**
 * The impairment program's loop on our own I/O interfaces: read every packet
 * the kernel routes into the TUN, let the `Impairer` decide, and write each
 * packet back into the same TUN when it is due, where the kernel routes it
 * on. It runs the same on a real TUN with `PollReactor` and on fakes with a
 * fake clock.
 *
 * @module
 */
import type { Direction, Impairer, ImpairerCounters } from "./impairment.ts";
import type { Clock, Reactor, Tun } from "./io.ts";
import { parseIpv4 } from "./endpoint.ts";
import { UserError } from "./errors.ts";

/** Packets read from the TUN before due packets get their turn again. */
const READ_BATCH = 64;
/** Batches per wake-up, so a flood cannot keep the loop from waiting (and stopping). */
const BATCHES_PER_WAKEUP = 64;
/** Room for the largest IPv4 packet, whatever the MTU. */
const READ_BUFFER_SIZE = 65_536;

/** How late packets left compared with their due time, in milliseconds (negative: early). */
export interface LatenessSummary {
  count: number;
  minMs: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** The impairer's counters, plus what the loop itself saw. */
export interface ImpairStats extends ImpairerCounters {
  /** Writes the kernel refused (the packet is gone). */
  tunWriteErrors: number;
  /** Lateness since the previous `stats()` call… */
  lateness: LatenessSummary;
  /** …and since the start. */
  latenessTotal: LatenessSummary;
}

/** Lateness in 10 µs steps from -10 ms to 100 ms; beyond, it counts in the first or last step. */
class LatenessHistogram {
  static readonly STEP_MS = 0.01;
  static readonly MIN_MS = -10;
  readonly #counts = new Uint32Array(11_000);
  #count = 0;
  #sum = 0;
  #max = -Infinity;
  #min = Infinity;

  add(ms: number): void {
    const step = Math.floor((ms - LatenessHistogram.MIN_MS) / LatenessHistogram.STEP_MS);
    this.#counts[Math.max(0, Math.min(this.#counts.length - 1, step))]++;
    this.#count++;
    this.#sum += ms;
    this.#max = Math.max(this.#max, ms);
    this.#min = Math.min(this.#min, ms);
  }

  summary(): LatenessSummary {
    const quantile = (q: number) => {
      if (this.#count === 0) return 0;
      const rank = Math.ceil(q * this.#count);
      let seen = 0;
      for (let i = 0; i < this.#counts.length; i++) {
        seen += this.#counts[i];
        if (seen >= rank) {
          return Math.min(
            this.#max,
            LatenessHistogram.MIN_MS + (i + 1) * LatenessHistogram.STEP_MS,
          );
        }
      }
      return this.#max;
    };
    const round = (ms: number) => Math.round(ms * 1000) / 1000;
    return {
      count: this.#count,
      minMs: round(this.#count ? this.#min : 0),
      meanMs: round(this.#count ? this.#sum / this.#count : 0),
      p50Ms: round(quantile(0.5)),
      p90Ms: round(quantile(0.9)),
      p99Ms: round(quantile(0.99)),
      maxMs: round(this.#count ? this.#max : 0),
    };
  }

  reset(): void {
    this.#counts.fill(0);
    this.#count = 0;
    this.#sum = 0;
    this.#max = -Infinity;
    this.#min = Infinity;
  }
}

/** Options of `ImpairLoop`. */
export interface ImpairLoopOptions {
  tun: Tun;
  reactor: Reactor;
  clock: Clock;
  impairer: Impairer;
  /** Which FIFO a packet joins; see `directionByClientNet`. */
  direction: (packet: Uint8Array) => Direction;
  /** Calls `onStats` this often (0 or absent: never). */
  statsEveryMs?: number;
  onStats?: (stats: ImpairStats) => void;
  /** `run()` ends by itself at this clock reading. */
  stopAt?: number;
  /**
   * Release packets up to this much before they are due (default 0). A
   * reactor that sleeps whole milliseconds (poll()) wakes 0–1 ms late; half
   * a millisecond early centres that error on zero.
   */
  earlyMs?: number;
}

/**
 * Runs an `Impairer` on a TUN until `stop()` (or `stopAt`).
 *
 * @example
 * ```ts
 * const loop = new ImpairLoop({ tun, reactor, clock, impairer, direction: () => "up" });
 * Deno.addSignalListener("SIGTERM", () => loop.stop());
 * await loop.run();
 * console.log(loop.stats());
 * ```
 */
export class ImpairLoop {
  readonly #o: ImpairLoopOptions;
  readonly #buffer = new Uint8Array(READ_BUFFER_SIZE);
  readonly #lateness = new LatenessHistogram();
  readonly #latenessTotal = new LatenessHistogram();
  #tunWriteErrors = 0;
  #stopped = false;

  constructor(options: ImpairLoopOptions) {
    this.#o = options;
  }

  /** Ends `run()` soon; safe from a signal handler. */
  stop(): void {
    this.#stopped = true;
    this.#o.reactor.wake();
  }

  /** A snapshot of the counters; starts a new interval for `lateness`. */
  stats(): ImpairStats {
    const stats = {
      ...this.#o.impairer.counters,
      tunWriteErrors: this.#tunWriteErrors,
      lateness: this.#lateness.summary(),
      latenessTotal: this.#latenessTotal.summary(),
    };
    this.#lateness.reset();
    return stats;
  }

  /** Loops until stopped; packets still waiting then are discarded (counted in the impairer). */
  async run(): Promise<void> {
    const { tun, reactor, clock, impairer } = this.#o;
    const every = this.#o.statsEveryMs ?? 0;
    const stopAt = this.#o.stopAt ?? Infinity;
    const early = this.#o.earlyMs ?? 0;
    let nextStats = every > 0 ? clock.now() + every : Infinity;
    while (!this.#stopped) {
      const now = clock.now();
      this.#release(now);
      if (now >= stopAt) break;
      if (now >= nextStats) {
        this.#o.onStats?.(this.stats());
        while (nextStats <= now) nextStats += every;
      }
      const deadline = Math.min(impairer.nextDeadline() - early, nextStats, stopAt);
      await reactor.wait([tun], Math.max(0, deadline - clock.now()));
      if (this.#stopped) break;
      this.#readAll();
    }
    impairer.discard();
  }

  /** TUN → impairer, in batches, releasing what fell due in between. */
  #readAll(): void {
    const { tun, clock, impairer, direction } = this.#o;
    for (let batch = 0; batch < BATCHES_PER_WAKEUP; batch++) {
      let read = 0;
      for (; read < READ_BATCH; read++) {
        const length = tun.read(this.#buffer);
        if (length === null) break;
        if (length === 0) continue; // nothing to forward
        const packet = this.#buffer.slice(0, length);
        impairer.push(packet, direction(packet), clock.now());
      }
      this.#release(clock.now());
      if (read < READ_BATCH) return;
    }
  }

  /** Impairer → TUN: the kernel routes each packet on as if it had just arrived. */
  #release(now: number): void {
    const { tun, clock, impairer } = this.#o;
    const due = impairer.due(now + (this.#o.earlyMs ?? 0));
    for (const { packet } of due) {
      if (!tun.write(packet)) this.#tunWriteErrors++; // e.g. no route back: the packet is gone
    }
    if (due.length === 0) return;
    const written = clock.now();
    for (const { dueAt } of due) {
      this.#lateness.add(written - dueAt);
      this.#latenessTotal.add(written - dueAt);
    }
  }
}

/**
 * Direction by IPv4 source address: "up" when it is inside `cidr` (the
 * client's side), "down" otherwise (also for anything that is not IPv4).
 * Throws `UserError` for a malformed CIDR.
 *
 * @example
 * ```ts
 * const direction = directionByClientNet("10.1.1.0/24");
 * direction(packet); // "up" for a packet from 10.1.1.2
 * ```
 */
export function directionByClientNet(cidr: string): (packet: Uint8Array) => Direction {
  const match = /^([\d.]+)\/(\d{1,2})$/.exec(cidr.trim());
  const address = match ? parseIpv4(match[1]) : undefined;
  const prefix = match ? Number(match[2]) : NaN;
  if (address === undefined || !(prefix >= 0 && prefix <= 32)) {
    throw new UserError(`client net "${cidr}" must be an IPv4 network like 10.1.1.0/24`);
  }
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (address & mask) >>> 0;
  return (packet) => {
    if (packet.length < 20 || packet[0] >> 4 !== 4) return "down";
    const source = ((packet[12] << 24) | (packet[13] << 16) | (packet[14] << 8) | packet[15]) >>> 0;
    return ((source & mask) >>> 0) === network ? "up" : "down";
  };
}
