/**
 * The impairer on a fake clock: exact delay, jitter that never reorders,
 * loss at the configured rate, hold and drop stalls, the queue limit, stall
 * schedules (random statistics, determinism, parsing); and its loop on a
 * fake TUN with a reactor that steps the fake clock.
 */
import assert from "node:assert/strict";
import {
  type Direction,
  Impairer,
  type ImpairerOptions,
  settleModes,
  type Stall,
  type StallEvent,
  StallSchedule,
} from "../lib/impairment.ts";
import { directionByClientNet, ImpairLoop, type ImpairStats } from "../lib/impair_loop.ts";
import type { Clock, Reactor, Waitable } from "../lib/io.ts";
import { seededRandom } from "../lib/random.ts";
import { ChannelTun } from "./fakes.ts";

/** A 20-byte IPv4 header from `source` to `destination`, then `id` as a 4-byte payload. */
function ipv4(id: number, source = "10.1.1.2", destination = "10.2.2.2"): Uint8Array {
  const packet = new Uint8Array(24);
  packet[0] = 0x45;
  packet[3] = 24;
  packet[8] = 64;
  packet.set(source.split(".").map(Number), 12);
  packet.set(destination.split(".").map(Number), 16);
  new DataView(packet.buffer).setUint32(20, id);
  return packet;
}

function idOf(packet: Uint8Array): number {
  return new DataView(packet.buffer, packet.byteOffset).getUint32(20);
}

function impairer(options: Partial<ImpairerOptions> = {}): Impairer {
  return new Impairer({
    delayMs: 0,
    jitterMs: 0,
    loss: 0,
    stalls: StallSchedule.none(),
    stallMode: "hold",
    queueLimitPackets: 100_000,
    queueLimitBytes: 1 << 30,
    random: seededRandom(1),
    ...options,
  });
}

/** Pushes one packet per `everyMs` from `fromMs` until before `untilMs`; returns their ids by arrival. */
function feed(
  target: Impairer,
  { fromMs = 0, untilMs, everyMs, direction = "up" as Direction, drain = true }: {
    fromMs?: number;
    untilMs: number;
    everyMs: number;
    direction?: Direction;
    drain?: boolean;
  },
): { arrivals: Map<number, number>; released: { id: number; at: number; dueAt: number }[] } {
  const arrivals = new Map<number, number>();
  const released: { id: number; at: number; dueAt: number }[] = [];
  let id = 0;
  const take = (now: number) => {
    for (const r of target.due(now)) released.push({ id: idOf(r.packet), at: now, dueAt: r.dueAt });
  };
  for (let t = fromMs; t < untilMs; t += everyMs) {
    take(t);
    arrivals.set(id, t);
    target.push(ipv4(id++), direction, t);
  }
  if (drain) {
    // Step through every deadline, as the loop would.
    for (let steps = 0; steps < 1_000_000; steps++) {
      const deadline = target.nextDeadline();
      if (deadline === Infinity) break;
      take(deadline);
    }
  }
  return { arrivals, released };
}

Deno.test("delay: every packet is due exactly delayMs after it arrived, not earlier", () => {
  const imp = impairer({ delayMs: 20 });
  imp.push(ipv4(1), "up", 0);
  imp.push(ipv4(2), "up", 5.25);
  assert.equal(imp.nextDeadline(), 20);
  assert.deepEqual(imp.due(19.999), []);
  assert.deepEqual(imp.due(20).map((r) => [idOf(r.packet), r.dueAt]), [[1, 20]]);
  assert.equal(imp.nextDeadline(), 25.25);
  assert.deepEqual(imp.due(25.2), []);
  assert.deepEqual(imp.due(30).map((r) => [idOf(r.packet), r.dueAt]), [[2, 25.25]]);
  assert.equal(imp.nextDeadline(), Infinity);
  assert.equal(imp.counters.received, 2);
  assert.equal(imp.counters.released, 2);
  assert.equal(imp.counters.queuedPackets, 0);
});

Deno.test("delay 0: a packet is due at once", () => {
  const imp = impairer();
  imp.push(ipv4(1), "down", 7);
  assert.deepEqual(imp.due(7).map((r) => idOf(r.packet)), [1]);
});

