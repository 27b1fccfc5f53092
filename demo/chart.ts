/**
 * The demo's chart as one self-contained SVG: the round-trip time of every
 * probe over time per path (log scale, clipped at 5 s), the lost probes as
 * ticks in a strip above, the bulk downloads' goodput below, and the stall
 * windows of link A and link B shaded in their colours across all of it,
 * with overlaps of both hatched.
 *
 * @example
 * ```ts
 * await Deno.writeTextFile("chart.svg", renderChart(result, samples));
 * ```
 *
 * @module
 */
import type { PathId, Probe, StallSummary } from "./measure.ts";
import type { DemoResult } from "./report.ts";
import type { RunSamples } from "./run.ts";

const COLORS: Record<PathId, string> = {
  a: "#e8710a",
  b: "#1a73e8",
  tunnel: "#188038",
  mptcp: "#9334e6",
};
const NAMES: Record<PathId, string> = {
  a: "link A alone",
  b: "link B alone",
  tunnel: "tuxburst (A+B)",
  mptcp: "MPTCP (A+B)",
};

const WIDTH = 1200;
const LEFT = 90;
const RIGHT = 250;
const PLOT_W = WIDTH - LEFT - RIGHT;
const TOP = 92;
const STRIP_ROW = 14;
const RTT_H = 380;
const GAP = 40;
const BULK_H = 150;
const RTT_MIN = 5;
const RTT_MAX = 5000;
const BULK_BIN_MS = 500;

function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

const f = (n: number) => n.toFixed(1);

