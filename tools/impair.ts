/**
 * The impairment program: a bad ISP on one link, since this kernel has no
 * `netem`. It adds delay, jitter, random loss and stalls to every packet
 * that the kernel routes into its TUN device, in both directions, and
 * writes each one back into the same TUN when it is due. Run it inside a
 * network namespace, never in the root one (see shared/LAB.md):
 *
 *     ip netns exec NS deno run -A tools/impair.ts --tun imp0 --delay 20 --jitter 3 \
 *       --loss 0.01 --stalls random --stall-mode mixed --seed 1 --client-net 10.1.1.0/24
 *
 * It prints JSON lines on stdout (`t` is milliseconds since "ready"):
 *
 *     {"event":"ready","epochMs":1767000000000,"tun":"imp0","seed":1,...}
 *     {"event":"stall_start","t":5000,"durationMs":2000,"mode":"drop","endT":7000}
 *     {"event":"stall_end","t":7000,"durationMs":2000,"mode":"drop","dropped":42,"held":0}
 *     {"event":"stats","t":8000,"received":..,"released":..,"lost":..,"lateness":{..},...}
 *
 * and a last `stats` line with `"final":true` when it ends (SIGTERM, SIGINT
 * or --duration), with exit code 0. Stall times are exact schedule times:
 * no packet leaves the link in [t, t + durationMs).
 *
 * ## Wiring: a "wire" namespace between two hosts
 *
 * ```text
 *   [left] ==veth== a [wire] b ==veth== [right]
 *                       imp0 (this program)
 * ```
 *
 * In the wire namespace, before the links exist (so they inherit it):
 *
 *     sysctl -w net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
 *       net.ipv4.conf.default.rp_filter=0
 *
 * then the veths `a` and `b` with addresses and routes to each side's
 * subnet (connected routes suffice), no NAT and no conntrack rules, and:
 *
 *     ip rule add iif a lookup 100
 *     ip rule add iif b lookup 100
 *     ip route add blackhole default table 100 metric 10   # optional, see below
 *     (start this program, wait for {"event":"ready"}: imp0 exists now)
 *     ip route add default dev imp0 table 100
 *
 * Every packet that comes in on `a` or `b` is routed into imp0; the program
 * writes it back into imp0, where it arrives with iif imp0, so the main
 * table routes it out of `b` or `a`. Each packet crossing the wire passes
 * the impairer exactly once (TTL drops by 2: the wire routes it twice).
 * Packets to the wire's own addresses (and ARP) are not impaired: the local
 * table comes first. When the program ends, the kernel deletes imp0 and its
 * route; without the blackhole route, table 100 is then empty and the link
 * works again unimpaired; with it, the link is dead until the next start.
 * rp_filter must be 0 on imp0 (hence `default`), because packets from the
 * left side come back in on imp0, not on `a`. Under heavy bursts, raise
 * the TUN's queue (`ip link set imp0 txqueuelen 10000`): it holds what the
 * kernel routed into imp0 before the program read it.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { openTun } from "../ffi/tun.ts";
import { PollReactor } from "../ffi/poll.ts";
import { UserError } from "../lib/errors.ts";
import {
  type Direction,
  Impairer,
  ScheduleError,
  settleModes,
  type Stall,
  type StallEvent,
  type StallPolicy,
  StallSchedule,
} from "../lib/impairment.ts";
import { directionByClientNet, ImpairLoop, type ImpairStats } from "../lib/impair_loop.ts";
import { deriveSeed, seededRandom } from "../lib/random.ts";

const HELP = `Usage: deno run -A tools/impair.ts [options]

A bad ISP on one link: delays, jitters, loses and stalls every packet routed
into its TUN device, then writes it back into the same device. Run it inside
a network namespace whose policy routing sends the link's packets into the
TUN (see the comment at the top of tools/impair.ts). Prints JSON lines.

Options:
  --tun NAME             TUN device to create (default: imp0)
  --address A/P          its address, only so that it exists (default: 10.255.255.1/32)
  --mtu BYTES            its MTU, at least the links' MTU (default: 1500)
  --delay MS             one-way delay, each direction (default: 0)
  --jitter MS            plus a uniform ±MS per packet; never reorders (default: 0)
  --loss P               probability 0..1 that a packet is lost (default: 0)
  --stalls SCHEDULE      none (default), random, random:KEY=VALUE,... or
                         fixed:START:DURATION[:MODE],... in seconds
                         (e.g. fixed:5:2,15:3.5:hold). random keys: per-minute (3),
                         min (1), max (4), long-fraction (0.15), long-max (10), min-gap (1)
  --stall-mode MODE      hold (keep packets, release at the end), drop, or mixed
                         (picks per stall) for stalls that name no mode (default: mixed)
  --seed N               seed of loss, jitter, random stalls and mixed picks
                         (default: random, printed in the "ready" line)
  --client-net CIDR      packets from this IPv4 net go "up", others "down"; each
                         direction keeps its own order (default: one queue for all)
  --queue-limit N        packets waiting at most, both directions (default: 20000)
  --queue-limit-bytes N  bytes waiting at most (default: 33554432)
  --stats-interval S     a stats line every S seconds, 0 for none (default: 1)
  --duration S           exit after S seconds (default: run until SIGTERM/SIGINT)
  -h, --help             show this help
`;

/** A command line that cannot be understood: exit code 2. */
class UsageError extends UserError {
  override name = "UsageError";
}

