/**
 * A fuzzer for a tuxburst server's UDP port: sends hostile datagrams of every
 * kind the server must drop cheaply, for a bounded time and count, from a
 * seeded random generator (the same `--seed` sends the same datagrams), and
 * prints one JSON report of what it sent and what came back. SIGINT or
 * SIGTERM end it early, with the report.
 *
 *     fuzz.ts --to 172.16.3.2:40000 [--seconds 20] [--count 1000000] [--rate 20000]
 *             [--seed 1] [--mix random,badTag,…] [--pcap capture.pcap --dport 40000]
 *             [--key HEX]
 *       {"event":"sending","seed":1,"to":"172.16.3.2:40000"}
 *       {"event":"report","seed":1,"sent":{"random":…},"total":…,"replies":{…},…}
 *
 * Kinds (`--mix` picks some; default all that have what they need):
 *
 * - `random`: random bytes, random length 0..1500.
 * - `badTag`: a well-formed transport header (data, probe or probe reply)
 *   naming a random session, then random bytes as ciphertext and tag: the
 *   server's "unknown session" path, whose answers are rate-limited.
 * - `forged`: the same for the live session (its id read from the capture)
 *   with a counter near the captured ones: each costs the server one
 *   AES-GCM check, which fails; it must not move the replay window.
 * - `truncated`, `bitflip`: a captured datagram cut short, or with one bit
 *   flipped (a third of the flips in the 16-byte header).
 * - `replay`: a captured datagram, byte for byte.
 * - `init`: an INIT with a fresh session id, random and timestamp and a
 *   random MAC (the attacker has no key): each costs the server an HMAC,
 *   which its handshake rate limit bounds.
 * - `initReplay` (only with `--key`): an INIT with a valid MAC and a
 *   timestamp an hour old, as recorded from an earlier run: the server must
 *   check it and reject it as old.
 * - `unknown`: messages only a server sends (UNKNOWN_SESSION and RESPONSE),
 *   right length, bad MAC.
 *
 * Captured datagrams come from `--pcap` (e.g. `tcpdump -w` on the path, as
 * `Lab.capture` makes), as an attacker on the path would record them; the
 * datagrams to `--dport` are used. `--key` is given only to make the recorded
 * INITs an attacker would have from an earlier run; the fuzzer never
 * completes a handshake and cannot make a datagram the server accepts.
 *
 * `--rate 0` sends as fast as the socket takes them (a flood; pair it with
 * `--mix random` for pure garbage), cycling through 4096 datagrams made
 * beforehand. Datagrams the kernel refuses (a full
 * socket buffer) are counted under `sendErrors` and not retried. Whatever the
 * server answers is read and counted by type under `replies`; `tunnel`
 * there counts transport messages, which the server must never send to the
 * attacker's address.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { openUdpSocket } from "../../ffi/udp.ts";
import { HandshakeMac, parseKeyHex } from "../../lib/crypto.ts";
import { Endpoint } from "../../lib/endpoint.ts";
import { seededRandom } from "../../lib/random.ts";
import {
  buildInit,
  buildResponse,
  buildUnknownSession,
  INIT_MAC_OFFSET,
  MAC_SIZE,
  MessageType,
  parseTransportHeader,
  RANDOM_SIZE,
  RESPONSE_MAC_OFFSET,
  TRANSPORT_HEADER_SIZE,
  TRANSPORT_OVERHEAD,
  UNKNOWN_MAC_OFFSET,
  writeTransportHeader,
} from "../../lib/wire.ts";
import { capturedPayloads, parseTarget } from "./udp_send.ts";

/** Every kind of datagram the fuzzer makes, in report order. */
export const KINDS = [
  "random",
  "badTag",
  "forged",
  "truncated",
  "bitflip",
  "replay",
  "init",
  "initReplay",
  "unknown",
] as const;
export type Kind = typeof KINDS[number];

/** Largest datagram the fuzzer sends: what fits a 1500-byte link without fragments, rounded up. */
export const MAX_LENGTH = 1500;
/** Recorded INITs made with `--key`. */
const RECORDED_INITS = 16;
/** Datagrams made before a flood (`--rate 0`) and sent in turn. */
const FLOOD_POOL = 4096;
/** An hour: the age of the recorded INITs. */
const RECORDED_AGE_MS = 3_600_000;

