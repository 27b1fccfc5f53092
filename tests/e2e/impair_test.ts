/**
 * The impairment program (`tools/impair.ts`) on a real link, root only:
 *
 * ```text
 *   [left] w ==veth== a [wire] b ==veth== w [right]
 *   10.1.1.2/24   10.1.1.1  imp0  10.2.2.1   10.2.2.2/24
 * ```
 *
 * The wire namespace routes everything that comes in on `a` or `b` into the
 * impairer's TUN (`ip rule iif a|b lookup 100`, `default dev imp0 table
 * 100`), as the comment at the top of tools/impair.ts describes. The tests
 * check that every packet crosses the impairer exactly once, the delay seen
 * by ping, and that a stall loses (drop) or delays (hold) the pings in its
 * window, at the times the schedule says. Namespaces are named
 * `tbi<pid>x<n>-…`; every process is killed by PID and every namespace
 * deleted in `finally`, also when a test fails. Every wait is bounded.
 */
import { cleanUpOnInterrupt } from "../../lab/interrupt.ts";
import assert from "node:assert/strict";

const IMPAIR = new URL("../../tools/impair.ts", import.meta.url).pathname;
const REPO = new URL("../../", import.meta.url).pathname;
const LEFT = "10.1.1.2";
const RIGHT = "10.2.2.2";
const DELAY_MS = 30;
const PING_INTERVAL_MS = 50;

function unavailable(): string | undefined {
  if (Deno.build.os !== "linux") return "network namespaces need Linux";
  if (Deno.uid() !== 0) return "needs root (network namespaces, veth, TUN)";
  for (const [tool, pkg] of [["ip", "iproute2"], ["ping", "iputils-ping"]]) {
    const found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].some((dir) => {
      try {
        return Deno.statSync(`${dir}/${tool}`).isFile;
      } catch {
        return false;
      }
    });
    if (!found) return `\`${tool}\` is not installed (apt-get install ${pkg})`;
  }
  try {
    Deno.statSync("/dev/net/tun");
  } catch {
    return "/dev/net/tun is missing (no TUN support)";
  }
  return undefined;
}

const why = unavailable();
const ignore = why !== undefined;
if (why) console.warn(`e2e impairment tests skipped: ${why}`);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const decoder = new TextDecoder();

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end, killing it after `timeoutMs`. */
async function run(cmd: string[], timeoutMs = 10_000, stdin?: string): Promise<Output> {
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Ended meanwhile.
    }
  }, timeoutMs);
  try {
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(stdin)).catch(() => {});
      await writer.close().catch(() => {});
    }
    const { code, stdout, stderr } = await child.output();
    return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
  } finally {
    clearTimeout(timer);
  }
}

