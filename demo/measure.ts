/**
 * The demo's numbers, from raw samples: per path the pings and requests
 * sent, lost and late, round-trip percentiles, the longest time without an
 * answer, and the bulk transfer's goodput and longest stall; and the stall
 * windows of both links with their overlaps. Pure functions, no I/O.
 *
 * All times are milliseconds since the run's time 0 (when the impairers
 * started their stall clocks).
 *
 * @example
 * ```ts
 * const windows = stallWindows(stalls);
 * const result = measurePath("tunnel", samples, windows, { durationMs: 60_000 });
 * console.log(result.ping?.lost, result.requests.slow);
 * ```
 *
 * @module
 */

/** The paths the demo measures: each link alone, through tuxburst, and over kernel MPTCP. */
export type PathId = "a" | "b" | "tunnel" | "mptcp";
/** The two links. */
export type LinkId = "a" | "b";

/** What each path is called in the report. */
export const PATH_LABELS: Record<PathId, string> = {
  a: "link A alone",
  b: "link B alone",
  tunnel: "tuxburst (A+B)",
  mptcp: "MPTCP (A+B)",
};

/** An answer that takes longer than this counts as "slow" (the user notices it). */
export const SLOW_MS = 1000;
/**
 * Losses and slow answers of probes sent from this long before an overlap of
 * both links' stalls until its end are blamed on the overlap: their request
 * or answer was on the way when it began.
 */
export const OVERLAP_MARGIN_MS = 1000;

/** A time window `[startMs, endMs)`. */
export interface Window {
  startMs: number;
  endMs: number;
}

/** One stall of one link, as its impairer reported it. */
export interface StallWindow extends Window {
  link: LinkId;
  mode: string;
}

/** One probe (ping or request): when it was sent, and its round trip, or `null` if never answered. */
export interface Probe {
  seq: number;
  sentMs: number;
  rttMs: number | null;
}

/** What a path's bulk download delivered. */
export interface BulkSamples {
  /** Bytes per time bin (`atMs` is the bin's start). */
  bins: { atMs: number; bytes: number }[];
  bytes: number;
  seconds: number;
  longestStallMs: number;
  /** When the longest stall ended. */
  longestStallEndedMs: number;
  errors: string[];
}

/** Everything measured on one path. */
export interface PathSamples {
  /** `undefined` for a path that carries no ping (MPTCP is TCP only). */
  pings?: Probe[];
  requests: Probe[];
  bulk?: BulkSamples;
}

/** Round-trip percentiles in ms (`null` when nothing was answered). */
export interface RttStats {
  p50: number;
  p99: number;
  max: number;
}

/** Counts of probes sent inside some windows, and how many of them failed. */
export interface WindowCount {
  sent: number;
  /** Lost (pings), or lost or slower than `SLOW_MS` (requests). */
  failed: number;
}

/** The ping stream's numbers. */
export interface PingStats {
  sent: number;
  lost: number;
  /** Of `lost`, those sent during (or just before) an overlap of both links' stalls. */
  lostInOverlap: number;
  /**
   * Bonded paths only: of `lost`, those sent while exactly one link stalled
   * (the other one then carries everything, with its own random loss).
   */
  lostWhileOneLinkStalled?: number;
  rttMs: RttStats | null;
  /** The longest time between two consecutive answers arriving (and at the ends). */
  longestGapMs: number;
  /**
   * Single links only: pings sent inside the link's own stalls, and how many
   * of them were lost or answered after more than `SLOW_MS` (a "hold" stall
   * delivers its pings late instead of losing them).
   */
  inOwnStalls?: WindowCount;
}

/** The request/response stream's numbers. */
export interface RequestStats {
  sent: number;
  /** Never answered. */
  lost: number;
  /** Answered, but after more than `SLOW_MS`. */
  slow: number;
  /** Of `lost + slow`, those sent during (or just before) an overlap of both links' stalls. */
  failedInOverlap: number;
  rttMs: RttStats | null;
  inOwnStalls?: WindowCount;
}

/** The bulk download's numbers. */
export interface BulkStats {
  bytes: number;
  goodputMbps: number;
  longestStallMs: number;
  /** Seconds since time 0 at which the longest stall ended. */
  longestStallEndedS: number;
  errors: string[];
}

/** One path's results. */
export interface PathResult {
  id: PathId;
  label: string;
  ping: PingStats | null;
  requests: RequestStats;
  bulk: BulkStats | null;
}

/** The stall windows of both links, and where they overlap. */
export interface StallSummary {
  a: StallWindow[];
  b: StallWindow[];
  /** Windows in which both links stalled at once. */
  overlaps: Window[];
  /** Sum of the overlaps' lengths. */
  overlapMs: number;
  /** The longest single overlap. */
  longestOverlapMs: number;
}

/** The stall windows per link, and their overlaps. */
export function stallWindows(stalls: StallWindow[]): StallSummary {
  const a = stalls.filter((s) => s.link === "a").sort((x, y) => x.startMs - y.startMs);
  const b = stalls.filter((s) => s.link === "b").sort((x, y) => x.startMs - y.startMs);
  const overlaps: Window[] = [];
  for (const x of a) {
    for (const y of b) {
      const startMs = Math.max(x.startMs, y.startMs);
      const endMs = Math.min(x.endMs, y.endMs);
      if (endMs > startMs) overlaps.push({ startMs, endMs });
    }
  }
  overlaps.sort((x, y) => x.startMs - y.startMs);
  const lengths = overlaps.map((w) => w.endMs - w.startMs);
  return {
    a,
    b,
    overlaps,
    overlapMs: lengths.reduce((sum, ms) => sum + ms, 0),
    longestOverlapMs: Math.max(0, ...lengths),
  };
}

