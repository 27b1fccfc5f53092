/**
 * What a bad ISP does to a link, as a pure state machine with no I/O: a base
 * one-way delay, jitter, random loss, and stalls (every packet held or
 * dropped for a while). `tools/impair.ts` runs it on a real TUN device
 * through `lib/impair_loop.ts`; the tests run it on a fake clock.
 *
 * The model: the link has an output gate. A packet that arrives at `now` is
 * due at `now + delay + jitter`, but never before the packet ahead of it in
 * the same direction (jitter never reorders). If that time falls inside a
 * stall, nothing leaves the link then: a "hold" stall keeps the packet until
 * the stall ends and releases it there, in order; a "drop" stall loses it.
 * So a stall from 3 s to 5 s means exactly that: no packet comes out of the
 * link in [3 s, 5 s), in either direction. A hold stall releases all it held
 * at once, as an ISP flushing its buffer does: a receiver with a small socket
 * buffer may drop part of a long burst (about 15 µs a packet through a TUN).
 *
 * @module
 */
import { UserError } from "./errors.ts";
import { deriveSeed, seededRandom } from "./random.ts";

/** What a stall does to the packets it catches. */
export type StallMode = "hold" | "drop";
/** The impairer's policy for stalls whose schedule names no mode; "mixed" picks per stall. */
export type StallPolicy = StallMode | "mixed";
/**
 * The two directions of a link, each a FIFO of its own: "up" is from the
 * client's side, "down" towards it.
 */
export type Direction = "up" | "down";

/** One stall, in milliseconds since the impairer started. */
export interface Stall {
  readonly startMs: number;
  readonly durationMs: number;
  /** When absent, the impairer's `stallMode` decides. */
  readonly mode?: StallMode;
}

/** A stall as the impairer runs it: its mode settled, with what it did to packets. */
export interface ScheduledStall {
  readonly startMs: number;
  readonly durationMs: number;
  readonly mode: StallMode;
  /** Packets this stall dropped (mode "drop"). */
  dropped: number;
  /** Packets this stall held and releases at its end (mode "hold"). */
  held: number;
}

/** A stall began or ended; `stall.startMs` or its end is the exact time. */
export interface StallEvent {
  readonly kind: "start" | "end";
  /** Milliseconds since the impairer started: the stall's start or end. */
  readonly atMs: number;
  readonly stall: ScheduledStall;
}

/** A user-written stall schedule that cannot be used; the message says which part is wrong. */
export class ScheduleError extends UserError {
  override name = "ScheduleError";
}

/** Parameters of `StallSchedule.random`; times in milliseconds. */
export interface RandomStallOptions {
  /** Mean number of stalls per minute, over a long run. */
  perMinute: number;
  /** Most stalls last between `minMs` and `maxMs` (uniform)… */
  minMs: number;
  maxMs: number;
  /** …and this fraction lasts between `maxMs` and `longMaxMs` instead. */
  longFraction: number;
  longMaxMs: number;
  /** Quiet time between two stalls, at least, so that they are distinct events. */
  minGapMs: number;
  seed: number;
}

/** A few stalls per minute, mostly 1–4 s, some up to 10 s: what our users see on bad links. */
export const DEFAULT_RANDOM_STALLS: Omit<RandomStallOptions, "seed"> = {
  perMinute: 3,
  minMs: 1000,
  maxMs: 4000,
  longFraction: 0.15,
  longMaxMs: 10_000,
  minGapMs: 1000,
};

/**
 * When stalls happen: none, a fixed list (reproducible tests), or random
 * (seeded, so a run repeats). Iterating yields the stalls in start order;
 * they never overlap. Random schedules never end.
 *
 * @example
 * ```ts
 * const fixed = StallSchedule.parse("fixed:5:2,15:3.5:hold", 1);
 * const random = StallSchedule.random({ seed: 7, perMinute: 2 });
 * const firstMinute = random.until(60_000);
 * ```
 */
export class StallSchedule implements Iterable<Stall> {
  readonly #stalls: () => Iterator<Stall>;

  private constructor(
    /** For logs: "none", "fixed: 5:2,15:3.5:hold" or "random: 3/min, 1-4 s, …". */
    readonly description: string,
    readonly kind: "none" | "fixed" | "random",
    stalls: () => Iterator<Stall>,
  ) {
    this.#stalls = stalls;
  }

