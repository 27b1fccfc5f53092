/**
 * Config files (TOML), checked completely before anything is set up: every
 * problem becomes one `ConfigError` that names the file, the key and the fix.
 *
 * @module
 */
import { parse as parseToml, TomlError } from "smol-toml";
import { parseKeyHex, toHex } from "./crypto.ts";
import { Endpoint, formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from "./endpoint.ts";
import { ConfigError } from "./errors.ts";
import { interfaceNameProblem } from "./interface_name.ts";
import { interfacePatternProblem, isInterfacePattern } from "./interfaces.ts";
import { nftNameProblem } from "./nat.ts";

/** `[common]`: the TUN device, shared by both roles. */
export interface CommonConfig {
  tunName: string;
  /** The tunnel address of this side, dotted IPv4. */
  tunAddress: string;
  tunPrefixLength: number;
  /** The tunnel's IPv6 address of this side (`tun_addr6`); the tunnel carries IPv4 only without it. */
  tunAddress6?: { address: string; prefixLength: number };
  mtu: number;
  debug: boolean;
}

/** `[client.routes]`: the default route through the tunnel. */
export interface RouteConfig {
  gateway: string;
  metric: number;
  /** The server's tunnel IPv6 address (`tun_gateway6`): an IPv6 default route goes via it too. */
  gateway6?: string;
}

/** A client config (`tuxburst connect`). */
export interface ClientConfig {
  role: "client";
  file: string;
  common: CommonConfig;
  /** The server's host (IP address or DNS name) and port: the first of `servers`. */
  serverHost: string;
  serverPort: number;
  /** Every server address given in `client.host` (a string or a list of them), in order. */
  servers: Array<{ host: string; port: number }>;
  key: Uint8Array;
  interfaces: string[];
  keepaliveMs: number;
  routes?: RouteConfig;
  /** Things worth a log line but not an error (a key file others can read). */
  warnings: string[];
}

/** One client the server accepts (`[[server.peers]]`), with its own key. */
export interface PeerConfig {
  name: string;
  key: Uint8Array;
  /**
   * The peer's tunnel address, dotted IPv4: packets to it go to this peer, and
   * this peer may send only from it. `undefined` only in the one-key config
   * (`server.key`), whose one peer takes and sends every address.
   */
  tunAddress?: string;
  /** The peer's IPv6 tunnel address (canonical form), for routing IPv6 packets. */
  tunAddress6?: string;
}

/** A server config (`tuxburst serve`). */
export interface ServerConfig {
  role: "server";
  file: string;
  common: CommonConfig;
  listen: Endpoint;
  /** At least one; `server.key` (or `server.key` beside the config) makes one peer named "client". */
  peers: PeerConfig[];
  pathTimeoutMs: number;
  /** The uplink to masquerade the tunnel subnet out of (`server.nat`); no NAT when absent. */
  nat?: string;
  warnings: string[];
}

export type Role = "client" | "server";

/** Defaults for keys a config may leave out. */
export const DEFAULTS = {
  tunName: "tuxburst0",
  mtu: 1400,
  /** Seconds between probes on each uplink: far below the 30 s after which NATs forget UDP. */
  keepalive: 5,
  /** Seconds of silence after which the server forgets a client address. */
  pathTimeout: 30,
  metric: 5,
  /** The file the server reads its key from when its config holds none. */
  keyFile: "server.key",
  /** The name of the one peer of a config with `server.key` instead of `[[server.peers]]`. */
  singlePeerName: "client",
} as const;

const KNOWN_KEYS: Record<string, readonly string[]> = {
  common: ["tun_name", "tun_addr", "tun_addr6", "mtu", "debug"],
  client: ["host", "key", "key_file", "interfaces", "keepalive", "routes"],
  "client.routes": ["tun_gateway", "tun_gateway6", "metric"],
  server: ["listen", "key", "key_file", "path_timeout", "nat", "peers"],
  "server.peers": ["name", "key", "key_file", "tun_addr", "tun_addr6"],
};

const PEER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/;

/**
 * Reads and checks a config file for `role`.
 *
 * @example
 * ```ts
 * const config = await loadConfig("client.toml", "client");
 * console.log(config.interfaces);
 * ```
 */
export async function loadConfig(file: string, role: "client"): Promise<ClientConfig>;
export async function loadConfig(file: string, role: "server"): Promise<ServerConfig>;
export async function loadConfig(file: string, role: Role): Promise<ClientConfig | ServerConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw new ConfigError(file, "", `cannot read the config file: ${describeFsError(error)}`);
  }
  return role === "client"
    ? parseClientConfig(text, file)
    : parseServerConfig(text, file, await readKeyFileNear(file, text));
}