Deno.test("jitter: delays stay within delay ± jitter and never reorder a direction", () => {
  const imp = impairer({ delayMs: 20, jitterMs: 5, random: seededRandom(3) });
  // Dense traffic: jitter would reorder these if the FIFO rule did not hold them back.
  const { arrivals, released } = feed(imp, { untilMs: 2000, everyMs: 0.5 });
  assert.equal(released.length, arrivals.size);
  released.forEach((r, i) => {
    assert.equal(r.id, i, "released out of order");
    const delay = r.dueAt - arrivals.get(r.id)!;
    assert.ok(delay >= 15 && delay <= 25, `delay ${delay} outside 20 ± 5`);
    if (i > 0) assert.ok(r.dueAt >= released[i - 1].dueAt);
  });
});

Deno.test("jitter: sparse packets get delays spread over the whole range, centred on delay", () => {
  const imp = impairer({ delayMs: 20, jitterMs: 5, random: seededRandom(4) });
  const { arrivals, released } = feed(imp, { untilMs: 100 * 2000, everyMs: 100 });
  const delays = released.map((r) => r.dueAt - arrivals.get(r.id)!);
  const mean = delays.reduce((a, b) => a + b, 0) / delays.length;
  assert.ok(Math.min(...delays) < 15.1 && Math.max(...delays) > 24.9, "jitter does not span ±5");
  assert.ok(Math.abs(mean - 20) < 0.2, `mean delay ${mean}`);
});

Deno.test("jitter: each direction has its own order, so one does not hold up the other", () => {
  const draws = [0.999, 0]; // "up" gets +10 ms of jitter, "down" -10 ms
  const imp = impairer({ delayMs: 10, jitterMs: 10, random: () => draws.shift()! });
  imp.push(ipv4(1), "up", 0);
  imp.push(ipv4(2), "down", 1);
  assert.deepEqual(imp.due(1).map((r) => [idOf(r.packet), r.direction]), [[2, "down"]]);
  assert.deepEqual(imp.due(20).map((r) => [idOf(r.packet), r.direction]), [[1, "up"]]);
});

Deno.test("jitter: a negative sample larger than the delay is clamped to no delay", () => {
  const imp = impairer({ delayMs: 3, jitterMs: 5, random: () => 0 }); // -5 ms: clamped to 0
  imp.push(ipv4(1), "up", 10);
  assert.equal(imp.nextDeadline(), 10);
});

Deno.test("loss: the lost fraction matches the rate and repeats with the seed", () => {
  const run = (seed: number) => {
    const imp = impairer({ loss: 0.1, random: seededRandom(seed) });
    const lost: number[] = [];
    for (let i = 0; i < 100_000; i++) if (imp.push(ipv4(i), "up", i) === "lost") lost.push(i);
    return { lost, counters: imp.counters };
  };
  const a = run(11);
  // 3 standard deviations of a binomial(100000, 0.1) fraction: 0.0028.
  assert.ok(Math.abs(a.lost.length / 100_000 - 0.1) < 0.003, `lost ${a.lost.length}`);
  assert.equal(a.counters.lost, a.lost.length);
  assert.equal(a.counters.queuedPackets, 100_000 - a.lost.length);
  assert.deepEqual(run(11).lost, a.lost);
  assert.notDeepEqual(run(12).lost, a.lost);
});

Deno.test("loss 0 and 1 are exact", () => {
  const none = impairer({ loss: 0 });
  const all = impairer({ loss: 1 });
  for (let i = 0; i < 1000; i++) {
    assert.equal(none.push(ipv4(i), "up", i), "queued");
    assert.equal(all.push(ipv4(i), "up", i), "lost");
  }
});

