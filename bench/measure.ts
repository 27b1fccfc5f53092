/**
 * One measurement set over one path: ping at idle right after the path came
 * up, iperf3 TCP with 1 stream (with a ping under that load) and with 4, ping
 * at idle again (the tunnel has now run for a while, as a user's has), TCP
 * with 1 stream again while an
 * attacker floods the tunnel server's port with garbage, iperf3 UDP at full
 * rate with 1300- and 64-byte datagrams; and the CPU time and peak memory of
 * the tunnel's processes meanwhile, read from `/proc`.
 *
 * @module
 */
import type { BenchNet } from "./net.ts";

/** Every figure of one measurement set; `null` where it does not apply (no tunnel processes). */
export interface Figures {
  /** TCP, 1 stream, received Mbit/s. */
  tcp1Mbps: number;
  /** TCP, 4 streams, received Mbit/s. */
  tcp4Mbps: number;
  /** The slowest whole second of each TCP test after the first (a stall shows here), Mbit/s. */
  tcp1WorstSecondMbps: number;
  tcp4WorstSecondMbps: number;
  /** Segments TCP sent again in each test (loss inside the path). */
  tcp1Retransmits: number;
  tcp4Retransmits: number;
  /** UDP at full rate, 1300-byte datagrams: thousands delivered per second, and the share lost. */
  udp1300Kpps: number;
  udp1300LossPct: number;
  /** UDP at full rate, 64-byte datagrams. */
  udp64Kpps: number;
  udp64LossPct: number;
  /**
   * Ping round trip at idle in the first seconds after the path came up: a
   * JIT-compiled tunnel still runs code that is not yet optimized.
   */
  pingStartP50Ms: number;
  pingStartP99Ms: number;
  /** Ping round trip at idle after the TCP tests, and while the 1-stream TCP test runs. */
  pingIdleP50Ms: number;
  pingIdleP99Ms: number;
  pingLoadedP50Ms: number;
  pingLoadedP99Ms: number;
  /** Pings lost while the 1-stream TCP test runs, per cent. */
  pingLoadedLossPct: number;
  /** Pings lost right after the UDP floods, per cent: a path that does not recover shows here. */
  pingAfterFloodLossPct: number;
  /** CPU of the tunnel processes (both ends together), per cent of one core, during each test. */
  cpuTcp1Pct: number | null;
  cpuTcp4Pct: number | null;
  cpuUdp1300Pct: number | null;
  cpuUdp64Pct: number | null;
  /** CPU-seconds of the tunnel processes per Gbit delivered, in the 1- and 4-stream TCP tests. */
  cpuTcp1SecPerGbit: number | null;
  cpuTcp4SecPerGbit: number | null;
  /** Largest peak resident size (VmHWM) of any tunnel process, MiB. */
  rssMaxMiB: number | null;
  /** CPU of the tunnel's server process alone during the 1-stream TCP test, per cent of one core. */
  serverCpuTcp1Pct: number | null;
  /** TCP, 1 stream, while the attacker floods the server's port with garbage, Mbit/s. */
  floodTcp1Mbps: number | null;
  /** That over `tcp1Mbps` of the same set: the share of throughput the flood leaves. */
  floodTcp1Ratio: number | null;
  /** Garbage datagrams the attacker got out per second, thousands. */
  floodSentKpps: number | null;
  /** CPU of the tunnel's server process during the flood, per cent of one core. */
  floodServerCpuPct: number | null;
  /** Datagrams the server's namespace dropped for a full UDP receive buffer during the flood. */
  floodSocketDrops: number | null;
  /**
   * TCP, 1 stream, while the same flood goes to a closed port of the server
   * (a decoy): what the attacker's own sender and the kernel cost the
   * machine, without any work for the tunnel, Mbit/s.
   */
  decoyTcp1Mbps: number | null;
  /** Garbage datagrams the decoy flood got out per second, thousands. */
  decoySentKpps: number | null;
}

/** One measurement set's figures, and what looked wrong in it. */
export interface SetResult {
  figures: Figures;
  /** A TCP test that stalled for a second, pings lost after the floods. */
  problems: string[];
}

