/**
 * The outside world of the data path, as small interfaces: the real kernel
 * (`ffi/`) and in-memory fakes (`tests/fakes.ts`) both implement them, so the
 * same tunnel code runs against either.
 *
 * @module
 */
import type { Endpoint } from "./endpoint.ts";

/** Something the reactor can wait on; `fd` is -1 for in-memory fakes. */
export interface Waitable {
  readonly fd: number;
}

/** A TUN device carrying raw IP packets (no packet-info header). */
export interface Tun extends Waitable {
  readonly name: string;
  readonly mtu: number;
  /** Reads one packet into `buf`; returns its length, or `null` when none is waiting. */
  read(buf: Uint8Array): number | null;
  /** Writes one IP packet; returns false when the kernel refused it (counted, not fatal). */
  write(packet: Uint8Array): boolean;
  /** Closes the device; the kernel then removes it and its routes. Idempotent. */
  close(): void;
}

/** One received datagram: its length in the caller's buffer and its sender. */
export interface Received {
  readonly length: number;
  readonly from: Endpoint;
}

/** A non-blocking UDP socket (one per client uplink, one for the server). */
export interface UdpSocket extends Waitable {
  /** What it is bound to, for logs: the interface name or the listen address. */
  readonly label: string;
  /** Reads one datagram into `buf`; `null` when none is waiting. */
  receive(buf: Uint8Array): Received | null;
  /**
   * Sends one datagram without blocking. Returns `null` on success, or the
   * errno name (`"ENETUNREACH"`, `"EAGAIN"`) when the kernel refused it: one
   * failing link must never delay or break the others, so this never throws.
   */
  send(datagram: Uint8Array, to: Endpoint): string | null;
  /**
   * Reads up to `buffers.length` datagrams with one call (`recvmmsg`):
   * datagram `i` into `buffers[i]`, its length into `lengths[i]` and its
   * sender into `senders[i]`. Returns how many; 0 when none is waiting.
   */
  receiveBatch(buffers: readonly Uint8Array[], lengths: Uint32Array, senders: Endpoint[]): number;
  /**
   * Sends `datagrams[i]` to `to[i]` for `start <= i < end` with one call
   * (`sendmmsg`), in order. `sent` is how many from `start` the kernel took.
   * When that is fewer than asked, `error` is the errno name that refused
   * the next one (`"EAGAIN"`: the socket buffer is full), or `null` when the
   * kernel simply took fewer (ask again for the rest). Never throws.
   */
  sendBatch(
    datagrams: readonly Uint8Array[],
    to: readonly Endpoint[],
    start: number,
    end: number,
  ): BatchSent;
  /** Idempotent. */
  close(): void;
}

/**
 * The datagrams a socket wants at all, judged from their first bytes, so the
 * kernel can drop the rest before they take room in the socket's receive
 * queue: a flood of garbage must not crowd out the peer's datagrams.
 */
export interface DatagramShape {
  /** Shorter datagrams are dropped. */
  minLength: number;
  /** The first 32-bit word (big-endian) must be one of these. */
  firstWords: readonly number[];
}

/** What one `sendBatch` call did. */
export interface BatchSent {
  sent: number;
  error: string | null;
}

/** Waits for input on many sources at once (`poll()` for the real kernel). */
export interface Reactor {
  /**
   * Resolves when any of `sources` may be readable, when `timeoutMs` has
   * passed, or when `wake()` is called. Spurious wake-ups are allowed: the
   * caller drains every `ready` source until it returns `null`.
   */
  wait(sources: readonly Waitable[], timeoutMs: number): Promise<void>;
  /**
   * Whether `source`, one of the last `wait()`'s, may have input: `false`
   * only when that wait saw it idle, so reading it would find nothing. Input
   * that arrives after the wait makes the next `wait()` return at once.
   */
  ready(source: Waitable): boolean;
  /** Ends the current or next `wait()` early; safe from a signal handler. */
  wake(): void;
  /** Idempotent. */
  close(): void;
}

/** Milliseconds on a monotonic clock; fakes step it by hand. */
export interface Clock {
  now(): number;
}
