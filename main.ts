/**
 * tuxburst's entry point: parses the command, loads the config, wires the
 * real kernel (ffi/) into the tunnel (lib/), and runs until a signal.
 *
 * @module
 */
import { addDefaultRoute, openTun } from "./ffi/tun.ts";
import { openUdpSocket } from "./ffi/udp.ts";
import { listInterfaces } from "./ffi/interfaces.ts";
import { PollReactor } from "./ffi/poll.ts";
import { loosenReversePathFilter } from "./ffi/sysctl.ts";
import { enableNat } from "./ffi/nat.ts";
import { fastestCipherName, makeFastestCipher } from "./ffi/ciphers.ts";
import { type Platform, type Running, startClient, startServer } from "./lib/app.ts";
import { type Command, parseCommand, UsageError } from "./lib/cli.ts";
import { loadConfig, readTunName } from "./lib/config.ts";
import { runDir, selectSocket } from "./lib/control.ts";
import { showStatus } from "./lib/status_view.ts";
import { UserError } from "./lib/errors.ts";
import { writeNewKey } from "./lib/keygen.ts";
import { setupLogging } from "./lib/log.ts";
import { getLogger } from "@logtape/logtape";

const kernel: Platform = {
  openTun,
  openUdp: openUdpSocket,
  addDefaultRoute,
  loosenReversePathFilter,
  enableNat,
  listInterfaces,
  createReactor: () => new PollReactor(),
  resolveHost: async (host) => {
    // Both families: each uplink then uses the server addresses it can reach.
    const results = await Promise.allSettled([
      Deno.resolveDns(host, "A"),
      Deno.resolveDns(host, "AAAA"),
    ]);
    const addresses = results.flatMap((r) => r.status === "fulfilled" ? r.value : []);
    if (addresses.length > 0) return addresses;
    const failed = results.find((r) => r.status === "rejected");
    throw failed ? failed.reason : new Error("no address found");
  },
  clock: { now: () => performance.now() },
  // libsodium, else libcrypto, else WebCrypto (README, "Crypto").
  makeCipher: makeFastestCipher,
  controlDir: runDir(),
};

async function run(command: Command): Promise<number> {
  switch (command.kind) {
    case "help":
    case "version":
      await Deno.stdout.write(new TextEncoder().encode(command.text));
      return 0;
    case "gen-key": {
      const hex = await writeNewKey(command.output, command.force);
      console.log(hex);
      console.error(`wrote ${command.output} (mode 0600); put the same key in the client's config`);
      return 0;
    }
    case "status": {
      const socket = await selectSocket({
        dir: runDir(),
        socket: command.socket,
        tunName: command.config === undefined ? undefined : await readTunName(command.config),
      });
      const stop = new AbortController();
      const abort = () => stop.abort();
      Deno.addSignalListener("SIGINT", abort);
      const encoder = new TextEncoder();
      try {
        return await showStatus({
          socket,
          json: command.json,
          watch: command.watch,
          signal: stop.signal,
          write: (text) => {
            const bytes = encoder.encode(text);
            for (let offset = 0; offset < bytes.length;) {
              offset += Deno.stdout.writeSync(bytes.subarray(offset));
            }
          },
        });
      } finally {
        Deno.removeSignalListener("SIGINT", abort);
      }
    }
    case "serve":
    case "connect": {
      const running = command.kind === "serve"
        ? await startWith(command, (file) => loadConfig(file, "server"), startServer)
        : await startWith(command, (file) => loadConfig(file, "client"), startClient);
      const stop = () => running.stop();
      const reload = () => void running.reload?.();
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
      if (running.reload) Deno.addSignalListener("SIGHUP", reload);
      await running.done;
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      if (running.reload) Deno.removeSignalListener("SIGHUP", reload);
      return 0;
    }
  }
}

async function startWith<C extends { common: { debug: boolean }; warnings: string[] }>(
  command: { config: string; logFormat: "text" | "json" },
  load: (file: string) => Promise<C>,
  start: (config: C, platform: Platform) => Promise<Running>,
): Promise<Running> {
  const config = await load(command.config);
  setupLogging({ debug: config.common.debug, format: command.logFormat });
  const running = await start(config, kernel);
  const log = getLogger(["tuxburst"]);
  log.info("packets are sealed with AES-256-GCM from {library}", { library: fastestCipherName() });
  for (const warning of config.warnings) log.warn(warning);
  return running;
}

try {
  Deno.exit(await run(parseCommand(Deno.args)));
} catch (error) {
  if (!(error instanceof UserError)) throw error;
  console.error(`tuxburst: ${error.message}`);
  Deno.exit(error instanceof UsageError ? 2 : 1);
}
