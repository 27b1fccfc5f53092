/**
 * Per-link health, counted by the data path and read by `tuxburst status`:
 * RTT (smoothed like TCP's SRTT, and the last sample), probe loss over the
 * last probes, bytes and datagrams each way, first arrivals, last heard.
 * Pure: every method takes `now` (milliseconds on the tunnel's clock), so
 * tests drive it with a fake clock.
 *
 * @example
 * ```ts
 * const stats = new LinkStats();
 * stats.probeSent(1, 0);
 * stats.probeAnswered(1, 0, 12);
 * stats.snapshot(12).rttSmoothedMs; // 12
 * ```
 *
 * @module
 */

/** Probes whose fate decides the loss figure (the newest ones). */
export const LOSS_WINDOW = 20;
/** A probe unanswered this long counts as lost (it may still be answered later). */
export const PROBE_LOST_AFTER_MS = 2000;
/** First arrivals are compared over this recent span, so a dead link's history fades. */
export const FIRST_WINDOW_MS = 10_000;
/** Resolution of the first-arrival window. */
const FIRST_BUCKET_MS = 1000;
/** Weight of a new RTT sample, as TCP's SRTT (RFC 6298): 1/8. */
const RTT_GAIN = 0.125;
/** A link is down after this many missed probe intervals, but never sooner than `MIN_DOWN_MS`. */
const MISSED_PROBES_DOWN = 3;
const MIN_DOWN_MS = 3000;

/** What `tuxburst status` shows of one link (a client uplink or a server path). */
export interface LinkSnapshot {
  rttSmoothedMs: number | null;
  rttRecentMs: number | null;
  /** Lost probes among the last decided ones, 0–100; `null` without probes (the server). */
  lossPercent: number | null;
  probesSent: number;
  probesAnswered: number;
  /** Data packets that arrived here before any other copy, since start. */
  firstPackets: number;
  /** The same within the last `FIRST_WINDOW_MS`; the share is computed over all links. */
  firstRecent: number;
  txBytes: number;
  txDatagrams: number;
  rxBytes: number;
  rxDatagrams: number;
  /** Seconds since an authenticated message arrived here; `null` if never. */
  lastHeardSecondsAgo: number | null;
}

interface ProbeRecord {
  seq: number;
  sentAt: number;
  answered: boolean;
}

/** Counts over a sliding window of fixed buckets (cheap enough to call per packet). */
export class RecentCounter {
  readonly #buckets: number[];
  #bucket = 0;
  #index = 0;

  constructor(readonly windowMs = FIRST_WINDOW_MS, readonly bucketMs = FIRST_BUCKET_MS) {
    this.#buckets = new Array(Math.max(1, Math.ceil(windowMs / bucketMs))).fill(0);
  }

  add(now: number, count = 1): void {
    this.#advance(now);
    this.#buckets[this.#index] += count;
  }

