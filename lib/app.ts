/**
 * Builds a running client or server from a checked config and a `Platform`
 * (the real kernel in `main.ts`, fakes in tests). Whatever fails half-way is
 * undone before the error leaves, so nothing half-configured stays behind.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { ClientRole } from "./client.ts";
import { type ClientConfig, type CommonConfig, loadConfig, type ServerConfig } from "./config.ts";
import { ControlServer, controlSocketPath } from "./control.ts";
import type { CipherFactory } from "./crypto.ts";
import { Endpoint, parseIpv4, parseIpv6 } from "./endpoint.ts";
import { UserError } from "./errors.ts";
import type { InterfaceInfo } from "./interfaces.ts";
import type { Clock, DatagramShape, Reactor, Tun, UdpSocket } from "./io.ts";
import type { StatusReport, StatusSource } from "./link_stats.ts";
import { type NatSpec, natTableName, tunnelSubnet } from "./nat.ts";
import { ServerRole } from "./server.ts";
import { type Counters, Transport } from "./transport.ts";
import { type Role, Tunnel } from "./tunnel.ts";
import { inboundShape } from "./wire.ts";

const log = getLogger(["tuxburst"]);

/** Everything the tunnel needs from the operating system. */
export interface Platform {
  openTun(options: {
    name: string;
    address: string;
    prefixLength: number;
    mtu: number;
    /** `common.tun_addr6`: IPv6 on the device too (otherwise it is off there). */
    address6?: { address: string; prefixLength: number };
  }): Tun;
  openUdp(
    options: { family: 4 | 6; device?: string; bind?: Endpoint; accept?: DatagramShape },
  ): UdpSocket;
  addDefaultRoute(options: { device: string; gateway: string; metric: number }): void;
  /**
   * Makes strict reverse-path filtering on an uplink loose, because with the
   * tunnel's default route the server's replies would fail it. Returns the
   * undo, or `undefined` when nothing changed.
   */
  loosenReversePathFilter(device: string): (() => void) | undefined;
  /**
   * Turns on IP forwarding and masquerades the tunnel subnet out of the
   * uplink (`server.nat`). Returns the undo, which removes exactly those
   * rules and puts forwarding back as it was.
   */
  enableNat(spec: NatSpec): Promise<() => Promise<void>>;
  /** The machine's interfaces, for uplink hotplug and `interfaces = ["*"]`; none watched when absent. */
  listInterfaces?: () => InterfaceInfo[];
  createReactor(): Reactor;
  /**
   * Resolves a DNS name to its IP addresses (A and AAAA records); IP
   * literals never reach it. A single string is one address.
   */
  resolveHost(host: string): Promise<string | string[]>;
  clock: Clock;
  /** The packet cipher to use; WebCrypto when absent. */
  makeCipher?: CipherFactory;
  /**
   * Where the control socket `<tun_name>.sock` for `tuxburst status` goes
   * (`/run/tuxburst`); none when absent (tests with fakes).
   */
  controlDir?: string;
}

/** A started tunnel: `done` settles when it has stopped and released everything. */
export interface Running {
  readonly tunnel: Tunnel;
  readonly role: Role;
  readonly counters: Counters;
  readonly done: Promise<void>;
  stop(): void;
  /**
   * (Server) re-reads the config file and applies its peers (SIGHUP); a bad
   * config is logged as one line and the running one stays. Never throws.
   */
  reload?(): Promise<void>;
  /** What `tuxburst status` shows. */
  status(): StatusReport;
}

/** How often the drop counters are logged, when they changed. */
const STATS_INTERVAL_MS = 60_000;

/**
 * Starts the client: uplink sockets, TUN, default route, then the loop.
 *
 * @example
 * ```ts
 * const running = await startClient(await loadConfig("client.toml", "client"), kernelPlatform);
 * Deno.addSignalListener("SIGINT", () => running.stop());
 * await running.done;
 * ```
 */
