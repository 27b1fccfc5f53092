import assert from "node:assert/strict";
import { REPLAY_WINDOW, ReplayWindow } from "../lib/replay.ts";
import { MAX_COUNTER } from "../lib/wire.ts";

Deno.test("replay window: in order, every packet once", () => {
  const w = new ReplayWindow();
  for (let i = 0; i < 20000; i++) assert.equal(w.accept(i), true, `counter ${i}`);
  for (let i = 20000 - REPLAY_WINDOW; i < 20000; i++) assert.equal(w.accept(i), false, `dup ${i}`);
});

Deno.test("replay window: duplicates are rejected, first copy wins", () => {
  const w = new ReplayWindow();
  assert.equal(w.accept(0), true);
  assert.equal(w.accept(0), false);
  assert.equal(w.accept(5), true);
  assert.equal(w.check(5), false);
  assert.equal(w.accept(5), false);
  assert.equal(w.accept(3), true);
  assert.equal(w.accept(3), false);
});

Deno.test("replay window: reordered packets inside the window are delivered once", () => {
  const w = new ReplayWindow();
  const order = [10, 2, 7, 1, 0, 9, 3, 8, 4, 6, 5];
  for (const c of order) assert.equal(w.accept(c), true, `first ${c}`);
  for (const c of order) assert.equal(w.accept(c), false, `again ${c}`);
});

Deno.test("replay window: far behind is rejected, edge of the window accepted", () => {
  const w = new ReplayWindow();
  assert.equal(w.accept(100_000), true);
  assert.equal(w.accept(100_000 - REPLAY_WINDOW), false, "just outside");
  assert.equal(w.accept(100_000 - REPLAY_WINDOW + 1), true, "just inside");
  assert.equal(w.accept(0), false, "far behind");
});

Deno.test("replay window: a jump far ahead clears the old bits", () => {
  const w = new ReplayWindow();
  for (let i = 0; i < 64; i++) w.accept(i);
  const far = 10 * REPLAY_WINDOW + 17;
  assert.equal(w.accept(far), true);
  assert.equal(w.newest, far);
  // Counters that share ring slots with the old ones are fresh again.
  for (let i = far - 40; i < far; i++) assert.equal(w.accept(i), true, `counter ${i}`);
  assert.equal(w.accept(63), false, "old one is now too old");
});

Deno.test("replay window: check() never moves the window (forgeries cannot push it)", () => {
  const w = new ReplayWindow();
  w.accept(5);
  assert.equal(w.check(1_000_000), true);
  assert.equal(w.newest, 5);
  assert.equal(w.accept(4), true);
});

Deno.test("replay window: ring wrap at block and 2^32 boundaries", () => {
  for (const base of [0, 31, 32, 8191, 8192, 2 ** 32 - 40, 2 ** 32 - 1, MAX_COUNTER - 100]) {
    const w = new ReplayWindow();
    for (let i = 0; i < 100 && base + i <= MAX_COUNTER; i++) {
      assert.equal(w.accept(base + i), true, `first ${base + i}`);
    }
    for (let i = 0; i < 100 && base + i <= MAX_COUNTER; i++) {
      assert.equal(w.accept(base + i), false, `dup ${base + i}`);
    }
  }
});

Deno.test("replay window: random order with duplicates delivers each counter exactly once", () => {
  const w = new ReplayWindow();
  let seed = 42;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const delivered = new Set<number>();
  for (let base = 0; base < 50_000; base += 100) {
    const batch: number[] = [];
    for (let i = 0; i < 100; i++) batch.push(base + i, base + i); // every packet twice
    batch.sort(() => rand() - 0.5);
    for (const c of batch) {
      if (w.accept(c)) {
        assert.equal(delivered.has(c), false, `delivered twice: ${c}`);
        delivered.add(c);
      }
    }
  }
  assert.equal(delivered.size, 50_000);
});
