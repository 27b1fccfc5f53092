/**
 * The paths the benchmark compares, each started fresh in the benchmark's
 * namespaces (`net.ts`) for every repetition and stopped after it: the plain
 * link, wireguard-go, OpenVPN, and tuxburst with one and with two uplinks.
 *
 * Each tunnel's own defaults are kept where they do not matter for the
 * comparison (MTU: tuxburst 1400, wireguard-go 1420, OpenVPN 1500 with its
 * default `mssfix`).
 *
 * @module
 */
import { ADDRESSES, type BenchNet, type BenchProcess } from "./net.ts";
import { tuxburstCommand } from "../lab/lab.ts";

/** The paths, in the order they are measured and shown. */
export const PEER_IDS = ["plain", "wireguard", "openvpn", "tuxburst1", "tuxburst2"] as const;
export type PeerId = typeof PEER_IDS[number];

/** A program a path needs, and the Debian package that has it. */
export interface Need {
  tool: string;
  pkg: string;
}

/** One path to measure. */
export interface Peer {
  readonly id: PeerId;
  readonly label: string;
  readonly needs: readonly Need[];
  /** Starts the tunnel; `boundS` bounds the life of its processes. Cleans up itself when it fails. */
  start(net: BenchNet, boundS: number): Promise<RunningPeer>;
}

/** A started path. */
export interface RunningPeer {
  /** The address in the server namespace that traffic through this path goes to. */
  target: string;
  /** The tunnel programs themselves (not their `ip netns exec`/`timeout` wrappers), the server's first. */
  pids: number[];
  /** The tunnel server's UDP port as `address:port`, for the garbage flood; none for the plain link. */
  floodTarget?: string;
  /** Stops the tunnel and reports what went wrong meanwhile. */
  stop(): Promise<StopReport>;
}

/** What a tunnel did wrong during a run, and what it logged at the end. */
export interface StopReport {
  /** A process that ended by itself, an unclean exit, a warning or error in its log. */
  problems: string[];
  /** tuxburst's final counters, per role. */
  counters?: Record<string, Record<string, number>>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The plain link: no tunnel, link A. */
const plain: Peer = {
  id: "plain",
  label: "plain veth",
  needs: [],
  start: () =>
    Promise.resolve({
      target: ADDRESSES.serverA,
      pids: [],
      stop: () => Promise.resolve({ problems: [] }),
    }),
};

/** Waits until one ping from the client to `target` is answered; throws after `timeoutMs`. */
async function waitForPath(net: BenchNet, target: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const result = await net.exec("client", ["ping", "-n", "-c", "1", "-W", "0.5", target], {
      timeoutS: 3,
    });
    if (result.code === 0) return;
    await sleep(100);
  }
  throw new Error(`no ping through the tunnel to ${target} within ${timeoutMs / 1000} s`);
}

/**
 * Starts `processes` (the server's first) with `ready`, resolves their PIDs
 * and returns the running peer; stops them all when anything fails on the way.
 */
async function startTunnel(
  processes: BenchProcess[],
  target: string,
  floodTarget: string | undefined,
  ready: () => Promise<void>,
  finish: (processes: BenchProcess[]) => Promise<StopReport> = stopProcesses,
): Promise<RunningPeer> {
  try {
    await ready();
    const pids = await Promise.all(processes.map((process) => process.realPid()));
    return { target, pids, floodTarget, stop: () => finish(processes) };
  } catch (error) {
    const details = processes.map((process) => process.describe()).join("\n");
    await Promise.all(processes.map((process) => process.stop()));
    throw new Error(`${error instanceof Error ? error.message : error}\n${details}`);
  }
}