Deno.test("hold stall: nothing leaves during it, everything caught leaves at its end, in order", () => {
  const events: StallEvent[] = [];
  const imp = impairer({
    delayMs: 10,
    stalls: StallSchedule.fixed([{ startMs: 1000, durationMs: 500 }]),
    stallMode: "hold",
    start: 0,
    onStall: (event) => events.push(event),
  });
  const { arrivals, released } = feed(imp, { untilMs: 2000, everyMs: 10 });
  assert.equal(released.length, arrivals.size, "a hold stall lost packets");
  assert.deepEqual(released.map((r) => r.id), [...arrivals.keys()], "order changed");
  assert.ok(released.every((r) => r.dueAt < 1000 || r.dueAt >= 1500), "released inside the stall");
  // Due at 1000..1490 (arrived 990..1480): all held until 1500.
  const held = released.filter((r) => r.dueAt > arrivals.get(r.id)! + 10).map((r) =>
    arrivals.get(r.id)!
  );
  assert.ok(held.every((at) => released.find((r) => arrivals.get(r.id) === at)!.dueAt === 1500));
  assert.deepEqual(held, Array.from({ length: 50 }, (_, i) => 990 + 10 * i));
  assert.equal(imp.counters.stallHeld, 50);
  assert.equal(imp.counters.stallDropped, 0);
  assert.deepEqual(
    events.map((e) => [e.kind, e.atMs, e.stall.mode, e.stall.held]),
    [["start", 1000, "hold", 50], ["end", 1500, "hold", 50]],
  );
  // After the stall the delay is back to normal.
  const after = released.find((r) => arrivals.get(r.id) === 1500)!;
  assert.equal(after.dueAt, 1510);
});

Deno.test("hold stall: packets held count against the queue limit", () => {
  const imp = impairer({
    stalls: StallSchedule.fixed([{ startMs: 0, durationMs: 1000 }]),
    stallMode: "hold",
    queueLimitPackets: 100,
  });
  const verdicts = Array.from({ length: 150 }, (_, i) => imp.push(ipv4(i), "up", i));
  assert.equal(verdicts.filter((v) => v === "held").length, 100);
  assert.equal(verdicts.filter((v) => v === "overflow").length, 50);
  assert.equal(imp.counters.overflowDropped, 50);
  assert.equal(imp.counters.stallHeld, 100);
  assert.equal(imp.due(999).length, 0);
  assert.deepEqual(
    imp.due(1000).map((r) => idOf(r.packet)),
    Array.from({ length: 100 }, (_, i) => i),
  );
});

Deno.test("drop stall: everything due inside it is lost, nothing else", () => {
  const events: StallEvent[] = [];
  const imp = impairer({
    delayMs: 10,
    stalls: StallSchedule.fixed([{ startMs: 1000, durationMs: 500 }]),
    stallMode: "drop",
    onStall: (event) => events.push(event),
  });
  const { arrivals, released } = feed(imp, { untilMs: 2000, everyMs: 10 });
  const delivered = new Set(released.map((r) => r.id));
  const lost = [...arrivals].filter(([id]) => !delivered.has(id)).map(([, at]) => at);
  assert.deepEqual(lost, Array.from({ length: 50 }, (_, i) => 990 + 10 * i));
  assert.ok(released.every((r) => r.dueAt - arrivals.get(r.id)! === 10), "delay changed");
  assert.equal(imp.counters.stallDropped, 50);
  assert.deepEqual(
    events.map((e) => [e.kind, e.atMs, e.stall.mode, e.stall.dropped]),
    [["start", 1000, "drop", 50], ["end", 1500, "drop", 50]],
  );
});

Deno.test("stalls: a mode in the schedule wins over the impairer's", () => {
  const imp = impairer({
    stalls: StallSchedule.fixed([{ startMs: 0, durationMs: 10, mode: "drop" }]),
    stallMode: "hold",
  });
  assert.equal(imp.push(ipv4(1), "up", 5), "stalled");
});

Deno.test("stalls: 'mixed' picks hold or drop per stall, the same for the same stall seed", () => {
  const stalls = StallSchedule.fixed(
    Array.from({ length: 40 }, (_, i) => ({ startMs: i * 100, durationMs: 50 })),
  );
  const modes = (seed: number) => {
    const seen: string[] = [];
    const imp = impairer({
      stalls,
      stallMode: "mixed",
      stallRandom: seededRandom(seed),
      random: seededRandom(seed + 100), // traffic randomness must not matter
      loss: 0.5,
      onStall: (event) => event.kind === "start" && seen.push(event.stall.mode),
    });
    for (let t = 0; t <= 4000; t += 7) {
      imp.push(ipv4(t), "up", t);
      imp.due(t);
    }
    return seen;
  };
  const a = modes(5);
  assert.equal(a.length, 40);
  assert.ok(a.includes("hold") && a.includes("drop"), a.join());
  const again: string[] = [];
  {
    const imp = impairer({
      stalls,
      stallMode: "mixed",
      stallRandom: seededRandom(5),
      onStall: (event) => event.kind === "start" && again.push(event.stall.mode),
    });
    imp.due(5000); // no traffic at all: the same picks
  }
  assert.deepEqual(again, a);
  // Known ahead of time, as tools/impair.ts prints them.
  const settled = [...settleModes(stalls, "mixed", seededRandom(5))].map((s) => s.mode);
  assert.deepEqual(settled, a);
});