export async function startClient(config: ClientConfig, platform: Platform): Promise<Running> {
  const servers = await resolveServers(config, platform);
  const server = servers[0];
  const transport = new Transport(platform.makeCipher);
  const restoreFilters: Array<() => void> = [];
  // An IPv6 socket also reaches IPv4 addresses (as ::ffff:a.b.c.d), so one socket serves both.
  let family: 4 | 6 = servers.some((s) => s.family === 6) ? 6 : 4;
  const openUplink = (name: string) => {
    let socket: UdpSocket;
    try {
      socket = platform.openUdp({ family, device: name, accept: inboundShape("client") });
    } catch (error) {
      // A kernel without IPv6: IPv4 server addresses still work.
      if (family !== 6 || !servers.some((s) => s.family === 4) || !/IPv6/.test(String(error))) {
        throw error;
      }
      log.warn("IPv6 is not available here; using the server's IPv4 addresses only");
      family = 4;
      socket = platform.openUdp({ family, device: name, accept: inboundShape("client") });
    }
    if (config.routes) {
      const restore = platform.loosenReversePathFilter(name);
      if (restore) {
        restoreFilters.push(restore);
        log.info(
          "uplink {uplink}: strict reverse-path filtering set to loose while tuxburst runs",
          {
            uplink: name,
          },
        );
      }
    }
    return socket;
  };
  const role = await ClientRole.create({
    server,
    servers,
    interfaces: config.interfaces,
    keepaliveMs: config.keepaliveMs,
    psk: config.key,
    transport,
    openUplink,
    listInterfaces: platform.listInterfaces,
    exclude: [config.common.tunName],
    clock: platform.clock,
  }, platform.clock.now());
  const restoreAll = () => restoreFilters.forEach((restore) => restore());
  return withCleanup([restoreAll, () => role.close()], async (undo) => {
    const control = await startControl(platform, config.common, undo);
    const tun = openTun(platform, config.common);
    undo.push(() => tun.close());
    if (config.routes) {
      const { gateway, metric } = config.routes;
      platform.addDefaultRoute({ device: tun.name, gateway, metric });
      log.info("default route via {gateway} dev {device} metric {metric}", {
        gateway: config.routes.gateway,
        device: tun.name,
        metric: config.routes.metric,
      });
      const gateway6 = config.routes.gateway6;
      if (gateway6 !== undefined) {
        // IPv6 turns metric 0 into 1024, which would lose to the uplinks' own default routes.
        const metric = Math.max(1, config.routes.metric);
        platform.addDefaultRoute({ device: tun.name, gateway: gateway6, metric });
        log.info("IPv6 default route via {gateway} dev {device} metric {metric}", {
          gateway: gateway6,
          device: tun.name,
          metric,
        });
      }
    }
    log.info(
      "client started: TUN {tun} {address}/{prefix}{address6}, server {server}, uplinks {uplinks}",
      {
        tun: tun.name,
        address6: describeAddress6(config.common),
        address: config.common.tunAddress,
        prefix: config.common.tunPrefixLength,
        server: servers.map((s) => s.key).join(", "),
        uplinks: config.interfaces.join(", "),
      },
    );
    role.reportUplinks();
    const running = run(tun, role, transport, platform, { kind: "client", config, control });
    running.done.then(restoreAll, restoreAll);
    return running;
  });
}

