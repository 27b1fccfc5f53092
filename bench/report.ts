/**
 * The benchmark's result: medians over the repetitions, ratios to the plain
 * link and to wireguard-go, and the Markdown tables for the README.
 *
 * @module
 */
import type { Figures } from "./measure.ts";
import type { PeerId } from "./peers.ts";

/** One path's results over all repetitions. */
export interface Row {
  id: PeerId;
  label: string;
  /** `ok`: at least one repetition measured; `skipped`: cannot run here; `failed`: none measured. */
  status: "ok" | "skipped" | "failed";
  /** Why it was skipped. */
  skipped?: string;
  /** Every repetition that measured, in order. */
  runs: Figures[];
  /** Each figure's median over `runs` (peak memory: the largest). */
  median?: Figures;
  /** Ratios of the main figures to the plain link's medians. */
  vsPlain?: Ratios;
  /** tuxburst rows: ratios of the main figures to wireguard-go's medians. */
  vsWireguard?: Ratios;
  /** Repetitions that failed, with the reason. */
  failures: string[];
  /** What the tunnel did wrong while measured: processes that ended, warnings in its log. */
  problems: string[];
  /** tuxburst: its final counters per repetition and role. */
  counters?: Record<string, Record<string, number>>[];
}

/** The figures compared across rows. */
export const RATIO_KEYS = [
  "tcp1Mbps",
  "tcp4Mbps",
  "udp1300Kpps",
  "udp64Kpps",
  "pingStartP50Ms",
  "pingIdleP50Ms",
  "pingLoadedP50Ms",
  "cpuTcp1SecPerGbit",
  "rssMaxMiB",
] as const satisfies readonly (keyof Figures)[];
export type Ratios = Partial<Record<typeof RATIO_KEYS[number], number>>;

/** The whole run, as `--json` prints it. */
export interface BenchResult {
  /** The command line that made these figures (less `--json`, which changes only the output). */
  command: string;
  quick: boolean;
  repetitions: number;
  /** Length of each iperf3 test. */
  seconds: number;
  /** Prefix of the namespaces this run made (all removed at the end). */
  prefix: string;
  machine: { cpus: number; kernel: string };
  startedAt: string;
  durationS: number;
  rows: Row[];
  /** The Markdown report (what the run prints without `--json`). */
  markdown: string;
}

/** Median of the numbers among `values`; null when there are none. */
export function median(values: (number | null)[]): number | null {
  const sorted = values.filter((v): v is number => v !== null && Number.isFinite(v))
    .sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Each figure's median over `runs`; the peak memory is the largest seen. */
export function summarize(runs: Figures[]): Figures | undefined {
  if (runs.length === 0) return undefined;
  const result = {} as Record<keyof Figures, number | null>;
  for (const key of Object.keys(runs[0]) as (keyof Figures)[]) {
    result[key] = median(runs.map((run) => run[key]));
  }
  const rss = runs.map((run) => run.rssMaxMiB).filter((v) => v !== null);
  result.rssMaxMiB = rss.length ? Math.max(...rss) : null;
  return result as unknown as Figures;
}

/** `row`'s main figures over `base`'s; figures either lacks are left out. */
export function ratios(row: Figures, base: Figures): Ratios {
  const result: Ratios = {};
  for (const key of RATIO_KEYS) {
    const a = row[key];
    const b = base[key];
    if (a !== null && b !== null && b > 0) result[key] = a / b;
  }
  return result;
}

/** Fills in medians and ratios of every row that ran. */
export function finishRows(rows: Row[]): void {
  for (const row of rows) row.median = summarize(row.runs);
  const plain = rows.find((row) => row.id === "plain")?.median;
  const wireguard = rows.find((row) => row.id === "wireguard")?.median;
  for (const row of rows) {
    if (!row.median) continue;
    if (plain && row.id !== "plain") row.vsPlain = ratios(row.median, plain);
    if (wireguard && row.id.startsWith("tuxburst")) row.vsWireguard = ratios(row.median, wireguard);
  }
}

/** A number for a table: about three significant digits, no exponent. */
export function formatNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toString();
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  if (abs === 0) return "0";
  return Number(value.toPrecision(2)).toString();
}

/** A ratio for a table: `×` and two significant digits. */
export function formatRatio(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  return `×${value >= 10 ? Math.round(value) : value.toPrecision(2)}`;
}

function formatLoss(pct: number | null): string {
  if (pct === null) return "–";
  return `${pct < 0.05 ? "0" : formatNumber(pct)} %`;
}

function markdownTable(header: string[], rows: string[][]): string {
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((cells) => `| ${cells.join(" | ")} |`),
  ].join("\n");
}