/**
 * Only `common.tun_name` of a client or server config (what `tuxburst status
 * -c` needs to find the control socket), without checking the rest.
 */
export async function readTunName(file: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw new ConfigError(file, "", `cannot read the config file: ${describeFsError(error)}`);
  }
  let root: Table;
  try {
    root = parseToml(text) as Table;
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    throw new ConfigError(file, "", `not valid TOML at line ${error.line}, column ${error.column}`);
  }
  const common = root.common as Table | undefined;
  const name = typeof common === "object" && common !== null ? common.tun_name : undefined;
  if (name === undefined) return DEFAULTS.tunName;
  const problem = typeof name === "string" ? interfaceNameProblem(name) : "expected a string";
  if (problem) throw new ConfigError(file, "common.tun_name", problem);
  return name as string;
}

/** Parses a client config from text; `file` is used in error messages and for `key_file`. */
export function parseClientConfig(
  text: string,
  file: string,
  readFile: (path: string) => string = Deno.readTextFileSync,
): ClientConfig {
  const doc = new Document(text, file, "client");
  const common = doc.common();
  const client = doc.section("client");
  const warnings: string[] = [];

  const hostTexts = client.has("host") && Array.isArray(client.table.host)
    ? client.stringArray("host")!
    : [client.string("host", { required: true })!];
  if (hostTexts.length === 0) {
    client.fail("host", 'list at least one server address, like ["1.2.3.4:40000"]');
  }
  const servers = hostTexts.map((hostText) => {
    const hostMatch = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(hostText);
    if (!hostMatch) {
      client.fail(
        "host",
        `expected "address:port" (like "1.2.3.4:40000" or "[2001:db8::1]:40000"), got "${hostText}"`,
      );
    }
    const port = Number(hostMatch![3]);
    if (port < 1 || port > 65535) client.fail("host", `port must be 1-65535, got ${port}`);
    const v6 = hostMatch![1];
    if (v6 !== undefined && parseIpv6(v6) === undefined) {
      client.fail("host", `"${v6}" is not an IPv6 address`);
    }
    return { host: v6 ?? hostMatch![2], port };
  });
  const duplicateHost = hostTexts.find((text, i) => hostTexts.indexOf(text) !== i);
  if (duplicateHost) client.fail("host", `"${duplicateHost}" is listed twice`);

  const interfaces = client.stringArray("interfaces", { required: true })!;
  if (interfaces.length === 0) {
    client.fail(
      "interfaces",
      'list at least one uplink interface, like ["wlan0"], or ["*"] for every one with a default route',
    );
  }
  for (const name of interfaces) {
    const problem = isInterfacePattern(name)
      ? interfacePatternProblem(name)
      : interfaceNameProblem(name);
    if (problem) client.fail("interfaces", `"${name}": ${problem}`);
  }
  const duplicate = interfaces.find((name, i) => interfaces.indexOf(name) !== i);
  if (duplicate) client.fail("interfaces", `"${duplicate}" is listed twice`);

  const keepalive = client.number("keepalive", { min: 0.05, max: 3600 }) ?? DEFAULTS.keepalive;

  let routes: RouteConfig | undefined;
  if (client.has("routes")) {
    const section = doc.section("client.routes");
    const gateway = section.string("tun_gateway", { required: true })!;
    const gatewayValue = parseIpv4(gateway);
    if (gatewayValue === undefined) {
      section.fail("tun_gateway", `"${gateway}" is not an IPv4 address`);
    }
    const tunValue = parseIpv4(common.tunAddress)!;
    if (!sameSubnet(gatewayValue!, tunValue, common.tunPrefixLength) || gatewayValue === tunValue) {
      section.fail(
        "tun_gateway",
        `${gateway} must be the server's address inside tun_addr ${common.tunAddress}/${common.tunPrefixLength}`,
      );
    }
    // The kernel's route ioctl keeps the metric in a C short.
    const metric = section.integer("metric", { min: 0, max: 32766 }) ?? DEFAULTS.metric;
    routes = { gateway, metric };
    const gateway6 = section.string("tun_gateway6");
    if (gateway6 !== undefined) {
      const tun6 = common.tunAddress6;
      if (!tun6) {
        section.fail("tun_gateway6", 'needs common.tun_addr6, like "fd99::2/64"');
      }
      const gatewayBytes = parseIpv6(gateway6);
      if (gatewayBytes === undefined) {
        section.fail("tun_gateway6", `"${gateway6}" is not an IPv6 address`);
      }
      const own = parseIpv6(tun6!.address)!;
      if (
        !samePrefix6(gatewayBytes!, own, tun6!.prefixLength) ||
        formatIpv6(gatewayBytes!) === tun6!.address
      ) {
        section.fail(
          "tun_gateway6",
          `${gateway6} must be the server's address inside tun_addr6 ${tun6!.address}/${
            tun6!.prefixLength
          }`,
        );
      }
      routes.gateway6 = formatIpv6(gatewayBytes!);
    }
  }

  return {
    role: "client",
    file,
    common,
    serverHost: servers[0].host,
    serverPort: servers[0].port,
    servers,
    key: client.key(readFile, warnings, false)!,
    interfaces,
    keepaliveMs: Math.round(keepalive * 1000),
    routes,
    warnings,
  };
}

