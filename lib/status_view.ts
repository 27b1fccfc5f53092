/**
 * `tuxburst status`: turns the control socket's answer into a table for
 * people (or checks it before `--json` prints it), and the `--watch` loop.
 *
 * @module
 */
import { NoDaemonError, request } from "./control.ts";
import { UserError } from "./errors.ts";
import type { LinkStatus, PeerStatus, StatusReport } from "./link_stats.ts";

/** Clears the terminal and puts the cursor top left (`--watch`). */
export const CLEAR_SCREEN = "\x1b[H\x1b[2J";
/** `--watch` redraws this often. */
export const WATCH_INTERVAL_MS = 1000;

/** Asks the daemon behind `socket` for its status. */
export async function fetchStatus(socket: string): Promise<StatusReport> {
  const answer = await request(socket, { command: "status" });
  if (answer.ok !== true) {
    throw new UserError(`tuxburst at ${socket} refused: ${String(answer.error ?? "no reason")}`);
  }
  const status = answer.status as StatusReport | undefined;
  if (!status || !Array.isArray(status.peers) || typeof status.role !== "string") {
    throw new UserError(`${socket} answered without a status`);
  }
  return status;
}

/** `1536` → `"1.5 KiB"`. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** `3725` → `"1h02m"`; `42.3` → `"42s"`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
  }
  return `${Math.floor(s / 86400)}d${String(Math.floor(s / 3600) % 24).padStart(2, "0")}h`;
}

function ms(value: number | null): string {
  return value === null ? "-" : value < 100 ? value.toFixed(1) : String(Math.round(value));
}

function percent(value: number | null): string {
  return value === null ? "-" : `${Math.round(value)} %`;
}

function ago(seconds: number | null): string {
  if (seconds === null) return "never";
  return seconds < 10 ? `${seconds.toFixed(1)}s ago` : `${formatDuration(seconds)} ago`;
}

/** Pads every column to its widest cell; the first row is the header. */
function table(rows: string[][], indent: string): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) =>
    indent + row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i])).join("  ")
  );
}

function linkRow(link: LinkStatus): string[] {
  return [
    link.name,
    link.up ? "up" : "down",
    `${ms(link.rttSmoothedMs)}/${ms(link.rttRecentMs)}`,
    percent(link.lossPercent),
    percent(link.firstPercent),
    formatBytes(link.txBytes),
    formatBytes(link.rxBytes),
    ago(link.lastHeardSecondsAgo),
  ];
}

function peerLines(peer: PeerStatus, role: StatusReport["role"]): string[] {
  const session = peer.session
    ? `session ${peer.session.id}, age ${formatDuration(peer.session.ageSeconds)}`
    : "no session";
  const title = role === "client"
    ? `server ${peer.address ?? peer.name}: ${session}`
    : `peer ${peer.name}: ${session}`;
  if (peer.links.length === 0) return [title, "  (no paths)"];
  const header = [
    role === "client" ? "UPLINK" : "PATH",
    "STATE",
    "RTT ms avg/last",
    "LOSS",
    "FIRST",
    "TX",
    "RX",
    "LAST HEARD",
  ];
  return [title, ...table([header, ...peer.links.map(linkRow)], "  ")];
}

/**
 * The readable view: a title line, then per peer its session and one row per
 * link (uplink on a client, remembered address on the server), then the counters.
 */
export function renderStatus(status: StatusReport): string {
  const lines = [
    `tuxburst ${status.role} on ${status.tun} (pid ${status.pid}), up ${
      formatDuration(status.uptimeSeconds)
    }`,
  ];
  for (const peer of status.peers) lines.push(...peerLines(peer, status.role));
  if (status.peers.length === 0) lines.push("no peers");
  const c = status.counters;
  lines.push(
    `packets out ${c.outboundPackets ?? 0}, in ${c.inboundPackets ?? 0}; datagrams sent ${
      c.datagramsSent ?? 0
    }; duplicates dropped ${c.duplicates ?? 0}`,
  );
  const problems = Object.entries(c).filter(([name, value]) =>
    value > 0 &&
    !["outboundPackets", "inboundPackets", "datagramsSent", "duplicates"].includes(name)
  );
  if (problems.length > 0) {
    lines.push(
      `drops and errors: ${problems.map(([name, value]) => `${name} ${value}`).join(", ")}`,
    );
  }
  return lines.join("\n") + "\n";
}

/**
 * Prints the status once, or every second until `signal` aborts (`--watch`).
 * Returns the exit code; a daemon that goes away while watched ends the
 * loop with one line.
 */
export async function showStatus(options: {
  socket: string;
  json: boolean;
  watch: boolean;
  write: (text: string) => void;
  signal?: AbortSignal;
  intervalMs?: number;
}): Promise<number> {
  const render = (status: StatusReport) =>
    options.json
      ? JSON.stringify(status, null, options.watch ? undefined : 2) + "\n"
      : renderStatus(status);
  const first = await fetchStatus(options.socket);
  if (!options.watch) {
    options.write(render(first));
    return 0;
  }
  let status = first;
  while (!options.signal?.aborted) {
    options.write(options.json ? render(status) : CLEAR_SCREEN + render(status));
    await sleep(options.intervalMs ?? WATCH_INTERVAL_MS, options.signal);
    if (options.signal?.aborted) break;
    try {
      status = await fetchStatus(options.socket);
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      const reason = error instanceof NoDaemonError ? "it stopped" : error.message;
      options.write(`tuxburst at ${options.socket} went away (${reason})\n`);
      return 1;
    }
  }
  return 0;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