/** Starts the server: the listening socket, TUN, NAT if configured, then the loop. */
export async function startServer(config: ServerConfig, platform: Platform): Promise<Running> {
  const transport = new Transport(platform.makeCipher);
  return await withCleanup([], async (undo) => {
    // Before the UDP port: a second server with the same tun_name gets the clear message.
    const control = await startControl(platform, config.common, undo);
    const socket = platform.openUdp({
      family: config.listen.family,
      bind: config.listen,
      accept: inboundShape("server"),
    });
    undo.push(() => socket.close());
    const role = await ServerRole.create({
      socket,
      peers: config.peers,
      pathTimeoutMs: config.pathTimeoutMs,
      transport,
    });
    const tun = openTun(platform, config.common);
    undo.push(() => tun.close());
    // After the TUN device: its name is exclusive, so a NAT table named after it is ours or stale.
    const nat: NatSpec | undefined = config.nat === undefined ? undefined : {
      tunName: tun.name,
      subnet: tunnelSubnet(config.common.tunAddress, config.common.tunPrefixLength),
      uplink: config.nat,
    };
    const disableNat = nat && await platform.enableNat(nat);
    if (disableNat) undo.push(disableNat);
    log.info("server started: TUN {tun} {address}/{prefix}{address6}, listening on {listen}", {
      tun: tun.name,
      address6: describeAddress6(config.common),
      address: config.common.tunAddress,
      prefix: config.common.tunPrefixLength,
      listen: config.listen.key,
    });
    if (config.peers.some((peer) => peer.tunAddress !== undefined)) {
      log.info("peers: {peers}", {
        peers: config.peers.map((peer) =>
          [peer.name, peer.tunAddress, peer.tunAddress6].filter(Boolean).join(" ")
        ).join(", "),
      });
    }
    const running = {
      ...run(tun, role, transport, platform, { kind: "server", config, control }),
      reload: reloader(config, role),
    };
    if (!nat || !disableNat) return running;
    log.info(
      "NAT on: {subnet} masqueraded out of {uplink}, IP forwarding on (nftables table ip {table}, removed at exit)",
      { subnet: nat.subnet, uplink: nat.uplink, table: natTableName(nat.tunName) },
    );
    const done = running.done.finally(async () => {
      try {
        await disableNat();
      } catch (error) {
        log.warn("{message}", { message: error instanceof Error ? error.message : String(error) });
      }
    });
    return { ...running, done };
  });
}

/** `" fd99::2/64"` when the tunnel has IPv6 too, else empty: for the start-up log line. */
function describeAddress6(common: CommonConfig): string {
  const v6 = common.tunAddress6;
  return v6 ? ` ${v6.address}/${v6.prefixLength}` : "";
}

/**
 * Reloads run one after another (two quick SIGHUPs must not interleave), and
 * only the peers change: the rest of the config needs a restart, which is said.
 */
function reloader(config: ServerConfig, role: ServerRole): () => Promise<void> {
  let queue = Promise.resolve();
  const reload = async () => {
    let next: ServerConfig;
    try {
      next = await loadConfig(config.file, "server");
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      log.error("config not reloaded, the running one stays: {message}", { message });
      return;
    }
    for (const warning of next.warnings) log.warn(warning);
    const restart = settingsNeedingRestart(config, next);
    if (restart.length > 0) {
      log.warn("reload: {keys} changed; these take effect only after a restart", {
        keys: restart.join(", "),
      });
    }
    await role.reload(next.peers);
    log.info("config reloaded: {count} peer(s)", { count: next.peers.length });
  };
  // A reload that fails for any other reason must neither stop the server nor the next reload.
  const safely = () =>
    reload().catch((error) => {
      const message = error instanceof Error ? error.message : String(error);
      log.error("config not reloaded, the running one stays: {message}", { message });
    });
  return () => queue = queue.then(safely);
}

function settingsNeedingRestart(running: ServerConfig, next: ServerConfig): string[] {
  const changed: string[] = [];
  const compare = (key: string, a: unknown, b: unknown) => {
    if (a !== b) changed.push(key);
  };
  compare("common.tun_name", running.common.tunName, next.common.tunName);
  compare(
    "common.tun_addr",
    `${running.common.tunAddress}/${running.common.tunPrefixLength}`,
    `${next.common.tunAddress}/${next.common.tunPrefixLength}`,
  );
  compare("common.mtu", running.common.mtu, next.common.mtu);
  compare("common.debug", running.common.debug, next.common.debug);
  compare("server.listen", running.listen.key, next.listen.key);
  compare("server.path_timeout", running.pathTimeoutMs, next.pathTimeoutMs);
  compare("server.nat", running.nat, next.nat);
  return changed;
}

function openTun(platform: Platform, common: CommonConfig): Tun {
  return platform.openTun({
    name: common.tunName,
    address: common.tunAddress,
    prefixLength: common.tunPrefixLength,
    mtu: common.mtu,
    address6: common.tunAddress6,
  });
}

/**
 * Opens the control socket before anything else, so a second tunnel with the
 * same `tun_name` stops with a clear message; `undo` removes it if the start fails.
 */