  /** No stalls at all. */
  static none(): StallSchedule {
    return new StallSchedule("none", "none", () => [][Symbol.iterator]());
  }

  /**
   * Exactly these stalls (sorted by start); throws `ScheduleError` for a
   * negative start, a duration that is not positive, or two that overlap.
   */
  static fixed(stalls: readonly Stall[]): StallSchedule {
    const sorted = [...stalls].sort((a, b) => a.startMs - b.startMs);
    sorted.forEach((stall, i) => {
      const name = `stall ${describeStall(stall)}`;
      if (!Number.isFinite(stall.startMs) || stall.startMs < 0) {
        throw new ScheduleError(`${name}: the start must be 0 s or later`);
      }
      if (!Number.isFinite(stall.durationMs) || stall.durationMs <= 0) {
        throw new ScheduleError(`${name}: the duration must be more than 0 s`);
      }
      const before = sorted[i - 1];
      if (before && stall.startMs < before.startMs + before.durationMs) {
        throw new ScheduleError(
          `${name} starts before stall ${describeStall(before)} ends ` +
            `(at ${(before.startMs + before.durationMs) / 1000} s); stalls must not overlap`,
        );
      }
    });
    const frozen = sorted.map((stall) => ({ ...stall }));
    const description = frozen.length === 0
      ? "fixed: (empty)"
      : `fixed: ${frozen.map(stallText).join(",")}`;
    return new StallSchedule(
      description,
      "fixed",
      () => frozen.map((stall) => ({ ...stall }))[Symbol.iterator](),
    );
  }

  /**
   * Stalls at random times: the quiet time between two stalls is at least
   * `minGapMs` plus an exponential part chosen so that the long-run rate is
   * `perMinute`; durations are uniform in `minMs`–`maxMs`, or with
   * probability `longFraction` in `maxMs`–`longMaxMs`. Times are whole
   * milliseconds. The same seed gives the same stalls.
   */
  static random(options: Partial<RandomStallOptions> & { seed: number }): StallSchedule {
    const o: RandomStallOptions = { ...DEFAULT_RANDOM_STALLS, ...options };
    checkRandomOptions(o);
    const meanDuration = (1 - o.longFraction) * (o.minMs + o.maxMs) / 2 +
      o.longFraction * (o.maxMs + o.longMaxMs) / 2;
    const meanExtraGap = 60_000 / o.perMinute - meanDuration - o.minGapMs;
    const description = `random: ${o.perMinute}/min, ${o.minMs / 1000}-${o.maxMs / 1000} s, ` +
      `${Math.round(o.longFraction * 100)} % up to ${o.longMaxMs / 1000} s, seed ${o.seed}`;
    return new StallSchedule(description, "random", function* () {
      const random = seededRandom(o.seed);
      let end = 0;
      while (true) {
        // Three draws per stall, always, so each stall depends only on the seed and its index.
        const gap = o.minGapMs - meanExtraGap * Math.log(1 - random());
        const long = random() < o.longFraction;
        const u = random();
        const durationMs = long
          ? o.maxMs + u * (o.longMaxMs - o.maxMs)
          : o.minMs + u * (o.maxMs - o.minMs);
        const startMs = Math.round(end + gap);
        const stall = { startMs, durationMs: Math.max(1, Math.round(durationMs)) };
        end = stall.startMs + stall.durationMs;
        yield stall;
      }
    });
  }

  /**
   * Reads a schedule from the command line: `none`, `random`,
   * `random:per-minute=2,min=1,max=4,long-fraction=0.1,long-max=10,min-gap=1`
   * (seconds; any subset), or `fixed:START:DURATION[:MODE],…` in seconds
   * (`fixed:` may be left out), e.g. `fixed:5:2,15:3.5:hold`. Throws
   * `ScheduleError` naming the part that is wrong.
   */
  static parse(text: string, seed: number): StallSchedule {
    const trimmed = text.trim();
    if (trimmed === "none" || trimmed === "off") return StallSchedule.none();
    if (trimmed === "random" || trimmed.startsWith("random:")) {
      return StallSchedule.random({ ...parseRandomOptions(trimmed.slice(7)), seed });
    }
    const list = trimmed.startsWith("fixed:") ? trimmed.slice(6) : trimmed;
    if (list.trim() === "") {
      throw new ScheduleError(
        `stall schedule "${text}" lists no stalls; write START:DURATION in seconds, ` +
          `e.g. "fixed:5:2,15:3.5", or "random", or "none"`,
      );
    }
    return StallSchedule.fixed(list.split(",").map(parseFixedStall));
  }

