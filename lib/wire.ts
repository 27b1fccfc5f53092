/**
 * The tuxburst wire protocol: every message is one UDP datagram.
 *
 * Transport messages (data, probe, probe reply) all share one header, which is
 * authenticated as AES-256-GCM additional data:
 *
 * ```text
 *  0       1       2       3       4               8                      16
 * +-------+-------+-------+-------+---------------+----------------------+------------------+
 * | type  |   reserved (0)        | session (u32) | counter (u64, BE)    | ciphertext + tag |
 * +-------+-------+-------+-------+---------------+----------------------+------------------+
 * ```
 *
 * - `session`: the session the sender encrypts under, chosen by the client in
 *   its handshake; it selects the keys and the replay window on receipt.
 * - `counter`: the sender's packet number in this session, starting at 0. It is
 *   the AES-GCM nonce (4 zero bytes then the counter) and the replay-window
 *   index. A packet replicated over several links keeps its counter, so the
 *   receiver keeps the first copy and drops the others.
 *
 * Handshake messages are authenticated with HMAC-SHA256 (truncated to 16 bytes)
 * under a key derived from the pre-shared key:
 *
 * ```text
 * INIT (client → server), 48 bytes
 *  0 type=0x10 | 1..3 reserved | 4..7 session | 8..23 client random | 24..31 timestamp ms (u64) | 32..47 MAC
 * RESPONSE (server → client), 40 bytes
 *  0 type=0x11 | 1..3 reserved | 4..7 session | 8..23 server random | 24..39 MAC (also covers the client random)
 * UNKNOWN_SESSION (server → client), 32 bytes
 *  0 type=0x12 | 1..3 reserved | 4..7 session | 8..15 counter echo | 16..31 MAC
 * ```
 *
 * Parsing never throws: anything malformed comes back as `undefined`, and
 * the caller drops it.
 *
 * @module
 */

/** Message types (byte 0). */
export const MessageType = {
  /** An IP packet for the peer's TUN. */
  Data: 0x01,
  /** A keepalive that asks the peer to echo it on the same path. */
  Probe: 0x02,
  /** The echo of a probe, sent back on the path the probe came from. */
  ProbeReply: 0x03,
  /** Client → server: start a session. */
  Init: 0x10,
  /** Server → client: accept a session. */
  Response: 0x11,
  /** Server → client: "I do not know that session", so the client handshakes again. */
  UnknownSession: 0x12,
} as const;
export type MessageType = typeof MessageType[keyof typeof MessageType];

export const TYPE_OFFSET = 0;
export const SESSION_OFFSET = 4;
export const COUNTER_OFFSET = 8;
export const TRANSPORT_HEADER_SIZE = 16;
export const TAG_SIZE = 16;
/** Bytes a transport message adds to the packet it carries. */
export const TRANSPORT_OVERHEAD = TRANSPORT_HEADER_SIZE + TAG_SIZE;

export const RANDOM_SIZE = 16;
export const MAC_SIZE = 16;
export const INIT_RANDOM_OFFSET = 8;
export const INIT_TIMESTAMP_OFFSET = 24;
export const INIT_MAC_OFFSET = 32;
export const INIT_SIZE = 48;
export const RESPONSE_RANDOM_OFFSET = 8;
export const RESPONSE_MAC_OFFSET = 24;
export const RESPONSE_SIZE = 40;
export const UNKNOWN_COUNTER_OFFSET = 8;
export const UNKNOWN_MAC_OFFSET = 16;
export const UNKNOWN_SIZE = 32;

/** Probe plaintext: probe number (u32), reserved (u32), sender's clock in ms (f64). */
export const PROBE_BODY_SIZE = 16;

/**
 * What every message a side can receive looks like from its first bytes,
 * for the kernel to drop other datagrams before they take room in the
 * socket's queue (see `DatagramShape` in `io.ts`): at least 32 bytes (the
 * shortest, an empty transport message or an UNKNOWN_SESSION), and a first
 * word of one of the receiving side's types with the 3 reserved bytes zero.
 */
export function inboundShape(
  side: "client" | "server",
): { minLength: number; firstWords: number[] } {
  const types = side === "server"
    ? [MessageType.Data, MessageType.Probe, MessageType.Init]
    : [MessageType.Data, MessageType.ProbeReply, MessageType.Response, MessageType.UnknownSession];
  return { minLength: TRANSPORT_OVERHEAD, firstWords: types.map((type) => type * 0x100_0000) };
}