/** The report: the figures table, the ratios table, and what was skipped, failed or misbehaved. */
export function renderMarkdown(result: Omit<BenchResult, "markdown">): string {
  const figuresHeader = [
    "path",
    "TCP 1 stream Mbit/s",
    "TCP 4 streams Mbit/s",
    "UDP 1300 B kpps (loss)",
    "UDP 64 B kpps (loss)",
    "ping just started p50 / p99 ms",
    "ping idle p50 / p99 ms",
    "ping loaded p50 / p99 ms",
    "tunnel CPU % (TCP 1)",
    "CPU s/Gbit (TCP 1)",
    "RSS max MiB",
  ];
  const figureRows = result.rows.map((row) => {
    const m = row.median;
    if (!m) {
      const why = row.status === "skipped"
        ? `skipped: ${row.skipped}`
        : `failed: ${firstLine(row.failures.at(-1) ?? "")}`;
      return [row.label, why, ...figuresHeader.slice(2).map(() => "–")];
    }
    return [
      row.label,
      formatNumber(m.tcp1Mbps),
      formatNumber(m.tcp4Mbps),
      `${formatNumber(m.udp1300Kpps)} (${formatLoss(m.udp1300LossPct)})`,
      `${formatNumber(m.udp64Kpps)} (${formatLoss(m.udp64LossPct)})`,
      `${formatNumber(m.pingStartP50Ms)} / ${formatNumber(m.pingStartP99Ms)}`,
      `${formatNumber(m.pingIdleP50Ms)} / ${formatNumber(m.pingIdleP99Ms)}`,
      `${formatNumber(m.pingLoadedP50Ms)} / ${formatNumber(m.pingLoadedP99Ms)}`,
      formatNumber(m.cpuTcp1Pct),
      formatNumber(m.cpuTcp1SecPerGbit),
      formatNumber(m.rssMaxMiB),
    ];
  });

  const ratioHeader = [
    "ratio",
    "TCP 1",
    "TCP 4",
    "UDP 1300 B",
    "UDP 64 B",
    "ping just started p50",
    "ping idle p50",
    "ping loaded p50",
    "CPU s/Gbit",
    "RSS max",
  ];
  const ratioRows: string[][] = [];
  const plain = result.rows.find((row) => row.id === "plain");
  const wireguard = result.rows.find((row) => row.id === "wireguard");
  const cells = (r: Ratios) => RATIO_KEYS.map((key) => formatRatio(r[key]));
  for (const row of result.rows) {
    if (row.vsPlain) ratioRows.push([`${row.label} / ${plain!.label}`, ...cells(row.vsPlain)]);
  }
  for (const row of result.rows) {
    if (row.vsWireguard) {
      ratioRows.push([`${row.label} / ${wireguard!.label}`, ...cells(row.vsWireguard)]);
    }
  }

  const floodHeader = [
    "under a garbage flood",
    "TCP 1 stream Mbit/s, no flood",
    "TCP 1 stream Mbit/s, flood",
    "share kept",
    "flood sent kpps",
    "server CPU % without / with flood",
    "dropped at the server's socket",
    "TCP 1 stream Mbit/s, decoy flood (kpps)",
  ];
  const floodRows = result.rows.flatMap((row) => {
    const m = row.median;
    if (!m || m.floodTcp1Mbps === null || m.floodTcp1Mbps === undefined) return [];
    return [[
      row.label,
      formatNumber(m.tcp1Mbps),
      formatNumber(m.floodTcp1Mbps),
      m.floodTcp1Ratio === null ? "–" : `${formatNumber(m.floodTcp1Ratio * 100)} %`,
      formatNumber(m.floodSentKpps),
      `${formatNumber(m.serverCpuTcp1Pct)} / ${formatNumber(m.floodServerCpuPct)}`,
      formatNumber(m.floodSocketDrops),
      `${formatNumber(m.decoyTcp1Mbps)} (${formatNumber(m.decoySentKpps)})`,
    ]];
  });

  const runs = result.repetitions === 1 ? "one run" : `medians of ${result.repetitions} runs`;
  const lines = [
    `Tunnel benchmark, ${runs}, ${result.seconds} s per iperf3 test, ` +
    `${result.machine.cpus} CPUs, Linux ${result.machine.kernel}: \`${result.command}\``,
    "",
    markdownTable(figuresHeader, figureRows),
  ];
  if (ratioRows.length) lines.push("", markdownTable(ratioHeader, ratioRows));
  if (floodRows.length) lines.push("", markdownTable(floodHeader, floodRows));
  lines.push(
    "",
    "UDP: iperf3 at full rate; kpps = thousands of datagrams delivered per second, loss = share " +
      "of those sent that never arrived. Ping: 100 per second; loaded = during the 1-stream TCP " +
      "test. Tunnel CPU: both ends' processes together, in the middle of the test " +
      "(100 % = one core); s/Gbit = CPU-seconds per Gbit delivered. RSS max: the largest peak " +
      "resident size (VmHWM) of one tunnel process. Ratios: medians over medians; below ×1 the " +
      "row has less of that figure (for ping and CPU less is better). Problems: a tunnel process " +
      "that ended or logged a warning, a second of TCP below 10 % of its mean (a stall), pings " +
      "lost right after the UDP floods. Garbage flood: the 1-stream TCP test again while another " +
      "namespace, on its own link to the server, sends random datagrams (0–1500 bytes) to the " +
      "tunnel server's port as fast as it can; share kept = flood over no-flood throughput of " +
      "the same set; server CPU = the tunnel's server process alone; dropped = datagrams the " +
      "server's namespace dropped for a full UDP receive buffer (garbage and tunnel alike); " +
      "decoy = the same flood to a closed port of the server, which costs the machine the " +
      "attacker's sender and the kernel's work but gives the tunnel nothing to do.",
  );
  const notes: string[] = [];
  for (const row of result.rows) {
    for (const failure of row.failures) notes.push(`- ${row.label}: failed: ${firstLine(failure)}`);
    for (const problem of row.problems) notes.push(`- ${row.label}: ${firstLine(problem)}`);
  }
  if (notes.length) lines.push("", "Problems seen:", "", ...notes);
  return lines.join("\n");
}

function firstLine(text: string): string {
  return text.split("\n")[0].replaceAll("|", "\\|");
}