async function check(cmd: string[], stdin?: string): Promise<string> {
  const result = await run(cmd, 10_000, stdin);
  if (result.code !== 0) {
    throw new Error(`\`${cmd.join(" ")}\` failed (${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout;
}

type Ns = "left" | "wire" | "right";
let counter = 0;

/** A running impairer: its JSON lines as they come, and how to stop it. */
class Impairer {
  readonly lines: Record<string, unknown>[] = [];
  stderr = "";
  readonly #done: Promise<Deno.CommandStatus>;

  constructor(readonly child: Deno.ChildProcess) {
    const pump = async (stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) => {
      let pending = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        pending += chunk;
        const lines = pending.split("\n");
        pending = lines.pop()!;
        lines.forEach(onLine);
      }
      if (pending) onLine(pending);
    };
    const out = pump(child.stdout, (line) => {
      if (line.startsWith("{")) this.lines.push(JSON.parse(line));
    });
    const err = pump(child.stderr, (line) => this.stderr += `${line}\n`);
    this.#done = child.status.then(async (status) => {
      await Promise.race([Promise.all([out, err]), sleep(1000)]);
      return status;
    });
  }

  events(name: string): Record<string, unknown>[] {
    return this.lines.filter((line) => line.event === name);
  }

  async waitFor(name: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    this.#done.then(() => exited = true);
    while (Date.now() < deadline) {
      const found = this.events(name)[0];
      if (found) return found;
      if (exited) break;
      await sleep(20);
    }
    throw new Error(`impairer printed no "${name}" within ${timeoutMs} ms:\n${this.stderr}`);
  }

  /** SIGTERM, then SIGKILL if it has not ended within `graceMs`. */
  async stop(graceMs = 5000): Promise<Deno.CommandStatus> {
    const kill = (signal: Deno.Signal) => {
      try {
        this.child.kill(signal);
      } catch {
        // Ended already.
      }
    };
    kill("SIGTERM");
    const status = await Promise.race([this.#done, sleep(graceMs).then(() => undefined)]);
    if (status) return status;
    kill("SIGKILL");
    return await this.#done;
  }
}

/**
 * Deletes empty namespaces that an earlier run of this file left behind when
 * it was killed before its `finally` (Deno's test runner exits at once on
 * SIGINT): only names this file makes, only of processes that are gone.
 */
async function removeStaleLabs(): Promise<void> {
  const list = await run(["ip", "netns", "list"]);
  for (const line of list.stdout.split("\n")) {
    const name = line.split(" ")[0];
    const match = /^tbi(\d+)x\d+-(left|wire|right)$/.exec(name);
    if (!match || Number(match[1]) === Deno.pid) continue;
    try {
      Deno.statSync(`/proc/${match[1]}`);
      continue; // that run (or a process with its pid) is alive: leave it alone
    } catch {
      // Gone: its namespaces are stale.
    }
    const pids = await run(["ip", "netns", "pids", name]);
    if (pids.stdout.trim() === "") await run(["ip", "netns", "del", name]);
  }
}

/** The three namespaces; see the module doc. */
class WireLab implements AsyncDisposable {
  readonly prefix = `tbi${Deno.pid}x${++counter}`;
  readonly #made: string[] = [];
  readonly #processes: Impairer[] = [];

  ns(name: Ns): string {
    return `${this.prefix}-${name}`;
  }

  static async create(): Promise<WireLab> {
    await removeStaleLabs();
    const lab = new WireLab();
    cleanUpOnInterrupt(lab, true);
    try {
      await lab.#build();
    } catch (error) {
      await lab[Symbol.asyncDispose]();
      throw error;
    }
    return lab;
  }

  async #build(): Promise<void> {
    for (const name of ["left", "wire", "right"] as const) {
      await check(["ip", "netns", "add", this.ns(name)]);
      this.#made.push(this.ns(name));
    }
    // Before the links exist, so that they (and imp0) inherit "default".
    await this.exec("wire", [
      "sysctl",
      "-q",
      "-w",
      "net.ipv4.ip_forward=1",
      "net.ipv4.conf.all.rp_filter=0",
      "net.ipv4.conf.default.rp_filter=0",
    ]);
    // Each veth is made inside a lab namespace with its peer moved straight into another.
    await this.batch("left", [`link add w type veth peer name a netns ${this.ns("wire")}`]);
    await this.batch("right", [`link add w type veth peer name b netns ${this.ns("wire")}`]);
    await this.batch("left", [
      "link set dev lo up",
      `addr add ${LEFT}/24 dev w`,
      "link set dev w up",
      "route add default via 10.1.1.1",
    ]);
    await this.batch("right", [
      "link set dev lo up",
      `addr add ${RIGHT}/24 dev w`,
      "link set dev w up",
      "route add default via 10.2.2.1",
    ]);
    await this.batch("wire", [
      "link set dev lo up",
      "addr add 10.1.1.1/24 dev a",
      "addr add 10.2.2.1/24 dev b",
      "link set dev a up",
      "link set dev b up",
      "rule add iif a lookup 100",
      "rule add iif b lookup 100",
      // Without the impairer the link is dead, never silently unimpaired.
      "route add blackhole default table 100 metric 10",
    ]);
  }

  exec(ns: Ns, cmd: string[]): Promise<string> {
    return check(["ip", "netns", "exec", this.ns(ns), ...cmd]);
  }

  batch(ns: Ns, commands: string[]): Promise<string> {
    return check(["ip", "-n", this.ns(ns), "-batch", "-"], commands.join("\n") + "\n");
  }

  /** Starts the impairer in `wire`, waits for "ready", and routes the link through it. */
  async impair(args: string[]): Promise<{ impairer: Impairer; ready: Record<string, unknown> }> {
    const child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        this.ns("wire"),
        Deno.execPath(),
        "run",
        "-A",
        "--quiet",
        IMPAIR,
        "--tun",
        "imp0",
        "--client-net",
        "10.1.1.0/24",
        "--stats-interval",
        "0",
        // A forgotten impairer must not outlive the test by much.
        "--duration",
        "120",
        ...args,
      ],
      cwd: REPO,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const impairer = new Impairer(child);
    this.#processes.push(impairer);
    const ready = await impairer.waitFor("ready", 20_000);
    await this.batch("wire", [
      "route add default dev imp0 table 100",
      "link set dev imp0 txqueuelen 10000",
    ]);
    return { impairer, ready };
  }

  /** `ping -n -D -O` from `ns` to `address`, bounded in count and time. */
  async ping(ns: Ns, address: string, count: number, intervalMs = PING_INTERVAL_MS) {
    const result = await run([
      "ip",
      "netns",
      "exec",
      this.ns(ns),
      "ping",
      "-n",
      "-D",
      "-O",
      "-c",
      String(count),
      "-i",
      (intervalMs / 1000).toFixed(3),
      "-W",
      "5",
      address,
    ], count * intervalMs + 15_000);
    return parsePing(result.stdout + result.stderr, intervalMs);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#processes.map((process) => process.stop(3000)));
    for (const ns of this.#made) {
      // Whatever still runs in our namespaces (only ours: they are named with our prefix).
      const pids = await run(["ip", "netns", "pids", ns]);
      for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch {
          // Ended meanwhile.
        }
      }
    }
    const problems: string[] = [];
    for (const ns of this.#made.splice(0)) {
      const result = await run(["ip", "netns", "del", ns]);
      if (result.code !== 0) problems.push(`ip netns del ${ns}: ${result.stderr.trim()}`);
    }
    cleanUpOnInterrupt(this, false);
    if (problems.length) throw new Error(problems.join("\n"));
  }

  /** The same, synchronously and without waiting, for a signal handler. */
  disposeSync(): void {
    for (const process of this.#processes) {
      try {
        Deno.kill(process.child.pid, "SIGKILL");
      } catch {
        // Ended already.
      }
    }
    for (const ns of this.#made.splice(0)) {
      const pids = new Deno.Command("ip", { args: ["netns", "pids", ns], stderr: "null" })
        .outputSync();
      for (const pid of decoder.decode(pids.stdout).split(/\s+/).filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch {
          // Ended meanwhile.
        }
      }
      new Deno.Command("ip", { args: ["netns", "del", ns], stdout: "null", stderr: "null" })
        .outputSync();
    }
  }
}

interface Ping {
  transmitted: number;
  /** Per sequence (1-based): when it was sent (epoch ms, estimated for lost ones), and its reply. */
  seqs: { seq: number; sentAt: number; reply?: { at: number; rttMs: number; ttl: number } }[];
  output: string;
}

/** Parses `ping -n -D -O`; send times of lost pings are interpolated from the answered ones. */
function parsePing(output: string, intervalMs: number): Ping {
  const replies = new Map<number, { at: number; rttMs: number; ttl: number }>();
  const line = /^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+) ttl=(\d+) time=([\d.]+) ms/;
  for (const text of output.split("\n")) {
    const match = line.exec(text);
    if (!match || replies.has(Number(match[2]))) continue;
    replies.set(Number(match[2]), {
      at: Number(match[1]) * 1000,
      rttMs: Number(match[4]),
      ttl: Number(match[3]),
    });
  }
  const summary = /(\d+) packets transmitted/.exec(output);
  const transmitted = summary ? Number(summary[1]) : 0;
  const answered = [...replies].map(([seq, r]) => ({ seq, sentAt: r.at - r.rttMs }));
  const seqs = Array.from({ length: transmitted }, (_, i) => {
    const seq = i + 1;
    const reply = replies.get(seq);
    if (reply) return { seq, sentAt: reply.at - reply.rttMs, reply };
    // ping sends on a steady interval: take the nearest answered one and step from it.
    const nearest = answered.reduce((best, a) =>
      Math.abs(a.seq - seq) < Math.abs(best.seq - seq) ? a : best
    );
    return { seq, sentAt: nearest.sentAt + (seq - nearest.seq) * intervalMs };
  });
  return { transmitted, seqs, output };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** The stall's start and end in epoch ms, from the impairer's own lines. */
function stallWindow(impairer: Impairer, ready: Record<string, unknown>) {
  const start = impairer.events("stall_start")[0];
  const end = impairer.events("stall_end")[0];
  assert.ok(start && end, `no stall events:\n${JSON.stringify(impairer.lines)}`);
  const epoch = ready.epochMs as number;
  return { start, end, from: epoch + (start.t as number), to: epoch + (end.t as number) };
}

Deno.test(
  { name: "impair: every packet crosses once, both ways, delayed as configured", ignore },
  async () => {
    await using lab = await WireLab.create();
    const { impairer } = await lab.impair(["--delay", String(DELAY_MS), "--stalls", "none"]);
    const there = await lab.ping("left", RIGHT, 20);
    const back = await lab.ping("right", LEFT, 10);
    await impairer.stop();
    const final = impairer.events("stats").at(-1)!;

    for (
      const [name, ping, count] of [["left→right", there, 20], ["right→left", back, 10]] as const
    ) {
      const rtts = ping.seqs.flatMap((s) => s.reply ? [s.reply.rttMs] : []);
      assert.equal(rtts.length, count, `${name}: lost pings\n${ping.output}`);
      // Routed twice by the wire (in → imp0, imp0 → out): TTL 64 - 2.
      assert.ok(ping.seqs.every((s) => s.reply!.ttl === 62), `${name}: TTL\n${ping.output}`);
      const p50 = median(rtts);
      assert.ok(
        p50 >= 2 * DELAY_MS - 0.5 && p50 <= 2 * DELAY_MS + 3,
        `${name}: median RTT ${p50} ms, expected ${2 * DELAY_MS} ms + a little\n${ping.output}`,
      );
      assert.ok(Math.min(...rtts) >= 2 * DELAY_MS - 1.5, `${name}: faster than the delay`);
    }
    // Requests and replies, each through the impairer exactly once.
    assert.equal(final.received, 2 * (20 + 10), JSON.stringify(final));
    assert.equal(final.released, 2 * (20 + 10), JSON.stringify(final));
    assert.equal(final.final, true);
  },
);

Deno.test(
  { name: "impair: a drop stall loses exactly the pings in its window", ignore },
  async () => {
    await using lab = await WireLab.create();
    const { impairer, ready } = await lab.impair([
      "--delay",
      String(DELAY_MS),
      "--stalls",
      "fixed:3:2",
      "--stall-mode",
      "drop",
    ]);
    const ping = await lab.ping("left", RIGHT, 140); // 7 s at 20 Hz
    await sleep(200);
    await impairer.stop();
    const { start, end, from, to } = stallWindow(impairer, ready);
    assert.deepEqual([start.t, start.durationMs, start.mode], [3000, 2000, "drop"]);
    assert.deepEqual([end.t, end.mode], [5000, "drop"]);

    const lost = ping.seqs.filter((s) => !s.reply);
    assert.ok(lost.length > 0, `nothing lost\n${ping.output}`);
    // One run of lost pings: none before or after the stall.
    assert.equal(
      lost.at(-1)!.seq - lost[0].seq + 1,
      lost.length,
      `lost: ${lost.map((s) => s.seq)}`,
    );
    // Lost: requests that would leave the wire in the stall (sent in [from - d, to - d)) and
    // replies that would (requests sent in [from - 2d, from - d)).
    const firstLost = lost[0].sentAt;
    const lastLost = lost.at(-1)!.sentAt;
    assert.ok(
      Math.abs(firstLost - (from - 2 * DELAY_MS)) <= 100,
      `first lost ping sent ${firstLost - from} ms after the stall began, expected ${
        -2 * DELAY_MS
      }`,
    );
    assert.ok(
      Math.abs(lastLost + PING_INTERVAL_MS - (to - DELAY_MS)) <= 100,
      `last lost ping sent ${lastLost - to} ms after the stall ended, expected about ` +
        `${-DELAY_MS - PING_INTERVAL_MS}`,
    );
    // Each lost ping is one packet the stall dropped (request or reply).
    assert.equal(end.dropped, lost.length);
    const rtts = ping.seqs.flatMap((s) => s.reply ? [s.reply.rttMs] : []);
    const p50 = median(rtts);
    assert.ok(p50 >= 2 * DELAY_MS - 0.5 && p50 <= 2 * DELAY_MS + 3, `median RTT ${p50} ms`);
  },
);

Deno.test(
  { name: "impair: a hold stall delays the pings in its window, loses none", ignore },
  async () => {
    await using lab = await WireLab.create();
    const { impairer, ready } = await lab.impair([
      "--delay",
      String(DELAY_MS),
      "--stalls",
      "fixed:3:2:hold",
    ]);
    const ping = await lab.ping("left", RIGHT, 140);
    await sleep(200);
    await impairer.stop();
    const { end, from, to } = stallWindow(impairer, ready);
    assert.equal(end.mode, "hold");

    const replies = ping.seqs.filter((s) => s.reply);
    assert.equal(replies.length, ping.transmitted, `lost pings in a hold stall\n${ping.output}`);
    // No reply arrives during the stall; the held ones arrive together at its end.
    const arrivals = replies.map((s) => s.reply!.at).sort((a, b) => a - b);
    let gap = { length: 0, from: 0 };
    for (let i = 1; i < arrivals.length; i++) {
      const length = arrivals[i] - arrivals[i - 1];
      if (length > gap.length) gap = { length, from: arrivals[i - 1] };
    }
    assert.ok(Math.abs(gap.length - (to - from)) <= 100, `longest reply gap ${gap.length} ms`);
    assert.ok(Math.abs(gap.from - from) <= 100, `gap began ${gap.from - from} ms after the stall`);
    // The worst ping waited for the whole stall: request held to its end, then both delays.
    const worst = Math.max(...replies.map((s) => s.reply!.rttMs));
    assert.ok(
      Math.abs(worst - (to - from + 2 * DELAY_MS)) <= 100,
      `worst RTT ${worst} ms, expected about ${to - from + 2 * DELAY_MS}`,
    );
    assert.equal(end.dropped, 0);
    assert.ok((end.held as number) > 0);
  },
);

Deno.test(
  { name: "impair: at 1000 packets/s, packets leave within about 1 ms of due", ignore },
  async () => {
    await using lab = await WireLab.create();
    const { impairer } = await lab.impair(["--delay", "20", "--stalls", "none"]);
    // 1000 UDP datagrams/s for 5 s, paced by elapsed time; right answers each with ICMP
    // "port unreachable", which crosses the impairer as well.
    const sender = `
    import dgram from "node:dgram";
    const socket = dgram.createSocket("udp4");
    const payload = new Uint8Array(100);
    const start = performance.now();
    let sent = 0;
    await new Promise((done) => {
      const timer = setInterval(() => {
        const target = Math.min(5000, Math.floor(performance.now() - start));
        for (; sent < target; sent++) socket.send(payload, 9, "${RIGHT}");
        if (sent >= 5000) { clearInterval(timer); done(); }
      }, 1);
    });
    setTimeout(() => { socket.close(); console.log(sent); }, 200);
  `;
    const out = await run([
      "ip",
      "netns",
      "exec",
      lab.ns("left"),
      Deno.execPath(),
      "eval",
      "--quiet",
      sender,
    ], 30_000);
    assert.equal(out.stdout.trim(), "5000", out.stderr);
    await sleep(300);
    await impairer.stop();
    const final = impairer.events("stats").at(-1)!;
    const lateness = final.latenessTotal as Record<string, number>;
    console.log(`lateness at 1000+ packets/s: ${JSON.stringify(lateness)}`);
    assert.ok((final.received as number) >= 5000, JSON.stringify(final));
    assert.ok(lateness.p50Ms <= 0.6 && lateness.p50Ms >= -0.6, `median ${lateness.p50Ms} ms`);
    assert.ok(lateness.p90Ms <= 1.5, `90th percentile ${lateness.p90Ms} ms`);
  },
);
