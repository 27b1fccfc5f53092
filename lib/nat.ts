/**
 * Server NAT (`[server] nat = "eth0"`): the nftables rules that let the
 * clients of the tunnel reach the internet through the server's uplink. They
 * live in a table of their own, named after the TUN device, so tuxburst
 * removes exactly its own rules by deleting that table, and two servers on
 * one host (which need two TUN devices) never touch each other's rules.
 *
 * Only text here; `ffi/nat.ts` hands it to `nft` and turns on forwarding.
 *
 * @module
 */
import { formatIpv4, parseIpv4 } from "./endpoint.ts";

/** What to masquerade: traffic from `subnet` that enters on `tunName` and leaves on `uplink`. */
export interface NatSpec {
  /** The TUN device (`common.tun_name`). */
  tunName: string;
  /** The tunnel subnet in CIDR notation, e.g. `"10.99.0.0/30"`. */
  subnet: string;
  /** The uplink to masquerade out of (`server.nat`). */
  uplink: string;
}

/**
 * The tunnel subnet that `address/prefixLength` lies in, in CIDR notation.
 *
 * @example
 * ```ts
 * tunnelSubnet("10.99.0.1", 30); // "10.99.0.0/30"
 * ```
 */
export function tunnelSubnet(address: string, prefixLength: number): string {
  const value = parseIpv4(address);
  if (value === undefined) throw new RangeError(`"${address}" is not an IPv4 address`);
  const hostBits = 32 - prefixLength;
  const network = hostBits >= 32 ? 0 : Math.floor(value / 2 ** hostBits) * 2 ** hostBits;
  return `${formatIpv4(network)}/${prefixLength}`;
}

/**
 * Why nftables cannot match interface `name` exactly, if it cannot: its
 * quoted strings have no escape for `"`, and a backslash would be read as
 * one. (A trailing `*`, nft's wildcard, is escaped by `natRuleset`.)
 */
export function nftNameProblem(name: string): string | undefined {
  if (/["\\]/.test(name)) return 'nftables cannot match an interface name with " or \\ in it';
  return undefined;
}

/**
 * The name of the table for TUN device `tunName`: `tuxburst_<tunName>`.
 * Characters nft does not allow in a name, and `_` itself, become `_` and
 * two hex digits per byte, so distinct devices always get distinct tables.
 *
 * @example
 * ```ts
 * natTableName("tuxburst0"); // "tuxburst_tuxburst0"
 * natTableName("tun_a"); // "tuxburst_tun_5fa"
 * ```
 */
export function natTableName(tunName: string): string {
  let escaped = "";
  for (const byte of new TextEncoder().encode(tunName)) {
    const char = String.fromCharCode(byte);
    escaped += /[A-Za-z0-9.-]/.test(char) ? char : `_${byte.toString(16).padStart(2, "0")}`;
  }
  return `tuxburst_${escaped}`;
}

/**
 * The table: masquerade the tunnel subnet out of the uplink, and accept
 * forwarding from the tunnel to the uplink and the replies back. The
 * `forward` chain only accepts, so it never blocks anything; where another
 * table drops forwarded packets (its policy, or iptables' FORWARD), that
 * drop still wins and must be opened there. The counters show in
 * `nft list table` whether traffic passes.
 *
 * @example
 * ```ts
 * natRuleset({ tunName: "tuxburst0", subnet: "10.99.0.0/30", uplink: "eth0" });
 * // table ip tuxburst_tuxburst0 { chain postrouting { … masquerade } chain forward { … } }
 * ```
 */
export function natRuleset(spec: NatSpec): string {
  const tun = nftString(spec.tunName);
  const uplink = nftString(spec.uplink);
  return `table ip ${natTableName(spec.tunName)} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${spec.subnet} oifname ${uplink} counter masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname ${tun} oifname ${uplink} counter accept
    iifname ${uplink} oifname ${tun} ct state established,related counter accept
  }
}
`;
}

/**
 * The script for `nft -f -` that installs `natRuleset`. A table of the same
 * name can only be left over from a tuxburst that was killed (SIGKILL, a
 * crash, a power cut) before it could delete it: the TUN device is exclusive
 * and made before the rules, so no running tuxburst owns that name. The
 * script declares the table (a no-op if it exists), deletes it and builds it
 * anew, all in one transaction: stale rules never pile up, and NAT is never
 * briefly missing.
 */
export function natInstallScript(spec: NatSpec): string {
  const table = `table ip ${natTableName(spec.tunName)}`;
  return `${table}\ndelete ${table}\n${natRuleset(spec)}`;
}

/** `name` as an nft string literal that matches exactly that interface. */
function nftString(name: string): string {
  const problem = nftNameProblem(name);
  if (problem) throw new RangeError(`"${name}": ${problem}`);
  return `"${name.endsWith("*") ? `${name.slice(0, -1)}\\*` : name}"`;
}
