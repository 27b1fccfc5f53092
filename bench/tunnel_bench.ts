/**
 * tuxburst against the plain link and the two VPNs a user would compare it
 * with, in one run, on the same veth: two network namespaces joined by two
 * veth pairs, no impairment (see `net.ts`). For each path (plain veth,
 * wireguard-go, OpenVPN 2.6 with AES-256-GCM, tuxburst with one and with two
 * uplinks) it measures iperf3 TCP with 1 and 4 streams, TCP with 1 stream
 * while an attacker's namespace floods the tunnel server's port with garbage
 * (the share of throughput left, the flood's rate, the server's CPU), iperf3
 * UDP at full rate with 1300- and 64-byte datagrams, ping at idle and under
 * load, and the tunnel's CPU time and peak memory (see `measure.ts`); repeats everything,
 * each path freshly started each time, and prints the medians with ratios to
 * the plain link and to wireguard-go (see `report.ts`).
 *
 *     sudo deno task bench [--quick] [--reps N] [--seconds S] [--only LIST]
 *                          [--flood-senders N] [--json]
 *
 * Absolute numbers on a shared machine move by ±20 % from run to run; compare
 * the ratios. A path whose programs are missing is skipped with the Debian
 * package to install. Root only; everything it starts is bounded in time,
 * and removed at the end, also on failure and on Ctrl-C.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { BenchNet } from "./net.ts";
import { type Figures, FLOOD_SENDERS, measureSet } from "./measure.ts";
import { missingNeed, PEER_IDS, type PeerId, PEERS } from "./peers.ts";
import { type BenchResult, finishRows, renderMarkdown, type Row } from "./report.ts";

const USAGE = `Usage: sudo deno task bench [options]

Measures plain veth, wireguard-go, OpenVPN and tuxburst (1 and 2 uplinks) in
one run, in network namespaces of its own, and prints Markdown tables.

Options:
  --quick          1 repetition of 3-second tests (under two minutes)
  --reps N         repetitions; the table shows medians (default 3; quick 1)
  --seconds S      length of each iperf3 test (default 10; quick 3)
  --only LIST      paths to run, comma-separated: plain, wireguard, openvpn,
                   tuxburst (both), tuxburst1, tuxburst2 (default: all)
  --flood-senders N  processes flooding the tunnel server's port with garbage
                   during the flood test (default 1)
  --json           print one JSON object instead of the tables
  -h, --help       show this help

Progress goes to stderr. Exit status: 0 when every path that could run was
measured, 1 when one failed or the benchmark cannot run here, 2 for a wrong
command line.`;

/** Programs every path needs, with their Debian packages. */
const BASE_NEEDS = [
  { tool: "ip", pkg: "iproute2" },
  { tool: "iperf3", pkg: "iperf3" },
  { tool: "ping", pkg: "iputils-ping" },
  { tool: "sysctl", pkg: "procps" },
  { tool: "timeout", pkg: "coreutils" },
];

const ALIASES: Record<string, PeerId[]> = {
  tuxburst: ["tuxburst1", "tuxburst2"],
  "wireguard-go": ["wireguard"],
  wg: ["wireguard"],
};

interface Options {
  quick: boolean;
  reps: number;
  seconds: number;
  only: PeerId[];
  json: boolean;
  floodSenders: number;
}

class UsageError extends Error {}

function parseOptions(args: string[]): Options | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        quick: { type: "boolean", default: false },
        reps: { type: "string" },
        seconds: { type: "string" },
        only: { type: "string" },
        json: { type: "boolean", default: false },
        "flood-senders": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  if (values.help) return "help";
  const integer = (name: string, text: string | undefined, fallback: number, max: number) => {
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1 || value > max) {
      throw new UsageError(`--${name} must be a whole number from 1 to ${max}, got "${text}"`);
    }
    return value;
  };
  const only: PeerId[] = [];
  for (const name of (values.only ?? PEER_IDS.join(",")).split(",").map((s) => s.trim())) {
    const ids = ALIASES[name] ?? (PEER_IDS.includes(name as PeerId) ? [name as PeerId] : null);
    if (!ids) {
      throw new UsageError(
        `--only: unknown path "${name}"; use plain, wireguard, openvpn, tuxburst, tuxburst1, tuxburst2`,
      );
    }
    only.push(...ids);
  }
  return {
    quick: values.quick,
    reps: integer("reps", values.reps, values.quick ? 1 : 3, 50),
    seconds: integer("seconds", values.seconds, values.quick ? 3 : 10, 600),
    only: PEER_IDS.filter((id) => only.includes(id)),
    json: values.json,
    floodSenders: integer("flood-senders", values["flood-senders"], FLOOD_SENDERS, 16),
  };
}

