/**
 * The demo's TCP traffic over one path: a small request every 100 ms that
 * the server echoes (like keystrokes in SSH), and one bulk download that the
 * server paces to a fixed rate. Both print JSON lines on stdout.
 *
 *     traffic.ts server --port 5101 [--max-seconds 600]
 *       {"event":"listening","port":5101}
 *
 *     traffic.ts client --host 172.16.3.2 --port 5101 --seconds 60
 *                       [--bind 10.1.1.2] [--interval-ms 100] [--rate 1000000]
 *                       [--grace-seconds 3] [--connect-seconds 10]
 *       {"event":"connected","kind":"rr"|"bulk","local":"10.1.1.2:41234","at":…}
 *       {"event":"start","at":…,"intervalMs":100}
 *       {"event":"answer","seq":17,"sentAt":…,"rttMs":31.2}
 *       {"event":"bulk","at":…,"bytes":102400}        one line per 100 ms with data
 *       {"event":"report","requests":600,"answered":598,"bulkBytes":…,
 *        "bulkLongestStallMs":…,"bulkLongestStallEndedAt":…,"errors":[…]}
 *
 * Times (`at`, `sentAt`) are ms since the epoch, with fractions. The client
 * sends request `seq` (from 0) at `start + seq × interval`, whether or not
 * earlier ones were answered, for `--seconds`; then it waits at most
 * `--grace-seconds` for the missing answers. `--bind` picks the source
 * address (and with the lab's source rules, the uplink). The bulk stream
 * is measured over the same `--seconds`; its longest stall is the longest
 * time without a byte arriving, also one still going on at the end.
 *
 * Under `mptcpize run` both connections are MPTCP.
 *
 * @module
 */
import net from "node:net";
import { parseArgs } from "node:util";

/** Bytes of one request and of its answer: a sequence number and padding, like a keystroke in SSH. */
const REQUEST_BYTES = 64;
const BULK_CHUNK = 16 * 1024;
/** The server's pacing keeps at most this much of a burst after a pause, so a stall costs goodput. */
const BULK_BURST_SECONDS = 0.05;
const BIN_MS = 100;

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function print(record: Record<string, unknown>): void {
  console.log(JSON.stringify(record));
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---- server ----

/** Reads the first line of a connection: what the client wants. */
function serve(port: number): void {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => socket.destroy());
    let head = "";
    const onData = (data: Uint8Array) => {
      head += new TextDecoder().decode(data);
      const newline = head.indexOf("\n");
      if (newline < 0) return;
      socket.off("data", onData);
      const rest = new TextEncoder().encode(head.slice(newline + 1));
      let request: { mode?: string; rate?: number } = {};
      try {
        request = JSON.parse(head.slice(0, newline));
      } catch {
        socket.destroy();
        return;
      }
      if (request.mode === "rr") echo(socket, rest);
      else if (request.mode === "bulk") sendPaced(socket, request.rate ?? 1_000_000);
      else socket.destroy();
    };
    socket.on("data", onData);
  });
  server.on("error", (error) => {
    console.error(`traffic server: ${message(error)}`);
    Deno.exit(1);
  });
  server.listen(port, "0.0.0.0", () => print({ event: "listening", port }));
}

function echo(socket: net.Socket, first: Uint8Array): void {
  if (first.byteLength) socket.write(first);
  socket.on("data", (data) => socket.write(data));
  socket.on("end", () => socket.end());
}

/** Sends at `rate` bytes/s until the client closes, keeping no more than a short burst of credit. */
async function sendPaced(socket: net.Socket, rate: number): Promise<void> {
  const chunk = new Uint8Array(BULK_CHUNK).fill(0x5a);
  let closed = false;
  socket.on("close", () => closed = true);
  socket.on("data", () => {});
  let credit = 0;
  let last = performance.now();
  while (!closed) {
    const t = performance.now();
    credit = Math.min(
      credit + (t - last) / 1000 * rate,
      Math.max(BULK_CHUNK, rate * BULK_BURST_SECONDS),
    );
    last = t;
    if (credit < BULK_CHUNK) {
      await sleep(Math.max(1, (BULK_CHUNK - credit) / rate * 1000));
      continue;
    }
    credit -= BULK_CHUNK;
    // While the path stalls the socket buffer fills up; then wait, and lose the credit meanwhile.
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve) => {
        socket.once("drain", resolve);
        socket.once("close", resolve);
      });
      last = performance.now();
      credit = 0;
    }
  }
}

// ---- client ----

interface ClientOptions {
  host: string;
  port: number;
  bind?: string;
  seconds: number;
  intervalMs: number;
  rate: number;
  graceSeconds: number;
  connectSeconds: number;
}