  [Symbol.iterator](): Iterator<Stall> {
    return this.#stalls();
  }

  /** The stalls that start before `untilMs`, e.g. to draw them ahead of time. */
  until(untilMs: number): Stall[] {
    const result: Stall[] = [];
    for (const stall of this) {
      if (stall.startMs >= untilMs) break;
      result.push(stall);
    }
    return result;
  }
}

/** `5:2` or `5:2:hold`, as on the command line (seconds). */
function stallText(stall: Stall): string {
  const mode = stall.mode ? `:${stall.mode}` : "";
  return `${stall.startMs / 1000}:${stall.durationMs / 1000}${mode}`;
}

function describeStall(stall: Stall): string {
  return `"${stallText(stall)}"`;
}

/** A number of seconds from the user, as milliseconds; `undefined` if it is not one. */
function parseSeconds(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^[+-]?(\d+\.?\d*|\.\d+)$/.test(trimmed)) return undefined;
  return Math.round(Number(trimmed) * 1_000_000) / 1000;
}

function parseFixedStall(item: string): Stall {
  const text = item.trim();
  const parts = text.split(":");
  if (parts.length < 2 || parts.length > 3) {
    throw new ScheduleError(
      `stall "${text}" must be START:DURATION in seconds (e.g. "5:2"), ` +
        `optionally followed by :hold or :drop`,
    );
  }
  const startMs = parseSeconds(parts[0]);
  if (startMs === undefined) {
    throw new ScheduleError(`stall "${text}": start "${parts[0]}" is not a number of seconds`);
  }
  const durationMs = parseSeconds(parts[1]);
  if (durationMs === undefined) {
    throw new ScheduleError(`stall "${text}": duration "${parts[1]}" is not a number of seconds`);
  }
  if (parts.length === 2) return { startMs, durationMs };
  const mode = parts[2].trim();
  if (mode !== "hold" && mode !== "drop") {
    throw new ScheduleError(`stall "${text}": mode "${mode}" must be hold or drop`);
  }
  return { startMs, durationMs, mode };
}

/** `random:` keys on the command line, in seconds except the two plain numbers. */
const RANDOM_KEYS: Record<string, { option: keyof RandomStallOptions; seconds: boolean }> = {
  "per-minute": { option: "perMinute", seconds: false },
  "min": { option: "minMs", seconds: true },
  "max": { option: "maxMs", seconds: true },
  "long-fraction": { option: "longFraction", seconds: false },
  "long-max": { option: "longMaxMs", seconds: true },
  "min-gap": { option: "minGapMs", seconds: true },
};

function parseRandomOptions(text: string): Partial<RandomStallOptions> {
  const options: Partial<RandomStallOptions> = {};
  if (text.trim() === "") return options;
  for (const item of text.split(",")) {
    const [key, value, extra] = item.split("=").map((part) => part.trim());
    const spec = RANDOM_KEYS[key];
    if (!spec || value === undefined || extra !== undefined) {
      throw new ScheduleError(
        `random stall option "${item.trim()}" must be KEY=VALUE with KEY one of ` +
          `${Object.keys(RANDOM_KEYS).join(", ")}`,
      );
    }
    const number = spec.seconds ? parseSeconds(value) : Number(value);
    if (number === undefined || !Number.isFinite(number) || value === "") {
      throw new ScheduleError(`random stall option "${item.trim()}": "${value}" is not a number`);
    }
    options[spec.option] = number;
  }
  return options;
}

