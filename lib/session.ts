/**
 * One session: the keys of one handshake, the sender's counter and the
 * receiver's replay window. Both roles hold the same kind of object; only
 * which cipher is "send" and which is "receive" differs.
 *
 * @module
 */
import type { PacketCipher } from "./crypto.ts";
import { ReplayWindow } from "./replay.ts";
import { MAX_COUNTER } from "./wire.ts";

/**
 * After this many packets the client starts a new session, long before the
 * counter could run out (2^48 packets is years at line rate).
 */
export const REKEY_AFTER_PACKETS = 2 ** 48;

export class Session {
  readonly window = new ReplayWindow();
  #nextCounter = 0;
  /** Set by the server when the client has proven it holds the keys. */
  confirmed = false;

  constructor(
    readonly id: number,
    readonly sendCipher: PacketCipher,
    readonly receiveCipher: PacketCipher,
    readonly createdAt: number,
  ) {}

  /** Reserves the next send counter; `undefined` when the session is used up. */
  takeCounter(): number | undefined {
    if (this.#nextCounter >= MAX_COUNTER) return undefined;
    return this.#nextCounter++;
  }

  /** How many counters were taken so far, i.e. the next counter. */
  get sent(): number {
    return this.#nextCounter;
  }

  /** Whether the client should replace this session with a new handshake. */
  get worn(): boolean {
    return this.#nextCounter >= REKEY_AFTER_PACKETS;
  }
}