/**
 * Counters stay below 2^53 so they are exact JavaScript numbers; a sender
 * starts a new session long before (at 2^48 packets, years at line rate).
 */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

/** The header of a transport message, read without copying. */
export interface TransportHeader {
  type: typeof MessageType.Data | typeof MessageType.Probe | typeof MessageType.ProbeReply;
  session: number;
  counter: number;
}

/** Reads the message type, or `undefined` for an empty datagram. */
export function messageType(datagram: Uint8Array): number | undefined {
  return datagram.length > 0 ? datagram[TYPE_OFFSET] : undefined;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function reservedAreZero(datagram: Uint8Array): boolean {
  return datagram[1] === 0 && datagram[2] === 0 && datagram[3] === 0;
}

/**
 * Parses a transport header; `undefined` when the datagram is too short to
 * hold header and tag, uses reserved bits, or carries an impossible counter.
 */
export function parseTransportHeader(datagram: Uint8Array): TransportHeader | undefined {
  if (datagram.length < TRANSPORT_OVERHEAD) return undefined;
  const type = datagram[TYPE_OFFSET];
  if (type !== MessageType.Data && type !== MessageType.Probe && type !== MessageType.ProbeReply) {
    return undefined;
  }
  if (!reservedAreZero(datagram)) return undefined;
  const v = view(datagram);
  const high = v.getUint32(COUNTER_OFFSET);
  // A counter of 2^53 or more is never sent (see MAX_COUNTER): a forgery.
  if (high > 0x1fffff) return undefined;
  const counter = high * 0x1_0000_0000 + v.getUint32(COUNTER_OFFSET + 4);
  return { type, session: v.getUint32(SESSION_OFFSET), counter };
}

/** Writes a transport header into the first 16 bytes of `out`. */
export function writeTransportHeader(
  out: Uint8Array,
  type: TransportHeader["type"],
  session: number,
  counter: number,
): void {
  const v = view(out);
  v.setUint32(0, type << 24);
  v.setUint32(SESSION_OFFSET, session);
  v.setUint32(COUNTER_OFFSET, Math.floor(counter / 0x1_0000_0000));
  v.setUint32(COUNTER_OFFSET + 4, counter >>> 0);
}

/** The 12-byte AES-GCM nonce for a counter: 4 zero bytes, then the counter (BE). */
export function nonceFor(counter: number, out = new Uint8Array(12)): Uint8Array {
  const v = view(out);
  v.setUint32(0, 0);
  v.setUint32(4, Math.floor(counter / 0x1_0000_0000));
  v.setUint32(8, counter >>> 0);
  return out;
}

/** An INIT's fields. */
export interface Init {
  session: number;
  clientRandom: Uint8Array;
  timestamp: number;
  /** The bytes the MAC covers. */
  signed: Uint8Array;
  mac: Uint8Array;
}

/** Parses an INIT; `undefined` when malformed. The MAC is checked by the caller. */
export function parseInit(datagram: Uint8Array): Init | undefined {
  if (datagram.length !== INIT_SIZE || datagram[TYPE_OFFSET] !== MessageType.Init) return undefined;
  if (!reservedAreZero(datagram)) return undefined;
  const v = view(datagram);
  const high = v.getUint32(INIT_TIMESTAMP_OFFSET);
  if (high > 0x1fffff) return undefined;
  return {
    session: v.getUint32(SESSION_OFFSET),
    clientRandom: datagram.subarray(INIT_RANDOM_OFFSET, INIT_RANDOM_OFFSET + RANDOM_SIZE),
    timestamp: high * 0x1_0000_0000 + v.getUint32(INIT_TIMESTAMP_OFFSET + 4),
    signed: datagram.subarray(0, INIT_MAC_OFFSET),
    mac: datagram.subarray(INIT_MAC_OFFSET, INIT_SIZE),
  };
}

/** Builds an INIT without its MAC; the caller fills bytes 32..47. */
export function buildInit(
  session: number,
  clientRandom: Uint8Array,
  timestamp: number,
): Uint8Array {
  const out = new Uint8Array(INIT_SIZE);
  const v = view(out);
  out[TYPE_OFFSET] = MessageType.Init;
  v.setUint32(SESSION_OFFSET, session);
  out.set(clientRandom, INIT_RANDOM_OFFSET);
  v.setUint32(INIT_TIMESTAMP_OFFSET, Math.floor(timestamp / 0x1_0000_0000));
  v.setUint32(INIT_TIMESTAMP_OFFSET + 4, timestamp >>> 0);
  return out;
}

/** A RESPONSE's fields. */
export interface Response {
  session: number;
  serverRandom: Uint8Array;
  /** The bytes before the MAC; the MAC covers them followed by the client random. */
  signed: Uint8Array;
  mac: Uint8Array;
}

/** Parses a RESPONSE; `undefined` when malformed. */
export function parseResponse(datagram: Uint8Array): Response | undefined {
  if (datagram.length !== RESPONSE_SIZE || datagram[TYPE_OFFSET] !== MessageType.Response) {
    return undefined;
  }
  if (!reservedAreZero(datagram)) return undefined;
  return {
    session: view(datagram).getUint32(SESSION_OFFSET),
    serverRandom: datagram.subarray(RESPONSE_RANDOM_OFFSET, RESPONSE_RANDOM_OFFSET + RANDOM_SIZE),
    signed: datagram.subarray(0, RESPONSE_MAC_OFFSET),
    mac: datagram.subarray(RESPONSE_MAC_OFFSET, RESPONSE_SIZE),
  };
}

/** Builds a RESPONSE without its MAC; the caller fills bytes 24..39. */
export function buildResponse(session: number, serverRandom: Uint8Array): Uint8Array {
  const out = new Uint8Array(RESPONSE_SIZE);
  out[TYPE_OFFSET] = MessageType.Response;
  view(out).setUint32(SESSION_OFFSET, session);
  out.set(serverRandom, RESPONSE_RANDOM_OFFSET);
  return out;
}

/** An UNKNOWN_SESSION's fields. */
export interface UnknownSession {
  session: number;
  counter: number;
  signed: Uint8Array;
  mac: Uint8Array;
}

/** Parses an UNKNOWN_SESSION; `undefined` when malformed. */
export function parseUnknownSession(datagram: Uint8Array): UnknownSession | undefined {
  if (datagram.length !== UNKNOWN_SIZE || datagram[TYPE_OFFSET] !== MessageType.UnknownSession) {
    return undefined;
  }
  if (!reservedAreZero(datagram)) return undefined;
  const v = view(datagram);
  const high = v.getUint32(UNKNOWN_COUNTER_OFFSET);
  if (high > 0x1fffff) return undefined;
  return {
    session: v.getUint32(SESSION_OFFSET),
    counter: high * 0x1_0000_0000 + v.getUint32(UNKNOWN_COUNTER_OFFSET + 4),
    signed: datagram.subarray(0, UNKNOWN_MAC_OFFSET),
    mac: datagram.subarray(UNKNOWN_MAC_OFFSET, UNKNOWN_SIZE),
  };
}

/** Builds an UNKNOWN_SESSION without its MAC; the caller fills bytes 16..31. */
export function buildUnknownSession(session: number, counter: number): Uint8Array {
  const out = new Uint8Array(UNKNOWN_SIZE);
  const v = view(out);
  out[TYPE_OFFSET] = MessageType.UnknownSession;
  v.setUint32(SESSION_OFFSET, session);
  v.setUint32(UNKNOWN_COUNTER_OFFSET, Math.floor(counter / 0x1_0000_0000));
  v.setUint32(UNKNOWN_COUNTER_OFFSET + 4, counter >>> 0);
  return out;
}

/** Probe plaintext. */
export interface ProbeBody {
  seq: number;
  sentAt: number;
}

export function encodeProbe(body: ProbeBody): Uint8Array {
  const out = new Uint8Array(PROBE_BODY_SIZE);
  const v = view(out);
  v.setUint32(0, body.seq);
  v.setFloat64(8, body.sentAt);
  return out;
}

export function decodeProbe(plaintext: Uint8Array): ProbeBody | undefined {
  if (plaintext.length !== PROBE_BODY_SIZE) return undefined;
  const v = view(plaintext);
  return { seq: v.getUint32(0), sentAt: v.getFloat64(8) };
}
