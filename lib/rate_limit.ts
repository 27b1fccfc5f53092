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

/**
 * One token bucket per key (a sender's address), in a table of bounded size:
 * so that one busy sender cannot use up a budget that all of them share.
 * When the table is full, the senders not seen for longest are forgotten
 * (a forgotten sender starts again with a full bucket, which costs at most
 * one burst).
 *
 * @example
 * ```ts
 * const perSender = new KeyedTokenBuckets(5, 5, 4096);
 * if (perSender.take(from.address, performance.now())) answer();
 * ```
 */
export class KeyedTokenBuckets {
  readonly #buckets = new Map<string, TokenBucket>();

  constructor(
    readonly perSecond: number,
    readonly burst: number,
    readonly maxKeys: number,
  ) {}

  /** Takes one token from `key`'s bucket at time `now` (ms); false when it is empty. */
  take(key: string, now: number): boolean {
    let bucket = this.#buckets.get(key);
    if (bucket) {
      this.#buckets.delete(key); // to the end: the table is kept in order of last use
    } else {
      bucket = new TokenBucket(this.perSecond, this.burst);
      if (this.#buckets.size >= this.maxKeys) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
    }
    this.#buckets.set(key, bucket);
    return bucket.take(now);
  }

  /** How many senders are remembered. */
  get size(): number {
    return this.#buckets.size;
  }
}
