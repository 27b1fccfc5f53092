/**
 * What the client watches of the machine's network interfaces, so that
 * uplinks can come and go while it runs: each interface's index (a deleted
 * and re-created interface gets a new one, and a socket tied to the old one
 * is dead), whether it is up, its addresses, and whether it has a default
 * route (what `interfaces = ["*"]` selects). The kernel's text files are
 * parsed here; `ffi/interfaces.ts` reads them and asks for index and flags.
 *
 * @module
 */

/** One network interface as the client sees it. */
export interface InterfaceInfo {
  readonly name: string;
  /** The kernel's ifindex; a new one means the interface was deleted and made again. */
  readonly index: number;
  /** Administratively up with carrier (IFF_UP and IFF_RUNNING). */
  readonly up: boolean;
  /** Its IPv4 and global IPv6 addresses (no link-local ones), sorted. */
  readonly addresses: readonly string[];
  /** Whether an IPv4 or IPv6 default route leaves through it. */
  readonly defaultRoute: boolean;
}

/** Whether a configured uplink is a shell-style pattern (`*`, `?`) rather than a name. */
export function isInterfacePattern(text: string): boolean {
  return /[*?]/.test(text);
}

/** Why `pattern` cannot match interface names, if it cannot (the rules of names, plus `*`/`?`). */
export function interfacePatternProblem(pattern: string): string | undefined {
  if (/[\s/:]/.test(pattern)) return "a pattern cannot contain /, : or spaces";
  if (/[[\]]/.test(pattern)) return "only * and ? are supported in patterns";
  if (/^[^*]{16,}$/.test(pattern.replaceAll("?", "x"))) {
    return "matches nothing: Linux interface names are at most 15 characters";
  }
  return undefined;
}

/**
 * Shell-style matching of an interface name: `*` is any run of characters,
 * `?` any one character, everything else itself.
 *
 * @example
 * ```ts
 * globMatch("wl*", "wlan0"); // true
 * globMatch("enx?", "enx12"); // false
 * ```
 */
export function globMatch(pattern: string, name: string): boolean {
  const source = pattern.replace(
    /[.+^${}()|[\]\\*?]/g,
    (c) => c === "*" ? ".*" : c === "?" ? "." : `\\${c}`,
  );
  return new RegExp(`^${source}$`, "s").test(name);
}

/** `RTF_UP`, `RTF_REJECT` in the flags column of the route files. */
const RTF_UP = 0x1;
const RTF_REJECT = 0x200;

/**
 * Interfaces with an IPv4 default route, from `/proc/net/route`:
 * destination and mask 0, flag RTF_UP. Malformed lines are skipped.
 */
export function parseIpv4DefaultRoutes(text: string): Set<string> {
  const found = new Set<string>();
  for (const line of text.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8) continue;
    const [iface, destination, , flags, , , , mask] = fields;
    const up = (parseInt(flags, 16) & RTF_UP) !== 0;
    if (up && /^0+$/.test(destination) && /^0+$/.test(mask)) found.add(iface);
  }
  return found;
}

/**
 * Interfaces with an IPv6 default route, from `/proc/net/ipv6_route`:
 * destination `::/0`, flag RTF_UP, not an unreachable route (which the
 * kernel puts on `lo`). Malformed lines are skipped.
 */
export function parseIpv6DefaultRoutes(text: string): Set<string> {
  const found = new Set<string>();
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) continue;
    const [destination, prefix] = fields;
    const flags = parseInt(fields[8], 16);
    const iface = fields[9];
    if (!/^0{32}$/.test(destination) || prefix !== "00") continue;
    if ((flags & RTF_UP) === 0 || (flags & RTF_REJECT) !== 0 || iface === "lo") continue;
    found.add(iface);
  }
  return found;
}

/** Interface names from `/proc/net/dev` (two header lines, then `name: counters`). */
export function parseInterfaceNames(text: string): string[] {
  const names: string[] = [];
  for (const line of text.split("\n").slice(2)) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    if (name !== "") names.push(name);
  }
  return names;
}

/** What `readInterfaces` combines: the kernel's text files and per-interface look-ups. */
export interface InterfaceSources {
  /** `/proc/net/dev`. */
  dev: string;
  /** `/proc/net/route`; empty when missing. */
  route: string;
  /** `/proc/net/ipv6_route`; empty when IPv6 is off. */
  ipv6Route: string;
  /** Every address, as `Deno.networkInterfaces()` gives them. */
  addresses: readonly { name: string; address: string }[];
  /** The ifindex of `name`, 0 when it is gone. */
  index(name: string): number;
  /** Whether `name` is up with carrier; false when it is gone. */
  up(name: string): boolean;
}

/** The interfaces in `sources`, one `InterfaceInfo` each (loopback included). */
export function readInterfaces(sources: InterfaceSources): InterfaceInfo[] {
  const defaults = new Set([
    ...parseIpv4DefaultRoutes(sources.route),
    ...parseIpv6DefaultRoutes(sources.ipv6Route),
  ]);
  const out: InterfaceInfo[] = [];
  for (const name of parseInterfaceNames(sources.dev)) {
    const index = sources.index(name);
    if (index === 0) continue; // gone between the listing and the look-up
    const addresses = sources.addresses
      .filter((a) => a.name === name && !/^fe80:/i.test(a.address))
      .map((a) => a.address)
      .sort();
    out.push({ name, index, up: sources.up(name), addresses, defaultRoute: defaults.has(name) });
  }
  return out;
}