function checkRandomOptions(o: RandomStallOptions): void {
  const s = (ms: number) => `${ms / 1000} s`;
  if (!(o.perMinute > 0)) throw new ScheduleError(`stalls per minute must be more than 0`);
  if (!(o.minMs > 0)) throw new ScheduleError(`the shortest stall must last more than 0 s`);
  if (!(o.maxMs >= o.minMs)) {
    throw new ScheduleError(`the longest stall (${s(o.maxMs)}) is shorter than the shortest`);
  }
  if (!(o.longFraction >= 0 && o.longFraction <= 1)) {
    throw new ScheduleError(`the fraction of long stalls must be between 0 and 1`);
  }
  if (!(o.longMaxMs >= o.maxMs)) {
    throw new ScheduleError(
      `the longest long stall (${s(o.longMaxMs)}) is shorter than the longest stall ` +
        `(${s(o.maxMs)})`,
    );
  }
  if (!(o.minGapMs >= 0)) throw new ScheduleError(`the gap between stalls must not be negative`);
  if (!Number.isInteger(o.seed)) throw new ScheduleError(`the seed must be an integer`);
  const meanDuration = (1 - o.longFraction) * (o.minMs + o.maxMs) / 2 +
    o.longFraction * (o.maxMs + o.longMaxMs) / 2;
  if (60_000 / o.perMinute <= meanDuration + o.minGapMs) {
    throw new ScheduleError(
      `${o.perMinute} stalls per minute of ${s(Math.round(meanDuration))} on average, ` +
        `${s(o.minGapMs)} apart, do not fit in a minute; lower the rate or the durations`,
    );
  }
}

/**
 * The stalls of `schedule` with every mode settled: a stall's own mode, else
 * `policy`, where "mixed" draws hold or drop from `random` per stall, in
 * order. `Impairer` runs exactly this sequence, so a program can print the
 * stalls it will make ahead of time.
 *
 * @example
 * ```ts
 * const stalls = settleModes(StallSchedule.parse("5:2,9:1", 1), "mixed", seededRandom(3));
 * for (const { startMs, mode } of stalls) console.log(startMs, mode);
 * ```
 */
export function* settleModes(
  schedule: Iterable<Stall>,
  policy: StallPolicy,
  random: () => number,
): Generator<Required<Stall>> {
  for (const stall of schedule) {
    const mode = stall.mode ?? (policy === "mixed" ? (random() < 0.5 ? "hold" : "drop") : policy);
    yield { startMs: stall.startMs, durationMs: stall.durationMs, mode };
  }
}

/** Options of `Impairer`; times in milliseconds on the caller's clock. */
export interface ImpairerOptions {
  /** Base one-way delay. */
  delayMs: number;
  /** Each packet's delay is `delayMs` plus a uniform sample in ±`jitterMs` (never below 0). */
  jitterMs: number;
  /** Probability (0..1) that a packet is lost, independently of the others. */
  loss: number;
  stalls: StallSchedule;
  /** Mode of stalls whose schedule names none; "mixed" picks hold or drop per stall. */
  stallMode: StallPolicy;
  /** Packets and bytes waiting, both directions together; beyond either, arrivals are dropped. */
  queueLimitPackets: number;
  queueLimitBytes: number;
  /** Uniform [0, 1) numbers for loss and jitter; seed it to repeat a run. */
  random: () => number;
  /** Uniform [0, 1) numbers for "mixed" picks, apart from `random` so traffic cannot change them. */
  stallRandom?: () => number;
  /** The clock reading at which the schedule's time 0 is (default 0). */
  start?: number;
  /** Called from `due()` when a stall starts or ends, in time order. */
  onStall?: (event: StallEvent) => void;
}

/** A packet whose time has come, with the time it was due (to measure lateness). */
export interface Released {
  readonly packet: Uint8Array;
  readonly direction: Direction;
  readonly dueAt: number;
}

/** What `push` did with a packet. */
export type Verdict = "queued" | "held" | "lost" | "stalled" | "overflow";

/** Everything the impairer counted since it started. */
export interface ImpairerCounters {
  received: number;
  /** Returned by `due()`. */
  released: number;
  /** Random loss. */
  lost: number;
  /** Dropped by a "drop" stall. */
  stallDropped: number;
  /** Held by a "hold" stall (then released at its end, also counted in `released`). */
  stallHeld: number;
  /** Dropped because the queue was full. */
  overflowDropped: number;
  /** Still waiting when `discard()` was called (at exit). */
  discarded: number;
  /** Waiting now. */
  queuedPackets: number;
  queuedBytes: number;
  /** The most that ever waited at once. */
  maxQueuedPackets: number;
  maxQueuedBytes: number;
  stallsStarted: number;
  stallsEnded: number;
}

