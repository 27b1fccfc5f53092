/**
 * The demo's command line.
 *
 * @example
 * ```ts
 * const options = parseDemoArgs(["--duration", "20", "--stalls-a", "fixed:4:3"]);
 * console.log(options.stalls.a); // "fixed:4:3"
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";

/** Settings of one run of the demo. */
export interface DemoOptions {
  /** Seconds of traffic. */
  durationS: number;
  /** Seed of link A's impairer; link B's is `seed + 1`, so their stalls are independent. */
  seed: number;
  /** Stall schedule of each link, as `tools/impair.ts --stalls` takes it. */
  stalls: { a: string; b: string };
  /** Base one-way delay of each link, ms. */
  delayMs: { a: number; b: number };
  /** ± jitter of each packet's delay, ms, on both links. */
  jitterMs: number;
  /** Random loss per packet (0..1), on both links, each way. */
  loss: number;
  /** What a stall does to packets: hold them until it ends, drop them, or either, per stall. */
  stallMode: "hold" | "drop" | "mixed";
  /** Rate of each bulk download, Mbit/s. */
  bulkMbps: number;
  json: boolean;
  /** Directory for the chart (and the JSON result); a new temporary one when absent. */
  outDir?: string;
  mptcp: boolean;
  help: boolean;
}

/** A command line the demo cannot run; the message says what to change. */
export class DemoUsageError extends Error {
  override name = "DemoUsageError";
}

/** The text of `--help`. */
export const HELP = `tuxburst demo: one command that shows what bonding two flaky links does.

Builds a lab of network namespaces (a client with two impaired uplinks A and B,
their ISPs with NAT, a server running \`tuxburst serve\`, a web host), runs
\`tuxburst connect\` on the client, and measures the same traffic at once over
link A alone, link B alone, through the tunnel, and over kernel MPTCP with one
subflow per link: a 20 Hz ping stream, a small request every 100 ms (like typing
in SSH), and a bulk TCP download. Prints a table per path and writes an SVG
chart. Needs root; touches nothing outside its own namespaces.

usage: deno task demo [options]

  --duration S        seconds of traffic (default 60)
  --seed N            seed of the random stalls, jitter and loss (default 1)
  --stalls SPEC       stall schedule of both links: random (default), none,
                      random:per-minute=3,min=1,max=4,long-fraction=0.15,long-max=10,
                      or fixed:START:DURATION[:MODE],… in seconds, e.g. fixed:5:2,15:3:drop
  --stalls-a SPEC     the schedule of link A only (overrides --stalls)
  --stalls-b SPEC     the schedule of link B only
  --stall-mode M      hold (packets wait until the stall ends), drop, or mixed (default)
  --delay-a MS        link A's one-way delay (default 15)
  --delay-b MS        link B's one-way delay (default 35)
  --jitter MS         ± jitter on both links (default 3)
  --loss P            random loss per packet on both links, 0..1 (default 0.01)
  --bulk-rate MBIT    rate of each bulk download in Mbit/s (default 8)
  --out DIR           where to write chart.svg, result.json and samples.json
                      (default: a new temporary directory)
  --json              print the results as one JSON object on stdout (progress stays on stderr)
  --no-mptcp          leave out the MPTCP comparison
  -h, --help          this text
`;

function number(
  values: Record<string, string | boolean | undefined>,
  name: string,
  fallback: number,
  check: (n: number) => boolean,
  what: string,
): number {
  const text = values[name];
  if (text === undefined) return fallback;
  const n = Number(text);
  if (typeof text !== "string" || text.trim() === "" || !Number.isFinite(n) || !check(n)) {
    throw new DemoUsageError(`--${name} "${text}": expected ${what}`);
  }
  return n;
}

/** Parses the demo's arguments; throws `DemoUsageError` for anything it cannot use. */
export function parseDemoArgs(args: string[]): DemoOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        duration: { type: "string" },
        seed: { type: "string" },
        stalls: { type: "string" },
        "stalls-a": { type: "string" },
        "stalls-b": { type: "string" },
        "stall-mode": { type: "string" },
        "delay-a": { type: "string" },
        "delay-b": { type: "string" },
        jitter: { type: "string" },
        loss: { type: "string" },
        "bulk-rate": { type: "string" },
        out: { type: "string" },
        json: { type: "boolean", default: false },
        "no-mptcp": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    throw new DemoUsageError(error instanceof Error ? error.message : String(error));
  }
  const { values } = parsed;
  const stallMode = values["stall-mode"] ?? "mixed";
  if (stallMode !== "hold" && stallMode !== "drop" && stallMode !== "mixed") {
    throw new DemoUsageError(`--stall-mode "${stallMode}": expected hold, drop or mixed`);
  }
  const stalls = values.stalls ?? "random";
  const ms = (n: number) => n >= 0 && n <= 10_000;
  return {
    durationS: number(values, "duration", 60, (n) => n >= 5 && n <= 3600, "5 to 3600 seconds"),
    seed: number(values, "seed", 1, (n) => Number.isInteger(n) && n >= 0, "a whole number ≥ 0"),
    stalls: { a: values["stalls-a"] ?? stalls, b: values["stalls-b"] ?? stalls },
    delayMs: {
      a: number(values, "delay-a", 15, ms, "0 to 10000 ms"),
      b: number(values, "delay-b", 35, ms, "0 to 10000 ms"),
    },
    jitterMs: number(values, "jitter", 3, ms, "0 to 10000 ms"),
    loss: number(values, "loss", 0.01, (n) => n >= 0 && n < 1, "a probability from 0 to below 1"),
    stallMode,
    bulkMbps: number(values, "bulk-rate", 8, (n) => n > 0 && n <= 200, "more than 0, at most 200"),
    json: values.json,
    outDir: values.out,
    mptcp: !values["no-mptcp"],
    help: values.help,
  };
}
