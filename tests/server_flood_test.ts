/**
 * The server under a flood of unauthenticated messages: the MACs it computes
 * (INIT checks, UNKNOWN_SESSION answers) stay within its rate limits,
 * whatever arrives, and the rest is dropped and counted.
 */
import assert from "node:assert/strict";
import { FuzzGenerator } from "../lab/tools/fuzz.ts";
import { HANDSHAKES_PER_SECOND, ServerRole, UNKNOWN_ANSWERS_PER_SECOND } from "../lib/server.ts";
import { Transport } from "../lib/transport.ts";
import { buildInit, INIT_MAC_OFFSET, MessageType } from "../lib/wire.ts";
import { HandshakeMac, randomBytes, randomSessionId } from "../lib/crypto.ts";
import { KeyedTokenBuckets } from "../lib/rate_limit.ts";
import { FakeNetwork } from "./fakes.ts";

Deno.test("server: a flood of bad INITs and unknown sessions costs at most the limits' MACs", async () => {
  const network = new FakeNetwork();
  const socket = network.open("192.0.2.1", 40000);
  const attacker = network.open("198.51.100.7", 5555);
  const transport = new Transport();
  const role = await ServerRole.create({
    socket,
    peers: [{ name: "client", key: new Uint8Array(32).fill(1) }],
    pathTimeoutMs: 30_000,
    transport,
  });
  const fuzz = new FuzzGenerator(5, { captured: [], recordedInits: [] }, ["init", "badTag"]);
  const seconds = 3;
  const perSecond = 5000;
  let inits = 0;
  for (let i = 0; i < seconds * perSecond; i++) {
    const { kind, datagram } = fuzz.next();
    if (kind === "init") inits++;
    // Spread evenly over `seconds` of the server's clock, as a steady flood arrives.
    await role.control(datagram, socket, attacker.address, 1000 + (i * 1000) / perSecond);
  }
  const counters = transport.counters;
  const limit = (HANDSHAKES_PER_SECOND + UNKNOWN_ANSWERS_PER_SECOND) * (seconds + 1);
  assert.ok(inits > 1000, "the flood has INITs");
  assert.ok(counters.handshakeMacs > 0, "some were checked");
  assert.ok(
    counters.handshakeMacs <= limit,
    `${counters.handshakeMacs} MACs for ${seconds} s of flood, limit ${limit}`,
  );
  assert.equal(
    counters.badAuth,
    // UNKNOWN_SESSION answers each cost the server one MAC.
    counters.handshakeMacs - received(attacker, MessageType.UnknownSession),
    "every INIT checked failed",
  );
  assert.ok(counters.rateLimited >= seconds * perSecond - limit, "the rest were rate-limited");
  const packet = new Uint8Array(20);
  packet[0] = 0x45;
  assert.equal(role.destination(packet), undefined, "no session came of it");
});

/** Drains `socket`; how many of the datagrams waiting there were messages of `type`. */
function received(socket: ReturnType<FakeNetwork["open"]>, type: MessageType): number {
  const buffer = new Uint8Array(2048);
  let count = 0;
  for (let datagram = socket.receive(buffer); datagram; datagram = socket.receive(buffer)) {
    if (buffer[0] === type) count++;
  }
  return count;
}

Deno.test("server: a flood of INITs from one address does not keep another client from connecting", async () => {
  const network = new FakeNetwork();
  const socket = network.open("192.0.2.1", 40000);
  const attacker = network.open("198.51.100.7", 5555);
  const client = network.open("203.0.113.20", 6000);
  const key = new Uint8Array(32).fill(1);
  const role = await ServerRole.create({
    socket,
    peers: [{ name: "client", key }],
    pathTimeoutMs: 30_000,
    transport: new Transport(),
  });
  const mac = await HandshakeMac.fromPsk(key);
  const validInit = async (timestamp: number) => {
    const init = buildInit(randomSessionId(), randomBytes(), timestamp);
    init.set(await mac.mac(init.subarray(0, INIT_MAC_OFFSET)), INIT_MAC_OFFSET);
    return init;
  };
  const fuzz = new FuzzGenerator(9, { captured: [], recordedInits: [] }, ["init"]);
  // 5000 INITs a second from the attacker for 3 s; the client tries once a second, as it does.
  let answered = 0;
  for (let i = 0; i < 15_000; i++) {
    const now = 1000 + i / 5;
    await role.control(fuzz.next().datagram, socket, attacker.address, now);
    if (i % 5000 === 2500) {
      await role.control(await validInit(now), socket, client.address, now);
      answered += received(client, MessageType.Response);
    }
  }
  assert.equal(answered, 3, "every one of the client's handshakes was answered");
});

Deno.test("KeyedTokenBuckets: each key has its own budget, and the table stays bounded", () => {
  const buckets = new KeyedTokenBuckets(5, 5, 100);
  const taken = (key: string, now: number) =>
    Array.from({ length: 10 }, () => buckets.take(key, now)).filter(Boolean).length;
  assert.equal(taken("a", 0), 5, "a burst of 5");
  assert.equal(taken("b", 0), 5, "another key is not affected");
  assert.equal(taken("a", 1000), 5, "refilled after a second");
  for (let i = 0; i < 1000; i++) buckets.take(`spoofed ${i}`, 2000);
  assert.equal(buckets.size, 100);
});
