import assert from "node:assert/strict";
import { deriveSessionCiphers, HandshakeMac, parseKeyHex, randomBytes } from "../lib/crypto.ts";
import { Session } from "../lib/session.ts";
import { Transport } from "../lib/transport.ts";
import {
  buildInit,
  buildResponse,
  buildUnknownSession,
  decodeProbe,
  encodeProbe,
  INIT_MAC_OFFSET,
  INIT_SIZE,
  MAX_COUNTER,
  MessageType,
  nonceFor,
  parseInit,
  parseResponse,
  parseTransportHeader,
  parseUnknownSession,
  RESPONSE_SIZE,
  TRANSPORT_OVERHEAD,
  UNKNOWN_SIZE,
  writeTransportHeader,
} from "../lib/wire.ts";

const PSK = parseKeyHex("5543E0FF".repeat(8)) as Uint8Array;

async function sessionPair(id = 7): Promise<{ client: Session; server: Session }> {
  const c = randomBytes();
  const s = randomBytes();
  const keys = await deriveSessionCiphers(PSK, id, c, s);
  return {
    client: new Session(id, keys.clientToServer, keys.serverToClient, 0),
    server: new Session(id, keys.serverToClient, keys.clientToServer, 0),
  };
}

Deno.test("wire: transport header round trip, including counters above 2^32", () => {
  for (const counter of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 48 + 5, MAX_COUNTER]) {
    const bytes = new Uint8Array(TRANSPORT_OVERHEAD + 3);
    writeTransportHeader(bytes, MessageType.Data, 0xdeadbeef, counter);
    assert.deepEqual(parseTransportHeader(bytes), {
      type: MessageType.Data,
      session: 0xdeadbeef,
      counter,
    });
  }
});

Deno.test("wire: the nonce is 4 zero bytes then the 64-bit counter", () => {
  assert.deepEqual([...nonceFor(2 ** 32 + 2)], [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
});

Deno.test("wire: malformed transport headers are dropped, never thrown", () => {
  const good = new Uint8Array(TRANSPORT_OVERHEAD);
  writeTransportHeader(good, MessageType.Probe, 1, 1);
  assert.ok(parseTransportHeader(good));
  assert.equal(parseTransportHeader(new Uint8Array(0)), undefined, "empty");
  assert.equal(parseTransportHeader(good.subarray(0, TRANSPORT_OVERHEAD - 1)), undefined, "short");
  const badType = good.slice();
  badType[0] = 0x7f;
  assert.equal(parseTransportHeader(badType), undefined, "unknown type");
  const reserved = good.slice();
  reserved[2] = 1;
  assert.equal(parseTransportHeader(reserved), undefined, "reserved bits");
  const huge = good.slice();
  huge[8] = 0xff;
  assert.equal(parseTransportHeader(huge), undefined, "counter beyond 2^53");
  for (let i = 0; i < 2000; i++) {
    parseTransportHeader(randomBytes(Math.floor(Math.random() * 100)));
    parseInit(randomBytes(INIT_SIZE));
    parseResponse(randomBytes(RESPONSE_SIZE));
    parseUnknownSession(randomBytes(UNKNOWN_SIZE));
  }
});

Deno.test("wire: handshake messages round trip and reject wrong sizes", () => {
  const random = randomBytes();
  const init = buildInit(42, random, 1_700_000_000_123);
  const parsed = parseInit(init)!;
  assert.equal(parsed.session, 42);
  assert.deepEqual(parsed.clientRandom, random);
  assert.equal(parsed.timestamp, 1_700_000_000_123);
  assert.equal(parsed.signed.length, INIT_MAC_OFFSET);
  assert.equal(parseInit(init.subarray(0, INIT_SIZE - 1)), undefined);
  assert.equal(parseInit(new Uint8Array([...init, 0])), undefined);

  const response = buildResponse(42, random);
  assert.equal(parseResponse(response)!.session, 42);
  assert.equal(parseResponse(init), undefined, "an INIT is not a RESPONSE");

  const unknown = buildUnknownSession(9, 2 ** 40);
  assert.deepEqual(
    {
      session: parseUnknownSession(unknown)!.session,
      counter: parseUnknownSession(unknown)!.counter,
    },
    { session: 9, counter: 2 ** 40 },
  );
});

Deno.test("wire: probe body round trip", () => {
  assert.deepEqual(decodeProbe(encodeProbe({ seq: 5, sentAt: 1234.5 })), {
    seq: 5,
    sentAt: 1234.5,
  });
  assert.equal(decodeProbe(new Uint8Array(3)), undefined);
});

Deno.test("transport: seal/open round trip; any flipped bit, other key or other header fails", async () => {
  const { client, server } = await sessionPair();
  const transport = new Transport();
  const packet = randomBytes(1400);
  const datagram = (await transport.seal(client, MessageType.Data, packet))!;
  assert.equal(datagram.length, packet.length + TRANSPORT_OVERHEAD);
  const header = parseTransportHeader(datagram)!;
  assert.deepEqual(header, { type: MessageType.Data, session: 7, counter: 0 });
  assert.deepEqual(await transport.open(server, header.counter, datagram), packet);

  for (const index of [0, 5, 9, 15, 16, 100, datagram.length - 1]) {
    const bad = datagram.slice();
    bad[index] ^= 0x10;
    const h = parseTransportHeader(bad);
    if (h) {
      assert.equal(await transport.open(server, h.counter, bad), null, `flipped byte ${index}`);
    }
  }
  const other = await sessionPair();
  assert.equal(await transport.open(other.server, 0, datagram), null, "other session keys");
  assert.equal(await transport.open(client, 0, datagram), null, "wrong direction");
});

Deno.test("transport: counters never repeat within a session", async () => {
  const { client } = await sessionPair();
  const transport = new Transport();
  const seen = new Set<number>();
  for (let i = 0; i < 100; i++) {
    const d = (await transport.seal(client, MessageType.Data, new Uint8Array(10)))!;
    seen.add(parseTransportHeader(d)!.counter);
  }
  assert.equal(seen.size, 100);
});

Deno.test("crypto: sessions of different handshakes have different keys", async () => {
  const a = await sessionPair(7);
  const b = await sessionPair(7); // same id, fresh randoms: as after a restart
  const transport = new Transport();
  const d = (await transport.seal(a.client, MessageType.Data, new Uint8Array(20)))!;
  assert.equal(await transport.open(b.server, 0, d), null);
});

Deno.test("crypto: handshake MAC verifies only with the same key and bytes", async () => {
  const mac = await HandshakeMac.fromPsk(PSK);
  const other = await HandshakeMac.fromPsk(parseKeyHex("00".repeat(32)) as Uint8Array);
  const data = randomBytes(32);
  const tag = await mac.mac(data);
  assert.equal(await mac.verify(tag, data), true);
  assert.equal(await other.verify(tag, data), false);
  const flipped = data.slice();
  flipped[0] ^= 1;
  assert.equal(await mac.verify(tag, flipped), false);
});

Deno.test("crypto: key parsing accepts 64 hex digits of either case and explains the rest", () => {
  assert.equal((parseKeyHex("ab".repeat(32)) as Uint8Array).length, 32);
  assert.equal((parseKeyHex(" AB".repeat(1) + "ab".repeat(31) + "\n") as Uint8Array).length, 32);
  assert.match(parseKeyHex("abc") as string, /64 hex digits/);
  assert.match(parseKeyHex("zz".repeat(32)) as string, /hexadecimal/);
});