/** The `q`-quantile (0..1) of sorted values, nearest rank. */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

function rttStats(probes: Probe[]): RttStats | null {
  const rtts = probes.flatMap((p) => p.rttMs === null ? [] : [p.rttMs]).sort((x, y) => x - y);
  if (rtts.length === 0) return null;
  const round = (ms: number) => Math.round(ms * 10) / 10;
  return {
    p50: round(quantile(rtts, 0.5)),
    p99: round(quantile(rtts, 0.99)),
    max: round(rtts[rtts.length - 1]),
  };
}

function inAny(ms: number, windows: Window[], marginBeforeMs = 0): boolean {
  return windows.some((w) => ms >= w.startMs - marginBeforeMs && ms < w.endMs);
}

function countIn(probes: Probe[], windows: Window[], failed: (p: Probe) => boolean): WindowCount {
  const inside = probes.filter((p) => inAny(p.sentMs, windows));
  return { sent: inside.length, failed: inside.filter(failed).length };
}

/**
 * The longest time without an answer: between consecutive arrivals of
 * answers, from the first probe to the first answer, and from the last
 * answer to the last probe's send time (a path dead at the end).
 */
export function longestGap(probes: Probe[]): number {
  if (probes.length === 0) return 0;
  const arrivals = probes.flatMap((p) => p.rttMs === null ? [] : [p.sentMs + p.rttMs])
    .sort((x, y) => x - y);
  const firstSent = Math.min(...probes.map((p) => p.sentMs));
  const lastSent = Math.max(...probes.map((p) => p.sentMs));
  if (arrivals.length === 0) return lastSent - firstSent;
  let longest = Math.max(0, arrivals[0] - firstSent, lastSent - arrivals[arrivals.length - 1]);
  for (let i = 1; i < arrivals.length; i++) {
    longest = Math.max(longest, arrivals[i] - arrivals[i - 1]);
  }
  return Math.round(longest);
}

/**
 * One path's numbers. `ownStalls` are the windows in which this path is
 * expected to fail: its own link's stalls for a single link, none for the
 * bonded paths (whose failures inside overlaps are counted apart).
 */
export function measurePath(
  id: PathId,
  samples: PathSamples,
  stalls: StallSummary,
): PathResult {
  const ownStalls = id === "a" ? stalls.a : id === "b" ? stalls.b : undefined;
  const inOverlap = (p: Probe) => inAny(p.sentMs, stalls.overlaps, OVERLAP_MARGIN_MS);
  const inOneStall = (p: Probe) =>
    !inOverlap(p) && inAny(p.sentMs, [...stalls.a, ...stalls.b], OVERLAP_MARGIN_MS);
  const lost = (p: Probe) => p.rttMs === null;
  const failed = (p: Probe) => p.rttMs === null || p.rttMs > SLOW_MS;

  let ping: PingStats | null = null;
  if (samples.pings) {
    const pings = samples.pings;
    ping = {
      sent: pings.length,
      lost: pings.filter(lost).length,
      lostInOverlap: pings.filter((p) => lost(p) && inOverlap(p)).length,
      ...(ownStalls ? {} : {
        lostWhileOneLinkStalled: pings.filter((p) => lost(p) && inOneStall(p)).length,
      }),
      rttMs: rttStats(pings),
      longestGapMs: longestGap(pings),
      ...(ownStalls ? { inOwnStalls: countIn(pings, ownStalls, failed) } : {}),
    };
  }
  const requests = samples.requests;
  const bulk = samples.bulk;
  return {
    id,
    label: PATH_LABELS[id],
    ping,
    requests: {
      sent: requests.length,
      lost: requests.filter(lost).length,
      slow: requests.filter((p) => p.rttMs !== null && p.rttMs > SLOW_MS).length,
      failedInOverlap: requests.filter((p) => failed(p) && inOverlap(p)).length,
      rttMs: rttStats(requests),
      ...(ownStalls ? { inOwnStalls: countIn(requests, ownStalls, failed) } : {}),
    },
    bulk: bulk
      ? {
        bytes: bulk.bytes,
        goodputMbps: Math.round(bulk.bytes * 8 / bulk.seconds / 1e4) / 100,
        longestStallMs: Math.round(bulk.longestStallMs),
        longestStallEndedS: Math.round(bulk.longestStallEndedMs / 100) / 10,
        errors: bulk.errors,
      }
      : null,
  };
}

/**
 * Send times of pings that were never answered, from those that were:
 * ping sends on a fixed interval, so sequence `seq` left at about
 * `base + (seq - 1) × interval`, with `base` the median of the answered
 * ones' offsets.
 */
export function pingSendTimes(
  answered: { seq: number; sentMs: number }[],
  intervalMs: number,
): (seq: number) => number {
  const offsets = answered.map((p) => p.sentMs - (p.seq - 1) * intervalMs).sort((x, y) => x - y);
  const base = offsets.length ? quantile(offsets, 0.5) : 0;
  return (seq) => base + (seq - 1) * intervalMs;
}