interface Entry {
  packet: Uint8Array;
  direction: Direction;
  dueAt: number;
}

/** A FIFO that does not shift the whole array on each take. */
class Queue {
  #items: Entry[] = [];
  #head = 0;

  peek(): Entry | undefined {
    return this.#items[this.#head];
  }

  push(entry: Entry): void {
    this.#items.push(entry);
  }

  take(): Entry {
    const entry = this.#items[this.#head];
    this.#items[this.#head++] = undefined as unknown as Entry; // let the packet be collected
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return entry;
  }

  clear(): void {
    this.#items = [];
    this.#head = 0;
  }
}

/** A stall on the caller's clock, with its schedule times for events. */
interface ActiveStall {
  readonly at: number;
  readonly end: number;
  readonly stall: ScheduledStall;
  started: boolean;
}

/**
 * Delays, jitters, loses and stalls packets; see the module doc for the
 * model. Feed it with `push`, poll it with `due` no later than
 * `nextDeadline()`. Pushed packets are kept by reference: pass a copy.
 *
 * @example
 * ```ts
 * const impairer = new Impairer({
 *   delayMs: 20, jitterMs: 3, loss: 0.01, stalls: StallSchedule.parse("5:2", 1),
 *   stallMode: "hold", queueLimitPackets: 20_000, queueLimitBytes: 32 << 20,
 *   random: seededRandom(1), start: clock.now(),
 * });
 * impairer.push(packet.slice(), "up", clock.now());
 * for (const { packet } of impairer.due(clock.now())) tun.write(packet);
 * ```
 */
export class Impairer {
  readonly counters: ImpairerCounters = {
    received: 0,
    released: 0,
    lost: 0,
    stallDropped: 0,
    stallHeld: 0,
    overflowDropped: 0,
    discarded: 0,
    queuedPackets: 0,
    queuedBytes: 0,
    maxQueuedPackets: 0,
    maxQueuedBytes: 0,
    stallsStarted: 0,
    stallsEnded: 0,
  };
  readonly #o: ImpairerOptions;
  readonly #start: number;
  readonly #queues: Record<Direction, Queue> = { up: new Queue(), down: new Queue() };
  /** The due time of the last packet queued in each direction: later ones never overtake it. */
  readonly #lastDue: Record<Direction, number> = { up: -Infinity, down: -Infinity };
  readonly #schedule: Iterator<Required<Stall>>;
  #scheduleDone = false;
  /** Stalls fetched from the schedule whose end event has not fired yet, in order. */
  #stalls: ActiveStall[] = [];

