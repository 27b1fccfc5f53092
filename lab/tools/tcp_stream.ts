/**
 * A TCP echo server and a client that streams a pattern through it and
 * checks every byte that comes back. Both print JSON lines on stdout.
 *
 *     tcp_stream.ts server --port 5001 [--max-seconds 120]
 *       {"event":"listening","port":5001}
 *       {"event":"accept","remote":"172.16.3.2:41234"}
 *       {"event":"close","remote":"…","bytes":123,"error":"…"?}
 *
 *     tcp_stream.ts client --host 172.16.4.2 --port 5001 --seconds 8
 *                          [--rate 1000000] [--drain-seconds 20] [--connect-seconds 5]
 *       {"event":"connected","local":"10.99.0.2:50000"}
 *       {"event":"report","ok":true,"sent":…,"received":…,"longestPauseMs":…,…}
 *
 * The client sends for `--seconds` (at most `--rate` bytes/s when given),
 * then half-closes and waits at most `--drain-seconds` for the rest of the
 * echo. `ok` means: no error, every byte came back, in order and intact. The
 * longest pause is the longest time between two received chunks. Exit code
 * 0 when ok.
 *
 * @module
 */
import { parseArgs } from "node:util";

const CHUNK = 16 * 1024;

/** The byte at `offset` of the stream: a little-endian 32-bit counter, so shifts, losses and repeats show. */
function fillPattern(offset: number, out: Uint8Array): void {
  for (let i = 0; i < out.byteLength; i++) {
    const position = offset + i;
    out[i] = (Math.floor(position / 4) >>> ((position & 3) * 8)) & 0xff;
  }
}

function print(record: Record<string, unknown>): void {
  console.log(JSON.stringify(record));
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function address(addr: Deno.Addr): string {
  return addr.transport === "tcp" ? `${addr.hostname}:${addr.port}` : String(addr.transport);
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.byteLength;) done += await conn.write(data.subarray(done));
}

function message(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

async function serve(port: number): Promise<void> {
  const listener = Deno.listen({ hostname: "0.0.0.0", port, transport: "tcp" });
  print({ event: "listening", port });
  for await (const conn of listener) echo(conn);
}

async function echo(conn: Deno.Conn): Promise<void> {
  const remote = address(conn.remoteAddr);
  print({ event: "accept", remote });
  const buffer = new Uint8Array(64 * 1024);
  let bytes = 0;
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      await writeAll(conn, buffer.subarray(0, n));
      bytes += n;
    }
    await conn.closeWrite();
    print({ event: "close", remote, bytes });
  } catch (error) {
    print({ event: "close", remote, bytes, error: message(error) });
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** The client's final line. */
export interface Report {
  event: "report";
  ok: boolean;
  sent: number;
  received: number;
  /** Stream offset of the first wrong byte, if any. */
  mismatchAt?: number;
  longestPauseMs: number;
  /** Seconds after the start at which the longest pause ended. */
  longestPauseEndedAt: number;
  /** The connection failed: an error, an early EOF, or the drain deadline. */
  broke: boolean;
  error?: string;
  seconds: number;
}

async function stream(
  host: string,
  port: number,
  seconds: number,
  rate: number,
  drainSeconds: number,
  connectSeconds: number,
): Promise<Report> {
  const start = performance.now();
  const report: Report = {
    event: "report",
    ok: false,
    sent: 0,
    received: 0,
    longestPauseMs: 0,
    longestPauseEndedAt: 0,
    broke: false,
    seconds: 0,
  };
  const finish = (error?: string): Report => {
    report.seconds = (performance.now() - start) / 1000;
    if (error && !report.error) [report.broke, report.error] = [true, error];
    if (!report.broke && report.received !== report.sent) {
      [report.broke, report.error] = [true, "early EOF"];
    }
    report.ok = !report.broke && report.mismatchAt === undefined && report.received === report.sent;
    return report;
  };

  let conn: Deno.Conn;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    conn = await Promise.race([
      Deno.connect({ hostname: host, port, transport: "tcp" }),
      new Promise<never>((_, reject) =>
        timer = setTimeout(
          () => reject(new Error(`connect timed out after ${connectSeconds} s`)),
          connectSeconds * 1000,
        )
      ),
    ]);
  } catch (error) {
    return finish(message(error));
  } finally {
    clearTimeout(timer);
  }
  print({ event: "connected", local: address(conn.localAddr) });

  let writing = true;
  const writer = (async () => {
    const chunk = new Uint8Array(CHUNK);
    while (performance.now() - start < seconds * 1000) {
      if (rate > 0) {
        const due = start + (report.sent / rate) * 1000;
        if (due > performance.now()) await sleep(due - performance.now());
      }
      fillPattern(report.sent, chunk);
      await writeAll(conn, chunk);
      report.sent += chunk.byteLength;
    }
    writing = false;
    await conn.closeWrite();
  })();

  const reader = (async () => {
    const buffer = new Uint8Array(64 * 1024);
    const expected = new Uint8Array(64 * 1024);
    let last: number | undefined;
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return;
      const now = performance.now();
      if (last !== undefined && now - last > report.longestPauseMs) {
        report.longestPauseMs = Math.round(now - last);
        report.longestPauseEndedAt = Math.round(now - start) / 1000;
      }
      last = now;
      if (report.mismatchAt === undefined) {
        fillPattern(report.received, expected.subarray(0, n));
        for (let i = 0; i < n; i++) {
          if (buffer[i] !== expected[i]) {
            report.mismatchAt = report.received + i;
            break;
          }
        }
      }
      report.received += n;
    }
  })();

  // A failure of one side ends the race; the other then fails on the closed socket.
  writer.catch(() => {});
  reader.catch(() => {});
  let deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"deadline">((resolve) =>
    deadlineTimer = setTimeout(() => resolve("deadline"), (seconds + drainSeconds) * 1000)
  );
  try {
    const outcome = await Promise.race([Promise.all([writer, reader]), deadline]);
    if (outcome === "deadline") {
      return finish(
        `no end ${drainSeconds} s after sending ${writing ? "should have stopped" : "stopped"}`,
      );
    }
    return finish();
  } catch (error) {
    return finish(message(error));
  } finally {
    clearTimeout(deadlineTimer);
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      host: { type: "string" },
      port: { type: "string", default: "5001" },
      seconds: { type: "string", default: "3" },
      rate: { type: "string", default: "0" },
      "drain-seconds": { type: "string", default: "20" },
      "connect-seconds": { type: "string", default: "5" },
      "max-seconds": { type: "string", default: "120" },
    },
  });
  const port = Number(values.port);
  if (positionals[0] === "server") {
    // A forgotten server must not outlive the test that started it by much.
    setTimeout(() => Deno.exit(0), Number(values["max-seconds"]) * 1000);
    await serve(port);
  } else if (positionals[0] === "client" && values.host) {
    const report = await stream(
      values.host,
      port,
      Number(values.seconds),
      Number(values.rate),
      Number(values["drain-seconds"]),
      Number(values["connect-seconds"]),
    );
    print({ ...report });
    Deno.exit(report.ok ? 0 : 1);
  } else {
    console.error(
      "usage: tcp_stream.ts server --port P | client --host H --port P --seconds S [--rate B/s]",
    );
    Deno.exit(2);
  }
}