Deno.test("stalls: events fire without traffic, and nextDeadline points at each boundary", () => {
  const events: string[] = [];
  const imp = impairer({
    stalls: StallSchedule.fixed([{ startMs: 100, durationMs: 50 }, {
      startMs: 300,
      durationMs: 10,
    }]),
    start: 1000,
    onStall: (event) => events.push(`${event.kind}@${event.atMs}`),
  });
  const deadlines: number[] = [];
  for (let i = 0; i < 10; i++) {
    const deadline = imp.nextDeadline();
    if (deadline === Infinity) break;
    deadlines.push(deadline);
    imp.due(deadline);
  }
  assert.deepEqual(deadlines, [1100, 1150, 1300, 1310]);
  assert.deepEqual(events, ["start@100", "end@150", "start@300", "end@310"]);
  assert.equal(imp.stallAt(1100)?.startMs, undefined, "past stalls are forgotten");
  assert.equal(imp.counters.stallsStarted, 2);
  assert.equal(imp.counters.stallsEnded, 2);
});

Deno.test("stalls: a late due() still fires both events of a stall it skipped, in order", () => {
  const events: string[] = [];
  const imp = impairer({
    stalls: StallSchedule.fixed([{ startMs: 10, durationMs: 5 }, { startMs: 20, durationMs: 5 }]),
    onStall: (event) => events.push(`${event.kind}@${event.atMs}`),
  });
  imp.due(22);
  assert.deepEqual(events, ["start@10", "end@15", "start@20"]);
  assert.equal(imp.stallAt(22)?.startMs, 20);
});

Deno.test("queue limit: packets and bytes are bounded, overflow is counted, room comes back", () => {
  const imp = impairer({ delayMs: 100, queueLimitPackets: 10, queueLimitBytes: 1 << 20 });
  const verdicts = Array.from(
    { length: 15 },
    (_, i) => imp.push(ipv4(i), i % 2 ? "up" : "down", i),
  );
  assert.equal(verdicts.filter((v) => v === "overflow").length, 5);
  assert.equal(imp.counters.overflowDropped, 5);
  assert.equal(imp.counters.queuedPackets, 10);
  assert.equal(imp.counters.maxQueuedPackets, 10);
  assert.equal(imp.due(109).length, 10);
  assert.equal(imp.push(ipv4(99), "up", 110), "queued");

  const bytes = impairer({ delayMs: 100, queueLimitPackets: 1000, queueLimitBytes: 100 });
  const sizes = [40, 40, 40, 10].map((size) => bytes.push(new Uint8Array(size), "up", 0));
  assert.deepEqual(sizes, ["queued", "queued", "overflow", "queued"]);
  assert.equal(bytes.counters.queuedBytes, 90);
  assert.equal(bytes.counters.maxQueuedBytes, 90);
});

Deno.test("discard: what still waits is counted and forgotten", () => {
  const imp = impairer({ delayMs: 100 });
  for (let i = 0; i < 5; i++) imp.push(ipv4(i), "up", 0);
  assert.equal(imp.discard(), 5);
  assert.equal(imp.counters.discarded, 5);
  assert.equal(imp.counters.queuedBytes, 0);
  assert.deepEqual(imp.due(1000), []);
});

Deno.test("options: impossible values are refused with the option's name", () => {
  assert.throws(() => impairer({ loss: 1.5 }), /loss must be a probability/);
  assert.throws(() => impairer({ delayMs: -1 }), /delayMs must be 0 or more/);
  assert.throws(() => impairer({ queueLimitPackets: NaN }), /queueLimitPackets/);
});

// --- Schedules ---