function connect(o: ClientOptions, kind: "rr" | "bulk", hello: object): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: o.host, port: o.port, localAddress: o.bind });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${kind}: connect timed out after ${o.connectSeconds} s`));
    }, o.connectSeconds * 1000);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      socket.write(JSON.stringify(hello) + "\n");
      print({
        event: "connected",
        kind,
        local: `${socket.localAddress}:${socket.localPort}`,
        at: now(),
      });
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`${kind}: ${message(error)}`));
    });
  });
}

async function client(o: ClientOptions): Promise<void> {
  const errors: string[] = [];
  const [rr, bulk] = await Promise.allSettled([
    connect(o, "rr", { mode: "rr" }),
    connect(o, "bulk", { mode: "bulk", rate: o.rate }),
  ]);
  const start = now();
  const end = start + o.seconds * 1000;
  print({ event: "start", at: start, intervalMs: o.intervalMs });

  // Requests: fixed schedule, answers matched by sequence number.
  const count = Math.floor(o.seconds * 1000 / o.intervalMs);
  const sentAt: number[] = [];
  let answered = 0;
  let rrDone: Promise<void> = Promise.resolve();
  if (rr.status === "fulfilled") {
    const socket = rr.value;
    let pending = new Uint8Array(0);
    let allAnswered: () => void = () => {};
    const finished = new Promise<void>((resolve) => allAnswered = resolve);
    socket.on("data", (data: Uint8Array) => {
      const at = now();
      const joined = new Uint8Array(pending.byteLength + data.byteLength);
      joined.set(pending);
      joined.set(data, pending.byteLength);
      let offset = 0;
      for (; offset + REQUEST_BYTES <= joined.byteLength; offset += REQUEST_BYTES) {
        const seq = new DataView(joined.buffer, offset, 4).getUint32(0);
        print({ event: "answer", seq, sentAt: sentAt[seq], rttMs: at - sentAt[seq] });
        if (++answered === count) allAnswered();
      }
      pending = joined.slice(offset);
    });
    socket.on("error", (error) => {
      errors.push(`rr: ${message(error)}`);
      allAnswered();
    });
    socket.on("close", () => allAnswered());
    rrDone = (async () => {
      for (let seq = 0; seq < count; seq++) {
        const due = start + seq * o.intervalMs;
        if (due > now()) await sleep(due - now());
        const request = new Uint8Array(REQUEST_BYTES);
        new DataView(request.buffer).setUint32(0, seq);
        sentAt[seq] = now();
        socket.write(request);
      }
      const grace = sleep(o.graceSeconds * 1000);
      await Promise.race([finished, grace]);
      socket.destroy();
    })();
  } else {
    errors.push(message(rr.reason));
  }

  // Bulk: bytes per 100 ms bin, and the longest time without any.
  let bulkBytes = 0;
  let longestStallMs = 0;
  let longestStallEndedAt = 0;
  let bulkDone: Promise<void> = Promise.resolve();
  if (bulk.status === "fulfilled") {
    const socket = bulk.value;
    let last = start;
    let bin = 0;
    let binStart = start;
    const flush = (at: number) => {
      if (bin > 0) print({ event: "bulk", at: binStart, bytes: bin });
      bin = 0;
      binStart = at - ((at - start) % BIN_MS);
    };
    socket.on("data", (data: Uint8Array) => {
      const at = now();
      if (at > end) return;
      if (at - last > longestStallMs) [longestStallMs, longestStallEndedAt] = [at - last, at];
      last = at;
      if (at - binStart >= BIN_MS) flush(at);
      bin += data.byteLength;
      bulkBytes += data.byteLength;
    });
    socket.on("error", (error) => errors.push(`bulk: ${message(error)}`));
    bulkDone = (async () => {
      await sleep(Math.max(0, end - now()));
      flush(end);
      // A stall that is still going on at the end counts too.
      if (end - last > longestStallMs) [longestStallMs, longestStallEndedAt] = [end - last, end];
      socket.destroy();
    })();
  } else {
    errors.push(message(bulk.reason));
  }

  await Promise.all([rrDone, bulkDone]);
  print({
    event: "report",
    requests: count,
    sent: sentAt.length,
    answered,
    bulkBytes,
    bulkSeconds: o.seconds,
    bulkLongestStallMs: Math.round(longestStallMs),
    bulkLongestStallEndedAt: longestStallEndedAt,
    errors,
  });
}

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      host: { type: "string" },
      port: { type: "string", default: "5101" },
      bind: { type: "string" },
      seconds: { type: "string", default: "10" },
      "interval-ms": { type: "string", default: "100" },
      rate: { type: "string", default: "1000000" },
      "grace-seconds": { type: "string", default: "3" },
      "connect-seconds": { type: "string", default: "10" },
      "max-seconds": { type: "string", default: "600" },
    },
  });
  // A forgotten process must not outlive the run that started it by much.
  const maxSeconds = Number(values["max-seconds"]);
  setTimeout(() => Deno.exit(0), maxSeconds * 1000);
  if (positionals[0] === "server") {
    serve(Number(values.port));
  } else if (positionals[0] === "client" && values.host) {
    await client({
      host: values.host,
      port: Number(values.port),
      bind: values.bind,
      seconds: Number(values.seconds),
      intervalMs: Number(values["interval-ms"]),
      rate: Number(values.rate),
      graceSeconds: Number(values["grace-seconds"]),
      connectSeconds: Number(values["connect-seconds"]),
    });
    Deno.exit(0);
  } else {
    console.error(
      "usage: traffic.ts server --port P | client --host H --port P --seconds S [--bind ADDR]",
    );
    Deno.exit(2);
  }
}