  constructor(options: ImpairerOptions) {
    for (const key of ["delayMs", "jitterMs", "queueLimitPackets", "queueLimitBytes"] as const) {
      if (!(options[key] >= 0)) {
        throw new UserError(`${key} must be 0 or more, got ${options[key]}`);
      }
    }
    if (!(options.loss >= 0 && options.loss <= 1)) {
      throw new UserError(`loss must be a probability between 0 and 1, got ${options.loss}`);
    }
    this.#o = options;
    this.#start = options.start ?? 0;
    this.#schedule = settleModes(
      options.stalls,
      options.stallMode,
      options.stallRandom ?? seededRandom(deriveSeed(1, 2)),
    );
  }

  /**
   * Takes a packet that arrived at `now`: it is lost, dropped by a stall or
   * a full queue, or queued until its due time.
   */
  push(packet: Uint8Array, direction: Direction, now: number): Verdict {
    const o = this.#o;
    const c = this.counters;
    c.received++;
    if (o.loss > 0 && o.random() < o.loss) {
      c.lost++;
      return "lost";
    }
    const jitter = o.jitterMs > 0 ? o.jitterMs * (2 * o.random() - 1) : 0;
    const natural = now + Math.max(0, o.delayMs + jitter);
    let dueAt = Math.max(this.#lastDue[direction], natural);
    let verdict: Verdict = "queued";
    // Caught when it would leave in a stall on its own, or behind the packet ahead of it.
    const stall = this.#stallAt(dueAt) ?? (natural < dueAt ? this.#stallAt(natural) : undefined);
    if (stall?.stall.mode === "drop") {
      stall.stall.dropped++;
      c.stallDropped++;
      return "stalled";
    }
    if (stall) {
      dueAt = Math.max(dueAt, stall.end);
      verdict = "held";
    }
    if (
      c.queuedPackets + 1 > o.queueLimitPackets ||
      c.queuedBytes + packet.byteLength > o.queueLimitBytes
    ) {
      c.overflowDropped++; // tail drop, as a router with a full buffer does
      return "overflow";
    }
    if (stall) {
      stall.stall.held++;
      c.stallHeld++;
    }
    this.#lastDue[direction] = dueAt;
    this.#queues[direction].push({ packet, direction, dueAt });
    c.queuedPackets++;
    c.queuedBytes += packet.byteLength;
    c.maxQueuedPackets = Math.max(c.maxQueuedPackets, c.queuedPackets);
    c.maxQueuedBytes = Math.max(c.maxQueuedBytes, c.queuedBytes);
    return verdict;
  }

  /**
   * Fires the stall events up to `now`, then returns the packets due by
   * `now`, oldest due time first (each direction in arrival order).
   */
  due(now: number): Released[] {
    this.#fireStallEvents(now);
    const released: Released[] = [];
    const { up, down } = this.#queues;
    while (true) {
      const a = up.peek();
      const b = down.peek();
      let queue: Queue;
      if (a && a.dueAt <= now && (!b || a.dueAt <= b.dueAt)) queue = up;
      else if (b && b.dueAt <= now) queue = down;
      else break;
      const entry = queue.take();
      this.counters.queuedPackets--;
      this.counters.queuedBytes -= entry.packet.byteLength;
      this.counters.released++;
      released.push(entry);
    }
    return released;
  }

  /** When `due()` must be called next: a packet's due time or a stall's start or end. */
  nextDeadline(): number {
    let deadline = Infinity;
    for (const queue of Object.values(this.#queues)) {
      const head = queue.peek();
      if (head) deadline = Math.min(deadline, head.dueAt);
    }
    if (this.#stalls.length === 0) this.#fetchStall();
    const next = this.#stalls[0];
    if (next) deadline = Math.min(deadline, next.started ? next.end : next.at);
    return deadline;
  }

  /** The stall running at `now` (schedule time), if any. */
  stallAt(now: number): ScheduledStall | undefined {
    return this.#stallAt(now)?.stall;
  }

  /** Drops every waiting packet (at exit); returns how many there were. */
  discard(): number {
    const count = this.counters.queuedPackets;
    for (const queue of Object.values(this.#queues)) queue.clear();
    this.counters.discarded += count;
    this.counters.queuedPackets = 0;
    this.counters.queuedBytes = 0;
    return count;
  }

  /** The stall whose window [start, end) holds clock time `time`, fetching ahead as needed. */
  #stallAt(time: number): ActiveStall | undefined {
    while (!this.#scheduleDone) {
      const last = this.#stalls.at(-1);
      if (last && last.at > time) break;
      this.#fetchStall();
    }
    for (const stall of this.#stalls) {
      if (stall.at > time) return undefined;
      if (time < stall.end) return stall;
    }
    return undefined;
  }

  /** Takes the next stall from the schedule. */
  #fetchStall(): void {
    if (this.#scheduleDone) return;
    const next = this.#schedule.next();
    if (next.done) {
      this.#scheduleDone = true;
      return;
    }
    const { startMs, durationMs, mode } = next.value;
    const at = this.#start + startMs;
    this.#stalls.push({
      at,
      end: at + durationMs,
      stall: { startMs, durationMs, mode, dropped: 0, held: 0 },
      started: false,
    });
  }

  #fireStallEvents(now: number): void {
    while (true) {
      if (this.#stalls.length === 0) this.#fetchStall();
      const stall = this.#stalls[0];
      if (!stall) return;
      if (!stall.started) {
        if (stall.at > now) return;
        stall.started = true;
        this.counters.stallsStarted++;
        this.#o.onStall?.({ kind: "start", atMs: stall.stall.startMs, stall: stall.stall });
      }
      if (stall.end > now) return;
      this.#stalls.shift();
      this.counters.stallsEnded++;
      this.#o.onStall?.({
        kind: "end",
        atMs: stall.stall.startMs + stall.stall.durationMs,
        stall: stall.stall,
      });
    }
  }
}