Deno.test("random schedule: rate, durations and gaps as configured", () => {
  const schedule = StallSchedule.random({ seed: 1 }); // defaults: 3/min, 1–4 s, 15 % up to 10 s
  const hours = 50;
  const stalls = schedule.until(hours * 3_600_000);
  const perMinute = stalls.length / (hours * 60);
  assert.ok(Math.abs(perMinute - 3) < 0.15, `rate ${perMinute}/min`);
  const long = stalls.filter((s) => s.durationMs > 4000);
  assert.ok(stalls.every((s) => s.durationMs >= 1000 && s.durationMs <= 10_000));
  assert.ok(Math.abs(long.length / stalls.length - 0.15) < 0.02, `long ${long.length}`);
  assert.ok(stalls.every((s) => Number.isInteger(s.startMs) && Number.isInteger(s.durationMs)));
  for (let i = 1; i < stalls.length; i++) {
    const gap = stalls[i].startMs - (stalls[i - 1].startMs + stalls[i - 1].durationMs);
    assert.ok(gap >= 999, `stalls ${i - 1} and ${i} are ${gap} ms apart`);
  }
  const shortOnes = stalls.filter((s) => s.durationMs <= 4000).map((s) => s.durationMs);
  const meanShort = shortOnes.reduce((a, b) => a + b, 0) / shortOnes.length;
  assert.ok(Math.abs(meanShort - 2500) < 60, `mean short stall ${meanShort}`);
});

Deno.test("random schedule: other parameters are honoured", () => {
  const stalls = StallSchedule.random({
    seed: 9,
    perMinute: 10,
    minMs: 200,
    maxMs: 500,
    longFraction: 0,
    longMaxMs: 500,
    minGapMs: 100,
  }).until(600 * 60_000);
  assert.ok(Math.abs(stalls.length / 600 - 10) < 0.4, `rate ${stalls.length / 600}`);
  assert.ok(stalls.every((s) => s.durationMs >= 200 && s.durationMs <= 500));
});

Deno.test("random schedule: the same seed gives the same stalls, another seed others", () => {
  const first = (seed: number) => StallSchedule.random({ seed }).until(3_600_000);
  assert.deepEqual(first(7), first(7));
  assert.notDeepEqual(first(7), first(8));
  // Iterating twice restarts from the beginning.
  const schedule = StallSchedule.random({ seed: 7 });
  assert.deepEqual(schedule.until(600_000), schedule.until(600_000));
  assert.deepEqual(StallSchedule.parse("random", 7).until(3_600_000), first(7));
});

Deno.test("random schedule: impossible parameters are refused", () => {
  assert.throws(
    () => StallSchedule.random({ seed: 1, perMinute: 30 }),
    /30 stalls per minute .* do not fit in a minute/,
  );
  assert.throws(() => StallSchedule.random({ seed: 1, minMs: 5000 }), /shorter than the shortest/);
  assert.throws(() => StallSchedule.random({ seed: 1, longFraction: 2 }), /between 0 and 1/);
  assert.throws(() => StallSchedule.random({ seed: 1, perMinute: 0 }), /more than 0/);
});

Deno.test("parse: fixed lists in seconds, with optional modes", () => {
  const stalls = (text: string): Stall[] => StallSchedule.parse(text, 1).until(Infinity);
  assert.deepEqual(stalls("5:2,15:3.5"), [
    { startMs: 5000, durationMs: 2000 },
    { startMs: 15_000, durationMs: 3500 },
  ]);
  assert.deepEqual(stalls("fixed: 15:3 , 0.25:0.5:hold,7:1:drop"), [
    { startMs: 250, durationMs: 500, mode: "hold" },
    { startMs: 7000, durationMs: 1000, mode: "drop" },
    { startMs: 15_000, durationMs: 3000 },
  ]);
  assert.deepEqual(stalls("none"), []);
  assert.equal(StallSchedule.parse("fixed:15:3,5:2:hold", 1).description, "fixed: 5:2:hold,15:3");
  assert.equal(StallSchedule.parse("5:2", 1).kind, "fixed");
  assert.equal(StallSchedule.parse("random", 1).kind, "random");
});

Deno.test("parse: random options in seconds", () => {
  const schedule = StallSchedule.parse(
    "random:per-minute=6,min=0.5,max=1,long-fraction=0,long-max=1,min-gap=0.2",
    3,
  );
  const stalls = schedule.until(60 * 60_000);
  assert.ok(stalls.every((s) => s.durationMs >= 500 && s.durationMs <= 1000));
  assert.ok(Math.abs(stalls.length / 60 - 6) < 0.6, `rate ${stalls.length / 60}`);
  assert.match(schedule.description, /^random: 6\/min, 0\.5-1 s/);
});