/** Stops every process; each that had ended by itself, or exits uncleanly, is a problem. */
async function stopProcesses(processes: BenchProcess[]): Promise<StopReport> {
  const problems: string[] = [];
  const endedEarly = processes.filter((process) => !process.running);
  for (const process of endedEarly) {
    problems.push(`${process.label} ended by itself during the run: ${process.describe()}`);
  }
  await Promise.all(processes.map(async (process) => {
    const status = await process.stop();
    if (endedEarly.includes(process)) return;
    if (!status) problems.push(`${process.label} did not end after SIGTERM and SIGKILL`);
    else if (status.code !== 0) {
      problems.push(`${process.label} exited with code ${status.code} after SIGTERM`);
    }
  }));
  return { problems };
}

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** tuxburst with the given uplinks, from this checkout (`deno run -A main.ts`). */
function tuxburst(uplinks: string[]): Peer {
  const tunnel = { server: "10.99.0.1", client: "10.99.0.2" };
  return {
    id: uplinks.length === 1 ? "tuxburst1" : "tuxburst2",
    label: `tuxburst, ${uplinks.length} uplink${uplinks.length === 1 ? "" : "s"}`,
    needs: [],
    async start(net, boundS) {
      const key = randomHex(32);
      const server = `${net.dir}/tuxburst-server.toml`;
      const client = `${net.dir}/tuxburst-client.toml`;
      await Deno.writeTextFile(
        server,
        `[common]\ntun_addr = "${tunnel.server}/30"\n` +
          `[server]\nlisten = "0.0.0.0:40000"\nkey = "${key}"\n`,
        { mode: 0o600 },
      );
      await Deno.writeTextFile(
        client,
        `[common]\ntun_addr = "${tunnel.client}/30"\n` +
          `[client]\nhost = "${ADDRESSES.serverHost}:40000"\nkey = "${key}"\n` +
          `interfaces = ${JSON.stringify(uplinks)}\nkeepalive = 1\n`,
        { mode: 0o600 },
      );
      const run = (role: "serve" | "connect", config: string) =>
        tuxburstCommand(role, "-c", config, "--log-format", "json");
      const processes = [
        net.spawn("server", run("serve", server), { boundS, label: "tuxburst serve" }),
        net.spawn("client", run("connect", client), { boundS, label: "tuxburst connect" }),
      ];
      return await startTunnel(
        processes,
        tunnel.server,
        // The server is the same with two uplinks: its flood test runs once, with one.
        uplinks.length === 1 ? `${ADDRESSES.serverHost}:40000` : undefined,
        () => waitForPath(net, tunnel.server, 20_000),
        async (processes) => {
          const report = await stopProcesses(processes);
          report.counters = {};
          for (const process of processes) {
            const log = readTuxburstLog(process.stderr);
            report.problems.push(...log.problems.map((line) => `${process.label}: ${line}`));
            if (log.counters) report.counters[process.label] = log.counters;
          }
          return report;
        },
      );
    },
  };
}

/** Warnings and errors in tuxburst's JSON log, and the counters it logs when it stops. */
function readTuxburstLog(stderr: string): {
  problems: string[];
  counters?: Record<string, number>;
} {
  const problems = new Set<string>();
  let counters: Record<string, number> | undefined;
  for (const line of stderr.split("\n")) {
    if (!line.trim()) continue;
    let record: { level?: string; message?: string; properties?: { counters?: unknown } };
    try {
      record = JSON.parse(line);
    } catch {
      // Not a log record: Deno itself (an uncaught error) or a cut line.
      problems.add(line.slice(0, 300));
      continue;
    }
    const level = (record.level ?? "").toLowerCase();
    if (level === "warning" || level === "error" || level === "fatal") {
      problems.add(`${level}: ${record.message}`);
    }
    if (record.message?.startsWith("stopped; totals")) {
      counters = record.properties?.counters as Record<string, number> | undefined;
    }
  }
  return { problems: [...problems].slice(0, 10), counters };
}

/** The control sockets of wireguard-go, shared by all namespaces. */
const WIREGUARD_RUN_DIR = "/var/run/wireguard";

/**
 * wireguard-go with wireguard-tools, configured with `wg set` and `ip`.
 * Interface names differ per namespace and per run because the control
 * sockets of every namespace share `/var/run/wireguard`.
 */
const wireguard: Peer = {
  id: "wireguard",
  label: "wireguard-go",
  needs: [{ tool: "wireguard-go", pkg: "wireguard-go" }, { tool: "wg", pkg: "wireguard-tools" }],
  async start(net, boundS) {
    const names = { server: `wgs${Deno.pid}`, client: `wgc${Deno.pid}` };
    const tunnel = { server: "10.98.0.1", client: "10.98.0.2" };
    const keys = { server: "", client: "" };
    const pubs = { server: "", client: "" };
    for (const side of ["server", "client"] as const) {
      keys[side] = `${net.dir}/wg-${side}.key`;
      const key = (await net.exec(side, ["wg", "genkey"], { check: true })).stdout.trim();
      await Deno.writeTextFile(keys[side], key + "\n", { mode: 0o600 });
      pubs[side] = (await net.exec(side, ["wg", "pubkey"], { stdin: key + "\n", check: true }))
        .stdout.trim();
    }
    for (const name of Object.values(names)) {
      net.removeOnDispose(`${WIREGUARD_RUN_DIR}/${name}.sock`);
    }
    const processes = (["server", "client"] as const).map((side) =>
      net.spawn(side, ["wireguard-go", "-f", names[side]], {
        boundS,
        label: `wireguard-go ${names[side]}`,
      })
    );
    const removeSockets = async () => {
      for (const name of Object.values(names)) {
        await Deno.remove(`${WIREGUARD_RUN_DIR}/${name}.sock`).catch(() => {});
      }
    };
    const ready = async () => {
      for (const side of ["server", "client"] as const) {
        await waitForFile(`${WIREGUARD_RUN_DIR}/${names[side]}.sock`, 5000);
      }
      await net.exec("server", [
        "wg",
        "set",
        names.server,
        "private-key",
        keys.server,
        "listen-port",
        "51820",
        "peer",
        pubs.client,
        "allowed-ips",
        `${tunnel.client}/32`,
      ], { check: true });
      await net.exec("client", [
        "wg",
        "set",
        names.client,
        "private-key",
        keys.client,
        "peer",
        pubs.server,
        "endpoint",
        `${ADDRESSES.serverA}:51820`,
        "allowed-ips",
        `${tunnel.server}/32`,
      ], { check: true });
      for (const side of ["server", "client"] as const) {
        await net.ipBatch(side, [
          `addr add ${tunnel[side]}/24 dev ${names[side]}`,
          `link set ${names[side]} up`,
        ]);
      }
      await waitForPath(net, tunnel.server, 10_000);
    };
    try {
      const port = `${ADDRESSES.serverA}:51820`;
      return await startTunnel(processes, tunnel.server, port, ready, async (processes) => {
        const report = await stopProcesses(processes);
        await removeSockets();
        return report;
      });
    } catch (error) {
      await removeSockets();
      throw error;
    }
  },
};