const startedAt = performance.now();
function progress(text: string): void {
  const elapsed = ((performance.now() - startedAt) / 1000).toFixed(0).padStart(4);
  console.error(`[${elapsed} s] ${text}`);
}

async function runBenchmark(options: Options): Promise<BenchResult> {
  const rows: Row[] = options.only.map((id) => {
    const peer = PEERS[id];
    const skipped = missingNeed(peer.needs);
    if (skipped) progress(`${peer.label}: skipped: ${skipped}`);
    return {
      id,
      label: peer.label,
      status: skipped ? "skipped" : "ok",
      skipped,
      runs: [],
      failures: [],
      problems: [],
    };
  });
  const runnable = rows.filter((row) => row.status === "ok");
  const idlePings = options.quick ? 50 : 300;
  // Six iperf3 tests with their setup (two beside a flood), two idle pings, and the tunnel's start.
  const setSeconds = 6 * (options.seconds + 1) + 2 * idlePings / 100 + 9;
  const boundS = 6 * (options.seconds + 40) + 180;
  const total = runnable.length * options.reps;
  progress(
    `${total} measurement sets of about ${setSeconds.toFixed(0)} s each ` +
      `(${options.reps} × ${runnable.map((row) => row.label).join("; ")})`,
  );
  const wall = new Date();
  let prefix = "";
  {
    await using net = await BenchNet.create();
    prefix = net.prefix;
    let step = 0;
    for (let rep = 1; rep <= options.reps; rep++) {
      for (const row of runnable) {
        step++;
        const left = Math.round((total - step + 1) * setSeconds);
        const tag = `${step}/${total} ${row.label}${options.reps > 1 ? ` (run ${rep})` : ""}`;
        progress(`${tag}: starting (about ${left} s left)`);
        try {
          const figures = await measureOnce(net, row, rep, {
            seconds: options.seconds,
            idlePings,
            boundS,
            floodSenders: options.floodSenders,
            progress: (text) => progress(`${tag}: ${text}`),
          });
          row.runs.push(figures);
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          row.failures.push(`run ${rep}: ${message}`);
          progress(`${tag}: FAILED: ${message}`);
        }
      }
    }
  }
  for (const row of runnable) if (row.runs.length === 0) row.status = "failed";
  finishRows(rows);
  const result: Omit<BenchResult, "markdown"> = {
    command: ["sudo deno task bench", ...Deno.args.filter((arg) => arg !== "--json")].join(" "),
    quick: options.quick,
    repetitions: options.reps,
    seconds: options.seconds,
    prefix,
    machine: {
      cpus: navigator.hardwareConcurrency,
      kernel: Deno.osRelease(),
    },
    startedAt: wall.toISOString(),
    durationS: Math.round((performance.now() - startedAt) / 1000),
    rows,
  };
  return { ...result, markdown: renderMarkdown(result) };
}

/** Starts the path, measures one set, stops it; its problems and counters go into `row`. */
async function measureOnce(
  net: BenchNet,
  row: Row,
  rep: number,
  options: {
    seconds: number;
    idlePings: number;
    boundS: number;
    floodSenders: number;
    progress: (t: string) => void;
  },
): Promise<Figures> {
  const running = await PEERS[row.id].start(net, options.boundS);
  let figures: Figures | undefined;
  try {
    const set = await measureSet(net, running.target, {
      ...options,
      pids: running.pids,
      floodTarget: running.floodTarget,
    });
    figures = set.figures;
    for (const problem of set.problems) {
      row.problems.push(`run ${rep}: ${problem}`);
      options.progress(`PROBLEM: ${problem}`);
    }
  } finally {
    const report = await running.stop();
    for (const problem of report.problems) {
      row.problems.push(`run ${rep}: ${problem}`);
      options.progress(`PROBLEM: ${problem.split("\n")[0]}`);
    }
    if (report.counters) (row.counters ??= []).push(report.counters);
  }
  return figures;
}

async function main(): Promise<number> {
  let options;
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`bench: ${error.message} (see --help)`);
    return 2;
  }
  if (options === "help") {
    console.log(USAGE);
    return 0;
  }
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) {
    console.error(
      "bench: run as root on Linux (sudo deno task bench): it builds network namespaces",
    );
    return 1;
  }
  const missing = missingNeed(BASE_NEEDS);
  if (missing) {
    console.error(`bench: ${missing}`);
    return 1;
  }
  let result;
  try {
    result = await runBenchmark(options);
  } catch (error) {
    // The namespaces could not be made or removed: nothing was measured, or cleanup failed.
    console.error(`bench: ${error instanceof Error ? error.message : error}`);
    return 1;
  }
  console.log(options.json ? JSON.stringify(result, null, 2) : `\n${result.markdown}`);
  return result.rows.some((row) => row.status === "failed") ? 1 : 0;
}

Deno.exit(await main());
