/**
 * The addresses of an IP packet read from or written to the TUN device, as
 * map keys: a 32-bit number for IPv4, the canonical text for IPv6. The server
 * routes outbound packets to a peer by destination and checks the source of
 * inbound ones against the sending peer with them.
 *
 * @module
 */
import { formatIpv6 } from "./endpoint.ts";

/** An IPv4 address as its 32-bit value, or an IPv6 address in canonical (RFC 5952) text. */
export type AddressKey = number | string;

const IPV4_HEADER_SIZE = 20;
const IPV4_SOURCE_OFFSET = 12;
const IPV4_DESTINATION_OFFSET = 16;
const IPV6_HEADER_SIZE = 40;
const IPV6_SOURCE_OFFSET = 8;
const IPV6_DESTINATION_OFFSET = 24;

/**
 * The destination address of `packet`; `undefined` when it is not a whole IP header.
 *
 * @example
 * ```ts
 * destinationOf(packet) === parseIpv4("10.99.0.2"); // an IPv4 packet to 10.99.0.2
 * ```
 */
export function destinationOf(packet: Uint8Array): AddressKey | undefined {
  return addressAt(packet, IPV4_DESTINATION_OFFSET, IPV6_DESTINATION_OFFSET);
}

/** The source address of `packet`; `undefined` when it is not a whole IP header. */
export function sourceOf(packet: Uint8Array): AddressKey | undefined {
  return addressAt(packet, IPV4_SOURCE_OFFSET, IPV6_SOURCE_OFFSET);
}

function addressAt(packet: Uint8Array, v4Offset: number, v6Offset: number): AddressKey | undefined {
  switch (packet[0] >> 4) {
    case 4:
      if (packet.length < IPV4_HEADER_SIZE) return undefined;
      return ((packet[v4Offset] << 24) | (packet[v4Offset + 1] << 16) |
        (packet[v4Offset + 2] << 8) | packet[v4Offset + 3]) >>> 0;
    case 6:
      if (packet.length < IPV6_HEADER_SIZE) return undefined;
      return formatIpv6(packet.subarray(v6Offset, v6Offset + 16));
    default:
      return undefined;
  }
}
