/**
 * Small deterministic random numbers, so that impaired runs (in tests and in
 * the lab) repeat exactly for the same seed.
 *
 * @module
 */

/**
 * A seeded PRNG (mulberry32): uniform numbers in [0, 1), the same sequence
 * for the same seed. Not for cryptography.
 *
 * @example
 * ```ts
 * const random = seededRandom(42);
 * const coin = random() < 0.5 ? "heads" : "tails";
 * ```
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A seed for an independent stream derived from `seed`, so that one user
 * seed can drive several PRNGs whose sequences do not overlap or correlate
 * (e.g. packet loss and the stall schedule).
 *
 * @example
 * ```ts
 * const loss = seededRandom(deriveSeed(7, 1));
 * const stalls = seededRandom(deriveSeed(7, 2));
 * ```
 */
export function deriveSeed(seed: number, stream: number): number {
  // The finaliser of MurmurHash3: every input bit affects every output bit.
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