/**
 * Parses a server config from text. `defaultKey` is the content of
 * `server.key` next to the config, used when the config names no key.
 */
export function parseServerConfig(
  text: string,
  file: string,
  defaultKey?: string,
  readFile: (path: string) => string = Deno.readTextFileSync,
): ServerConfig {
  const doc = new Document(text, file, "server");
  const common = doc.common();
  const server = doc.section("server");
  const warnings: string[] = [];

  const listenText = server.string("listen", { required: true })!;
  const listen = Endpoint.parse(listenText);
  if (typeof listen === "string") server.fail("listen", listen);

  const peers = server.has("peers") ? parsePeers(doc, server, common, readFile, warnings) : [{
    name: DEFAULTS.singlePeerName,
    key: singleKey(server, file, defaultKey, readFile, warnings),
  }];
  const pathTimeout = server.number("path_timeout", { min: 1, max: 86400 }) ?? DEFAULTS.pathTimeout;

  const nat = server.string("nat");
  if (nat !== undefined) {
    const problem = interfaceNameProblem(nat) ?? nftNameProblem(nat);
    if (problem) server.fail("nat", `"${nat}": ${problem}`);
    if (nat === common.tunName) {
      server.fail("nat", `must be the uplink to the internet, like "eth0", not the TUN device`);
    }
    // The rules match the TUN device by name, too.
    const tunProblem = nftNameProblem(common.tunName);
    if (tunProblem) doc.section("common").fail("tun_name", `"${common.tunName}": ${tunProblem}`);
  }

  return {
    role: "server",
    file,
    common,
    listen: listen as Endpoint,
    peers,
    pathTimeoutMs: Math.round(pathTimeout * 1000),
    nat,
    warnings,
  };
}

/** The one key of a config without `[[server.peers]]`: `server.key`, `key_file` or server.key beside it. */
function singleKey(
  server: Section,
  file: string,
  defaultKey: string | undefined,
  readFile: (path: string) => string,
  warnings: string[],
): Uint8Array {
  const key = server.key(readFile, warnings, true);
  if (key) return key;
  if (defaultKey === undefined) {
    server.fail(
      "key",
      `no key: set key = "…" or key_file = "…", or put ${DEFAULTS.keyFile} (made by "tuxburst gen-key") next to the config, or list clients in [[server.peers]]`,
    );
  }
  const parsed = parseKeyHex(defaultKey!);
  if (typeof parsed === "string") {
    throw new ConfigError(siblingPath(file, DEFAULTS.keyFile), "", `the key ${parsed}`);
  }
  return parsed;
}