/** A second of TCP below this share of the test's mean counts as a stall. */
const STALL_SHARE = 0.1;
/** Pings sent right after the floods. */
const AFTER_FLOOD_PINGS = 50;

/** What a measurement set needs to know. */
export interface SetOptions {
  /** Length of each iperf3 test. */
  seconds: number;
  /** Pings at idle (at 100 per second). */
  idlePings: number;
  /** The tunnel's processes (real PIDs), for CPU and memory; empty for the plain link. */
  pids: number[];
  /** Called when a test starts, and with its result. */
  progress: (text: string) => void;
  /** The tunnel server's UDP port (`address:port`) to flood; no flood test without it. */
  floodTarget?: string;
  /** Flood processes (default `FLOOD_SENDERS`). */
  floodSenders?: number;
}

/** The program that floods: `fuzz.ts --rate 0 --mix random`. */
const FUZZ_TOOL = new URL("../lab/tools/fuzz.ts", import.meta.url).pathname;
/**
 * Flood processes. One already takes a whole core; on the 2-core machines
 * the benchmark runs on, more would measure the tunnel starved of CPU by
 * the attacker's own sender (a real attacker sends from another machine)
 * rather than the server's handling of garbage. `--flood-senders` raises it.
 */
export const FLOOD_SENDERS = 1;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const IPERF_PORT = 5201;
/** Ping interval: 100 per second, fast enough for percentiles, too few to load a link. */
const PING_INTERVAL_MS = 10;

