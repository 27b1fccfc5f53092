/**
 * The demo's arithmetic (`demo/measure.ts`) and report, on made-up samples:
 * overlaps of stalls, what counts as lost, slow, inside a link's own stall
 * or inside an overlap, percentiles and the longest gap.
 */
import assert from "node:assert/strict";
import {
  longestGap,
  measurePath,
  pingSendTimes,
  type Probe,
  quantile,
  stallWindows,
} from "../demo/measure.ts";
import { buildResult, formatReport, formatTable } from "../demo/report.ts";
import { renderChart } from "../demo/chart.ts";
import { parseDemoArgs } from "../demo/options.ts";
import type { RunSamples } from "../demo/run.ts";

/** A probe every `intervalMs` from 0 to `untilMs`, answered after `rtt(sentMs)` (null: lost). */
function probes(
  intervalMs: number,
  untilMs: number,
  rtt: (sentMs: number) => number | null,
): Probe[] {
  const list: Probe[] = [];
  for (let seq = 1, sentMs = 0; sentMs < untilMs; seq++, sentMs += intervalMs) {
    list.push({ seq, sentMs, rttMs: rtt(sentMs) });
  }
  return list;
}

const inside = (ms: number, from: number, to: number) => ms >= from && ms < to;

Deno.test("stall windows: overlaps of the two links are found and summed", () => {
  const summary = stallWindows([
    { link: "a", mode: "drop", startMs: 1000, endMs: 4000 },
    { link: "b", mode: "hold", startMs: 3000, endMs: 5000 },
    { link: "a", mode: "drop", startMs: 10_000, endMs: 11_000 },
    { link: "b", mode: "drop", startMs: 11_000, endMs: 12_000 },
  ]);
  assert.equal(summary.a.length, 2);
  assert.equal(summary.b.length, 2);
  assert.deepEqual(summary.overlaps, [{ startMs: 3000, endMs: 4000 }]);
  assert.equal(summary.overlapMs, 1000);
  assert.equal(summary.longestOverlapMs, 1000);
  assert.deepEqual(stallWindows([]).overlaps, []);
});

Deno.test("measurePath: a single link's losses inside its own stalls", () => {
  const stalls = stallWindows([{ link: "a", mode: "drop", startMs: 4000, endMs: 7000 }]);
  const pings = probes(50, 20_000, (t) => inside(t, 4000, 7000) ? null : 30);
  const result = measurePath("a", { pings, requests: [] }, stalls);
  assert.equal(result.ping?.sent, 400);
  assert.equal(result.ping?.lost, 60);
  assert.deepEqual(result.ping?.inOwnStalls, { sent: 60, failed: 60 });
  assert.equal(result.ping?.lostInOverlap, 0);
  assert.deepEqual(result.ping?.rttMs, { p50: 30, p99: 30, max: 30 });
  // The last answer before the stall arrives at 3980 ms, the next at 7030 ms.
  assert.equal(result.ping?.longestGapMs, 3050);
});

Deno.test("measurePath: a bonded path's failures in overlaps are counted apart", () => {
  const stalls = stallWindows([
    { link: "a", mode: "drop", startMs: 2000, endMs: 5000 },
    { link: "b", mode: "drop", startMs: 4000, endMs: 8000 },
  ]);
  // Lost during the overlap [4000, 5000), one lost while only B stalled, one slow request.
  const pings = probes(50, 10_000, (t) => inside(t, 4000, 5000) || t === 6000 ? null : 20);
  const requests = probes(
    100,
    10_000,
    (t) => t === 9000 ? 1500 : inside(t, 4000, 5000) ? 1200 : 25,
  );
  const result = measurePath("tunnel", { pings, requests }, stalls);
  assert.equal(result.ping?.lost, 21);
  assert.equal(result.ping?.lostInOverlap, 20);
  assert.equal(result.ping?.lostWhileOneLinkStalled, 1);
  assert.equal(result.ping?.inOwnStalls, undefined);
  assert.equal(result.requests.lost, 0);
  assert.equal(result.requests.slow, 11);
  assert.equal(result.requests.failedInOverlap, 10);
});