/** `[[server.peers]]`: every client with its own name, key and tunnel address, none shared. */
function parsePeers(
  doc: Document,
  server: Section,
  common: CommonConfig,
  readFile: (path: string) => string,
  warnings: string[],
): PeerConfig[] {
  if (server.has("key") || server.has("key_file")) {
    server.fail(
      "peers",
      "set either server.key / key_file (one client) or [[server.peers]] (each client with its own key), not both",
    );
  }
  const tables = server.table.peers;
  if (
    !Array.isArray(tables) ||
    tables.some((t) => typeof t !== "object" || t === null || Array.isArray(t))
  ) {
    server.fail(
      "peers",
      "must be a list of [[server.peers]] sections, each with name, key and tun_addr",
    );
  }
  if ((tables as unknown[]).length === 0) {
    server.fail("peers", "list at least one [[server.peers]]");
  }
  const own = parseIpv4(common.tunAddress)!;
  const subnet = `${
    formatIpv4(tunnelNetwork(own, common.tunPrefixLength))
  }/${common.tunPrefixLength}`;
  const peers: PeerConfig[] = [];
  const seen = {
    name: new Map<string, string>(),
    key: new Map<string, string>(),
    tun_addr: new Map<string, string>(),
    tun_addr6: new Map<string, string>(),
  };
  (tables as Table[]).forEach((table, index) => {
    const section = new Section(doc.file, `server.peers[${index + 1}]`, table);
    section.rejectUnknown(KNOWN_KEYS["server.peers"]);
    const unique = (
      key: keyof typeof seen,
      value: string,
      what: string,
      configKey: string = key,
    ) => {
      const other = seen[key].get(value);
      if (other !== undefined) {
        section.fail(configKey, `${what} as peer ${other}; every peer needs its own`);
      }
      seen[key].set(value, `"${name}" (server.peers[${index + 1}])`);
    };

    const name = section.string("name", { required: true })!;
    if (!PEER_NAME.test(name)) {
      section.fail(
        "name",
        `"${name}": use 1-32 letters, digits, ".", "_" or "-", starting with a letter or digit`,
      );
    }
    unique("name", name, "the same name");

    if (!section.has("key") && !section.has("key_file")) {
      section.fail(
        "key",
        'is required: this peer\'s key as 64 hex digits (make one with "tuxburst gen-key"), or key_file = "path"',
      );
    }
    const key = section.key(readFile, warnings, true)!;
    unique("key", toHex(key), "the same key", section.has("key") ? "key" : "key_file");

    const addressText = section.string("tun_addr", { required: true })!;
    const address = parseIpv4(addressText.replace(/\/32$/, ""));
    if (address === undefined) {
      section.fail(
        "tun_addr",
        `expected the client's tunnel address like "10.99.0.2", got "${addressText}"`,
      );
    }
    const network = tunnelNetwork(own, common.tunPrefixLength);
    const broadcast = network + 2 ** (32 - common.tunPrefixLength) - 1;
    if (!sameSubnet(address!, own, common.tunPrefixLength)) {
      section.fail(
        "tun_addr",
        `${formatIpv4(address!)} is outside the tunnel subnet ${subnet} (common.tun_addr)`,
      );
    }
    if (address === own) {
      section.fail(
        "tun_addr",
        `${formatIpv4(address!)} is the server's own address (common.tun_addr)`,
      );
    }
    if (common.tunPrefixLength <= 30 && (address === network || address === broadcast)) {
      section.fail(
        "tun_addr",
        `${formatIpv4(address!)} is the network or broadcast address of ${subnet}`,
      );
    }
    const tunAddress = formatIpv4(address!);
    unique("tun_addr", tunAddress, "the same tun_addr");

    let tunAddress6: string | undefined;
    const v6Text = section.string("tun_addr6");
    if (v6Text !== undefined) {
      const v6 = parseIpv6(v6Text.replace(/\/128$/, ""));
      if (!v6 || v6[0] === 0xff || v6.every((b) => b === 0)) {
        section.fail(
          "tun_addr6",
          `expected the client's IPv6 tunnel address like "fd99::2", got "${v6Text}"`,
        );
      }
      tunAddress6 = formatIpv6(v6!);
      unique("tun_addr6", tunAddress6, "the same tun_addr6");
    }
    peers.push({ name, key, tunAddress, tunAddress6 });
  });
  return peers;
}

/** The key file `server.key` next to a config, when the config names no key itself. */
async function readKeyFileNear(file: string, text: string): Promise<string | undefined> {
  if (/^\s*(key|key_file)\s*=/m.test(text)) return undefined;
  try {
    return await Deno.readTextFile(siblingPath(file, DEFAULTS.keyFile));
  } catch {
    return undefined;
  }
}

/** `name` resolved against the directory of `file`, unless absolute. */
export function siblingPath(file: string, name: string): string {
  if (name.startsWith("/")) return name;
  const slash = file.lastIndexOf("/");
  return slash < 0 ? name : `${file.slice(0, slash + 1)}${name}`;
}

