/**
 * One run of the demo: builds the lab with a wire namespace on each link,
 * starts `tuxburst serve` and `tuxburst connect` as a user would, turns on
 * the impairers, runs the same traffic over link A alone, link B alone, the
 * tunnel and kernel MPTCP at once, shows progress, and returns the samples.
 * Everything it starts lives in the lab's namespaces and is removed when the
 * run ends, fails, or is interrupted (the lab handles SIGINT and SIGTERM).
 *
 * @module
 */
import {
  ADDRESSES,
  Lab,
  type LabProcess,
  TOOLS_DIR,
  tuxburstCommand,
  waitUntil,
} from "../lab/lab.ts";
import type { DemoOptions } from "./options.ts";
import type { LinkId, PathId, PathSamples, StallWindow } from "./measure.ts";
import { ImpairerStream, PingStream, TrafficStream } from "./streams.ts";

const TUNNEL_PORT = 40000;
/** The server's and the client's tunnel addresses. */
const SERVER_TUN = "10.99.0.1";
/** Ports of the traffic servers on `srv`: plain TCP, and MPTCP. */
const TCP_PORT = 5101;
const MPTCP_PORT = 5102;
const PING_INTERVAL_MS = 50;
const REQUEST_INTERVAL_MS = 100;
/** Routing tables for traffic bound to each uplink's address (`ip rule from …`). */
const SOURCE_TABLES: Record<LinkId, number> = { a: 101, b: 102 };
/** Seconds that answers may still arrive after the last probe was sent. */
const GRACE_S = 3;

/** What a run produced, for `measure.ts`, `report.ts` and `chart.ts`. */
export interface RunSamples {
  /** The run's time 0, ms since the epoch: when the impairers started their stall clocks. */
  t0: number;
  /** ms since time 0 at which the traffic ended. */
  endMs: number;
  paths: Partial<Record<PathId, PathSamples>>;
  stalls: StallWindow[];
  /** Why MPTCP was left out, when it was. */
  mptcpSkipped?: string;
  /** TCP subflows seen per MPTCP connection (2 when both links carry one). */
  mptcpSubflows?: number;
  /** What the impairers counted, by link. */
  impairers: Partial<Record<LinkId, Record<string, unknown>>>;
  /** Things that went wrong in tuxburst (it exited, or did not stop cleanly). */
  problems: string[];
}