/** Renders the chart; `samples` gives the per-probe data that `result` only summarises. */
export function renderChart(result: DemoResult, samples: RunSamples): string {
  const paths = (["a", "b", "tunnel", "mptcp"] as PathId[]).filter((id) => samples.paths[id]);
  const endS = Math.max(1, samples.endMs / 1000);
  const x = (ms: number) => LEFT + Math.max(0, Math.min(1, ms / 1000 / endS)) * PLOT_W;
  const stripTop = TOP;
  const stripH = STRIP_ROW * paths.length;
  const rttTop = stripTop + stripH + 10;
  const bulkTop = rttTop + RTT_H + GAP;
  const height = bulkTop + BULK_H + 60;
  const yRtt = (ms: number) => {
    const clipped = Math.max(RTT_MIN, Math.min(RTT_MAX, ms));
    const share = Math.log(clipped / RTT_MIN) / Math.log(RTT_MAX / RTT_MIN);
    return rttTop + RTT_H - share * RTT_H;
  };
  const out: string[] = [];
  const s = result.settings;
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" ` +
      `viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<defs><pattern id="overlap" patternUnits="userSpaceOnUse" width="8" height="8" ` +
      `patternTransform="rotate(45)"><rect width="8" height="8" fill="#000" fill-opacity="0.06"/>` +
      `<line x1="0" y1="0" x2="0" y2="8" stroke="#000" stroke-opacity="0.35" stroke-width="2"/>` +
      `</pattern></defs>`,
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    `<text x="${LEFT}" y="24" font-size="16" font-weight="bold">tuxburst demo: the same ` +
      `traffic over link A alone, link B alone, tuxburst over both, and MPTCP over both</text>`,
    `<text x="${LEFT}" y="44" fill="#444">${
      escape(
        `${result.measuredS} s, seed ${s.seed}; one-way delay A ${s.delayMs.a} ms, B ${s.delayMs.b} ms, ` +
          `±${s.jitterMs} ms, loss ${s.loss * 100} %; stalls ${s.stallMode} ` +
          `(shaded: link A, link B; hatched: both at once)`,
      )
    }</text>`,
  );

  // Stall windows, behind everything.
  out.push(...stallShading(result.stalls, x, stripTop, bulkTop + BULK_H));

  // Lost probes: one strip row per path.
  paths.forEach((id, row) => {
    const y = stripTop + row * STRIP_ROW;
    out.push(
      `<text x="${LEFT - 6}" y="${y + 10}" text-anchor="end" fill="${COLORS[id]}" font-size="10">` +
        `lost ${id === "tunnel" ? "tuxburst" : id === "mptcp" ? "MPTCP" : id.toUpperCase()}</text>`,
      `<rect x="${LEFT}" y="${y + 1}" width="${PLOT_W}" height="${STRIP_ROW - 2}" fill="none" ` +
        `stroke="#ddd"/>`,
    );
    const lost = probesOf(samples, id).filter((p) => p.rttMs === null);
    if (lost.length) {
      out.push(
        `<path stroke="${COLORS[id]}" stroke-width="1.5" d="${
          lost.map((p) => `M${f(x(p.sentMs))} ${y + 2}v${STRIP_ROW - 4}`).join("")
        }"/>`,
      );
    }
  });

  // RTT panel.
  out.push(
    `<rect x="${LEFT}" y="${rttTop}" width="${PLOT_W}" height="${RTT_H}" fill="none" stroke="#999"/>`,
  );
  for (const tick of [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]) {
    const y = yRtt(tick);
    out.push(
      `<line x1="${LEFT}" x2="${LEFT + PLOT_W}" y1="${f(y)}" y2="${f(y)}" stroke="#eee"/>`,
      `<text x="${LEFT - 6}" y="${f(y + 4)}" text-anchor="end" fill="#555">${
        tick >= 1000 ? `${tick / 1000} s` : `${tick}`
      }</text>`,
    );
  }
  out.push(
    `<text transform="translate(18 ${rttTop + RTT_H / 2}) rotate(-90)" text-anchor="middle" ` +
      `fill="#333">round-trip time, ms (log)</text>`,
  );
  // The tunnel last, on top.
  for (const id of [...paths.filter((id) => id !== "tunnel"), "tunnel" as const]) {
    const answered = probesOf(samples, id).filter((p) => p.rttMs !== null);
    const dots = answered.map((p) => `M${f(x(p.sentMs))} ${f(yRtt(p.rttMs!))}h0.01`).join("");
    out.push(
      `<path stroke="${COLORS[id]}" stroke-width="${id === "tunnel" ? 3 : 2.5}" ` +
        `stroke-linecap="round" stroke-opacity="0.8" d="${dots}"/>`,
    );
  }

  // Bulk panel: goodput per half second; the bursts after a held stall are clipped.
  const bulkMax = Math.min(
    s.bulkMbps * 3,
    Math.max(
      s.bulkMbps * 1.5,
      ...paths.flatMap((id) => bulkSeries(samples, id, endS).map((b) => b.mbps)),
    ),
  );
  const yBulk = (mbps: number) => bulkTop + BULK_H - Math.min(1, mbps / bulkMax) * BULK_H;
  out.push(
    `<rect x="${LEFT}" y="${bulkTop}" width="${PLOT_W}" height="${BULK_H}" fill="none" stroke="#999"/>`,
  );
  for (const tick of niceTicks(bulkMax, 4)) {
    out.push(
      `<line x1="${LEFT}" x2="${LEFT + PLOT_W}" y1="${f(yBulk(tick))}" y2="${
        f(yBulk(tick))
      }" stroke="#eee"/>`,
      `<text x="${LEFT - 6}" y="${
        f(yBulk(tick) + 4)
      }" text-anchor="end" fill="#555">${tick}</text>`,
    );
  }
  out.push(
    `<text transform="translate(18 ${bulkTop + BULK_H / 2}) rotate(-90)" text-anchor="middle" ` +
      `fill="#333">download, Mbit/s</text>`,
  );
  for (const id of paths) {
    const series = bulkSeries(samples, id, endS);
    if (!series.length) continue;
    out.push(
      `<polyline fill="none" stroke="${
        COLORS[id]
      }" stroke-width="1.5" stroke-opacity="0.85" points="${
        series.map((b) => `${f(x(b.atMs + BULK_BIN_MS / 2))},${f(yBulk(b.mbps))}`).join(" ")
      }"/>`,
    );
  }

  // Time axis.
  const step = endS > 120 ? 30 : endS > 40 ? 10 : 5;
  for (let t = 0; t <= endS; t += step) {
    out.push(
      `<line x1="${f(x(t * 1000))}" x2="${f(x(t * 1000))}" y1="${bulkTop + BULK_H}" ` +
        `y2="${bulkTop + BULK_H + 5}" stroke="#999"/>`,
      `<text x="${f(x(t * 1000))}" y="${bulkTop + BULK_H + 18}" text-anchor="middle" fill="#555">` +
        `${t} s</text>`,
    );
  }

  // Legend, with each path's headline numbers.
  const legendX = LEFT + PLOT_W + 16;
  let legendY = rttTop + 6;
  for (const id of paths) {
    const path = result.paths.find((p) => p.id === id);
    const lost = path?.ping
      ? `${path.ping.lost} of ${path.ping.sent} pings lost`
      : `${path?.requests.lost ?? 0} of ${path?.requests.sent ?? 0} requests lost`;
    const rtt = path?.ping?.rttMs ?? path?.requests.rttMs;
    out.push(
      `<circle cx="${legendX + 5}" cy="${legendY}" r="5" fill="${COLORS[id]}"/>`,
      `<text x="${legendX + 16}" y="${legendY + 4}" font-weight="bold">${NAMES[id]}</text>`,
      `<text x="${legendX + 16}" y="${legendY + 20}" fill="#444" font-size="11">${
        escape(lost)
      }</text>`,
      `<text x="${legendX + 16}" y="${legendY + 34}" fill="#444" font-size="11">${
        rtt ? `RTT p50 ${Math.round(rtt.p50)} ms` : ""
      }${
        path?.bulk ? `, bulk stall ${(path.bulk.longestStallMs / 1000).toFixed(1)} s` : ""
      }</text>`,
    );
    legendY += 56;
  }
  legendY += 6;
  for (const [fill, label] of [[COLORS.a, "link A stalls"], [COLORS.b, "link B stalls"]]) {
    out.push(
      `<rect x="${legendX}" y="${
        legendY - 9
      }" width="12" height="12" fill="${fill}" fill-opacity="0.18"/>`,
      `<text x="${legendX + 18}" y="${legendY + 2}">${label}</text>`,
    );
    legendY += 20;
  }
  out.push(
    `<rect x="${legendX}" y="${legendY - 9}" width="12" height="12" fill="url(#overlap)"/>`,
    `<text x="${legendX + 18}" y="${legendY + 2}">both at once</text>`,
  );
  out.push("</svg>");
  return out.join("\n") + "\n";
}

