/**
 * Sliding-window replay and duplicate filter, as in RFC 6479: a ring of
 * 32-bit blocks, constant memory, O(1) per packet. Every copy of a packet
 * after the first, and every packet older than the window, is rejected.
 *
 * @module
 */

const BLOCK_BITS = 32;
const RING_BLOCKS = 256;
/**
 * How far behind the newest counter a packet may still arrive (8160). At
 * 100 k packets/s that is 80 ms of reordering; a copy delayed longer by a
 * stalled link is a duplicate anyway, or lost and left to TCP.
 */
export const REPLAY_WINDOW = (RING_BLOCKS - 1) * BLOCK_BITS;

/**
 * The receive-side filter of one session.
 *
 * @example
 * ```ts
 * const w = new ReplayWindow();
 * w.accept(7); // true: first copy
 * w.accept(7); // false: duplicate
 * ```
 */
export class ReplayWindow {
  readonly #ring = new Uint32Array(RING_BLOCKS);
  /** The highest counter accepted so far; -1 before the first. */
  #newest = -1;

  /** The highest counter accepted so far, or -1. */
  get newest(): number {
    return this.#newest;
  }

  /**
   * Whether `counter` would be accepted, without recording it. Used before
   * decryption so that duplicates cost no crypto; only `accept` after
   * authentication may move the window, or forgeries could push it forward.
   */
  check(counter: number): boolean {
    if (counter > this.#newest) return true;
    if (this.#newest - counter >= REPLAY_WINDOW) return false;
    const block = Math.floor(counter / BLOCK_BITS) % RING_BLOCKS;
    return (this.#ring[block] & (1 << (counter % BLOCK_BITS))) === 0;
  }

  /** Records `counter`; true when it is new (deliver it), false for a duplicate or too old. */
  accept(counter: number): boolean {
    if (counter > this.#newest) {
      const current = Math.floor(this.#newest / BLOCK_BITS);
      const target = Math.floor(counter / BLOCK_BITS);
      const stale = Math.min(target - current, RING_BLOCKS);
      for (let i = 1; i <= stale; i++) this.#ring[(current + i) % RING_BLOCKS] = 0;
      this.#newest = counter;
    } else if (this.#newest - counter >= REPLAY_WINDOW) {
      return false;
    }
    const block = Math.floor(counter / BLOCK_BITS) % RING_BLOCKS;
    const bit = 1 << (counter % BLOCK_BITS);
    if (this.#ring[block] & bit) return false;
    this.#ring[block] |= bit;
    return true;
  }
}