/** Where progress goes (stderr): whole lines, or a line that is rewritten in place. */
export interface Progress {
  /** A message that stays. */
  say(text: string): void;
  /** The live status line, replaced by the next one. */
  status(text: string): void;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function randomKey(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function serverToml(key: string): string {
  return `[common]
tun_name = "tuxburst0"
tun_addr = "${SERVER_TUN}/30"
mtu = 1400
[server]
listen = "0.0.0.0:${TUNNEL_PORT}"
key = "${key}"
`;
}

function clientToml(key: string): string {
  return `[common]
tun_name = "tuxburst0"
tun_addr = "10.99.0.2/30"
mtu = 1400
[client]
host = "${ADDRESSES.srv}:${TUNNEL_PORT}"
key = "${key}"
interfaces = ["upa", "upb"]
[client.routes]
tun_gateway = "${SERVER_TUN}"
metric = 5
`;
}

function ensureRunning(process: LabProcess): void {
  if (!process.running) throw new Error(`${process.label} exited early\n${process.describe()}`);
}

/** Why the demo cannot run on this machine, or `undefined`. */
export function whyNot(): string | undefined {
  const availability = Lab.available(["ss"]);
  if (!availability.ok) return availability.reason;
  return undefined;
}

/** Why MPTCP cannot be compared on this machine, or `undefined`. */
export function whyNoMptcp(): string | undefined {
  const availability = Lab.available(["mptcpize"]);
  if (!availability.ok) return availability.reason;
  try {
    Deno.statSync("/proc/sys/net/mptcp");
  } catch {
    return "the kernel has no MPTCP (CONFIG_MPTCP)";
  }
  return undefined;
}

/** Runs the demo once; see the module doc. */
export async function runDemo(options: DemoOptions, progress: Progress): Promise<RunSamples> {
  const mptcpSkipped = options.mptcp ? whyNoMptcp() : "left out (--no-mptcp)";
  const problems: string[] = [];
  progress.say("building the lab: client, two ISPs with an impaired link each, server, web host");
  await using lab = await Lab.create({ wires: true });
  const deno = (file: string, args: string[]) => [
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    file,
    ...args,
  ];
  const maxSeconds = String(options.durationS + 60);

  // The server side: tuxburst and the traffic servers.
  const key = randomKey();
  const serverConfig = `${lab.dir}/server.toml`;
  const clientConfig = `${lab.dir}/client.toml`;
  await Deno.writeTextFile(serverConfig, serverToml(key));
  await Deno.writeTextFile(clientConfig, clientToml(key));
  progress.say("starting tuxburst serve on srv and tuxburst connect on cli");
  const server = lab.spawn("srv", tuxburstCommand("serve", "-c", serverConfig), {
    label: "tuxburst serve",
  });
  const tcpServer = lab.tool("srv", "traffic.ts", [
    "server",
    "--port",
    String(TCP_PORT),
    "--max-seconds",
    maxSeconds,
  ]);
  const setup: Promise<unknown>[] = [tcpServer.waitForOutput(/"listening"/)];
  // Traffic bound to an uplink's address leaves through that uplink, also
  // while the tunnel's default route is in place (and MPTCP needs it).
  const cliSetup = [
    `rule add from ${ADDRESSES.cliA} lookup ${SOURCE_TABLES.a} pref 1001`,
    `route add default via ${ADDRESSES.ispACli} dev upa table ${SOURCE_TABLES.a}`,
    `rule add from ${ADDRESSES.cliB} lookup ${SOURCE_TABLES.b} pref 1002`,
    `route add default via ${ADDRESSES.ispBCli} dev upb table ${SOURCE_TABLES.b}`,
  ];
  let mptcpServer: LabProcess | undefined;
  if (!mptcpSkipped) {
    // NOTES.md's recipe: the first subflow over A, one more from B's address.
    cliSetup.push(
      "mptcp limits set subflow 2 add_addr_accepted 2",
      `mptcp endpoint add ${ADDRESSES.cliB} dev upb subflow`,
    );
    await lab.exec("srv", [
      "ip",
      "mptcp",
      "limits",
      "set",
      "subflow",
      "2",
      "add_addr_accepted",
      "2",
    ], {
      check: true,
    });
    mptcpServer = lab.spawn("srv", [
      "mptcpize",
      "run",
      ...deno(`${TOOLS_DIR}traffic.ts`, [
        "server",
        "--port",
        String(MPTCP_PORT),
        "--max-seconds",
        maxSeconds,
      ]),
    ], { label: "traffic server (MPTCP)" });
    setup.push(mptcpServer.waitForOutput(/"listening"/));
  }
  await lab.exec("cli", ["ip", "-batch", "-"], { stdin: cliSetup.join("\n") + "\n", check: true });
  await waitUntil(`tuxburst serve to bind UDP ${TUNNEL_PORT}`, 15_000, async () => {
    ensureRunning(server);
    const { stdout } = await lab.exec("srv", ["ss", "-Hunl", `sport = :${TUNNEL_PORT}`]);
    return stdout.includes(`:${TUNNEL_PORT}`);
  });
  const client = lab.spawn("cli", tuxburstCommand("connect", "-c", clientConfig), {
    label: "tuxburst connect",
  });
  const upSince = Date.now();
  await waitUntil("the tunnel to come up (a ping from cli to 10.99.0.1)", 20_000, async () => {
    ensureRunning(server);
    ensureRunning(client);
    return (await lab.ping("cli", SERVER_TUN, { count: 1, replyWaitMs: 500 })).received > 0;
  });
  await Promise.all(setup);
  progress.say(`tunnel up after ${((Date.now() - upSince) / 1000).toFixed(1)} s`);

  // The impairers: from here on each link has its delay, jitter, loss and stalls.
  const impairers: Record<LinkId, ImpairerStream> = {
    a: new ImpairerStream("a"),
    b: new ImpairerStream("b"),
  };
  const impairArgs = (link: LinkId) => [
    "--delay",
    String(options.delayMs[link]),
    "--jitter",
    String(options.jitterMs),
    "--loss",
    String(options.loss),
    "--stalls",
    options.stalls[link],
    "--stall-mode",
    options.stallMode,
    "--seed",
    String(options.seed + (link === "a" ? 0 : 1)),
    "--stats-interval",
    "0",
    // A bound on its life; it is stopped long before.
    "--duration",
    maxSeconds,
  ];
  progress.say(
    `impairing link A (${options.delayMs.a} ms) and link B (${options.delayMs.b} ms), ` +
      `±${options.jitterMs} ms, loss ${options.loss * 100} %, stalls ${
        options.stalls.a === options.stalls.b
          ? options.stalls.a
          : `A ${options.stalls.a}, B ${options.stalls.b}`
      } (${options.stallMode})`,
  );
  const impairerProcesses = await Promise.all(
    (["a", "b"] as const).map((link) =>
      lab.impair(link, impairArgs(link), { onLine: (line) => impairers[link].line(line) })
    ),
  );
  const t0 = Math.min(impairers.a.readyEpochMs!, impairers.b.readyEpochMs!);

  // The traffic, on every path at once.
  const pingCount = Math.round(options.durationS * 1000 / PING_INTERVAL_MS);
  const pings: Partial<Record<PathId, PingStream>> = {};
  const traffic: Partial<Record<PathId, TrafficStream>> = {};
  const processes: LabProcess[] = [];
  const startPing = (path: PathId, device: string | undefined, address: string) => {
    const stream = pings[path] = new PingStream(PING_INTERVAL_MS, pingCount, Date.now());
    processes.push(lab.spawn("cli", [
      "ping",
      "-n",
      "-D",
      "-i",
      (PING_INTERVAL_MS / 1000).toFixed(3),
      // Runs GRACE_S longer than the pings that count, so each of them had
      // that long to be answered (a held stall releases late answers).
      "-w",
      String(options.durationS + GRACE_S),
      ...(device ? ["-I", device] : []),
      address,
    ], { label: `ping ${path}`, keepBytes: 64 * 1024, onLine: (line) => stream.line(line) }));
  };
  const trafficArgs = (host: string, port: number, bind?: string) => [
    "client",
    "--host",
    host,
    "--port",
    String(port),
    ...(bind ? ["--bind", bind] : []),
    "--seconds",
    String(options.durationS),
    "--interval-ms",
    String(REQUEST_INTERVAL_MS),
    "--rate",
    String(Math.round(options.bulkMbps * 1e6 / 8)),
    "--grace-seconds",
    String(GRACE_S),
    "--max-seconds",
    maxSeconds,
  ];
  const startTraffic = (path: PathId, cmd: string[]) => {
    const stream = traffic[path] = new TrafficStream();
    processes.push(lab.spawn("cli", cmd, {
      label: `traffic ${path}`,
      keepBytes: 64 * 1024,
      onLine: (line) => stream.line(line),
    }));
  };
  startPing("a", "upa", ADDRESSES.srv);
  startPing("b", "upb", ADDRESSES.srv);
  startPing("tunnel", undefined, SERVER_TUN);
  const trafficTool = `${TOOLS_DIR}traffic.ts`;
  startTraffic("a", deno(trafficTool, trafficArgs(ADDRESSES.srv, TCP_PORT, ADDRESSES.cliA)));
  startTraffic("b", deno(trafficTool, trafficArgs(ADDRESSES.srv, TCP_PORT, ADDRESSES.cliB)));
  startTraffic("tunnel", deno(trafficTool, trafficArgs(SERVER_TUN, TCP_PORT)));
  if (!mptcpSkipped) {
    startTraffic("mptcp", [
      "mptcpize",
      "run",
      ...deno(trafficTool, trafficArgs(ADDRESSES.srv, MPTCP_PORT, ADDRESSES.cliA)),
    ]);
  }
  progress.say(
    `measuring for ${options.durationS} s: 20 Hz pings, a request every 100 ms and a ` +
      `${options.bulkMbps} Mbit/s download on each path`,
  );

  // Progress, once a second, until every probe is sent and answered (or given up on).
  const deadline = Date.now() + (options.durationS + GRACE_S + 20) * 1000;
  let mptcpSubflows: number | undefined;
  let lastProblemCheck = 0;
  while (processes.some((p) => p.running) && Date.now() < deadline) {
    await sleep(1000);
    const now = Date.now();
    progress.status(
      now - t0 < options.durationS * 1000
        ? statusLine(now, t0, options.durationS, pings, traffic, impairers)
        : `waiting up to ${GRACE_S} s for late answers`,
    );
    if (!mptcpSkipped && mptcpSubflows === undefined && now - t0 > 3000) {
      mptcpSubflows = await countSubflows(lab);
    }
    if (now - lastProblemCheck > 1000) {
      lastProblemCheck = now;
      for (const process of [server, client]) {
        if (!process.running && !problems.some((p) => p.startsWith(process.label))) {
          problems.push(`${process.label} exited during the run\n${process.describe(20)}`);
        }
      }
    }
  }
  progress.status("");
  for (const process of processes) {
    if (process.running) {
      problems.push(`${process.label} did not finish in time`);
      await process.stop("SIGINT", 2000);
    }
  }
  const endMs = Date.now() - t0;

  // Stop everything; tuxburst must exit 0 on SIGTERM, like for a user.
  await Promise.all(impairerProcesses.map((p) => p.stop("SIGTERM", 3000)));
  for (const process of [client, server]) {
    if (!process.running) continue;
    const status = await process.stop("SIGTERM", 5000);
    if (status.code !== 0) {
      problems.push(
        `${process.label} exited with ${status.signal ?? `code ${status.code}`} after SIGTERM\n${
          process.describe(20)
        }`,
      );
    }
  }
  for (const [path, stream] of Object.entries(traffic)) {
    if (!stream.report) {
      const process = processes.find((p) => p.label === `traffic ${path}`);
      problems.push(`the traffic client of ${path} printed no report\n${process?.describe(20)}`);
    }
  }

  const paths: Partial<Record<PathId, PathSamples>> = {};
  for (const path of ["a", "b", "tunnel", "mptcp"] as const) {
    const stream = traffic[path];
    if (!stream) continue;
    paths[path] = {
      pings: pings[path]?.probes(t0),
      requests: stream.requests(t0),
      bulk: stream.bulk(t0),
    };
  }
  return {
    t0,
    endMs,
    paths,
    stalls: [...impairers.a.windows(t0, endMs), ...impairers.b.windows(t0, endMs)],
    mptcpSkipped,
    mptcpSubflows,
    impairers: {
      ...(impairers.a.finalStats ? { a: impairers.a.finalStats } : {}),
      ...(impairers.b.finalStats ? { b: impairers.b.finalStats } : {}),
    },
    problems,
  };
}

/** TCP subflows per MPTCP connection from cli to the MPTCP server. */
async function countSubflows(lab: Lab): Promise<number> {
  const { stdout } = await lab.exec("cli", [
    "ss",
    "-Htn",
    "state",
    "established",
    `dport = :${MPTCP_PORT}`,
  ]);
  // Two connections (requests and bulk), each with its subflows.
  return stdout.split("\n").filter((line) => line.trim()).length / 2;
}

function percent(part: number, whole: number): string {
  return whole === 0 ? "  – " : `${Math.round(part / whole * 100)}%`.padStart(4);
}

/** `12 s / 60 s (48 s left) │ lost in the last 2 s: A 100% B 0% tuxburst 0% │ late requests … │ stalls …` */
function statusLine(
  now: number,
  t0: number,
  durationS: number,
  pings: Partial<Record<PathId, PingStream>>,
  traffic: Partial<Record<PathId, TrafficStream>>,
  impairers: Record<LinkId, ImpairerStream>,
): string {
  const elapsed = Math.floor((now - t0) / 1000);
  const names: Record<PathId, string> = { a: "A", b: "B", tunnel: "tuxburst", mptcp: "MPTCP" };
  // Pings sent 1-3 s ago: their answers had a second to arrive.
  const loss = (Object.entries(pings) as [PathId, PingStream][]).map(([path, stream]) => {
    const { sent, lost } = stream.lossBetween(now - 3000, now - 1000);
    return `${names[path]} ${percent(lost, sent)}`;
  }).join(" ");
  const late = (Object.entries(traffic) as [PathId, TrafficStream][]).map(([path, stream]) =>
    `${names[path]} ${stream.lateSoFar(now)}`
  ).join(" ");
  const stalls = (["a", "b"] as const).map((link) => {
    const stall = impairers[link].current(now);
    return stall
      ? `${link.toUpperCase()} ${stall.mode} ${(stall.leftMs / 1000).toFixed(1)} s left`
      : "";
  }).filter(Boolean).join(", ") || "none";
  const left = Math.max(0, durationS - elapsed);
  return `${String(elapsed).padStart(3)} s, ${
    String(left).padStart(3)
  } s left │ ping loss: ${loss} │ ` +
    `requests >1 s: ${late} │ stalling: ${stalls}`;
}
