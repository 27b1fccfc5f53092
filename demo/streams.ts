/**
 * Readers of what the demo's processes print, line by line as it arrives:
 * `ping -D` replies, the traffic tool's JSON lines (`lab/tools/traffic.ts`)
 * and the impairer's events (`tools/impair.ts`). Each keeps what it has
 * seen, answers live questions for the progress line, and turns it into
 * samples for `measure.ts` at the end. Times are ms since the epoch on the
 * way in and ms since the run's time 0 on the way out.
 *
 * @module
 */
import {
  type BulkSamples,
  type LinkId,
  pingSendTimes,
  type Probe,
  SLOW_MS,
  type StallWindow,
} from "./measure.ts";

const REPLY = /^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+) .*time=([\d.]+) ms/;

/** A `ping -n -D -i …` run: replies by sequence number. */
export class PingStream {
  /** First reply per sequence: its send time (epoch ms) and round trip. */
  readonly #answers = new Map<number, { sentAt: number; rttMs: number }>();
  #transmitted?: number;

  constructor(readonly intervalMs: number, readonly count: number, readonly startedAt: number) {}

  /** Feeds one line of ping's output. */
  line(text: string): void {
    const match = REPLY.exec(text);
    if (match) {
      const seq = Number(match[2]);
      const rttMs = Number(match[3]);
      if (!this.#answers.has(seq)) {
        this.#answers.set(seq, { sentAt: Number(match[1]) * 1000 - rttMs, rttMs });
      }
      return;
    }
    const summary = /(\d+) packets transmitted/.exec(text);
    if (summary) this.#transmitted = Number(summary[1]);
  }

  #sendTime(): (seq: number) => number {
    const answered = [...this.#answers].map(([seq, a]) => ({ seq, sentMs: a.sentAt }));
    if (answered.length === 0) return (seq) => this.startedAt + (seq - 1) * this.intervalMs;
    return pingSendTimes(answered, this.intervalMs);
  }

  /** Pings sent in `[from, to)` (epoch ms), and how many of them are unanswered. */
  lossBetween(from: number, to: number): { sent: number; lost: number } {
    const sendTime = this.#sendTime();
    let sent = 0;
    let lost = 0;
    for (let seq = 1; seq <= this.count; seq++) {
      const at = sendTime(seq);
      if (at < from) continue;
      if (at >= to) break;
      sent++;
      if (!this.#answers.has(seq)) lost++;
    }
    return { sent, lost };
  }

  /**
   * Every ping of the first `count` sent, answered or not, with times since
   * `t0`. Ping runs on for a grace time to catch late answers; what it sends
   * then does not count.
   */
  probes(t0: number): Probe[] {
    const sendTime = this.#sendTime();
    const sent = Math.min(this.count, this.#transmitted ?? Math.max(0, ...this.#answers.keys()));
    const probes: Probe[] = [];
    for (let seq = 1; seq <= sent; seq++) {
      const answer = this.#answers.get(seq);
      probes.push({
        seq,
        sentMs: (answer?.sentAt ?? sendTime(seq)) - t0,
        rttMs: answer?.rttMs ?? null,
      });
    }
    return probes;
  }
}

/** The JSON lines of one `traffic.ts client`. */
export class TrafficStream {
  startAt?: number;
  intervalMs = 100;
  readonly #answers = new Map<number, { sentAt: number; rttMs: number }>();
  readonly #bins: { at: number; bytes: number }[] = [];
  report?: {
    requests: number;
    sent: number;
    answered: number;
    bulkBytes: number;
    bulkSeconds: number;
    bulkLongestStallMs: number;
    bulkLongestStallEndedAt: number;
    errors: string[];
  };
  /** Lines that were not JSON (errors of the runtime, for messages). */
  readonly other: string[] = [];

  line(text: string): void {
    if (!text.startsWith("{")) {
      if (text.trim()) this.other.push(text);
      return;
    }
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(text);
    } catch {
      return;
    }
    switch (record.event) {
      case "start":
        this.startAt = Number(record.at);
        this.intervalMs = Number(record.intervalMs);
        break;
      case "answer":
        this.#answers.set(Number(record.seq), {
          sentAt: Number(record.sentAt),
          rttMs: Number(record.rttMs),
        });
        break;
      case "bulk":
        this.#bins.push({ at: Number(record.at), bytes: Number(record.bytes) });
        break;
      case "report":
        this.report = record as unknown as TrafficStream["report"];
        break;
    }
  }

  /** Requests sent before `now` (epoch ms) that have waited more than `SLOW_MS`, or were answered that late. */
  lateSoFar(now: number): number {
    if (this.startAt === undefined) return 0;
    const sent = Math.min(
      Math.floor((now - this.startAt) / this.intervalMs) + 1,
      this.report?.requests ?? Infinity,
    );
    let late = 0;
    for (let seq = 0; seq < sent; seq++) {
      const answer = this.#answers.get(seq);
      const waited = answer ? answer.rttMs : now - (this.startAt + seq * this.intervalMs);
      if (waited > SLOW_MS) late++;
    }
    return late;
  }

  /** Every request sent, with times since `t0`. */
  requests(t0: number): Probe[] {
    if (this.startAt === undefined) return [];
    const count = this.report?.sent ?? this.#answers.size;
    const probes: Probe[] = [];
    for (let seq = 0; seq < count; seq++) {
      const answer = this.#answers.get(seq);
      probes.push({
        seq,
        sentMs: (answer?.sentAt ?? this.startAt + seq * this.intervalMs) - t0,
        rttMs: answer?.rttMs ?? null,
      });
    }
    return probes;
  }

  bulk(t0: number): BulkSamples | undefined {
    if (!this.report) return undefined;
    return {
      bins: this.#bins.map((bin) => ({ atMs: bin.at - t0, bytes: bin.bytes })),
      bytes: this.report.bulkBytes,
      seconds: this.report.bulkSeconds,
      longestStallMs: this.report.bulkLongestStallMs,
      longestStallEndedMs: this.report.bulkLongestStallEndedAt - t0,
      errors: this.report.errors,
    };
  }
}