/** What the generator works from besides its seed. */
export interface FuzzSources {
  /** Real datagrams to the server, as captured on the path. */
  captured: Uint8Array[];
  /** INITs with a valid MAC and an old timestamp (only when the key was given). */
  recordedInits: Uint8Array[];
}

/**
 * Makes hostile datagrams from a seed: the same seed, sources and kinds give
 * the same sequence, so a failing run can be repeated.
 *
 * @example
 * ```ts
 * const fuzz = new FuzzGenerator(7, { captured: [], recordedInits: [] });
 * const { kind, datagram } = fuzz.next(); // e.g. "init" and 48 bytes with a bad MAC
 * ```
 */
export class FuzzGenerator {
  readonly kinds: readonly Kind[];
  readonly #random: () => number;
  readonly #sources: FuzzSources;
  /** Session ids and the highest counter of each seen in the capture (for `forged`). */
  readonly #sessions: { id: number; counter: number }[];

  /** `now` stamps the INITs (wall-clock ms, so they look fresh); the rest comes from `seed`. */
  constructor(
    seed: number,
    sources: FuzzSources,
    wanted: readonly Kind[] = KINDS,
    readonly now: () => number = Date.now,
  ) {
    this.#random = seededRandom(seed);
    this.#sources = sources;
    const highest = new Map<number, number>();
    for (const datagram of sources.captured) {
      const header = parseTransportHeader(datagram);
      if (header) {
        highest.set(header.session, Math.max(highest.get(header.session) ?? 0, header.counter));
      }
    }
    this.#sessions = [...highest].map(([id, counter]) => ({ id, counter }));
    this.kinds = wanted.filter((kind) => this.#possible(kind));
  }

  /** Whether this generator has what `kind` needs. */
  #possible(kind: Kind): boolean {
    switch (kind) {
      case "forged":
        return this.#sessions.length > 0;
      case "truncated":
      case "bitflip":
      case "replay":
        return this.#sources.captured.length > 0;
      case "initReplay":
        return this.#sources.recordedInits.length > 0;
      default:
        return true;
    }
  }

  /** The next datagram; kinds take turns at random, equally often. */
  next(): { kind: Kind; datagram: Uint8Array } {
    if (this.kinds.length === 0) throw new Error("no kind of datagram can be made");
    const kind = this.kinds[this.int(this.kinds.length)];
    return { kind, datagram: this.make(kind) };
  }

  /** A datagram of one kind. */
  make(kind: Kind): Uint8Array {
    switch (kind) {
      case "random":
        return this.bytes(this.int(MAX_LENGTH + 1));
      case "badTag":
        return this.#transport(this.#nonZeroU32(), this.#u32() % 1_000_000);
      case "forged": {
        const session = this.#pick(this.#sessions);
        // Around the live counters: behind, at and ahead of the window's edge.
        const counter = Math.max(0, session.counter - 100 + this.int(10_000));
        return this.#transport(session.id, counter);
      }
      case "truncated": {
        const original = this.#pick(this.#sources.captured);
        return original.slice(0, this.int(original.length));
      }
      case "bitflip": {
        const copy = this.#pick(this.#sources.captured).slice();
        if (copy.length === 0) return copy;
        const span = this.int(3) === 0 ? Math.min(TRANSPORT_HEADER_SIZE, copy.length) : copy.length;
        copy[this.int(span)] ^= 1 << this.int(8);
        return copy;
      }
      case "replay":
        return this.#pick(this.#sources.captured).slice();
      case "init": {
        const init = buildInit(this.#nonZeroU32(), this.bytes(RANDOM_SIZE), this.now());
        init.set(this.bytes(MAC_SIZE), INIT_MAC_OFFSET);
        return init;
      }
      case "initReplay":
        return this.#pick(this.#sources.recordedInits).slice();
      case "unknown": {
        if (this.int(2) === 0) {
          const message = buildUnknownSession(this.#nonZeroU32(), this.#u32());
          message.set(this.bytes(MAC_SIZE), UNKNOWN_MAC_OFFSET);
          return message;
        }
        const message = buildResponse(this.#nonZeroU32(), this.bytes(RANDOM_SIZE));
        message.set(this.bytes(MAC_SIZE), RESPONSE_MAC_OFFSET);
        return message;
      }
    }
  }

  /** A transport header for `session` and `counter`, then random "ciphertext" and tag. */
  #transport(session: number, counter: number): Uint8Array {
    const types = [MessageType.Data, MessageType.Probe, MessageType.ProbeReply] as const;
    const length = TRANSPORT_OVERHEAD + this.int(MAX_LENGTH - TRANSPORT_OVERHEAD + 1);
    const datagram = this.bytes(length);
    writeTransportHeader(datagram, types[this.int(types.length)], session, counter);
    return datagram;
  }

  /** A whole number in [0, below). */
  int(below: number): number {
    return Math.floor(this.#random() * below);
  }

  /** `length` random bytes. */
  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i += 4) {
      const word = this.#u32();
      for (let j = 0; j < 4 && i + j < length; j++) out[i + j] = (word >>> (8 * j)) & 0xff;
    }
    return out;
  }

  #u32(): number {
    return Math.floor(this.#random() * 0x1_0000_0000) >>> 0;
  }

  #nonZeroU32(): number {
    return this.#u32() || 1;
  }