Deno.test("measurePath: bulk goodput and stall", () => {
  const result = measurePath("b", {
    requests: [],
    bulk: {
      bins: [],
      bytes: 10_000_000,
      seconds: 10,
      longestStallMs: 3456.4,
      longestStallEndedMs: 7010,
      errors: [],
    },
  }, stallWindows([]));
  assert.equal(result.bulk?.goodputMbps, 8);
  assert.equal(result.bulk?.longestStallMs, 3456);
  assert.equal(result.bulk?.longestStallEndedS, 7);
  assert.equal(result.ping, null);
});

Deno.test("quantile, longest gap and ping send times", () => {
  assert.equal(quantile([1, 2, 3, 4], 0.5), 2);
  assert.equal(quantile([1, 2, 3, 4], 0.99), 4);
  assert.ok(Number.isNaN(quantile([], 0.5)));
  // Nothing answered: the whole run is one gap.
  assert.equal(longestGap(probes(100, 1000, () => null)), 900);
  // Gaps are between arrivals: one answer 2 s late arrives 1390 ms after the last other one.
  assert.equal(longestGap(probes(100, 1000, (t) => t === 300 ? 2000 : 10)), 1390);
  const sendTime = pingSendTimes([{ seq: 1, sentMs: 1000 }, { seq: 3, sentMs: 1101 }], 50);
  assert.equal(sendTime(2), 1050);
});

Deno.test("the table has a column per path and aligned rows", () => {
  const stalls = stallWindows([]);
  const paths = [
    measurePath("a", { pings: probes(50, 1000, () => 30), requests: [] }, stalls),
    measurePath("mptcp", { requests: probes(100, 1000, () => 40) }, stalls),
  ];
  const lines = formatTable(paths).split("\n");
  assert.match(lines[0], /link A alone\s+MPTCP \(A\+B\)$/);
  const pingRow = lines.find((line) => line.startsWith("pings sent"));
  assert.match(pingRow ?? "", /20\s+–$/);
  const widths = new Set(lines.filter((l) => l.includes("RTT")).map((l) => l.length));
  assert.equal(widths.size, 1, "RTT rows are aligned");
});

Deno.test("report and chart of a run with an overlap", () => {
  const options = parseDemoArgs(["--duration", "10", "--seed", "3"]);
  const ok = (t: number) => inside(t, 2000, 4000) ? null : 31;
  const samples: RunSamples = {
    t0: Date.UTC(2026, 0, 1),
    endMs: 10_000,
    paths: {
      a: { pings: probes(50, 10_000, (t) => inside(t, 1000, 4000) ? null : 30), requests: [] },
      b: { pings: probes(50, 10_000, (t) => inside(t, 2000, 5000) ? null : 70), requests: [] },
      tunnel: { pings: probes(50, 10_000, ok), requests: probes(100, 10_000, () => 32) },
      mptcp: { requests: probes(100, 10_000, (t) => inside(t, 2000, 4000) ? 1500 : 33) },
    },
    stalls: [
      { link: "a", mode: "drop", startMs: 1000, endMs: 4000 },
      { link: "b", mode: "hold", startMs: 2000, endMs: 5000 },
    ],
    impairers: {},
    problems: [],
  };
  const result = buildResult(options, samples, "/tmp/chart.svg");
  assert.deepEqual(result.stalls.overlaps, [{ startMs: 2000, endMs: 4000 }]);
  const tunnel = result.paths.find((p) => p.id === "tunnel")!;
  assert.equal(tunnel.ping?.lost, 40);
  assert.equal(tunnel.ping?.lostInOverlap, 40);
  const text = formatReport(result);
  assert.match(text, /OVERLAP: both links stalled at once 1 time \(2\.0–4\.0 s\)/);
  assert.match(text, /tuxburst, outside the overlap: 0 of 200 pings lost/);
  assert.match(text, /chart: \/tmp\/chart\.svg/);

  const svg = renderChart(result, samples);
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.ok(svg.trimEnd().endsWith("</svg>"));
  // One shaded window per stall, the overlap hatched, a legend entry per path.
  assert.equal(svg.match(/fill-opacity="0\.13"/g)?.length, 2);
  assert.equal(svg.match(/fill="url\(#overlap\)"/g)?.length, 2);
  for (const name of ["link A alone", "link B alone", "tuxburst (A+B)", "MPTCP (A+B)"]) {
    assert.ok(svg.includes(`>${name}</text>`), name);
  }
  assert.doesNotMatch(svg, /NaN|undefined/);
});