  /** The sum over the window ending at `now`. */
  total(now: number): number {
    this.#advance(now);
    let sum = 0;
    for (const value of this.#buckets) sum += value;
    return sum;
  }

  #advance(now: number): void {
    const bucket = Math.floor(now / this.bucketMs);
    if (bucket <= this.#bucket) return; // the clock is monotonic; never rewind
    const steps = Math.min(bucket - this.#bucket, this.#buckets.length);
    for (let i = 0; i < steps; i++) {
      this.#index = (this.#index + 1) % this.#buckets.length;
      this.#buckets[this.#index] = 0;
    }
    this.#bucket = bucket;
  }
}

/**
 * The counters of one link. The data path bumps the public fields directly
 * (one addition per datagram); the rest goes through methods.
 */
export class LinkStats {
  txBytes = 0;
  txDatagrams = 0;
  rxBytes = 0;
  rxDatagrams = 0;
  firstPackets = 0;
  lastHeard = -Infinity;
  #srtt?: number;
  #lastRtt?: number;
  #probesSent = 0;
  #lastProbeHeard = -Infinity;
  /** How often the peer's probes arrive here; undefined until two gaps were seen. */
  #probeGapMs?: number;
  #probeGaps = 0;
  #probesAnswered = 0;
  readonly #probes: ProbeRecord[] = [];
  readonly #first = new RecentCounter();

  /** A datagram of a known session arrived here (first copy or not). */
  received(bytes: number): void {
    this.rxBytes += bytes;
    this.rxDatagrams++;
  }

  /** An authenticated first copy arrived here; `data` when it carried an IP packet. */
  heard(now: number, data: boolean): void {
    this.lastHeard = now;
    if (!data) return this.#probeHeard(now); // probes travel one link only: they would skew the race
    this.firstPackets++;
    this.#first.add(now);
  }

  probeSent(seq: number, now: number): void {
    this.#probesSent++;
    this.#probes.push({ seq, sentAt: now, answered: false });
    // Keep a few undecided ones beyond the window: they are not counted yet.
    if (this.#probes.length > 2 * LOSS_WINDOW) this.#probes.shift();
  }

  /** A probe sent at `sentAt` came back at `now`; returns false for nonsense (ignored). */
  probeAnswered(seq: number, sentAt: number, now: number): boolean {
    const rtt = now - sentAt;
    if (!(rtt >= 0 && rtt <= 60_000)) return false;
    const probe = this.#probes.find((p) => p.seq === seq);
    if (probe) {
      if (probe.answered) return false; // a replayed reply measures nothing
      probe.answered = true;
    }
    this.#probesAnswered++;
    this.#lastRtt = rtt;
    this.#srtt = this.#srtt === undefined ? rtt : this.#srtt + RTT_GAIN * (rtt - this.#srtt);
    return true;
  }

  /**
   * For the side that is probed (the server): whether the peer's probes
   * stopped coming, i.e. nothing was heard for 3 of their intervals (at
   * least 3 s), the client's own rule for calling an uplink down.
   */
  peerProbesMissed(now: number): boolean {
    if (this.#probeGapMs === undefined || this.#probeGaps < 2) return false;
    return now - this.lastHeard > Math.max(MIN_DOWN_MS, MISSED_PROBES_DOWN * this.#probeGapMs);
  }

  #probeHeard(now: number): void {
    if (Number.isFinite(this.#lastProbeHeard)) {
      const gap = now - this.#lastProbeHeard;
      // Rises at once to a longer interval, forgets it slowly: an extra probe (a new
      // uplink makes the client probe at once) must not make an idle link look down.
      this.#probeGapMs = this.#probeGapMs === undefined
        ? gap
        : Math.max(gap, this.#probeGapMs + RTT_GAIN * (gap - this.#probeGapMs));
      this.#probeGaps++;
    }
    this.#lastProbeHeard = now;
  }

  /** The smoothed RTT, once a probe was answered. */
  get rttMs(): number | undefined {
    return this.#srtt;
  }

  /** Percent of the last `LOSS_WINDOW` decided probes that were not answered. */
  lossPercent(now: number): number | null {
    let decided = 0;
    let lost = 0;
    for (let i = this.#probes.length - 1; i >= 0 && decided < LOSS_WINDOW; i--) {
      const probe = this.#probes[i];
      if (probe.answered) {
        decided++;
      } else if (now - probe.sentAt >= PROBE_LOST_AFTER_MS) {
        decided++;
        lost++;
      } // else still in flight: not a loss yet
    }
    return decided === 0 ? null : (100 * lost) / decided;
  }

  /** First arrivals within the recent window. */
  firstRecent(now: number): number {
    return this.#first.total(now);
  }

  snapshot(now: number): LinkSnapshot {
    return {
      rttSmoothedMs: this.#srtt ?? null,
      rttRecentMs: this.#lastRtt ?? null,
      lossPercent: this.lossPercent(now),
      probesSent: this.#probesSent,
      probesAnswered: this.#probesAnswered,
      firstPackets: this.firstPackets,
      firstRecent: this.firstRecent(now),
      txBytes: this.txBytes,
      txDatagrams: this.txDatagrams,
      rxBytes: this.rxBytes,
      rxDatagrams: this.rxDatagrams,
      lastHeardSecondsAgo: Number.isFinite(this.lastHeard) ? (now - this.lastHeard) / 1000 : null,
    };
  }
}

/** One link as `tuxburst status` reports it. */
export interface LinkStatus extends LinkSnapshot {
  /** The uplink's interface name (client) or the peer's address (server). */
  name: string;
  up: boolean;
  /** This link's share of the first arrivals over all links in the recent window, 0–100. */
  firstPercent: number | null;
}

/** Adds each link's share of recent first arrivals; `null` when nothing arrived recently. */
export function withFirstShare(
  links: ReadonlyArray<Omit<LinkStatus, "firstPercent">>,
): LinkStatus[] {
  const total = links.reduce((sum, link) => sum + link.firstRecent, 0);
  return links.map((link) => ({
    ...link,
    firstPercent: total === 0 ? null : (100 * link.firstRecent) / total,
  }));
}

/** The session packets currently use. */
export interface SessionStatus {
  id: number;
  ageSeconds: number;
}

/** The other end: the server (on a client) or one client (on the server). */
export interface PeerStatus {
  name: string;
  /** The peer's address as configured (client) or `null` (server: see each link). */
  address: string | null;
  session: SessionStatus | null;
  links: LinkStatus[];
}

/** The whole answer of the control socket (`tuxburst status --json`). */
export interface StatusReport {
  role: "client" | "server";
  tun: string;
  pid: number;
  uptimeSeconds: number;
  peers: PeerStatus[];
  counters: Record<string, number>;
}

/** Whatever a role can tell about its peers and links. */
export interface StatusSource {
  peerStatus(now: number): PeerStatus[];
}