async function startControl(
  platform: Platform,
  common: CommonConfig,
  undo: Array<() => void | Promise<void>>,
): Promise<Control | undefined> {
  if (platform.controlDir === undefined) return undefined;
  const control: Control = { report: undefined };
  control.server = await ControlServer.start(
    controlSocketPath(platform.controlDir, common.tunName),
    (request) => {
      if (request.command !== "status") throw new Error(`unknown command "${request.command}"`);
      if (!control.report) throw new Error("starting");
      return { status: control.report() };
    },
  );
  undo.push(() => control.server?.close());
  return control;
}

/** The control socket and, once the tunnel runs, what it answers. */
interface Control {
  server?: ControlServer;
  report?: () => StatusReport;
}

function run(
  tun: Tun,
  role: Role & StatusSource,
  transport: Transport,
  platform: Platform,
  options: { kind: "client" | "server"; config: { common: CommonConfig }; control?: Control },
): Running {
  const reactor = platform.createReactor();
  const tunnel = new Tunnel({
    tun,
    reactor,
    clock: platform.clock,
    transport,
    role,
    debug: options.config.common.debug,
  });
  const startedAt = platform.clock.now();
  const status = (): StatusReport => {
    const now = platform.clock.now();
    return {
      role: options.kind,
      tun: tun.name,
      pid: Deno.pid,
      uptimeSeconds: (now - startedAt) / 1000,
      peers: role.peerStatus(now),
      counters: { ...transport.counters },
    };
  };
  if (options.control) options.control.report = status;
  let reported = "";
  const report = (final: boolean) => {
    const now = JSON.stringify(transport.counters);
    if (now === reported && !final) return;
    reported = now;
    log.info(final ? "stopped; totals: {counters}" : "counters: {counters}", {
      counters: { ...transport.counters },
    });
  };
  const timer = setInterval(() => report(false), STATS_INTERVAL_MS);
  const done = tunnel.run().finally(() => {
    clearInterval(timer);
    tun.close();
    reactor.close();
    report(true);
    return options.control?.server?.close();
  });
  return { tunnel, role, counters: transport.counters, done, stop: () => tunnel.stop(), status };
}

/** Runs `build`; if it throws, runs the undo steps (newest first) and rethrows. */
async function withCleanup<T>(
  undo: Array<() => void | Promise<void>>,
  build: (undo: Array<() => void | Promise<void>>) => T | Promise<T>,
): Promise<T> {
  try {
    return await build(undo);
  } catch (error) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // Undo the rest anyway; the first error is the one to report.
      }
    }
    throw error;
  }
}

/**
 * Every address of the server: each `client.host` entry, names resolved to
 * all their A and AAAA records; in order, without repeats. A name that does
 * not resolve is an error only when nothing else is left.
 */
async function resolveServers(config: ClientConfig, platform: Platform): Promise<Endpoint[]> {
  const servers = config.servers ?? [{ host: config.serverHost, port: config.serverPort }];
  const found = new Map<string, Endpoint>();
  const problems: string[] = [];
  for (const { host, port } of servers) {
    let addresses: string[];
    if (parseIpv4(host) !== undefined || parseIpv6(host) !== undefined) {
      addresses = [host];
    } else {
      try {
        const resolved = await platform.resolveHost(host);
        addresses = typeof resolved === "string" ? [resolved] : resolved;
        if (addresses.length === 0) throw new Error("no address found");
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        problems.push(`cannot resolve "${host}": ${reason}`);
        continue;
      }
    }
    for (const address of addresses) {
      // Canonical form, so the address replies come from has the same key.
      const endpoint = Endpoint.parse(
        address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`,
      );
      if (typeof endpoint === "string") {
        problems.push(`"${address}" (from "${host}"): ${endpoint}`);
        continue;
      }
      if (!found.has(endpoint.key)) found.set(endpoint.key, endpoint);
    }
  }
  if (found.size === 0) throw new UserError(`${config.file}: client.host: ${problems.join("; ")}`);
  for (const problem of problems) log.warn("client.host: {problem}", { problem });
  return [...found.values()];
}