/** Whether two IPv6 addresses share their first `prefix` bits. */
function samePrefix6(a: Uint8Array, b: Uint8Array, prefix: number): boolean {
  for (let bit = 0; bit < prefix; bit++) {
    const mask = 0x80 >> (bit % 8);
    if ((a[bit >> 3] & mask) !== (b[bit >> 3] & mask)) return false;
  }
  return true;
}

function tunnelNetwork(address: number, prefix: number): number {
  const size = 2 ** (32 - prefix);
  return Math.floor(address / size) * size;
}

function sameSubnet(a: number, b: number, prefix: number): boolean {
  if (prefix === 0) return true;
  const shift = 32 - prefix;
  return Math.floor(a / 2 ** shift) === Math.floor(b / 2 ** shift);
}

function describeFsError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  return error instanceof Error ? error.message : String(error);
}

type Table = Record<string, unknown>;

/** The parsed TOML document, with the checks shared by every section. */
class Document {
  readonly root: Table;

  constructor(text: string, readonly file: string, readonly role: Role) {
    try {
      this.root = parseToml(text) as Table;
    } catch (error) {
      if (error instanceof TomlError) {
        const first = error.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
        throw new ConfigError(
          file,
          "",
          `not valid TOML at line ${error.line}, column ${error.column}: ${first}`,
        );
      }
      throw error;
    }
    const other: Role = role === "client" ? "server" : "client";
    if (!(role in this.root) && other in this.root) {
      const command = other === "client" ? "connect" : "serve";
      throw new ConfigError(
        file,
        "",
        `this is a ${other} config (it has [${other}], not [${role}]); use "tuxburst ${command}" with it`,
      );
    }
    for (const key of Object.keys(this.root)) {
      if (key === other && role in this.root) {
        throw new ConfigError(file, `[${key}]`, `a ${role} config cannot also hold [${other}]`);
      }
      if (key !== "common" && key !== role) {
        throw new ConfigError(file, key, unknownKeyMessage(key, ["common", role]));
      }
    }
  }

  common(): CommonConfig {
    const common = this.section("common");
    const tunName = common.string("tun_name") ?? DEFAULTS.tunName;
    const nameProblem = interfaceNameProblem(tunName);
    if (nameProblem) common.fail("tun_name", `"${tunName}": ${nameProblem}`);
    const tunAddr = common.string("tun_addr", { required: true })!;
    const match = /^([\d.]+)\/(\d{1,2})$/.exec(tunAddr);
    const address = match ? parseIpv4(match[1]) : undefined;
    const prefix = match ? Number(match[2]) : NaN;
    if (address === undefined || !(prefix >= 1 && prefix <= 32)) {
      common.fail(
        "tun_addr",
        `expected an IPv4 address with prefix length like "10.99.0.2/30", got "${tunAddr}"`,
      );
    }
    const tunAddr6 = common.string("tun_addr6");
    let tunAddress6: CommonConfig["tunAddress6"];
    if (tunAddr6 !== undefined) {
      const match6 = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(tunAddr6);
      const bytes = match6 ? parseIpv6(match6[1]) : undefined;
      const prefix6 = match6 ? Number(match6[2]) : NaN;
      if (bytes === undefined || !(prefix6 >= 1 && prefix6 <= 128)) {
        common.fail(
          "tun_addr6",
          `expected an IPv6 address with prefix length like "fd99::2/64", got "${tunAddr6}"`,
        );
      }
      if (bytes![0] === 0xfe && (bytes![1] & 0xc0) === 0x80) {
        common.fail("tun_addr6", "a link-local address (fe80::/10) cannot be routed; use fd00::/8");
      }
      tunAddress6 = { address: formatIpv6(bytes!), prefixLength: prefix6 };
    }
    return {
      tunName,
      tunAddress: match![1],
      tunPrefixLength: prefix,
      tunAddress6,
      mtu: common.integer("mtu", { min: 576, max: 9000 }) ?? DEFAULTS.mtu,
      debug: common.boolean("debug") ?? false,
    };
  }

  section(path: string): Section {
    const parts = path.split(".");
    let value: unknown = this.root;
    for (const part of parts) value = (value as Table | undefined)?.[part];
    if (value === undefined) {
      throw new ConfigError(this.file, `[${path}]`, "this section is missing");
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new ConfigError(this.file, path, "must be a section ([" + path + "])");
    }
    const section = new Section(this.file, path, value as Table);
    section.rejectUnknown(KNOWN_KEYS[path] ?? []);
    return section;
  }
}

