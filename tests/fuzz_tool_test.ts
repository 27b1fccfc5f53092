/**
 * The fuzzer's generator (`lab/tools/fuzz.ts`): the same seed repeats a run,
 * and each kind is the hostile datagram it claims to be, as the wire parsers
 * see it.
 */
import assert from "node:assert/strict";
import { FuzzGenerator, KINDS, MAX_LENGTH, recordedInits } from "../lab/tools/fuzz.ts";
import { HandshakeMac } from "../lib/crypto.ts";
import {
  INIT_SIZE,
  MessageType,
  parseInit,
  parseResponse,
  parseTransportHeader,
  parseUnknownSession,
} from "../lib/wire.ts";

const KEY = new Uint8Array(32).fill(7);

/** A real transport datagram of session 0xabcd, counter 500, as a capture would hold it. */
function captured(): Uint8Array {
  const datagram = new Uint8Array(100).fill(0x5a);
  datagram.set([MessageType.Data, 0, 0, 0, 0, 0, 0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0x01, 0xf4]);
  return datagram;
}

async function sources() {
  const inits = await recordedInits(KEY, new FuzzGenerator(1, { captured: [], recordedInits: [] }));
  return { captured: [captured()], recordedInits: inits };
}

Deno.test("fuzz: the same seed makes the same datagrams, another seed others", async () => {
  const from = await sources();
  const run = (seed: number) => {
    const generator = new FuzzGenerator(seed, from, KINDS, () => 1_700_000_000_000);
    return Array.from({ length: 500 }, () => generator.next());
  };
  assert.deepEqual(run(42), run(42));
  assert.notDeepEqual(run(42), run(43));
  // Every kind turns up in a run of this length.
  assert.deepEqual(new Set(run(42).map((d) => d.kind)), new Set(KINDS));
});

Deno.test("fuzz: each kind is what it says", async () => {
  const from = await sources();
  const generator = new FuzzGenerator(9, from);
  const mac = await HandshakeMac.fromPsk(KEY);
  const original = from.captured[0];
  for (let i = 0; i < 200; i++) {
    const random = generator.make("random");
    assert.ok(random.length <= MAX_LENGTH);

    const badTag = parseTransportHeader(generator.make("badTag"));
    assert.ok(badTag, "badTag has a well-formed transport header");
    assert.notEqual(badTag.session, 0);

    const forged = parseTransportHeader(generator.make("forged"));
    assert.equal(forged?.session, 0xabcd, "forged names the captured session");

    const truncated = generator.make("truncated");
    assert.ok(truncated.length < original.length);
    assert.deepEqual(truncated, original.subarray(0, truncated.length));

    const flipped = generator.make("bitflip");
    const differing = flipped.reduce(
      (bits, byte, at) => bits + popcount(byte ^ original[at]),
      0,
    );
    assert.equal(differing, 1, "bitflip flips exactly one bit");

    assert.deepEqual(generator.make("replay"), original);

    const init = parseInit(generator.make("init"));
    assert.ok(init, "init parses as an INIT");
    assert.equal(await mac.verify(init.mac, init.signed), false, "its MAC is bad");

    const replayed = parseInit(generator.make("initReplay"));
    assert.ok(replayed);
    assert.equal(await mac.verify(replayed.mac, replayed.signed), true, "a recorded INIT is valid");
    assert.ok(replayed.timestamp < Date.now() - 3_000_000, "and old");

    const unknown = generator.make("unknown");
    assert.ok(parseUnknownSession(unknown) || parseResponse(unknown));
  }
});

Deno.test("fuzz: kinds that need a capture or the key are left out without them", () => {
  const generator = new FuzzGenerator(1, { captured: [], recordedInits: [] });
  assert.deepEqual(generator.kinds, ["random", "badTag", "init", "unknown"]);
  assert.equal(
    new FuzzGenerator(1, { captured: [], recordedInits: [] }, ["init"]).next().datagram.length,
    INIT_SIZE,
  );
  assert.throws(() => new FuzzGenerator(1, { captured: [], recordedInits: [] }, ["replay"]).next());
});

function popcount(byte: number): number {
  let bits = 0;
  for (let b = byte; b; b >>= 1) bits += b & 1;
  return bits;
}