/** Runs one measurement set against `target` (an address in the server namespace). */
export async function measureSet(
  net: BenchNet,
  target: string,
  options: SetOptions,
): Promise<SetResult> {
  const { seconds, pids, progress } = options;
  const problems: string[] = [];
  progress("ping at idle, just started");
  const start = await ping(net, target, options.idlePings);

  progress("TCP, 1 stream, with a ping under load");
  // The ping starts after TCP's slow start and ends before the test does.
  const loadedPings = Math.max(20, Math.floor((seconds - 1) * 1000 / PING_INTERVAL_MS));
  let loaded: PingStats | undefined;
  const tcp1 = await iperf(net, target, { seconds, pids, tcp: { streams: 1 } }, async () => {
    await sleep(500);
    loaded = await ping(net, target, loadedPings);
  });
  progress(
    `TCP, 1 stream: ${tcp1.mbps.toFixed(0)} Mbit/s${cpuText(tcp1)}; ` +
      `ping p50 ${start.p50} ms just started, ${loaded!.p50} ms loaded`,
  );

  progress("TCP, 4 streams");
  const tcp4 = await iperf(net, target, { seconds, pids, tcp: { streams: 4 } });
  progress(`TCP, 4 streams: ${tcp4.mbps.toFixed(0)} Mbit/s${cpuText(tcp4)}`);
  for (const [name, result] of [["TCP, 1 stream", tcp1], ["TCP, 4 streams", tcp4]] as const) {
    if (result.worstSecondMbps! < result.mbps * STALL_SHARE) {
      problems.push(
        `${name}: a second with only ${result.worstSecondMbps!.toFixed(1)} Mbit/s ` +
          `(mean ${result.mbps.toFixed(0)} Mbit/s): a stall`,
      );
    }
  }

  progress("ping at idle");
  const idle = await ping(net, target, options.idlePings);
  progress(`ping at idle: p50 ${idle.p50} ms (just started ${start.p50} ms)`);

  let flood: FloodResult | undefined;
  let decoy: FloodResult | undefined;
  if (options.floodTarget && pids.length > 0) {
    const senders = options.floodSenders ?? FLOOD_SENDERS;
    const decoyTarget = options.floodTarget.replace(/:\d+$/, `:${DECOY_PORT}`);
    progress(`TCP, 1 stream, with a garbage flood to the closed port ${decoyTarget}`);
    decoy = await floodedTcp(net, target, decoyTarget, senders, seconds, pids[0]);
    progress(
      `TCP, 1 stream beside the decoy flood: ${decoy.tcp.mbps.toFixed(0)} Mbit/s; ` +
        `flood ${decoy.sentKpps.toFixed(0)} kpps sent`,
    );
    progress(
      `TCP, 1 stream, with a garbage flood to ${options.floodTarget} (${senders} sender(s))`,
    );
    flood = await floodedTcp(net, target, options.floodTarget, senders, seconds, pids[0]);
    progress(
      `TCP, 1 stream under the flood: ${flood.tcp.mbps.toFixed(0)} Mbit/s ` +
        `(×${(flood.tcp.mbps / tcp1.mbps).toFixed(2)} of ${tcp1.mbps.toFixed(0)}); ` +
        `flood ${
          flood.sentKpps.toFixed(0)
        } kpps sent, ${flood.socketDrops} dropped at the socket; ` +
        `server CPU ${flood.tcp.cpuPct?.toFixed(0)} % (without the flood ${
          tcp1.serverCpuPct?.toFixed(0)
        } %)`,
    );
  }

  const udp: Record<1300 | 64, IperfResult> = {} as Record<1300 | 64, IperfResult>;
  for (const length of [1300, 64] as const) {
    progress(`UDP, ${length}-byte datagrams at full rate`);
    udp[length] = await iperf(net, target, { seconds, pids, udp: { length } });
    progress(
      `UDP, ${length} B: ${udp[length].kpps!.toFixed(1)} kpps delivered, ` +
        `${udp[length].lossPct!.toFixed(1)} % lost${cpuText(udp[length])}`,
    );
  }

  progress("ping after the floods");
  const after = await ping(net, target, AFTER_FLOOD_PINGS, { allowNoReply: true });
  progress(`ping after the floods: ${after.lossPct.toFixed(0)} % lost`);
  if (after.lossPct > 0) {
    problems.push(
      `${Math.round(after.lossPct * AFTER_FLOOD_PINGS / 100)} of ${AFTER_FLOOD_PINGS} pings ` +
        `lost right after the UDP floods`,
    );
  }

  const rss = pids.map(readPeakRssMiB).filter((value) => value !== undefined);
  const figures = roundAll({
    tcp1Mbps: tcp1.mbps,
    tcp4Mbps: tcp4.mbps,
    tcp1WorstSecondMbps: tcp1.worstSecondMbps!,
    tcp4WorstSecondMbps: tcp4.worstSecondMbps!,
    tcp1Retransmits: tcp1.retransmits!,
    tcp4Retransmits: tcp4.retransmits!,
    udp1300Kpps: udp[1300].kpps!,
    udp1300LossPct: udp[1300].lossPct!,
    udp64Kpps: udp[64].kpps!,
    udp64LossPct: udp[64].lossPct!,
    pingStartP50Ms: start.p50,
    pingStartP99Ms: start.p99,
    pingIdleP50Ms: idle.p50,
    pingIdleP99Ms: idle.p99,
    pingLoadedP50Ms: loaded!.p50,
    pingLoadedP99Ms: loaded!.p99,
    pingLoadedLossPct: loaded!.lossPct,
    pingAfterFloodLossPct: after.lossPct,
    cpuTcp1Pct: tcp1.cpuPct,
    cpuTcp4Pct: tcp4.cpuPct,
    cpuUdp1300Pct: udp[1300].cpuPct,
    cpuUdp64Pct: udp[64].cpuPct,
    cpuTcp1SecPerGbit: secondsPerGbit(tcp1),
    cpuTcp4SecPerGbit: secondsPerGbit(tcp4),
    rssMaxMiB: rss.length ? Math.max(...rss) : null,
    serverCpuTcp1Pct: tcp1.serverCpuPct,
    floodTcp1Mbps: flood ? flood.tcp.mbps : null,
    floodTcp1Ratio: flood && tcp1.mbps > 0 ? flood.tcp.mbps / tcp1.mbps : null,
    floodSentKpps: flood ? flood.sentKpps : null,
    floodServerCpuPct: flood ? flood.tcp.cpuPct : null,
    floodSocketDrops: flood ? flood.socketDrops : null,
    decoyTcp1Mbps: decoy ? decoy.tcp.mbps : null,
    decoySentKpps: decoy ? decoy.sentKpps : null,
  });
  return { figures, problems };
}

