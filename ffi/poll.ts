/**
 * The one place tuxburst blocks: `poll()` on every source plus an eventfd
 * for `wake()`. Everything else (draining, reading, sending) is synchronous.
 *
 * Two ways to wait, chosen per call:
 *
 * - **Hot**: while traffic keeps coming, `poll()` runs on the main thread
 *   for at most `HOT_WAIT_MS`. A packet then costs no thread hand-over: the
 *   kernel wakes the thread that handles it. Measured on a 2-core VM with a
 *   ping every 10 ms through the tunnel, this took a hop (TUN to UDP or back)
 *   from 240–430 µs to 150–370 µs, and the tunnel's ping p50 from
 *   1.1–1.4 ms to 0.8 ms.
 * - **Cold**: after `HOT_WAIT_MS` without traffic, `poll()` runs on Deno's
 *   blocking thread pool (`nonblocking: true`), so the event loop (signal
 *   listeners, timers, the control socket) gets its turn; a signal listener
 *   ends that wait by writing to the eventfd. An idle tunnel sleeps there.
 * - **The event loop's turn** under continuous traffic, at least every
 *   `EVENT_LOOP_TURN_MS`: a `poll()` that returns at once, on the pool
 *   thread, before the hot wait. Taken while the tunnel is between packets,
 *   no packet pays the pool thread's hand-over for it, as one did when the
 *   turn was a cold wait for the next packet. Measured (medians of 4 × 300
 *   pings, alternating): ping p50 0.49 ms either way once warm, 0.58 against
 *   0.62 ms just after start, inside this machine's noise.
 *
 * So signals and status requests wait at most `HOT_WAIT_MS`.
 *
 * @module
 */
import type { Reactor, Waitable } from "../lib/io.ts";
import {
  closeQuietly,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  libc,
  POLLFD,
  POLLIN,
  throwErrno,
} from "./libc.ts";

/** poll() takes an `int` of milliseconds. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/** The longest the main thread blocks in one hot wait (see the module comment). */
export const HOT_WAIT_MS = 20;
/** The event loop gets a turn at least this often, also under continuous traffic. */
export const EVENT_LOOP_TURN_MS = 50;

/**
 * A `Reactor` on `poll(2)`. Only one `wait()` may run at a time.
 *
 * @example
 * ```ts
 * using reactor = new PollReactor();
 * Deno.addSignalListener("SIGTERM", () => reactor.wake());
 * await reactor.wait([tun, socket], 1000); // readable, woken, or 1 s passed
 * ```
 */
export class PollReactor implements Reactor, Disposable {
  readonly #libc = libc();
  readonly #eventFd: number;
  /**
   * struct pollfd[]: the eventfd first, then the sources of the last
   * `wait()`. Over 64 bytes from the start, so V8 never keeps it inside its
   * moving heap while the pool thread's poll() writes into it.
   */
  #pollFds = new Uint8Array(POLLFD.size * 16);
  #pollView = new DataView(this.#pollFds.buffer);
  /** The fds in `#pollFds` after the eventfd, to see when they can be reused. */
  #fds: number[] = [];
  readonly #one = new BigUint64Array([1n]);
  readonly #counter = new BigUint64Array(1);
  #waiting = false;
  #closed = false;
  /** When the event loop last had a turn (a cold wait or a zero-timeout poll on the pool thread). */
  #lastTurn = -Infinity;

  constructor() {
    const fd = this.#libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) throwErrno("eventfd");
    this.#eventFd = fd;
    this.#setSlot(0, fd);
  }

