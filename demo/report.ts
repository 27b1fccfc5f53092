/**
 * The demo's results: one object (printed by `--json`, and what the test
 * asserts on), and the same as an aligned text table with a short verdict.
 *
 * @example
 * ```ts
 * const result = buildResult(options, samples, "/tmp/tuxburst-demo-x/chart.svg");
 * console.log(formatReport(result));
 * ```
 *
 * @module
 */
import {
  measurePath,
  OVERLAP_MARGIN_MS,
  type PathId,
  type PathResult,
  SLOW_MS,
  type StallSummary,
  stallWindows,
} from "./measure.ts";
import type { DemoOptions } from "./options.ts";
import type { RunSamples } from "./run.ts";

/** Everything a run found; `--json` prints exactly this. */
export interface DemoResult {
  /** The settings of the run. */
  settings: {
    durationS: number;
    seed: number;
    stalls: { a: string; b: string };
    stallMode: string;
    delayMs: { a: number; b: number };
    jitterMs: number;
    loss: number;
    bulkMbps: number;
  };
  /** When time 0 was, ISO 8601. */
  startedAt: string;
  /** Seconds from time 0 to the end of the traffic. */
  measuredS: number;
  /** Stall windows of each link and their overlaps, in ms since time 0. */
  stalls: StallSummary;
  /** One entry per path, in the order A, B, tuxburst, MPTCP. */
  paths: PathResult[];
  /** Kernel MPTCP: whether it ran, why not, and how many subflows its connections had. */
  mptcp: { ran: boolean; skipped?: string; subflowsPerConnection?: number };
  /** Things that went wrong in tuxburst itself during the run (empty when all was well). */
  problems: string[];
  /** The impairers' final counters, by link. */
  impairers: RunSamples["impairers"];
  /** The SVG chart. */
  chart?: string;
  /** Definitions, so the numbers can be read without the source. */
  definitions: Record<string, string>;
}

/** Turns a run's samples into results. */
export function buildResult(options: DemoOptions, samples: RunSamples, chart?: string): DemoResult {
  const stalls = stallWindows(samples.stalls);
  const paths = (["a", "b", "tunnel", "mptcp"] as PathId[])
    .filter((id) => samples.paths[id])
    .map((id) => measurePath(id, samples.paths[id]!, stalls));
  return {
    settings: {
      durationS: options.durationS,
      seed: options.seed,
      stalls: options.stalls,
      stallMode: options.stallMode,
      delayMs: options.delayMs,
      jitterMs: options.jitterMs,
      loss: options.loss,
      bulkMbps: options.bulkMbps,
    },
    startedAt: new Date(samples.t0).toISOString(),
    measuredS: Math.round(samples.endMs / 100) / 10,
    stalls,
    paths,
    mptcp: {
      ran: samples.paths.mptcp !== undefined,
      ...(samples.mptcpSkipped ? { skipped: samples.mptcpSkipped } : {}),
      ...(samples.mptcpSubflows !== undefined
        ? { subflowsPerConnection: samples.mptcpSubflows }
        : {}),
    },
    problems: samples.problems,
    impairers: samples.impairers,
    ...(chart ? { chart } : {}),
    definitions: {
      "ping": "ICMP echo every 50 ms; link A/B alone: ping -I upa/upb to the server's public " +
        "address; tuxburst: to the server's tunnel address",
      "requests": "64 bytes over one TCP connection every 100 ms, echoed by the server " +
        "(like keystrokes in SSH)",
      "lost": "never answered (pings: within 3 s after the last one was sent)",
      "slow": `answered after more than ${SLOW_MS} ms`,
      "longestGapMs": "longest time without any ping answer arriving",
      "inOwnStalls": "probes sent while the path's own link stalled, and how many failed",
      "inOverlap": `failures of probes sent while both links stalled at once (or up to ` +
        `${OVERLAP_MARGIN_MS} ms before), counted apart: no bonding can help there`,
      "bulk": "one TCP download paced by the server to bulkMbps; goodput over the whole run; " +
        "longest stall = longest time without a byte arriving",
    },
  };
}

const dash = "–";

function ms(value: number | undefined | null): string {
  if (value === undefined || value === null || Number.isNaN(value)) return dash;
  return value >= 100 ? String(Math.round(value)) : value.toFixed(1);
}

function seconds(valueMs: number): string {
  return (valueMs / 1000).toFixed(valueMs >= 10_000 ? 1 : 2);
}