interface Settings {
  tun: string;
  address: string;
  prefixLength: number;
  mtu: number;
  delayMs: number;
  jitterMs: number;
  loss: number;
  stalls: StallSchedule;
  stallMode: StallPolicy;
  seed: number;
  clientNet?: string;
  direction: (packet: Uint8Array) => Direction;
  queueLimitPackets: number;
  queueLimitBytes: number;
  statsEveryMs: number;
  durationMs?: number;
}

function number(flag: string, text: string, min: number, max = Infinity, integer = false): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < min || value > max) {
    const range = max === Infinity ? `${min} or more` : `between ${min} and ${max}`;
    throw new UsageError(`--${flag} must be a number ${range}, got "${text}"`);
  }
  if (integer && !Number.isInteger(value)) {
    throw new UsageError(`--${flag} must be a whole number, got "${text}"`);
  }
  return value;
}

/** Reads the command line; `undefined` means --help was printed. */
function parseSettings(args: string[]): Settings | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        tun: { type: "string", default: "imp0" },
        address: { type: "string", default: "10.255.255.1/32" },
        mtu: { type: "string", default: "1500" },
        delay: { type: "string", default: "0" },
        jitter: { type: "string", default: "0" },
        loss: { type: "string", default: "0" },
        stalls: { type: "string", default: "none" },
        "stall-mode": { type: "string", default: "mixed" },
        seed: { type: "string" },
        "client-net": { type: "string" },
        "queue-limit": { type: "string", default: "20000" },
        "queue-limit-bytes": { type: "string", default: String(32 << 20) },
        "stats-interval": { type: "string", default: "1" },
        duration: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return undefined;

  const [address, prefix, extra] = values.address.split("/");
  if (extra !== undefined) throw new UsageError(`--address must be ADDRESS/PREFIX`);
  const seed = values.seed === undefined
    ? crypto.getRandomValues(new Uint32Array(1))[0] >>> 1
    : number("seed", values.seed, 0, 2 ** 32 - 1, true);
  const stallMode = values["stall-mode"];
  if (stallMode !== "hold" && stallMode !== "drop" && stallMode !== "mixed") {
    throw new UsageError(`--stall-mode must be hold, drop or mixed, got "${stallMode}"`);
  }
  const clientNet = values["client-net"];
  return {
    tun: values.tun,
    address,
    prefixLength: prefix === undefined ? 32 : number("address prefix", prefix, 0, 32, true),
    mtu: number("mtu", values.mtu, 68, 65_535, true),
    delayMs: number("delay", values.delay, 0),
    jitterMs: number("jitter", values.jitter, 0),
    loss: number("loss", values.loss, 0, 1),
    stalls: parseStalls(values.stalls, seed),
    stallMode,
    seed,
    clientNet,
    direction: clientNet === undefined ? () => "up" : directionByClientNet(clientNet),
    queueLimitPackets: number("queue-limit", values["queue-limit"], 0, Infinity, true),
    queueLimitBytes: number("queue-limit-bytes", values["queue-limit-bytes"], 0, Infinity, true),
    statsEveryMs: number("stats-interval", values["stats-interval"], 0) * 1000,
    durationMs: values.duration === undefined
      ? undefined
      : number("duration", values.duration, 0) * 1000,
  };
}

