/**
 * Config files (TOML), checked completely before anything is set up: every
 * problem becomes one `ConfigError` that names the file, the key and the fix.
 *
 * @module
 */
import { parse as parseToml, TomlError } from "smol-toml";
import { parseKeyHex } from "./crypto.ts";
import { Endpoint, parseIpv4 } from "./endpoint.ts";
import { ConfigError } from "./errors.ts";
import { interfaceNameProblem } from "./interface_name.ts";
import { nftNameProblem } from "./nat.ts";

/** `[common]`: the TUN device, shared by both roles. */
export interface CommonConfig {
  tunName: string;
  /** The tunnel address of this side, dotted IPv4. */
  tunAddress: string;
  tunPrefixLength: number;
  mtu: number;
  debug: boolean;
}

/** `[client.routes]`: the default route through the tunnel. */
export interface RouteConfig {
  gateway: string;
  metric: number;
}

/** A client config (`tuxburst connect`). */
export interface ClientConfig {
  role: "client";
  file: string;
  common: CommonConfig;
  /** The server's host (IP address or DNS name) and port. */
  serverHost: string;
  serverPort: number;
  key: Uint8Array;
  interfaces: string[];
  keepaliveMs: number;
  routes?: RouteConfig;
  /** Things worth a log line but not an error (a key file others can read). */
  warnings: string[];
}

/** A server config (`tuxburst serve`). */
export interface ServerConfig {
  role: "server";
  file: string;
  common: CommonConfig;
  listen: Endpoint;
  key: Uint8Array;
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
} as const;

const KNOWN_KEYS: Record<string, readonly string[]> = {
  common: ["tun_name", "tun_addr", "mtu", "debug"],
  client: ["host", "key", "key_file", "interfaces", "keepalive", "routes"],
  "client.routes": ["tun_gateway", "metric"],
  server: ["listen", "key", "key_file", "path_timeout", "nat"],
};

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

  const hostText = client.string("host", { required: true })!;
  const hostMatch = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(hostText);
  if (!hostMatch) {
    client.fail("host", `expected "address:port" (like "1.2.3.4:40000"), got "${hostText}"`);
  }
  const serverPort = Number(hostMatch![3]);
  if (serverPort < 1 || serverPort > 65535) {
    client.fail("host", `port must be 1-65535, got ${serverPort}`);
  }

  const interfaces = client.stringArray("interfaces", { required: true })!;
  if (interfaces.length === 0) {
    client.fail("interfaces", 'list at least one uplink interface, like ["wlan0"]');
  }
  for (const name of interfaces) {
    const problem = interfaceNameProblem(name);
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
  }

  return {
    role: "client",
    file,
    common,
    serverHost: hostMatch![1] ?? hostMatch![2],
    serverPort,
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

  let key = server.key(readFile, warnings, true);
  if (!key) {
    if (defaultKey === undefined) {
      server.fail(
        "key",
        `no key: set key = "…" or key_file = "…", or put ${DEFAULTS.keyFile} (made by "tuxburst gen-key") next to the config`,
      );
    }
    const parsed = parseKeyHex(defaultKey!);
    if (typeof parsed === "string") {
      throw new ConfigError(siblingPath(file, DEFAULTS.keyFile), "", `the key ${parsed}`);
    }
    key = parsed;
  }
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
    key,
    pathTimeoutMs: Math.round(pathTimeout * 1000),
    nat,
    warnings,
  };
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
    return {
      tunName,
      tunAddress: match![1],
      tunPrefixLength: prefix,
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