function share(part: number, whole: number): string {
  if (whole === 0) return String(part);
  const pct = part / whole * 100;
  return `${part} (${pct >= 10 || pct === 0 ? Math.round(pct) : pct.toFixed(1)}%)`;
}

function windowText(w: { startMs: number; endMs: number; mode?: string }): string {
  return `${(w.startMs / 1000).toFixed(1)}–${(w.endMs / 1000).toFixed(1)} s${
    w.mode ? ` ${w.mode}` : ""
  }`;
}

/** The stalls of both links and their overlaps, in a few lines. */
export function formatStalls(stalls: StallSummary): string[] {
  const lines: string[] = [];
  for (const link of ["a", "b"] as const) {
    const list = stalls[link];
    const total = list.reduce((sum, w) => sum + w.endMs - w.startMs, 0);
    lines.push(
      `  link ${link.toUpperCase()}: ${
        list.length === 0
          ? "no stall"
          : `${list.length} stall${list.length > 1 ? "s" : ""}, ${seconds(total)} s in all: ${
            list.map(windowText).join(", ")
          }`
      }`,
    );
  }
  lines.push(
    stalls.overlaps.length === 0
      ? "  overlap: none, the links never stalled at the same time"
      : `  OVERLAP: both links stalled at once ${stalls.overlaps.length} time${
        stalls.overlaps.length > 1 ? "s" : ""
      } (${stalls.overlaps.map(windowText).join(", ")}), ${
        seconds(stalls.overlapMs)
      } s in all; no bonding helps there, so failures then are counted apart`,
  );
  return lines;
}

/** The aligned table, with a column per path. */
export function formatTable(paths: PathResult[]): string {
  const rows: [string, ...string[]][] = [];
  const row = (name: string, cell: (p: PathResult) => string) =>
    rows.push([name, ...paths.map(cell)]);
  rows.push(["", ...paths.map((p) => p.label)]);
  row("pings sent", (p) => p.ping ? String(p.ping.sent) : dash);
  row("  lost", (p) => p.ping ? share(p.ping.lost, p.ping.sent) : dash);
  const bonded = (p: PathResult) => p.id === "tunnel" || p.id === "mptcp";
  row(
    "  lost or >1 s in own link's stalls",
    (p) =>
      p.ping?.inOwnStalls ? `${p.ping.inOwnStalls.failed} of ${p.ping.inOwnStalls.sent}` : dash,
  );
  row(
    "  lost while both links stalled",
    (p) => p.ping && bonded(p) ? String(p.ping.lostInOverlap) : dash,
  );
  row(
    "  RTT p50 / p99 / max, ms",
    (p) =>
      p.ping?.rttMs
        ? `${ms(p.ping.rttMs.p50)} / ${ms(p.ping.rttMs.p99)} / ${ms(p.ping.rttMs.max)}`
        : dash,
  );
  row("  longest gap without answer, s", (p) => p.ping ? seconds(p.ping.longestGapMs) : dash);
  row("requests sent (every 100 ms)", (p) => String(p.requests.sent));
  row("  lost", (p) => share(p.requests.lost, p.requests.sent));
  row("  slower than 1 s", (p) => share(p.requests.slow, p.requests.sent));
  row(
    "  lost or slow while both stalled",
    (p) => bonded(p) ? String(p.requests.failedInOverlap) : dash,
  );
  row(
    "  RTT p50 / p99 / max, ms",
    (p) =>
      p.requests.rttMs
        ? `${ms(p.requests.rttMs.p50)} / ${ms(p.requests.rttMs.p99)} / ${ms(p.requests.rttMs.max)}`
        : dash,
  );
  row("bulk goodput, Mbit/s", (p) => p.bulk ? p.bulk.goodputMbps.toFixed(2) : dash);
  row(
    "  longest stall, s",
    (p) =>
      p.bulk
        ? `${seconds(p.bulk.longestStallMs)} (ended ${p.bulk.longestStallEndedS.toFixed(1)} s)`
        : dash,
  );
  const widths = rows[0].map((_, column) => Math.max(...rows.map((r) => r[column].length)));
  return rows.map((r) =>
    r.map((cell, column) => column === 0 ? cell.padEnd(widths[0]) : cell.padStart(widths[column]))
      .join("   ").trimEnd()
  ).join("\n");
}