  #pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

/** INITs as a client with `key` sent them an hour ago: valid MACs, old timestamps. */
export async function recordedInits(key: Uint8Array, random: FuzzGenerator): Promise<Uint8Array[]> {
  const mac = await HandshakeMac.fromPsk(key);
  const inits: Uint8Array[] = [];
  const then = Date.now() - RECORDED_AGE_MS;
  for (let i = 0; i < RECORDED_INITS; i++) {
    const init = buildInit(random.int(0xffff_fffe) + 1, random.bytes(RANDOM_SIZE), then + i);
    init.set(await mac.mac(init.subarray(0, INIT_MAC_OFFSET)), INIT_MAC_OFFSET);
    inits.push(init);
  }
  return inits;
}

/** The JSON report. */
export interface FuzzReport {
  event: "report";
  seed: number;
  to: string;
  kinds: Kind[];
  /** Captured datagrams used, and recorded INITs made. */
  captured: number;
  recordedInits: number;
  /** Datagrams the kernel took, per kind. */
  sent: Partial<Record<Kind, number>>;
  total: number;
  /** Sends the kernel refused, by errno name. */
  sendErrors: Record<string, number>;
  seconds: number;
  /** Datagrams sent per second, on average. */
  pps: number;
  /** What came back, by message type: `response`, `unknownSession`, `tunnel` (must be 0), `other`. */
  replies: Record<"response" | "unknownSession" | "tunnel" | "other", number>;
}

/** Sends datagrams from `generator` to `to` until `seconds` or `count` run out; see the module doc. */
export async function fuzz(
  generator: FuzzGenerator,
  options: {
    to: string;
    seconds: number;
    count: number;
    rate: number;
    seed: number;
    /** Called once, right before the first datagram goes out. */
    onStart?: () => void;
    /** Ends the sending early; the report covers what was sent until then. */
    signal?: AbortSignal;
  },
): Promise<FuzzReport> {
  const { host, port } = parseTarget(options.to);
  const target = new Endpoint(host, port);
  using socket = openUdpSocket({ family: target.family });
  const sent: Partial<Record<Kind, number>> = {};
  const sendErrors: Record<string, number> = {};
  const replies = { response: 0, unknownSession: 0, tunnel: 0, other: 0 };
  const buffer = new Uint8Array(65536);
  const drain = () => {
    for (let i = 0; i < 1000; i++) {
      const received = socket.receive(buffer);
      if (!received) return;
      const type = received.length > 0 ? buffer[0] : -1;
      if (type === MessageType.Response) replies.response++;
      else if (type === MessageType.UnknownSession) replies.unknownSession++;
      else if (type >= MessageType.Data && type <= MessageType.ProbeReply) replies.tunnel++;
      else replies.other++;
    }
  };
  // A flood cycles through datagrams made beforehand: making each costs more than sending it.
  const pool = options.rate <= 0
    ? Array.from({ length: FLOOD_POOL }, () => generator.next())
    : undefined;
  let total = 0;
  let attempts = 0;
  options.onStart?.();
  const started = performance.now();
  const ends = started + options.seconds * 1000;
  const going = () =>
    attempts < options.count && performance.now() < ends && !options.signal?.aborted;
  const sendOne = () => {
    const { kind, datagram } = pool ? pool[attempts % pool.length] : generator.next();
    const error = socket.send(datagram, target);
    if (error === null) {
      sent[kind] = (sent[kind] ?? 0) + 1;
      total++;
    } else {
      sendErrors[error] = (sendErrors[error] ?? 0) + 1;
    }
  };
  if (options.rate <= 0) {
    // A flood: no pacing; look at the clock and the replies every few hundred sends.
    while (going()) {
      for (let i = 0; i < 256 && attempts < options.count; i++, attempts++) sendOne();
      drain();
      // Let the event loop run now and then (signals, timers): about every 0.1 s.
      if (attempts % 16384 < 256) await new Promise((resolve) => setTimeout(resolve, 0));
    }
  } else {
    // Paced in 10 ms ticks: the datagrams owed by now, then sleep to the next tick.
    while (going()) {
      const due = Math.min(
        options.count,
        Math.ceil((performance.now() - started) * options.rate / 1000),
      );
      for (; attempts < due; attempts++) sendOne();
      drain();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  // Answers to the last datagrams are still on their way.
  await new Promise((resolve) => setTimeout(resolve, 200));
  drain();
  const seconds = (Math.min(performance.now(), ends) - started) / 1000;
  return {
    event: "report",
    seed: options.seed,
    to: options.to,
    kinds: [...generator.kinds],
    captured: 0,
    recordedInits: 0,
    sent,
    total,
    sendErrors,
    seconds: Math.round(seconds * 1000) / 1000,
    pps: Math.round(total / Math.max(seconds, 0.001)),
    replies,
  };
}

const USAGE = `usage: fuzz.ts --to HOST:PORT [--seconds S] [--count N] [--rate PPS|0] [--seed N]
               [--mix ${KINDS.join(",")}] [--pcap FILE [--dport PORT]] [--key HEX]`;

if (import.meta.main) {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        to: { type: "string" },
        seconds: { type: "string", default: "10" },
        count: { type: "string", default: "10000000" },
        rate: { type: "string", default: "10000" },
        seed: { type: "string" },
        mix: { type: "string", default: KINDS.join(",") },
        pcap: { type: "string" },
        dport: { type: "string" },
        key: { type: "string" },
      },
    }));
  } catch (error) {
    console.error(`fuzz.ts: ${error instanceof Error ? error.message : error}\n${USAGE}`);
    Deno.exit(2);
  }
  const number = (name: string, text: string, max: number) => {
    const value = Number(text);
    if (!Number.isFinite(value) || value < 0 || value > max) {
      console.error(`fuzz.ts: --${name} must be a number from 0 to ${max}, got "${text}"`);
      Deno.exit(2);
    }
    return value;
  };
  const mix = values.mix.split(",").map((kind) => kind.trim());
  const unknown = mix.filter((kind) => !(KINDS as readonly string[]).includes(kind));
  if (!values.to || unknown.length) {
    console.error(unknown.length ? `fuzz.ts: unknown kind "${unknown[0]}"\n${USAGE}` : USAGE);
    Deno.exit(2);
  }
  // A seed in the report, also when none was given, so any run can be repeated.
  const seed = values.seed === undefined
    ? crypto.getRandomValues(new Uint32Array(1))[0]
    : number("seed", values.seed, 0xffff_ffff);
  const captured = values.pcap
    ? (await capturedPayloads(values.pcap, values.dport ? Number(values.dport) : undefined))
      .filter((payload) => payload.length <= 65507)
    : [];
  let inits: Uint8Array[] = [];
  if (values.key !== undefined) {
    const key = parseKeyHex(values.key);
    if (typeof key === "string") {
      console.error(`fuzz.ts: --key ${key}`);
      Deno.exit(2);
    }
    inits = await recordedInits(
      key,
      new FuzzGenerator(seed ^ 0x5eed, { captured: [], recordedInits: [] }),
    );
  }
  const generator = new FuzzGenerator(seed, { captured, recordedInits: inits }, mix as Kind[]);
  if (generator.kinds.length === 0) {
    console.error(`fuzz.ts: none of ${mix.join(", ")} can be made without --pcap or --key`);
    Deno.exit(2);
  }
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  for (const name of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(name, onSignal);
  const report = await fuzz(generator, {
    to: values.to,
    seconds: number("seconds", values.seconds, 3600),
    count: number("count", values.count, 1e9),
    rate: number("rate", values.rate, 1e7),
    seed,
    onStart: () => console.log(JSON.stringify({ event: "sending", seed, to: values.to })),
    signal: stop.signal,
  });
  for (const name of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(name, onSignal);
  report.captured = captured.length;
  report.recordedInits = inits.length;
  console.log(JSON.stringify(report));
}