/** Every figure to three decimals: more digits than that are noise here. */
function roundAll(figures: Figures): Figures {
  const result = { ...figures };
  for (const key of Object.keys(result) as (keyof Figures)[]) {
    const value = result[key];
    if (value !== null) result[key] = Math.round(value * 1000) / 1000;
  }
  return result;
}

function cpuText(result: IperfResult): string {
  return result.cpuPct === null ? "" : `, tunnel CPU ${result.cpuPct.toFixed(0)} % of a core`;
}

/** CPU-seconds per Gbit: the share of a core used, over the Gbit delivered each second. */
function secondsPerGbit(result: IperfResult): number | null {
  if (result.cpuPct === null || result.mbps <= 0) return null;
  return (result.cpuPct / 100) / (result.mbps / 1000);
}

/** Round-trip percentiles of a ping run. */
export interface PingStats {
  p50: number;
  p99: number;
  lossPct: number;
}

/**
 * `count` pings at 100 per second from the client to `target`. Throws when
 * none is answered, unless `allowNoReply` (then the percentiles are NaN).
 */
export async function ping(
  net: BenchNet,
  target: string,
  count: number,
  { allowNoReply = false } = {},
): Promise<PingStats> {
  const deadlineS = Math.ceil(count * PING_INTERVAL_MS / 1000) + 2;
  const result = await net.exec("client", [
    "ping",
    "-n",
    "-c",
    String(count),
    "-i",
    String(PING_INTERVAL_MS / 1000),
    "-W",
    "1",
    "-w",
    String(deadlineS),
    target,
  ], { timeoutS: deadlineS + 3 });
  const rtts = [...result.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (rtts.length === 0 && !allowNoReply) {
    throw new Error(`no ping to ${target} was answered: ${result.stdout}${result.stderr}`.trim());
  }
  rtts.sort((a, b) => a - b);
  return {
    p50: rtts.length ? percentile(rtts, 0.5) : NaN,
    p99: rtts.length ? percentile(rtts, 0.99) : NaN,
    lossPct: Math.max(0, (count - rtts.length) / count * 100),
  };
}

/** The value below which `fraction` of the sorted `values` lie (nearest rank). */
export function percentile(sorted: number[], fraction: number): number {
  const rank = Math.ceil(fraction * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
}

/** One iperf3 test: TCP with some streams, or UDP at full rate with datagrams of one length. */
interface IperfTest {
  seconds: number;
  pids: number[];
  tcp?: { streams: number };
  udp?: { length: number };
}

/** What one iperf3 test delivered, and the tunnel's CPU meanwhile. */
interface IperfResult {
  /** Received Mbit/s (UDP: payload only). */
  mbps: number;
  /** UDP: thousands of datagrams delivered per second, and the share of those sent that was lost. */
  kpps?: number;
  lossPct?: number;
  /** TCP: the slowest whole second after the first, Mbit/s, and the segments sent again. */
  worstSecondMbps?: number;
  retransmits?: number;
  /** Tunnel processes' CPU in the middle of the test, per cent of one core; null without any. */
  cpuPct: number | null;
  /** The same for the first of them (the server) alone. */
  serverCpuPct: number | null;
}

/** A port nothing listens on in the server's namespace (discard), for the decoy flood. */
const DECOY_PORT = 9;

/** The 1-stream TCP test under a garbage flood. */
interface FloodResult {
  /** `cpuPct` is the server's alone. */
  tcp: IperfResult;
  sentKpps: number;
  /** UDP datagrams the server's namespace dropped for a full receive buffer meanwhile. */
  socketDrops: number;
}

/** `Udp: … RcvbufErrors` of the server's namespace (`/proc/net/snmp`). */
async function udpReceiveBufferErrors(net: BenchNet): Promise<number> {
  const { stdout } = await net.exec("server", ["cat", "/proc/net/snmp"], { check: true });
  const [names, values] = stdout.split("\n").filter((line) => line.startsWith("Udp: "));
  const at = names?.split(" ").indexOf("RcvbufErrors") ?? -1;
  return at > 0 ? Number(values.split(" ")[at]) : 0;
}

/**
 * The 1-stream TCP test while `senders` processes in the attacker's
 * namespace send random datagrams (0..1500 bytes) to `floodTarget` as fast
 * as they can, from before the test starts until after it ends.
 */
async function floodedTcp(
  net: BenchNet,
  target: string,
  floodTarget: string,
  senders: number,
  seconds: number,
  serverPid: number,
): Promise<FloodResult> {
  // An upper bound: the flood is stopped (SIGTERM, and it reports) as soon as the TCP test ends.
  const floodSeconds = seconds + 30;
  const flooders = Array.from({ length: senders }, (_, i) =>
    net.spawn("attacker", [
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      FUZZ_TOOL,
      "--to",
      floodTarget,
      "--rate",
      "0",
      "--mix",
      "random",
      "--seconds",
      String(floodSeconds),
      "--seed",
      String(i + 1),
    ], { boundS: floodSeconds + 30, label: `flood ${i + 1}` }));
  try {
    await Promise.all(flooders.map((flooder) => flooder.waitForOutput(/"sending"/, 15_000)));
    const dropsBefore = await udpReceiveBufferErrors(net);
    let tcp: IperfResult;
    const before = cpuSample([serverPid]);
    try {
      tcp = await iperf(net, target, { seconds, pids: [serverPid], tcp: { streams: 1 } });
    } catch (error) {
      // A tunnel that carries nothing under the flood (OpenVPN at times) is a result: 0 Mbit/s.
      if (
        !(error instanceof Error && /unable to connect|Connection timed out/.test(error.message))
      ) {
        throw error;
      }
      const cpuPct = cpuPercent(before, cpuSample([serverPid]));
      tcp = { mbps: 0, worstSecondMbps: 0, retransmits: 0, cpuPct, serverCpuPct: cpuPct };
    }
    const socketDrops = await udpReceiveBufferErrors(net) - dropsBefore;
    let pps = 0;
    for (const flooder of flooders) {
      if (!(await flooder.stop(10_000))) {
        throw new Error(`${flooder.label} did not end: ${flooder.describe()}`);
      }
      const report = flooder.stdout.split("\n").find((line) => line.includes('"report"'));
      if (!report) throw new Error(`${flooder.label} printed no report: ${flooder.describe()}`);
      pps += JSON.parse(report).pps;
    }
    await recovered(net, target);
    return { tcp, sentKpps: pps / 1000, socketDrops };
  } finally {
    await Promise.all(flooders.map((flooder) => flooder.stop(0)));
  }
}

/** How long a tunnel may take to carry traffic again once a flood has ended. */
const RECOVERY_S = 20;

/** Waits until a ping crosses the tunnel again after a flood; throws after `RECOVERY_S`. */
async function recovered(net: BenchNet, target: string): Promise<void> {
  const deadline = performance.now() + RECOVERY_S * 1000;
  while (performance.now() < deadline) {
    const result = await ping(net, target, 1, { allowNoReply: true });
    if (result.lossPct === 0) return;
  }
  throw new Error(`the tunnel carried nothing for ${RECOVERY_S} s after the garbage flood ended`);
}

/**
 * Runs an iperf3 server (one test only) in the server namespace and the
 * client in the client namespace, and reads the tunnel processes' CPU time
 * over the middle of the test (away from the start and the end, where iperf3
 * connects and exchanges results). `alongside` runs while the test does.
 */
async function iperf(
  net: BenchNet,
  target: string,
  test: IperfTest,
  alongside?: () => Promise<void>,
): Promise<IperfResult> {
  const { seconds, pids } = test;
  const server = net.spawn("server", [
    "iperf3",
    "-s",
    "-1",
    "-p",
    String(IPERF_PORT),
    "--forceflush",
  ], { boundS: seconds + 40, label: "iperf3 server" });
  try {
    await server.waitForOutput(/Server listening/, 5000);
    const args = [
      "iperf3",
      "-c",
      target,
      "-p",
      String(IPERF_PORT),
      "-t",
      String(seconds),
      "-J",
      "--connect-timeout",
      "5000",
    ];
    if (test.tcp) args.push("-P", String(test.tcp.streams));
    if (test.udp) args.push("-u", "-b", "0", "-l", String(test.udp.length));
    const client = net.spawn("client", args, { boundS: seconds + 30, label: "iperf3 client" });
    try {
      const margin = Math.min(1000, seconds * 200);
      const cpu = (async () => {
        await sleep(margin);
        const before = [cpuSample(pids), cpuSample(pids.slice(0, 1))];
        await sleep(seconds * 1000 - 2 * margin);
        const after = [cpuSample(pids), cpuSample(pids.slice(0, 1))];
        return pids.length
          ? { all: cpuPercent(before[0], after[0]), server: cpuPercent(before[1], after[1]) }
          : null;
      })();
      const [, cpuPcts, status] = await Promise.all([
        alongside?.(),
        cpu,
        client.wait((seconds + 35) * 1000),
      ]);
      if (!status) throw new Error(`iperf3 to ${target} did not end within ${seconds + 35} s`);
      return {
        ...parseIperf(client.stdout, test, client.stderr),
        cpuPct: cpuPcts?.all ?? null,
        serverCpuPct: cpuPcts?.server ?? null,
      };
    } finally {
      await client.stop(0);
    }
  } finally {
    await server.stop(1000);
  }
}

function parseIperf(
  stdout: string,
  test: IperfTest,
  stderr: string,
): Omit<IperfResult, "cpuPct" | "serverCpuPct"> {
  // deno-lint-ignore no-explicit-any
  let json: any;
  try {
    json = JSON.parse(stdout);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${stderr.trim() || stdout.slice(0, 500)}`);
  }
  if (json.error) throw new Error(`iperf3: ${json.error}`);
  const received = json.end?.sum_received;
  if (!received?.seconds) throw new Error(`iperf3 printed no receiver summary`);
  const mbps = received.bits_per_second / 1e6;
  if (!test.udp) {
    // Whole seconds after the first (slow start); the last may be a sliver.
    const seconds: number[] = (json.intervals ?? [])
      .map((interval: { sum: { seconds: number; bits_per_second: number } }) => interval.sum)
      .filter((sum: { seconds: number }) => sum.seconds > 0.5)
      .slice(1)
      .map((sum: { bits_per_second: number }) => sum.bits_per_second / 1e6);
    return {
      mbps,
      worstSecondMbps: seconds.length ? Math.min(...seconds) : mbps,
      retransmits: json.end?.sum_sent?.retransmits ?? 0,
    };
  }
  const delivered = received.packets - received.lost_packets;
  const sent = json.end?.sum_sent?.packets ?? received.packets;
  return {
    mbps,
    kpps: delivered / received.seconds / 1000,
    lossPct: sent > 0 ? Math.max(0, (1 - delivered / sent) * 100) : 0,
  };
}

/** Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat` (USER_HZ, 100 on Linux). */
const CLOCK_TICKS = 100;

interface CpuSample {
  ticks: number;
  atMs: number;
}

/** utime + stime of all threads of each process, summed. */
function cpuSample(pids: number[]): CpuSample {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // The process ended; the caller finds out when stopping it.
    }
  }
  return { ticks, atMs: performance.now() };
}

function cpuPercent(before: CpuSample, after: CpuSample): number {
  const cpuSeconds = (after.ticks - before.ticks) / CLOCK_TICKS;
  return cpuSeconds / ((after.atMs - before.atMs) / 1000) * 100;
}

/** Peak resident size (VmHWM) of a process, MiB; undefined when it is gone. */
export function readPeakRssMiB(pid: number): number | undefined {
  return readStatusMiB(pid, "VmHWM");
}

/** Resident size now (VmRSS) of a process, MiB; undefined when it is gone. */
export function readRssMiB(pid: number): number | undefined {
  return readStatusMiB(pid, "VmRSS");
}

function readStatusMiB(pid: number, field: "VmHWM" | "VmRSS"): number | undefined {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}