function parseStalls(text: string, seed: number): StallSchedule {
  try {
    return StallSchedule.parse(text, seed);
  } catch (error) {
    if (error instanceof ScheduleError) throw new UsageError(`--stalls: ${error.message}`);
    throw error;
  }
}

function emit(line: Record<string, unknown>): void {
  console.log(JSON.stringify(line));
}

function statsLine(t: number, stats: ImpairStats, final: boolean): Record<string, unknown> {
  return { event: "stats", t: Math.round(t), ...(final ? { final: true } : {}), ...stats };
}

async function run(settings: Settings): Promise<void> {
  const clock = { now: () => performance.now() };
  using tun = openTun({
    name: settings.tun,
    address: settings.address,
    prefixLength: settings.prefixLength,
    mtu: settings.mtu,
  });
  using reactor = new PollReactor();

  const stallRandom = () => seededRandom(deriveSeed(settings.seed, 2));
  const start = clock.now();
  const epochMs = Date.now();
  const since = (time: number) => Math.round((time - start) * 1000) / 1000;
  const impairer = new Impairer({
    delayMs: settings.delayMs,
    jitterMs: settings.jitterMs,
    loss: settings.loss,
    stalls: settings.stalls,
    stallMode: settings.stallMode,
    queueLimitPackets: settings.queueLimitPackets,
    queueLimitBytes: settings.queueLimitBytes,
    random: seededRandom(deriveSeed(settings.seed, 1)),
    stallRandom: stallRandom(),
    start,
    onStall: (event: StallEvent) => {
      const { stall } = event;
      const common = { t: event.atMs, durationMs: stall.durationMs, mode: stall.mode };
      if (event.kind === "start") {
        emit({ event: "stall_start", ...common, endT: stall.startMs + stall.durationMs });
      } else emit({ event: "stall_end", ...common, dropped: stall.dropped, held: stall.held });
    },
  });
  const loop = new ImpairLoop({
    tun,
    reactor,
    clock,
    impairer,
    direction: settings.direction,
    statsEveryMs: settings.statsEveryMs,
    onStats: (stats) => emit(statsLine(since(clock.now()), stats, false)),
    // poll() sleeps whole milliseconds: this centres the timing error on zero (±0.5 ms).
    earlyMs: 0.5,
    stopAt: settings.durationMs === undefined ? undefined : start + settings.durationMs,
  });

  // The stalls ahead, modes settled, when they are finitely many: for charts and tests.
  const plannedUntil = settings.stalls.kind !== "random" ? Infinity : settings.durationMs;
  const planned: Required<Stall>[] = [];
  if (plannedUntil !== undefined) {
    for (const stall of settleModes(settings.stalls, settings.stallMode, stallRandom())) {
      if (stall.startMs >= plannedUntil) break;
      planned.push(stall);
    }
  }
  emit({
    event: "ready",
    t: 0,
    epochMs,
    tun: tun.name,
    pid: Deno.pid,
    seed: settings.seed,
    delayMs: settings.delayMs,
    jitterMs: settings.jitterMs,
    loss: settings.loss,
    stalls: settings.stalls.description,
    stallMode: settings.stallMode,
    clientNet: settings.clientNet ?? null,
    ...(plannedUntil !== undefined ? { plannedStalls: planned } : {}),
  });

  const stop = () => loop.stop();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    await loop.run();
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
  }
  emit(statsLine(since(clock.now()), loop.stats(), true));
}

async function main(args: string[]): Promise<number> {
  try {
    const settings = parseSettings(args);
    if (!settings) {
      console.log(HELP);
      return 0;
    }
    await run(settings);
    return 0;
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    console.error(`impair: ${error.message}`);
    if (error instanceof UsageError) {
      console.error("Run with --help for the options.");
      return 2;
    }
    return 1;
  }
}

Deno.exit(await main(Deno.args));
