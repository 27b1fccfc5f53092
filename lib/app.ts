/**
 * Builds a running client or server from a checked config and a `Platform`
 * (the real kernel in `main.ts`, fakes in tests). Whatever fails half-way is
 * undone before the error leaves, so nothing half-configured stays behind.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { ClientRole } from "./client.ts";
import type { ClientConfig, CommonConfig, ServerConfig } from "./config.ts";
import { ControlServer, controlSocketPath } from "./control.ts";
import type { CipherFactory } from "./crypto.ts";
import { Endpoint, parseIpv4, parseIpv6 } from "./endpoint.ts";
import { UserError } from "./errors.ts";
import type { Clock, Reactor, Tun, UdpSocket } from "./io.ts";
import type { StatusReport, StatusSource } from "./link_stats.ts";
import { type NatSpec, natTableName, tunnelSubnet } from "./nat.ts";
import { ServerRole } from "./server.ts";
import { type Counters, Transport } from "./transport.ts";
import { type Role, Tunnel } from "./tunnel.ts";

const log = getLogger(["tuxburst"]);

/** Everything the tunnel needs from the operating system. */
export interface Platform {
  openTun(options: { name: string; address: string; prefixLength: number; mtu: number }): Tun;
  openUdp(options: { family: 4 | 6; device?: string; bind?: Endpoint }): UdpSocket;
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
  createReactor(): Reactor;
  /** Resolves a DNS name to an IP address; IP literals never reach it. */
  resolveHost(host: string): Promise<string>;
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
  const server = new Endpoint(await resolveServer(config, platform), config.serverPort);
  const transport = new Transport(platform.makeCipher);
  const restoreFilters: Array<() => void> = [];
  const openUplink = (name: string) => {
    const socket = platform.openUdp({ family: server.family, device: name });
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
    interfaces: config.interfaces,
    keepaliveMs: config.keepaliveMs,
    psk: config.key,
    transport,
    openUplink,
    clock: platform.clock,
  }, platform.clock.now());
  const restoreAll = () => restoreFilters.forEach((restore) => restore());
  return withCleanup([restoreAll, () => role.close()], async (undo) => {
    const control = await startControl(platform, config.common, undo);
    const tun = openTun(platform, config.common);
    undo.push(() => tun.close());
    if (config.routes) {
      platform.addDefaultRoute({ device: tun.name, ...config.routes });
      log.info("default route via {gateway} dev {device} metric {metric}", {
        gateway: config.routes.gateway,
        device: tun.name,
        metric: config.routes.metric,
      });
    }
    log.info("client started: TUN {tun} {address}/{prefix}, server {server}, uplinks {uplinks}", {
      tun: tun.name,
      address: config.common.tunAddress,
      prefix: config.common.tunPrefixLength,
      server: server.key,
      uplinks: config.interfaces.join(", "),
    });
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
    const socket = platform.openUdp({ family: config.listen.family, bind: config.listen });
    undo.push(() => socket.close());
    const role = await ServerRole.create({
      socket,
      psk: config.key,
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
    log.info("server started: TUN {tun} {address}/{prefix}, listening on {listen}", {
      tun: tun.name,
      address: config.common.tunAddress,
      prefix: config.common.tunPrefixLength,
      listen: config.listen.key,
    });
    const running = run(tun, role, transport, platform, { kind: "server", config, control });
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

function openTun(platform: Platform, common: CommonConfig): Tun {
  return platform.openTun({
    name: common.tunName,
    address: common.tunAddress,
    prefixLength: common.tunPrefixLength,
    mtu: common.mtu,
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

async function resolveServer(config: ClientConfig, platform: Platform): Promise<string> {
  const host = config.serverHost;
  if (parseIpv4(host) !== undefined || parseIpv6(host) !== undefined) return host;
  try {
    return await platform.resolveHost(host);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new UserError(`${config.file}: client.host: cannot resolve "${host}": ${reason}`);
  }
}