function probesOf(samples: RunSamples, id: PathId): Probe[] {
  const path = samples.paths[id];
  return path?.pings ?? path?.requests ?? [];
}

function bulkSeries(
  samples: RunSamples,
  id: PathId,
  endS: number,
): { atMs: number; mbps: number }[] {
  const bulk = samples.paths[id]?.bulk;
  if (!bulk || bulk.bins.length === 0) return [];
  const first = Math.max(0, Math.floor(bulk.bins[0].atMs / BULK_BIN_MS));
  const last = Math.min(
    Math.floor(endS * 1000 / BULK_BIN_MS),
    Math.floor(bulk.bins.at(-1)!.atMs / BULK_BIN_MS),
  );
  const bytes = new Map<number, number>();
  for (const bin of bulk.bins) {
    const index = Math.floor(bin.atMs / BULK_BIN_MS);
    bytes.set(index, (bytes.get(index) ?? 0) + bin.bytes);
  }
  const series: { atMs: number; mbps: number }[] = [];
  for (let i = first; i <= last; i++) {
    series.push({
      atMs: i * BULK_BIN_MS,
      mbps: (bytes.get(i) ?? 0) * 8 / (BULK_BIN_MS / 1000) / 1e6,
    });
  }
  return series;
}

function niceTicks(max: number, count: number): number[] {
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let t = 0; t <= max + 1e-9; t += step) ticks.push(Math.round(t * 100) / 100);
  return ticks;
}

function stallShading(
  stalls: StallSummary,
  x: (ms: number) => number,
  top: number,
  bottom: number,
): string[] {
  const out: string[] = [];
  for (const link of ["a", "b"] as const) {
    for (const w of stalls[link]) {
      const x0 = x(w.startMs);
      const width = Math.max(1, x(w.endMs) - x0);
      out.push(
        `<rect x="${f(x0)}" y="${top}" width="${f(width)}" height="${bottom - top}" ` +
          `fill="${COLORS[link]}" fill-opacity="0.13"/>`,
        `<text x="${f(x0 + 3)}" y="${top - 6 - (link === "b" ? 0 : 11)}" fill="${COLORS[link]}" ` +
          `font-size="10">${link.toUpperCase()} ${escape(w.mode)}</text>`,
      );
    }
  }
  for (const w of stalls.overlaps) {
    out.push(
      `<rect x="${f(x(w.startMs))}" y="${top}" width="${
        f(Math.max(1, x(w.endMs) - x(w.startMs)))
      }" ` +
        `height="${bottom - top}" fill="url(#overlap)"/>`,
    );
  }
  return out;
}