Deno.test("parse: errors name the part that is wrong", () => {
  const cases: [string, RegExp][] = [
    ["", /lists no stalls; write START:DURATION in seconds/],
    ["fixed:", /lists no stalls/],
    ["5", /stall "5" must be START:DURATION in seconds/],
    ["5:2:1:1", /stall "5:2:1:1" must be START:DURATION/],
    ["5:x", /stall "5:x": duration "x" is not a number of seconds/],
    ["soon:2", /stall "soon:2": start "soon" is not a number of seconds/],
    ["5:2:pause", /stall "5:2:pause": mode "pause" must be hold or drop/],
    ["-1:2", /stall "-1:2": the start must be 0 s or later/],
    ["5:0", /stall "5:0": the duration must be more than 0 s/],
    ["5:2,6:1", /stall "6:1" starts before stall "5:2" ends \(at 7 s\); stalls must not overlap/],
    ["5:2,,9:1", /stall "" must be START:DURATION/],
    ["random:rate=3", /random stall option "rate=3" must be KEY=VALUE with KEY one of per-minute/],
    ["random:min=abc", /random stall option "min=abc": "abc" is not a number/],
    ["random:min", /random stall option "min" must be KEY=VALUE/],
    ["random:per-minute=30,min=4,max=8", /do not fit in a minute/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => StallSchedule.parse(text, 1), message, `for "${text}"`);
  }
});

// --- The loop on a fake TUN ---

/** A clock the reactor steps: `wait()` jumps to the timeout or to the next scripted arrival. */
class SimReactor implements Reactor {
  now = 0;
  readonly clock: Clock = { now: () => this.now };
  readonly #script: { at: number; run: () => void }[] = [];
  waits = 0;

  /** Runs `run` (e.g. an injection into the TUN) at fake time `at`. */
  at(at: number, run: () => void): void {
    this.#script.push({ at, run });
    this.#script.sort((a, b) => a.at - b.at);
  }