  async wait(sources: readonly Waitable[], timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    if (this.#waiting) throw new Error("PollReactor.wait() called while already waiting");
    const count = this.#prepare(sources);
    const timeout = pollTimeout(timeoutMs);
    this.#waiting = true;
    try {
      // Results are not needed: the caller drains every source anyway (a
      // spurious return costs one round of EAGAINs), and the pool thread's
      // errno (EINTR) cannot be read from here.
      let start = performance.now();
      if (start - this.#lastTurn >= EVENT_LOOP_TURN_MS) {
        // The event loop's turn, taken now while nothing may be waiting: a poll that returns
        // at once, on the pool thread. Waiting cold for the next packet instead would make
        // that packet pay the hand-over from the pool thread to the main thread.
        const ready = await this.#libc.poll_nonblocking(this.#pollFds, BigInt(count), 0);
        this.#lastTurn = start = performance.now();
        if (ready !== 0 || timeout === 0) return;
      }
      const hot = Math.min(timeout, HOT_WAIT_MS);
      if (this.#libc.poll(this.#pollFds, BigInt(count), hot) !== 0 || hot === timeout) return;
      // Nothing came: the rest of the timeout is waited cold, not the whole of it again.
      const rest = pollTimeout(timeoutMs - (performance.now() - start));
      await this.#libc.poll_nonblocking(this.#pollFds, BigInt(count), rest);
      this.#lastTurn = performance.now();
    } finally {
      this.#waiting = false;
      // Reset the eventfd, so that one wake() ends one wait; only when it rang, since
      // every system call counts on an idle tunnel's path (see `ready`).
      if (this.#revents(0) !== 0) this.#libc.read(this.#eventFd, this.#counter, 8n);
      if (this.#closed) closeQuietly(this.#eventFd);
    }
  }

  /**
   * From the `revents` the last `poll()` wrote (on either thread). Reading
   * only ready sources saves a system call per idle source per wake-up,
   * which after an idle pause costs 10–20 µs each on a 2-core VM: a ping
   * through the tunnel wakes the client for the TUN and the server for a
   * socket, never both.
   */
  ready(source: Waitable): boolean {
    const index = this.#fds.indexOf(source.fd);
    return index < 0 || this.#revents(index + 1) !== 0;
  }

  wake(): void {
    if (!this.#closed) this.#libc.write(this.#eventFd, this.#one, 8n);
  }

  /** Ends a running `wait()` first; the eventfd closes when that returns. */
  close(): void {
    if (this.#closed) return;
    if (this.#waiting) this.wake();
    this.#closed = true;
    if (!this.#waiting) closeQuietly(this.#eventFd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Fills the pollfd array for `sources` (fd < 0 skipped); returns its length. */
  #prepare(sources: readonly Waitable[]): number {
    const fds = this.#fds;
    let n = 0;
    let same = true;
    for (const source of sources) {
      const fd = source.fd;
      if (fd < 0) continue;
      if (fds[n] !== fd) same = false;
      n++;
    }
    if (same && n === fds.length) return n + 1;

    fds.length = 0;
    for (const source of sources) if (source.fd >= 0) fds.push(source.fd);
    const bytes = (fds.length + 1) * POLLFD.size;
    if (bytes > this.#pollFds.byteLength) {
      this.#pollFds = new Uint8Array(Math.max(bytes, this.#pollFds.byteLength * 2));
      this.#pollView = new DataView(this.#pollFds.buffer);
      this.#setSlot(0, this.#eventFd);
    }
    fds.forEach((fd, i) => this.#setSlot(i + 1, fd));
    return fds.length + 1;
  }

  #revents(index: number): number {
    return this.#pollView.getInt16(index * POLLFD.size + POLLFD.revents, true);
  }

  #setSlot(index: number, fd: number): void {
    const at = index * POLLFD.size;
    this.#pollView.setInt32(at + POLLFD.fd, fd, true);
    this.#pollView.setInt16(at + POLLFD.events, POLLIN, true);
    this.#pollView.setInt16(at + POLLFD.revents, 0, true);
  }
}

/** Whole milliseconds for poll(), rounded up so a wait never ends just before its deadline. */
function pollTimeout(timeoutMs: number): number {
  if (!(timeoutMs > 0)) return 0;
  return Math.min(Math.ceil(timeoutMs), MAX_TIMEOUT_MS);
}
