/**
 * Sends hostile datagrams to an address: random bytes of random length and,
 * given a capture, damaged copies of real datagrams (truncated, one bit
 * flipped, bytes appended), paced and bounded. Prints a JSON report.
 *
 *     garbage.ts --to 172.16.3.2:40000 [--count 5000] [--rate 2000]
 *                [--pcap capture.pcap --dport 40000 --damaged 2000]
 *       {"event":"report","sent":7000,"random":5000,"damaged":2000}
 *
 * @module
 */
import { parseArgs } from "node:util";
import { capturedPayloads, sendAll } from "./udp_send.ts";

function randomInt(below: number): number {
  return below <= 1 ? 0 : crypto.getRandomValues(new Uint32Array(1))[0] % below;
}

function randomBytes(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
  return bytes;
}

/** Random lengths weighted towards the sizes a header parser must get right. */
function randomDatagram(): Uint8Array {
  const kind = randomInt(10);
  const length = kind < 3 ? randomInt(33) : kind < 6 ? 16 + randomInt(113) : randomInt(1473);
  return randomBytes(length);
}

/** A damaged copy of a real datagram. */
function damage(original: Uint8Array): Uint8Array {
  const copy = original.slice();
  switch (randomInt(4)) {
    case 0: // truncated
      return copy.subarray(0, randomInt(copy.byteLength));
    case 1: { // one bit flipped anywhere
      if (copy.byteLength) copy[randomInt(copy.byteLength)] ^= 1 << randomInt(8);
      return copy;
    }
    case 2: { // one bit flipped in the first 32 bytes (a header)
      if (copy.byteLength) copy[randomInt(Math.min(32, copy.byteLength))] ^= 1 << randomInt(8);
      return copy;
    }
    default: { // bytes appended
      const longer = new Uint8Array(copy.byteLength + 1 + randomInt(64));
      longer.set(copy);
      longer.set(randomBytes(longer.byteLength - copy.byteLength), copy.byteLength);
      return longer;
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      to: { type: "string" },
      count: { type: "string", default: "5000" },
      rate: { type: "string", default: "2000" },
      pcap: { type: "string" },
      dport: { type: "string" },
      damaged: { type: "string", default: "0" },
    },
  });
  if (!values.to) {
    console.error(
      "usage: garbage.ts --to H:P [--count N] [--rate R] [--pcap FILE --dport P --damaged N]",
    );
    Deno.exit(2);
  }
  const random = Array.from({ length: Math.min(Number(values.count), 1_000_000) }, randomDatagram);
  const damaged: Uint8Array[] = [];
  if (values.pcap) {
    const originals = await capturedPayloads(
      values.pcap,
      values.dport ? Number(values.dport) : undefined,
    );
    const wanted = Math.min(Number(values.damaged), 1_000_000);
    for (let i = 0; originals.length && i < wanted; i++) {
      damaged.push(damage(originals[i % originals.length]));
    }
  }
  // Interleaved, so the damaged copies do not all arrive in one burst.
  const payloads: Uint8Array[] = [];
  for (let i = 0; i < Math.max(random.length, damaged.length); i++) {
    if (i < random.length) payloads.push(random[i]);
    if (i < damaged.length) payloads.push(damaged[i]);
  }
  const sent = await sendAll(values.to, payloads, Number(values.rate));
  console.log(
    JSON.stringify({ event: "report", sent, random: random.length, damaged: damaged.length }),
  );
}