/** The events of one impairer (`tools/impair.ts`). */
export class ImpairerStream {
  readyEpochMs?: number;
  /** Stalls that started, with their planned end (ms since the impairer's start). */
  readonly stalls: { t: number; endT: number; mode: string; ended: boolean }[] = [];
  /** The last `stats` line with `"final": true`. */
  finalStats?: Record<string, unknown>;

  constructor(readonly link: LinkId) {}

  line(text: string): void {
    if (!text.startsWith("{")) return;
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(text);
    } catch {
      return;
    }
    switch (record.event) {
      case "ready":
        this.readyEpochMs = Number(record.epochMs);
        break;
      case "stall_start":
        this.stalls.push({
          t: Number(record.t),
          endT: Number(record.endT ?? Number(record.t) + Number(record.durationMs)),
          mode: String(record.mode),
          ended: false,
        });
        break;
      case "stall_end": {
        const stall = this.stalls.find((s) => s.endT === Number(record.t) && !s.ended);
        if (stall) stall.ended = true;
        break;
      }
      case "stats":
        if (record.final) this.finalStats = record;
        break;
    }
  }

  /** The stall going on now (epoch ms), if any: its mode and ms left. */
  current(now: number): { mode: string; leftMs: number } | undefined {
    if (this.readyEpochMs === undefined) return undefined;
    const t = now - this.readyEpochMs;
    const stall = this.stalls.find((s) => !s.ended && s.t <= t && t < s.endT);
    return stall ? { mode: stall.mode, leftMs: stall.endT - t } : undefined;
  }

  /** The stalls that started, as windows since `t0`, cut at `endMs`. */
  windows(t0: number, endMs: number): StallWindow[] {
    if (this.readyEpochMs === undefined) return [];
    const offset = this.readyEpochMs - t0;
    return this.stalls
      .map((s) => ({
        link: this.link,
        mode: s.mode,
        startMs: s.t + offset,
        endMs: Math.min(s.endT + offset, endMs),
      }))
      .filter((w) => w.endMs > w.startMs);
  }
}