interface Bounds {
  min: number;
  max: number;
}

/** One table of the document; every getter checks the type and names the key on error. */
class Section {
  constructor(readonly file: string, readonly path: string, readonly table: Table) {}

  fail(key: string, problem: string): never {
    throw new ConfigError(this.file, `${this.path}.${key}`, problem);
  }

  has(key: string): boolean {
    return this.table[key] !== undefined;
  }

  rejectUnknown(known: readonly string[]): void {
    for (const key of Object.keys(this.table)) {
      if (!known.includes(key)) this.fail(key, unknownKeyMessage(key, known));
    }
  }

  string(key: string, options: { required?: boolean } = {}): string | undefined {
    const value = this.table[key];
    if (value === undefined) {
      if (options.required) this.fail(key, "is required");
      return undefined;
    }
    if (typeof value !== "string") {
      this.fail(key, `must be a string in quotes, got ${describe(value)}`);
    }
    return value as string;
  }

  stringArray(key: string, options: { required?: boolean } = {}): string[] | undefined {
    const value = this.table[key];
    if (value === undefined) {
      if (options.required) this.fail(key, "is required");
      return undefined;
    }
    if (!Array.isArray(value) || value.some((item) => typeof item !== "string")) {
      this.fail(key, `must be a list of strings like ["wlan0", "usb0"], got ${describe(value)}`);
    }
    return value as string[];
  }

  number(key: string, bounds: Bounds): number | undefined {
    const value = this.table[key];
    if (value === undefined) return undefined;
    const n = typeof value === "bigint" ? Number(value) : value;
    if (typeof n !== "number" || !Number.isFinite(n)) {
      this.fail(key, `must be a number, got ${describe(value)}`);
    }
    if ((n as number) < bounds.min || (n as number) > bounds.max) {
      this.fail(key, `must be between ${bounds.min} and ${bounds.max}, got ${n}`);
    }
    return n as number;
  }

  integer(key: string, bounds: Bounds): number | undefined {
    const n = this.number(key, bounds);
    if (n !== undefined && !Number.isInteger(n)) this.fail(key, `must be a whole number, got ${n}`);
    return n;
  }

  boolean(key: string): boolean | undefined {
    const value = this.table[key];
    if (value === undefined) return undefined;
    if (typeof value !== "boolean") this.fail(key, `must be true or false, got ${describe(value)}`);
    return value as boolean;
  }

  /** `key = "hex"` or `key_file = "path"` (relative to the config); undefined when neither. */
  key(
    readFile: (path: string) => string,
    warnings: string[],
    optional: boolean,
  ): Uint8Array | undefined {
    const inline = this.string("key");
    const keyFile = this.string("key_file");
    if (inline !== undefined && keyFile !== undefined) {
      this.fail("key_file", "set either key or key_file, not both");
    }
    if (inline !== undefined) {
      const key = parseKeyHex(inline);
      if (typeof key === "string") this.fail("key", key);
      return key as Uint8Array;
    }
    if (keyFile === undefined) {
      if (optional) return undefined;
      this.fail("key", 'is required: the server\'s key as 64 hex digits, or key_file = "path"');
    }
    const path = siblingPath(this.file, keyFile!);
    let text: string;
    try {
      text = readFile(path);
    } catch (error) {
      this.fail("key_file", `cannot read ${path}: ${describeFsError(error)}`);
    }
    const key = parseKeyHex(text!);
    if (typeof key === "string") this.fail("key_file", `the key in ${path} ${key}`);
    try {
      const mode = Deno.statSync(path).mode;
      if (mode !== null && (mode & 0o077) !== 0) {
        warnings.push(`key file ${path} can be read by other users; run: chmod 600 ${path}`);
      }
    } catch {
      // A fake readFile in tests has no file to stat.
    }
    return key as Uint8Array;
  }
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (value instanceof Date) return "a date";
  if (typeof value === "object" && value !== null) return "a section";
  return typeof value === "string" ? `"${value}"` : String(value);
}

function unknownKeyMessage(key: string, known: readonly string[]): string {
  const close = known.find((k) => editDistance(k, key) <= 2);
  const hint = close ? `did you mean "${close}"? ` : "";
  return `unknown key; ${hint}known keys here: ${known.join(", ")}`;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const saved = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = saved;
    }
  }
  return row[b.length];
}