  wait(_sources: readonly Waitable[], timeoutMs: number): Promise<void> {
    this.waits++;
    const wakeAt = this.now + timeoutMs;
    const next = this.#script[0];
    if (next && next.at <= wakeAt) {
      this.now = Math.max(this.now, next.at);
      while (this.#script[0] && this.#script[0].at <= this.now) this.#script.shift()!.run();
    } else if (wakeAt === Infinity) {
      throw new Error("the loop would wait forever");
    } else {
      this.now = wakeAt;
    }
    return Promise.resolve();
  }

  ready(_source: Waitable): boolean {
    return true;
  }

  wake(): void {}
  close(): void {}
}

/** A ChannelTun that notes the fake time of each write. */
class TimedTun extends ChannelTun {
  readonly writtenAt: number[] = [];
  constructor(readonly clock: Clock) {
    super("imp0", 1500);
  }
  override write(packet: Uint8Array): boolean {
    this.writtenAt.push(this.clock.now());
    return super.write(packet);
  }
}

function loopRig(options: Partial<ImpairerOptions>, stopAt: number, statsEveryMs = 0) {
  const reactor = new SimReactor();
  const tun = new TimedTun(reactor.clock);
  const stats: ImpairStats[] = [];
  const imp = impairer({ start: 0, ...options });
  const loop = new ImpairLoop({
    tun,
    reactor,
    clock: reactor.clock,
    impairer: imp,
    direction: directionByClientNet("10.1.1.0/24"),
    statsEveryMs,
    onStats: (s) => stats.push(s),
    stopAt,
  });
  return { reactor, tun, loop, stats, imp };
}

Deno.test("loop: packets read from the TUN are written back exactly delayMs later", async () => {
  const { reactor, tun, loop } = loopRig({ delayMs: 30 }, 1000);
  for (const [i, at] of [0, 1.5, 2, 400].entries()) reactor.at(at, () => tun.inject(ipv4(i)));
  await loop.run();
  assert.deepEqual(tun.written.map(idOf), [0, 1, 2, 3]);
  assert.deepEqual(tun.writtenAt, [30, 31.5, 32, 430]);
  const stats = loop.stats();
  assert.equal(stats.released, 4);
  assert.equal(stats.latenessTotal.maxMs, 0);
  assert.equal(reactor.now, 1000, "stopAt ends the run");
});

Deno.test("loop: a drop stall loses what would leave in it; a hold stall delays it", async () => {
  for (const mode of ["drop", "hold"] as const) {
    const { reactor, tun, loop } = loopRig({
      delayMs: 10,
      stalls: StallSchedule.fixed([{ startMs: 100, durationMs: 200 }]),
      stallMode: mode,
    }, 1000);
    for (let i = 0; i < 50; i++) reactor.at(i * 10, () => tun.inject(ipv4(i)));
    await loop.run();
    // Due 100..290: arrived 90..280, ids 9..28.
    const caught = Array.from({ length: 20 }, (_, i) => 9 + i);
    const ids = tun.written.map(idOf);
    if (mode === "drop") {
      assert.deepEqual(
        ids,
        Array.from({ length: 50 }, (_, i) => i).filter((i) => !caught.includes(i)),
      );
    } else {
      assert.deepEqual(ids, Array.from({ length: 50 }, (_, i) => i));
      assert.deepEqual(caught.map((id) => tun.writtenAt[id]), caught.map(() => 300));
    }
    assert.ok(tun.writtenAt.every((t) => t < 100 || t >= 300), `${mode}: written during the stall`);
  }
});

Deno.test("loop: directions by client net keep their own order", async () => {
  const { reactor, tun, loop } = loopRig(
    { delayMs: 10, jitterMs: 10, random: seededRandom(2) },
    500,
  );
  for (let i = 0; i < 200; i++) {
    const up = i % 2 === 0;
    reactor.at(i, () => tun.inject(up ? ipv4(i) : ipv4(i, "10.2.2.2", "10.1.1.2")));
  }
  await loop.run();
  const up = tun.written.map(idOf).filter((id) => id % 2 === 0);
  const down = tun.written.map(idOf).filter((id) => id % 2 === 1);
  assert.deepEqual(up, [...up].sort((a, b) => a - b));
  assert.deepEqual(down, [...down].sort((a, b) => a - b));
  assert.equal(tun.written.length, 200);
});

Deno.test("loop: stats come at their interval; stop() ends the run and discards the rest", async () => {
  const { reactor, tun, loop, stats } = loopRig({ delayMs: 1000 }, Infinity, 100);
  for (let i = 0; i < 5; i++) reactor.at(i, () => tun.inject(ipv4(i)));
  reactor.at(450, () => loop.stop());
  await loop.run();
  assert.deepEqual(stats.map((s) => s.received), [5, 5, 5, 5]);
  const final = loop.stats();
  assert.equal(final.discarded, 5);
  assert.equal(final.released, 0);
  assert.equal(tun.written.length, 0);
});

Deno.test("loop: earlyMs releases up to that much early, never more", async () => {
  const reactor = new SimReactor();
  const tun = new TimedTun(reactor.clock);
  const loop = new ImpairLoop({
    tun,
    reactor,
    clock: reactor.clock,
    impairer: impairer({ delayMs: 20 }),
    direction: () => "up",
    earlyMs: 0.5,
    stopAt: 100,
  });
  reactor.at(1.2, () => tun.inject(ipv4(1)));
  await loop.run();
  assert.deepEqual(tun.writtenAt, [20.7]);
  const lateness = loop.stats().latenessTotal;
  assert.ok(Math.abs(lateness.minMs + 0.5) < 1e-9, `lateness ${lateness.minMs}`);
});

Deno.test("directionByClientNet: source inside the net is up, anything else down", () => {
  const direction = directionByClientNet("10.1.1.0/24");
  assert.equal(direction(ipv4(1, "10.1.1.200", "8.8.8.8")), "up");
  assert.equal(direction(ipv4(1, "10.1.2.1", "10.1.1.2")), "down");
  assert.equal(direction(new Uint8Array([0x60, 0, 0, 0])), "down");
  assert.equal(directionByClientNet("0.0.0.0/0")(ipv4(1, "1.2.3.4")), "up");
  assert.throws(() => directionByClientNet("10.1.1.0"), /must be an IPv4 network like/);
  assert.throws(() => directionByClientNet("10.1.1.0/33"), /must be an IPv4 network/);
});