async function waitForFile(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      await Deno.stat(path);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${path} did not appear within ${timeoutMs} ms`);
      await sleep(20);
    }
  }
}

/**
 * OpenVPN 2.6 in point-to-point TLS mode: self-signed certificates checked by
 * fingerprint, AES-256-GCM, no kernel offload (DCO needs a kernel module).
 */
const openvpn: Peer = {
  id: "openvpn",
  label: "OpenVPN, AES-256-GCM",
  needs: [{ tool: "openvpn", pkg: "openvpn" }, { tool: "openssl", pkg: "openssl" }],
  async start(net, boundS) {
    const tunnel = { server: "10.97.0.1", client: "10.97.0.2" };
    const fingerprints = { server: "", client: "" };
    for (const side of ["server", "client"] as const) {
      await net.exec(side, [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        `${net.dir}/ovpn-${side}.key`,
        "-out",
        `${net.dir}/ovpn-${side}.crt`,
        "-days",
        "2",
        "-subj",
        `/CN=${side}`,
      ], { check: true });
      const text = (await net.exec(side, [
        "openssl",
        "x509",
        "-in",
        `${net.dir}/ovpn-${side}.crt`,
        "-noout",
        "-fingerprint",
        "-sha256",
      ], { check: true })).stdout;
      fingerprints[side] = text.trim().split("=")[1];
    }
    const common = (side: "server" | "client") => [
      "openvpn",
      "--dev",
      "tbvpn",
      "--dev-type",
      "tun",
      "--proto",
      "udp",
      "--cert",
      `${net.dir}/ovpn-${side}.crt`,
      "--key",
      `${net.dir}/ovpn-${side}.key`,
      "--peer-fingerprint",
      fingerprints[side === "server" ? "client" : "server"],
      "--cipher",
      "AES-256-GCM",
      "--data-ciphers",
      "AES-256-GCM",
      "--disable-dco",
      "--verb",
      "3",
    ];
    const processes = [
      net.spawn("server", [
        ...common("server"),
        "--tls-server",
        "--dh",
        "none",
        "--local",
        ADDRESSES.serverA,
        "--lport",
        "1194",
        "--ifconfig",
        tunnel.server,
        tunnel.client,
      ], { boundS, label: "openvpn server" }),
      net.spawn("client", [
        ...common("client"),
        "--tls-client",
        "--remote",
        ADDRESSES.serverA,
        "1194",
        "--nobind",
        "--ifconfig",
        tunnel.client,
        tunnel.server,
      ], { boundS, label: "openvpn client" }),
    ];
    return await startTunnel(processes, tunnel.server, `${ADDRESSES.serverA}:1194`, async () => {
      await processes[1].waitForOutput(/Initialization Sequence Completed/, 20_000);
      await waitForPath(net, tunnel.server, 10_000);
    });
  },
};

/** Every path, by id. */
export const PEERS: Record<PeerId, Peer> = {
  plain,
  wireguard,
  openvpn,
  tuxburst1: tuxburst(["upa"]),
  tuxburst2: tuxburst(["upa", "upb"]),
};

/** Why `needs` are not met here (the first missing program, with its package), or undefined. */
export function missingNeed(needs: readonly Need[]): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"]);
  for (const need of needs) {
    const found = dirs.some((dir) => {
      try {
        return Deno.statSync(`${dir}/${need.tool}`).isFile;
      } catch {
        return false;
      }
    });
    if (!found) return `\`${need.tool}\` is not installed (apt-get install ${need.pkg})`;
  }
  return undefined;
}
