/**
 * The server under a flood of unauthenticated messages: the MACs it computes
 * (INIT checks, UNKNOWN_SESSION answers) stay within its rate limits,
 * whatever arrives, and the rest is dropped and counted.
 */
import assert from "node:assert/strict";
import { FuzzGenerator } from "../lab/tools/fuzz.ts";
import { HANDSHAKES_PER_SECOND, ServerRole, UNKNOWN_ANSWERS_PER_SECOND } from "../lib/server.ts";
import { Transport } from "../lib/transport.ts";
import { MessageType } from "../lib/wire.ts";
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
    counters.handshakeMacs - answers(attacker),
    "every INIT checked failed",
  );
  assert.ok(counters.rateLimited >= seconds * perSecond - limit, "the rest were rate-limited");
  const packet = new Uint8Array(20);
  packet[0] = 0x45;
  assert.equal(role.destination(packet), undefined, "no session came of it");
});

/** UNKNOWN_SESSION answers the attacker received (each cost the server one MAC). */
function answers(attacker: ReturnType<FakeNetwork["open"]>): number {
  const buffer = new Uint8Array(2048);
  let count = 0;
  for (let received = attacker.receive(buffer); received; received = attacker.receive(buffer)) {
    if (buffer[0] === MessageType.UnknownSession) count++;
  }
  return count;
}
