import assert from "node:assert/strict";
import {
  FIRST_WINDOW_MS,
  LinkStats,
  LOSS_WINDOW,
  PROBE_LOST_AFTER_MS,
  RecentCounter,
  withFirstShare,
} from "../lib/link_stats.ts";

Deno.test("link stats: RTT is smoothed like TCP's SRTT, and the last sample is kept", () => {
  const stats = new LinkStats();
  assert.equal(stats.snapshot(0).rttSmoothedMs, null);
  stats.probeSent(1, 0);
  assert.ok(stats.probeAnswered(1, 0, 40));
  assert.equal(stats.snapshot(40).rttSmoothedMs, 40, "the first sample is taken as it is");
  stats.probeSent(2, 1000);
  stats.probeAnswered(2, 1000, 1080);
  // 40 + (80 - 40) / 8
  assert.equal(stats.snapshot(1080).rttSmoothedMs, 45);
  assert.equal(stats.snapshot(1080).rttRecentMs, 80);
  // One slow sample moves the average only by an eighth of the difference.
  stats.probeSent(3, 2000);
  stats.probeAnswered(3, 2000, 2000 + 445);
  assert.equal(stats.snapshot(3000).rttSmoothedMs, 95);
  assert.equal(stats.rttMs, 95);
});

Deno.test("link stats: nonsense and replayed probe replies do not move the RTT", () => {
  const stats = new LinkStats();
  stats.probeSent(1, 1000);
  assert.equal(stats.probeAnswered(1, 1000, 900), false, "answered before it was sent");
  assert.equal(stats.probeAnswered(1, 1000, 1000 + 61_000), false, "over a minute");
  assert.ok(stats.probeAnswered(1, 1000, 1010));
  assert.equal(stats.probeAnswered(1, 1000, 1500), false, "the same probe twice");
  assert.equal(stats.snapshot(2000).rttSmoothedMs, 10);
  assert.equal(stats.snapshot(2000).probesAnswered, 1);
});

Deno.test("link stats: loss counts unanswered probes among the last ones, not those in flight", () => {
  const stats = new LinkStats();
  assert.equal(stats.lossPercent(0), null, "no probe yet: unknown, not 0 %");
  let now = 0;
  for (let seq = 0; seq < 10; seq++, now += 1000) {
    stats.probeSent(seq, now);
    if (seq % 2 === 0) stats.probeAnswered(seq, now, now + 5);
  }
  // Probes 9 (at 9000) is unanswered but younger than PROBE_LOST_AFTER_MS at 10 000.
  assert.ok(now - 9000 < PROBE_LOST_AFTER_MS);
  assert.equal(stats.lossPercent(now), (100 * 4) / 9);
  assert.equal(stats.lossPercent(9000 + PROBE_LOST_AFTER_MS), 50);

  // A link that recovers: after LOSS_WINDOW answered probes, the old losses are gone.
  for (let i = 0; i < LOSS_WINDOW; i++, now += 1000) {
    stats.probeSent(100 + i, now);
    stats.probeAnswered(100 + i, now, now + 5);
  }
  assert.equal(stats.lossPercent(now), 0);
  // A link that dies: every probe lost once they are old enough.
  for (let i = 0; i < LOSS_WINDOW; i++, now += 1000) stats.probeSent(200 + i, now);
  assert.equal(stats.lossPercent(now + PROBE_LOST_AFTER_MS), 100);
  assert.equal(stats.snapshot(now).probesSent, 10 + 2 * LOSS_WINDOW);
});

Deno.test("link stats: a late answer turns a lost probe back into an answered one", () => {
  const stats = new LinkStats();
  stats.probeSent(7, 0);
  assert.equal(stats.lossPercent(PROBE_LOST_AFTER_MS), 100);
  stats.probeAnswered(7, 0, PROBE_LOST_AFTER_MS + 500);
  assert.equal(stats.lossPercent(PROBE_LOST_AFTER_MS + 500), 0);
});

Deno.test("link stats: bytes, datagrams, last heard, and first arrivals count data only", () => {
  const stats = new LinkStats();
  stats.received(100);
  stats.received(50);
  stats.heard(1000, true);
  stats.heard(1500, false); // a probe: heard, but not a raced packet
  const snapshot = stats.snapshot(4000);
  assert.equal(snapshot.rxBytes, 150);
  assert.equal(snapshot.rxDatagrams, 2);
  assert.equal(snapshot.firstPackets, 1);
  assert.equal(snapshot.firstRecent, 1);
  assert.equal(snapshot.lastHeardSecondsAgo, 2.5);
  assert.equal(new LinkStats().snapshot(0).lastHeardSecondsAgo, null);
});

Deno.test("recent counter: counts within the window only, also across long silences", () => {
  const counter = new RecentCounter(10_000, 1000);
  counter.add(0, 5);
  counter.add(4500, 2);
  assert.equal(counter.total(9999), 7);
  assert.equal(counter.total(10_000), 2, "the first bucket left the window");
  // Whole buckets: the count made at 4500 stays until its bucket (4000–4999) is 10 buckets old.
  assert.equal(counter.total(13_999), 2);
  assert.equal(counter.total(14_000), 0);
  counter.add(1_000_000, 3);
  assert.equal(counter.total(1_000_000), 3, "nothing of the old buckets came back");
  assert.equal(counter.total(999_000), 3, "an older `now` never rewinds the window");
});

Deno.test("first share: each link's part of the recent first arrivals, a dead link fades out", () => {
  const a = new LinkStats();
  const b = new LinkStats();
  for (let i = 0; i < 30; i++) a.heard(i * 10, true);
  for (let i = 0; i < 10; i++) b.heard(i * 10, true);
  const link = (name: string, stats: LinkStats, now: number) => ({
    name,
    up: true,
    ...stats.snapshot(now),
  });
  let shares = withFirstShare([link("a", a, 500), link("b", b, 500)]);
  assert.deepEqual(shares.map((s) => s.firstPercent), [75, 25]);

  // Link a goes dark; b carries everything from now on.
  for (let t = 1000; t < 1000 + FIRST_WINDOW_MS; t += 100) b.heard(t, true);
  const now = 1000 + FIRST_WINDOW_MS;
  shares = withFirstShare([link("a", a, now), link("b", b, now)]);
  assert.deepEqual(shares.map((s) => s.firstPercent), [0, 100]);
  assert.equal(shares[0].firstPackets, 30, "the totals since start stay");

  const idle = withFirstShare([link("a", new LinkStats(), 0)]);
  assert.equal(idle[0].firstPercent, null, "no traffic: no share rather than 0 %");
});

Deno.test("link stats: the probed side calls a link down after 3 missed probe intervals", () => {
  const stats = new LinkStats();
  // Probes every 5 s, plus an extra one right after the first (a new uplink).
  for (const at of [0, 300, 5300, 10_300]) stats.heard(at, false);
  assert.equal(stats.peerProbesMissed(10_300 + 14_000), false, "idle between probes is not down");
  assert.equal(stats.peerProbesMissed(10_300 + 15_001), true);
  // Data keeps it up whatever the probes do.
  stats.heard(30_000, true);
  assert.equal(stats.peerProbesMissed(31_000), false);
  // Fast probes: down after 3 s at the earliest.
  const fast = new LinkStats();
  for (const at of [0, 500, 1000, 1500]) fast.heard(at, false);
  assert.equal(fast.peerProbesMissed(1500 + 2999), false);
  assert.equal(fast.peerProbesMissed(1500 + 3001), true);
  assert.equal(new LinkStats().peerProbesMissed(1e9), false, "no probes seen: no opinion");
});
