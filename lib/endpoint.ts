/**
 * UDP endpoints ("host:port") as the data path sees them.
 *
 * @module
 */

/** An IPv4 or IPv6 address and a UDP port; `key` identifies it in maps. */
export class Endpoint {
  /** `"1.2.3.4:40000"` or `"[2001:db8::1]:40000"`; equal endpoints have equal keys. */
  readonly key: string;

  constructor(
    /** Dotted IPv4 (`"10.0.0.1"`) or IPv6 without brackets (`"2001:db8::1"`). */
    readonly address: string,
    readonly port: number,
  ) {
    this.key = address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
  }

  /** 4 for IPv4, 6 for IPv6. */
  get family(): 4 | 6 {
    return this.address.includes(":") ? 6 : 4;
  }

  toString(): string {
    return this.key;
  }

  /**
   * Parses `"1.2.3.4:40000"` or `"[2001:db8::1]:40000"`; returns an error text
   * instead of throwing, so config loading can say which key is wrong.
   *
   * @example
   * ```ts
   * const e = Endpoint.parse("10.0.0.1:40000");
   * if (typeof e !== "string") console.log(e.port); // 40000
   * ```
   */
  static parse(text: string): Endpoint | string {
    const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(text);
    if (!match) return `expected "address:port" or "[ipv6]:port", got "${text}"`;
    const port = Number(match[3]);
    if (port < 1 || port > 65535) return `port must be 1-65535, got ${port}`;
    if (match[1] !== undefined) {
      const v6 = parseIpv6(match[1]);
      return v6 ? new Endpoint(formatIpv6(v6), port) : `"${match[1]}" is not an IPv6 address`;
    }
    const host = match[2];
    if (parseIpv4(host) === undefined) return `"${host}" is not an IPv4 address`;
    return new Endpoint(host, port);
  }
}

/** Parses a dotted IPv4 address into its 32-bit value, or `undefined`. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

/** Formats a 32-bit value as a dotted IPv4 address. */
export function formatIpv4(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

/** Parses an IPv6 address (with `::` and an optional dotted tail) into 16 bytes, or `undefined`. */
export function parseIpv6(text: string): Uint8Array | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    const items = s.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = parseIpv4(item);
        if (v4 === undefined) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(item)) {
        out.push(parseInt(item, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 255;
  });
  return bytes;
}

/** Formats 16 bytes as a canonical (RFC 5952) IPv6 address. */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}