/** What the numbers say about tuxburst, in a few sentences. */
export function verdict(result: DemoResult): string[] {
  const lines: string[] = [];
  const tunnel = result.paths.find((p) => p.id === "tunnel");
  if (!tunnel?.ping) return lines;
  const { overlaps } = result.stalls;
  const ping = tunnel.ping;
  const requests = tunnel.requests;
  const pingsOutside = ping.lost - ping.lostInOverlap;
  const requestsOutside = requests.lost + requests.slow - requests.failedInOverlap;
  const randomLoss = ping.lostWhileOneLinkStalled ?? 0;
  lines.push(
    `tuxburst${overlaps.length ? ", outside the overlap" : ""}: ${pingsOutside} of ` +
      `${ping.sent} pings lost${
        randomLoss
          ? ` (${randomLoss} while one link stalled and the other lost ${
            randomLoss > 1 ? "them" : "it"
          } at random, --loss ${result.settings.loss})`
          : ""
      }, ${requestsOutside} of ${requests.sent} requests lost or slower than 1 s.`,
  );
  if (overlaps.length) {
    lines.push(
      `While both links stalled at once (${seconds(result.stalls.overlapMs)} s; no bonding ` +
        `helps there): ${ping.lostInOverlap} pings lost, ${requests.failedInOverlap} requests ` +
        `lost or slow.`,
    );
  }
  const singles = result.paths.filter((p) => p.id === "a" || p.id === "b");
  lines.push(
    `Each link alone: ${
      singles.map((p) =>
        `${p.label.replace(" alone", "")} lost ${p.ping?.lost ?? 0} pings, ` +
        `${p.requests.lost + p.requests.slow} requests were lost or slow`
      ).join("; ")
    }.`,
  );
  const best = singles.filter((p) => p.ping?.rttMs)
    .sort((x, y) => x.ping!.rttMs!.p50 - y.ping!.rttMs!.p50)[0];
  if (best && ping.rttMs) {
    lines.push(
      `RTT p50: tuxburst ${ms(ping.rttMs.p50)} ms, the better link alone ` +
        `${ms(best.ping!.rttMs!.p50)} ms (${best.label.replace(" alone", "")}).`,
    );
  }
  if (tunnel.bulk) {
    lines.push(
      `Bulk download: tuxburst's longest stall ${seconds(tunnel.bulk.longestStallMs)} s` +
        (overlaps.length
          ? ` (the longest overlap is ${seconds(result.stalls.longestOverlapMs)} s; TCP's ` +
            `retransmission timer adds a little after it)`
          : "") +
        `; ${
          singles.filter((p) => p.bulk).map((p) =>
            `${p.label} ${seconds(p.bulk!.longestStallMs)} s`
          ).join(", ")
        }.`,
    );
  }
  const mptcp = result.paths.find((p) => p.id === "mptcp");
  if (mptcp) {
    const failed = mptcp.requests.lost + mptcp.requests.slow;
    lines.push(
      `Kernel MPTCP over the same links (${
        result.mptcp.subflowsPerConnection ?? "?"
      } subflows per connection): ${failed} requests lost or slower than 1 s` +
        (overlaps.length ? ` (${mptcp.requests.failedInOverlap} of them in the overlap)` : "") +
        `, bulk longest stall ${seconds(mptcp.bulk?.longestStallMs ?? 0)} s.`,
    );
  } else if (result.mptcp.skipped) {
    lines.push(`MPTCP comparison skipped: ${result.mptcp.skipped}.`);
  }
  return lines;
}

/** The whole text report. */
export function formatReport(result: DemoResult): string {
  const s = result.settings;
  const header = `tuxburst demo: ${result.measuredS} s from ${result.startedAt}, seed ${s.seed}; ` +
    `link A ${s.delayMs.a} ms, link B ${s.delayMs.b} ms one-way, ±${s.jitterMs} ms, ` +
    `loss ${s.loss * 100} %, stalls ${s.stallMode}`;
  const parts = [
    header,
    "",
    "stalls:",
    ...formatStalls(result.stalls),
    "",
    formatTable(result.paths),
    "",
    ...verdict(result),
  ];
  if (result.problems.length) {
    parts.push("", "PROBLEMS in tuxburst during the run:", ...result.problems.map((p) => `  ${p}`));
  }
  if (result.chart) parts.push("", `chart: ${result.chart}`);
  return parts.join("\n");
}
