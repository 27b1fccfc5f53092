/**
 * The command line: `gen-key`, `serve`, `connect`, `status`, `--help`, `--version`.
 * Parsing only; `main.ts` runs what this returns.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UserError } from "./errors.ts";
import type { LogFormat } from "./log.ts";

export const VERSION = "0.1.0";

/** A command line that cannot be understood; the CLI exits with status 2. */
export class UsageError extends UserError {
  override name = "UsageError";
}

export type Command =
  | { kind: "help"; text: string }
  | { kind: "version"; text: string }
  | { kind: "gen-key"; output: string; force: boolean }
  | { kind: "serve" | "connect"; config: string; logFormat: LogFormat }
  | { kind: "status"; config?: string; socket?: string; json: boolean; watch: boolean };

const MAIN_HELP = `tuxburst ${VERSION}: a VPN that sends every packet over all your uplinks at once

Usage:
  tuxburst gen-key [-o FILE] [--force]   make a key, print it, write it to server.key
  tuxburst serve   -c server.toml        run the server (on the VDS)
  tuxburst connect -c client.toml        run the client (on the laptop)
  tuxburst status  [-c FILE] [--json] [--watch]   show each link's health
  tuxburst COMMAND --help                help on one command
  tuxburst --version

serve and connect need root (or CAP_NET_ADMIN and CAP_NET_RAW).
`;

const HELP: Record<string, string> = {
  "gen-key": `Usage: tuxburst gen-key [-o FILE] [--force]

Prints a new random 256-bit key as 64 hex digits and writes it to FILE
(default: server.key) with mode 0600. Put the same key in the client's
config as key = "…". Refuses to overwrite FILE unless --force is given.

Options:
  -o, --output FILE   where to write the key (default: server.key)
  -f, --force         overwrite FILE if it exists
  -h, --help          show this help
`,
  serve: `Usage: tuxburst serve -c server.toml [--log-format text|json]

Runs the server: creates the TUN device, listens for clients, and forwards
their packets. Reads the key from the config (key or key_file) or from
server.key next to it. Stops cleanly on Ctrl-C or SIGTERM.

Options:
  -c, --config FILE        the server config (required)
      --log-format FORMAT  text (default) or json, one record per line on stderr
  -h, --help               show this help
`,
  connect: `Usage: tuxburst connect -c client.toml [--log-format text|json]

Runs the client: creates the TUN device, sends every packet through every
interface listed in the config, and installs the default route through the
tunnel when [client.routes] is set (removed by the kernel when tuxburst exits).
Stops cleanly on Ctrl-C or SIGTERM.

Options:
  -c, --config FILE        the client config (required)
      --log-format FORMAT  text (default) or json, one record per line on stderr
  -h, --help               show this help
`,
  status: `Usage: tuxburst status [-c FILE | --socket PATH] [--json] [--watch]

Shows a running client's uplinks or a running server's client paths: up or
down, RTT (smoothed/last), probe loss, share of packets that arrived first
there (last 10 s), bytes sent and received, when it was last heard; then the
session and the drop counters. Asks the tunnel through its control socket
/run/tuxburst/<tun_name>.sock (root only). Without -c or --socket, uses the
only socket there.

Options:
  -c, --config FILE   the config of the tunnel to show (its tun_name picks the socket)
      --socket PATH   the control socket to ask
      --json          print the raw status as JSON (shape in README.md)
  -w, --watch         redraw every second until Ctrl-C
  -h, --help          show this help
`,
};

/**
 * Turns the arguments into a command; throws `UsageError` for anything else.
 *
 * @example
 * ```ts
 * parseCommand(["serve", "-c", "server.toml"]); // { kind: "serve", config: "server.toml", logFormat: "text" }
 * ```
 */
export function parseCommand(args: readonly string[]): Command {
  const [name, ...rest] = args;
  if (name === undefined || name === "-h" || name === "--help" || name === "help") {
    return { kind: "help", text: MAIN_HELP };
  }
  if (name === "-V" || name === "--version") {
    return { kind: "version", text: `tuxburst ${VERSION}\n` };
  }
  if (!(name in HELP)) {
    throw new UsageError(`unknown command "${name}"; run "tuxburst --help" for the commands`);
  }
  const options: ParseArgsConfig["options"] = name === "gen-key"
    ? {
      output: { type: "string", short: "o" },
      force: { type: "boolean", short: "f" },
      help: { type: "boolean", short: "h" },
    }
    : name === "status"
    ? {
      config: { type: "string", short: "c" },
      socket: { type: "string" },
      json: { type: "boolean" },
      watch: { type: "boolean", short: "w" },
      help: { type: "boolean", short: "h" },
    }
    : {
      config: { type: "string", short: "c" },
      "log-format": { type: "string" },
      help: { type: "boolean", short: "h" },
    };
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: [...rest], options, strict: true, allowPositionals: false }));
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
    throw new UsageError(`${name}: ${reason}; run "tuxburst ${name} --help"`);
  }
  if (values.help) return { kind: "help", text: HELP[name] };
  if (name === "gen-key") {
    return {
      kind: "gen-key",
      output: (values.output as string) ?? "server.key",
      force: !!values.force,
    };
  }
  const config = values.config as string | undefined;
  if (name === "status") {
    if (config && values.socket) {
      throw new UsageError("status: give either -c FILE or --socket PATH, not both");
    }
    return {
      kind: "status",
      config,
      socket: values.socket as string | undefined,
      json: !!values.json,
      watch: !!values.watch,
    };
  }
  if (!config) throw new UsageError(`${name}: -c FILE is required; run "tuxburst ${name} --help"`);
  const logFormat = (values["log-format"] as string | undefined) ?? "text";
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(`${name}: --log-format must be text or json, got "${logFormat}"`);
  }
  return { kind: name as "serve" | "connect", config, logFormat };
}
