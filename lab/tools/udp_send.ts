/**
 * Sends UDP datagrams to an address, paced, and prints a JSON report.
 *
 *     udp_send.ts unique --to 172.16.4.2:7000 --count 200 [--prefix msg] [--rate 500]
 *       payloads "msg-000001" … "msg-000200", each once
 *     udp_send.ts replay --to 172.16.3.2:40000 --pcap capture.pcap [--dport 40000] [--rate 2000]
 *       the payloads of the captured UDP datagrams (to port --dport, when given), in order
 *       {"event":"report","sent":200}
 *
 * @module
 */
import dgram from "node:dgram";
import { parseArgs } from "node:util";
import { udpDatagrams } from "./pcap.ts";

/** `"host:port"` → parts; throws on anything else. */
export function parseTarget(text: string): { host: string; port: number } {
  const match = /^(.+):(\d{1,5})$/.exec(text);
  if (!match) throw new Error(`expected host:port, got "${text}"`);
  return { host: match[1], port: Number(match[2]) };
}

/**
 * Sends each payload once to `to`, at most `rate` per second (in 10 ms
 * ticks), and resolves when every send has completed. Returns how many the
 * kernel accepted.
 */
export async function sendAll(to: string, payloads: Uint8Array[], rate: number): Promise<number> {
  const { host, port } = parseTarget(to);
  const socket = dgram.createSocket("udp4");
  let sent = 0;
  const perTick = Math.max(1, Math.ceil(rate / 100));
  try {
    for (let i = 0; i < payloads.length; i += perTick) {
      const tick = performance.now();
      // One at a time: concurrent sends may leave in another order.
      for (const payload of payloads.slice(i, i + perTick)) {
        await new Promise<void>((resolve) =>
          socket.send(payload, port, host, (error) => {
            if (!error) sent++;
            resolve();
          })
        );
      }
      const rest = 10 - (performance.now() - tick);
      if (rest > 0 && i + perTick < payloads.length) {
        await new Promise((resolve) => setTimeout(resolve, rest));
      }
    }
  } finally {
    socket.close();
  }
  return sent;
}

/** The payloads of the UDP datagrams in a pcap file, to `dstPort` when given. */
export async function capturedPayloads(file: string, dstPort?: number): Promise<Uint8Array[]> {
  return udpDatagrams(await Deno.readFile(file))
    .filter((datagram) => dstPort === undefined || datagram.dstPort === dstPort)
    .map((datagram) => datagram.payload);
}

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      to: { type: "string" },
      count: { type: "string", default: "100" },
      prefix: { type: "string", default: "msg" },
      rate: { type: "string", default: "1000" },
      pcap: { type: "string" },
      dport: { type: "string" },
    },
  });
  let payloads: Uint8Array[];
  if (positionals[0] === "unique" && values.to) {
    const count = Math.min(Number(values.count), 1_000_000);
    payloads = Array.from(
      { length: count },
      (_, i) => new TextEncoder().encode(`${values.prefix}-${String(i + 1).padStart(6, "0")}`),
    );
  } else if (positionals[0] === "replay" && values.to && values.pcap) {
    payloads = await capturedPayloads(values.pcap, values.dport ? Number(values.dport) : undefined);
  } else {
    console.error(
      "usage: udp_send.ts unique --to H:P --count N | replay --to H:P --pcap FILE [--dport P]",
    );
    Deno.exit(2);
  }
  const sent = await sendAll(values.to!, payloads, Number(values.rate));
  console.log(JSON.stringify({ event: "report", sent, payloads: payloads.length }));
}
