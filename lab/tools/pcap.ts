/**
 * A small reader of classic libpcap files (as `tcpdump -w` writes them) that
 * extracts IPv4 packets and UDP datagrams. Link types: EN10MB (Ethernet, with
 * 802.1Q tags), LINUX_SLL, LINUX_SLL2 and RAW. Truncated records end the
 * reading; packets it cannot decode are skipped.
 *
 * (The npm packages `pcap` and `pcap-parser` need native libpcap or Node
 * streams; this is shorter than either's glue.)
 *
 * @example
 * ```ts
 * const datagrams = udpDatagrams(await Deno.readFile("capture.pcap"));
 * const toServer = datagrams.filter((d) => d.dstPort === 40000);
 * ```
 *
 * @module
 */

/** An IPv4 packet from a capture. */
export interface Ipv4Packet {
  /** Capture time, ms since the epoch. */
  at: number;
  src: string;
  dst: string;
  /** IP protocol number (1 ICMP, 6 TCP, 17 UDP). */
  protocol: number;
  /** True for a fragment other than the first (its payload has no transport header). */
  laterFragment: boolean;
  /** The IP payload, as far as it was captured. */
  payload: Uint8Array;
}

/** A UDP datagram from a capture. */
export interface UdpDatagram {
  at: number;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
}

const LINKTYPE_EN10MB = 1;
const LINKTYPE_RAW = 101;
const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_LINUX_SLL2 = 276;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_VLAN = 0x8100;

/** The link type and the raw records of a pcap file. */
export function readPcap(
  bytes: Uint8Array,
): { linktype: number; records: { at: number; data: Uint8Array }[] } {
  if (bytes.byteLength < 24) throw new Error("not a pcap file: shorter than its header");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, true);
  let little: boolean;
  let nanos: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) [little, nanos] = [true, magic === 0xa1b23c4d];
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) {
    [little, nanos] = [false, magic === 0x4d3cb2a1];
  } else {throw new Error(
      `not a classic pcap file (magic ${magic.toString(16)}); pcapng is not supported`,
    );}
  const linktype = view.getUint32(20, little) & 0x0fff_ffff;
  const records: { at: number; data: Uint8Array }[] = [];
  for (let offset = 24; offset + 16 <= bytes.byteLength;) {
    const seconds = view.getUint32(offset, little);
    const fraction = view.getUint32(offset + 4, little);
    const captured = view.getUint32(offset + 8, little);
    const start = offset + 16;
    if (start + captured > bytes.byteLength) break;
    records.push({
      at: seconds * 1000 + (nanos ? fraction / 1e6 : fraction / 1e3),
      data: bytes.subarray(start, start + captured),
    });
    offset = start + captured;
  }
  return { linktype, records };
}

/** The IPv4 packets of a pcap file. */
export function ipv4Packets(bytes: Uint8Array): Ipv4Packet[] {
  const { linktype, records } = readPcap(bytes);
  const packets: Ipv4Packet[] = [];
  for (const { at, data } of records) {
    const ip = networkLayer(linktype, data);
    if (!ip || ip.byteLength < 20 || ip[0] >> 4 !== 4) continue;
    const headerLength = (ip[0] & 0x0f) * 4;
    const totalLength = (ip[2] << 8) | ip[3];
    if (headerLength < 20 || totalLength < headerLength) continue;
    packets.push({
      at,
      src: ip.subarray(12, 16).join("."),
      dst: ip.subarray(16, 20).join("."),
      protocol: ip[9],
      laterFragment: (((ip[6] & 0x1f) << 8) | ip[7]) !== 0,
      payload: ip.subarray(headerLength, Math.min(totalLength, ip.byteLength)),
    });
  }
  return packets;
}

/** The UDP datagrams of a pcap file (first fragments only, payload as captured). */
export function udpDatagrams(bytes: Uint8Array): UdpDatagram[] {
  const datagrams: UdpDatagram[] = [];
  for (const packet of ipv4Packets(bytes)) {
    const udp = packet.payload;
    if (packet.protocol !== 17 || packet.laterFragment || udp.byteLength < 8) continue;
    const length = (udp[4] << 8) | udp[5];
    if (length < 8) continue;
    datagrams.push({
      at: packet.at,
      src: packet.src,
      dst: packet.dst,
      srcPort: (udp[0] << 8) | udp[1],
      dstPort: (udp[2] << 8) | udp[3],
      payload: udp.subarray(8, Math.min(length, udp.byteLength)),
    });
  }
  return datagrams;
}

/** The IP header's start inside a link-layer frame, or undefined for other protocols. */
function networkLayer(linktype: number, frame: Uint8Array): Uint8Array | undefined {
  const u16 = (at: number) => (frame[at] << 8) | frame[at + 1];
  switch (linktype) {
    case LINKTYPE_EN10MB: {
      let at = 12;
      while (at + 2 <= frame.byteLength && u16(at) === ETHERTYPE_VLAN) at += 4;
      return at + 2 <= frame.byteLength && u16(at) === ETHERTYPE_IPV4
        ? frame.subarray(at + 2)
        : undefined;
    }
    case LINKTYPE_LINUX_SLL:
      return frame.byteLength >= 16 && u16(14) === ETHERTYPE_IPV4 ? frame.subarray(16) : undefined;
    case LINKTYPE_LINUX_SLL2:
      return frame.byteLength >= 20 && u16(0) === ETHERTYPE_IPV4 ? frame.subarray(20) : undefined;
    case LINKTYPE_RAW:
      return frame;
    default:
      return undefined;
  }
}
