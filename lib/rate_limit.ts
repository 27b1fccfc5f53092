/**
 * A token bucket: bounds the work that unauthenticated input can cause.
 *
 * @module
 */

/**
 * @example
 * ```ts
 * const limit = new TokenBucket(10, 20); // 10 per second, bursts of 20
 * if (limit.take(performance.now())) answer();
 * ```
 */
export class TokenBucket {
  #tokens: number;
  #updated = -Infinity;

  constructor(readonly perSecond: number, readonly burst: number) {
    this.#tokens = burst;
  }

  /** Takes one token at time `now` (ms); false when the bucket is empty. */
  take(now: number): boolean {
    if (now > this.#updated) {
      const refill = this.#updated === -Infinity
        ? this.burst
        : ((now - this.#updated) / 1000) * this.perSecond;
      this.#tokens = Math.min(this.burst, this.#tokens + refill);
      this.#updated = now;
    }
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }
}
