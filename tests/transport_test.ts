/**
 * Sending a burst (`Transport.queue` + `flush`): every way `sendmmsg` can
 * take fewer datagrams than it was given, on a scripted socket.
 */
import assert from "node:assert/strict";
import { Endpoint } from "../lib/endpoint.ts";
import type { BatchSent, Received, UdpSocket } from "../lib/io.ts";
import { type Path, Transport } from "../lib/transport.ts";

const SERVER = new Endpoint("203.0.113.1", 40000);
const OTHER = new Endpoint("198.51.100.9", 40000);

/**
 * A socket whose `sendBatch` answers from a script: each call takes at most
 * `limit` datagrams and stops before the index (counted over the socket's
 * life) that `refuse` names, with that errno; `once` refusals apply to one
 * call only (the datagram goes through when asked again).
 */
class ScriptedSocket implements UdpSocket {
  readonly fd = -1;
  readonly label = "scripted";
  readonly sent: { datagram: number; to: string }[] = [];
  readonly calls: number[] = [];
  limit = Infinity;
  refuse = new Map<number, string>();
  #attempted = 0;

  receive(): Received | null {
    return null;
  }
  receiveBatch(): number {
    return 0;
  }
  send(): string | null {
    throw new Error("the data path sends bursts with sendBatch");
  }
  sendBatch(
    datagrams: readonly Uint8Array[],
    to: readonly Endpoint[],
    start: number,
    end: number,
  ): BatchSent {
    this.calls.push(end - start);
    let taken = 0;
    for (let i = start; i < end && taken < this.limit; i++) {
      const error = this.refuse.get(this.#attempted);
      if (error) {
        // The kernel reports an error only for the first datagram of a call.
        if (taken > 0) break;
        this.#attempted++;
        return { sent: 0, error };
      }
      this.#attempted++;
      this.sent.push({ datagram: datagrams[i][0], to: to[i].key });
      taken++;
    }
    return { sent: taken, error: null };
  }
  close(): void {}
}

function burst(count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => new Uint8Array([i]));
}

function sendBurst(
  transport: Transport,
  datagrams: Uint8Array[],
  paths: Path[],
): { path: Path; code: string }[] {
  const errors: { path: Path; code: string }[] = [];
  for (const datagram of datagrams) transport.queue(datagram, paths);
  transport.flush((path, code) => errors.push({ path, code }));
  return errors;
}

Deno.test("flush: a whole burst goes out with one call per socket, in order", () => {
  const transport = new Transport();
  const socket = new ScriptedSocket();
  const errors = sendBurst(transport, burst(64), [{ socket, endpoint: SERVER }]);
  assert.deepEqual(socket.calls, [64]);
  assert.deepEqual(socket.sent.map((s) => s.datagram), [...Array(64).keys()]);
  assert.equal(transport.counters.datagramsSent, 64);
  assert.deepEqual(errors, []);
});

Deno.test("flush: a short sendmmsg is continued where it stopped, nothing lost or repeated", () => {
  const transport = new Transport();
  const socket = new ScriptedSocket();
  socket.limit = 5;
  sendBurst(transport, burst(23), [{ socket, endpoint: SERVER }]);
  assert.deepEqual(socket.calls, [23, 18, 13, 8, 3]);
  assert.deepEqual(socket.sent.map((s) => s.datagram), [...Array(23).keys()]);
  assert.equal(transport.counters.datagramsSent, 23);
  assert.equal(transport.counters.sendErrors, 0);
});

Deno.test("flush: EAGAIN mid-batch drops and counts the rest of that socket's burst only", () => {
  const transport = new Transport();
  const full = new ScriptedSocket();
  full.refuse.set(10, "EAGAIN");
  const other = new ScriptedSocket();
  const fullPath = { socket: full, endpoint: SERVER };
  const errors = sendBurst(transport, burst(30), [fullPath, { socket: other, endpoint: SERVER }]);
  assert.deepEqual(full.sent.map((s) => s.datagram), [...Array(10).keys()]);
  assert.deepEqual(full.calls, [30, 20], "no retry of a full socket buffer");
  assert.equal(other.sent.length, 30, "the other uplink sends its whole burst");
  assert.equal(transport.counters.datagramsSent, 40);
  assert.equal(transport.counters.sendErrors, 20);
  assert.deepEqual(errors, [{ path: fullPath, code: "EAGAIN" }], "reported once per burst");

  // The next burst starts afresh.
  sendBurst(transport, burst(5), [fullPath]);
  assert.deepEqual(full.sent.slice(10).map((s) => s.datagram), [0, 1, 2, 3, 4]);
});

Deno.test("flush: a datagram refused alone is skipped and the ones after it still go", () => {
  const transport = new Transport();
  const socket = new ScriptedSocket();
  socket.refuse.set(3, "EMSGSIZE");
  const path = { socket, endpoint: SERVER };
  const errors = sendBurst(transport, burst(8), [path]);
  assert.deepEqual(socket.sent.map((s) => s.datagram), [0, 1, 2, 4, 5, 6, 7]);
  assert.equal(transport.counters.sendErrors, 1);
  assert.deepEqual(errors, [{ path, code: "EMSGSIZE" }]);
});

Deno.test("flush: a server socket sends each datagram to every address of the peer, in TUN order", () => {
  const transport = new Transport();
  const socket = new ScriptedSocket();
  socket.limit = 3;
  socket.refuse.set(4, "ENETUNREACH");
  const a = { socket, endpoint: SERVER };
  const b = { socket, endpoint: OTHER };
  const errors = sendBurst(transport, burst(3), [a, b]);
  assert.deepEqual(socket.sent, [
    { datagram: 0, to: SERVER.key },
    { datagram: 0, to: OTHER.key },
    { datagram: 1, to: SERVER.key },
    { datagram: 1, to: OTHER.key },
    // datagram 2 to SERVER was refused (no route): only that copy is missing
    { datagram: 2, to: OTHER.key },
  ]);
  assert.deepEqual(errors, [{ path: a, code: "ENETUNREACH" }]);
});

Deno.test("flush: a socket that takes nothing and names no error does not loop", () => {
  const transport = new Transport();
  const socket = new ScriptedSocket();
  socket.limit = 0;
  sendBurst(transport, burst(4), [{ socket, endpoint: SERVER }]);
  assert.deepEqual(socket.calls, [4]);
  assert.equal(transport.counters.sendErrors, 4);
});
