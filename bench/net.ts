/**
 * The benchmark's network: two namespaces, a client and a server, joined by
 * two veth pairs, an attacker with a veth of its own into the server, and
 * the processes the benchmark runs in them.
 *
 * ```text
 *   [client] upa 192.168.70.2 ==== 192.168.70.1 wan0 [server]  lo 192.168.72.1
 *            upb 192.168.71.2 ==== 192.168.71.1 wan1
 *   [attacker] atk 192.168.73.2 == 192.168.73.1 wan2
 * ```
 *
 * tuxburst's server listens on 192.168.72.1, which the client reaches through
 * either link (a host route per uplink), so one and two uplinks use the same
 * config; every other path uses link A alone. The attacker floods the
 * tunnels' ports over its own link, as one on the internet would: its
 * datagrams compete with the client's for the server's sockets and CPU, not
 * for the client's links.
 *
 * Follows `shared/LAB.md`: nothing in the root namespace is touched (each veth
 * pair is created inside the client or attacker namespace with its peer put straight into
 * the server's), names carry a prefix unique to this process (`tbb<pid>`),
 * every command runs under `timeout` so that it ends by itself even if the
 * benchmark is killed, and disposing (also on Ctrl-C or SIGTERM) kills every
 * process by PID and deletes every namespace by name.
 *
 * @example
 * ```ts
 * await using net = await BenchNet.create();
 * const out = await net.exec("client", ["ping", "-c", "1", ADDRESSES.serverA], { timeoutS: 5 });
 * ```
 *
 * @module
 */
import { cleanUpOnInterrupt } from "../lab/interrupt.ts";

/** Prefix of every namespace a benchmark run makes; the run's own adds its PID. */
export const NAMESPACE_PREFIX = "tbb";

/** The namespaces, by role. */
export type Side = "client" | "server" | "attacker";

const SIDES: readonly Side[] = ["client", "server", "attacker"];

/** Addresses of the benchmark network. */
export const ADDRESSES = {
  clientA: "192.168.70.2",
  serverA: "192.168.70.1",
  clientB: "192.168.71.2",
  serverB: "192.168.71.1",
  /** The server's address on its loopback, reachable over either link. */
  serverHost: "192.168.72.1",
  attacker: "192.168.73.2",
  serverAttacker: "192.168.73.1",
} as const;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const decoder = new TextDecoder();

/** Options of `BenchNet.spawn`. */
export interface SpawnOptions {
  /** The process is killed (by `timeout`) after this many seconds. */
  boundS: number;
  /** A short name for messages. */
  label?: string;
  /** Written to standard input, which is then closed. */
  stdin?: string;
}

/** Result of `BenchNet.exec`. */
export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * A process started in a namespace under `timeout`. `pid` is the wrapper
 * (`ip netns exec` becomes `timeout`); `realPid()` finds the program itself,
 * whose CPU time and memory the benchmark reads.
 */
export class BenchProcess {
  readonly pid: number;
  #stdout = "";
  #stderr = "";
  #status?: Deno.CommandStatus;
  #realPid?: number;
  readonly #exited: Promise<Deno.CommandStatus>;

  constructor(readonly label: string, child: Deno.ChildProcess, stdin?: string) {
    this.pid = child.pid;
    const drained = Promise.all([
      this.#pump(child.stdout, (text) => this.#stdout = keepTail(this.#stdout + text)),
      this.#pump(child.stderr, (text) => this.#stderr = keepTail(this.#stderr + text)),
    ]);
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      writer.write(new TextEncoder().encode(stdin)).then(() => writer.close()).catch(() => {});
    }
    this.#exited = child.status.then(async (status) => {
      // A grandchild that inherited the pipes must not keep us waiting.
      await Promise.race([drained, sleep(500)]);
      this.#status = status;
      return status;
    });
  }

  async #pump(stream: ReadableStream<Uint8Array>, append: (text: string) => void): Promise<void> {
    const textDecoder = new TextDecoder();
    try {
      for await (const chunk of stream) append(textDecoder.decode(chunk, { stream: true }));
    } catch {
      // The stream broke: what was read is what we have.
    }
  }

  get stdout(): string {
    return this.#stdout;
  }

  get stderr(): string {
    return this.#stderr;
  }

  get running(): boolean {
    return this.#status === undefined;
  }

  get status(): Deno.CommandStatus | undefined {
    return this.#status;
  }

  /** Settles when the process has ended. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.#exited;
  }

  /**
   * The PID of the program itself: the first descendant that is neither
   * `ip` nor `timeout`. Throws when it cannot be found within `timeoutMs`.
   */
  async realPid(timeoutMs = 3000): Promise<number> {
    if (this.#realPid !== undefined) return this.#realPid;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && this.running) {
      let pid: number | undefined = this.pid;
      while (pid !== undefined && ["ip", "timeout"].includes(readComm(pid) ?? "")) {
        pid = firstChild(pid);
      }
      if (pid !== undefined && readComm(pid) !== undefined) return this.#realPid = pid;
      await sleep(20);
    }
    throw new Error(`${this.label}: could not find its process under PID ${this.pid}`);
  }

  /** Waits at most `timeoutMs` for the end; `undefined` when it still runs. */
  async wait(timeoutMs: number): Promise<Deno.CommandStatus | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<undefined>((resolve) =>
      timer = setTimeout(() => resolve(undefined), timeoutMs)
    );
    try {
      return await Promise.race([this.#exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits until `pattern` appears in stdout or stderr; throws after `timeoutMs` or at its end. */
  async waitForOutput(pattern: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.#stdout) && !pattern.test(this.#stderr)) {
      if (!this.running) throw new Error(`${this.label} ended before printing ${pattern}`);
      if (Date.now() > deadline) {
        throw new Error(`${this.label} did not print ${pattern} within ${timeoutMs} ms`);
      }
      await sleep(20);
    }
  }

  /** SIGTERM to the program, SIGKILL to it and its wrapper after `graceMs`; bounded. */
  async stop(graceMs = 3000): Promise<Deno.CommandStatus | undefined> {
    if (!this.running) return this.#status;
    const pids = [this.#realPid, this.pid].filter((pid) => pid !== undefined);
    for (const pid of pids) kill(pid, "SIGTERM");
    const status = await this.wait(graceMs);
    if (status) return status;
    for (const pid of pids) kill(pid, "SIGKILL");
    return await this.wait(2000);
  }

  /** Kills without waiting, for signal handlers. */
  killSync(): void {
    if (this.#realPid !== undefined) kill(this.#realPid, "SIGKILL");
    if (this.running) kill(this.pid, "SIGKILL");
  }

  /** Label, state and the end of both outputs, for messages. */
  describe(lines = 15): string {
    const tail = (text: string) => text.trimEnd().split("\n").slice(-lines).join("\n");
    const state = this.#status
      ? (this.#status.signal ? `signal ${this.#status.signal}` : `exit code ${this.#status.code}`)
      : "running";
    return `${this.label} (PID ${this.pid}, ${state})\n${tail(this.#stderr)}\n${tail(this.#stdout)}`
      .trimEnd();
  }
}

function keepTail(text: string, keep = 256 * 1024): string {
  return text.length > keep * 1.5 ? text.slice(-keep) : text;
}

function kill(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch {
    // Ended meanwhile.
  }
}

function readComm(pid: number): string | undefined {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
  } catch {
    return undefined;
  }
}

function firstChild(pid: number): number | undefined {
  try {
    const children = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim();
    return children ? Number(children.split(/\s+/)[0]) : undefined;
  } catch {
    return undefined;
  }
}

/** Runs `ip netns …` (add, del, pids): the only commands run in the root namespace. */
async function ipNetns(args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command("ip", {
    args: ["netns", ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(10_000),
  }).output();
}

/** The benchmark's namespaces and everything running in them; see the module doc. */
export class BenchNet implements AsyncDisposable {
  /** Prefix of every namespace, `tbb<pid>`. */
  readonly prefix = `${NAMESPACE_PREFIX}${Deno.pid}`;
  /** A private temporary directory for configs and keys, removed on dispose. */
  readonly dir: string;
  #made: string[] = [];
  #processes = new Set<BenchProcess>();
  #outsideFiles = new Set<string>();
  #disposed = false;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Builds the network (see the module doc); on failure removes what was made and throws. */
  static async create(): Promise<BenchNet> {
    const net = new BenchNet(await Deno.makeTempDir({ prefix: "tuxburst-bench-" }));
    cleanUpOnInterrupt(net, true);
    try {
      await net.#build();
    } catch (error) {
      await net[Symbol.asyncDispose]();
      throw error;
    }
    return net;
  }

  /** The real name of a side's namespace. */
  ns(side: Side): string {
    return `${this.prefix}-${side[0]}`;
  }

  async #build(): Promise<void> {
    for (const side of SIDES) {
      const result = await ipNetns(["add", this.ns(side)]);
      if (!result.success) {
        throw new Error(`ip netns add ${this.ns(side)}: ${decoder.decode(result.stderr).trim()}`);
      }
      this.#made.push(this.ns(side));
    }
    for (const side of SIDES) {
      // Loose reverse-path filtering: the server's host address is reached over both links.
      await this.exec(side, [
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.conf.all.rp_filter=2",
        "net.ipv4.conf.default.rp_filter=2",
      ], { check: true });
    }
    await this.ipBatch("client", [
      `link add upa type veth peer name wan0 netns ${this.ns("server")}`,
      `link add upb type veth peer name wan1 netns ${this.ns("server")}`,
      "link set lo up",
      `addr add ${ADDRESSES.clientA}/24 dev upa`,
      `addr add ${ADDRESSES.clientB}/24 dev upb`,
      "link set upa up",
      "link set upb up",
      `route add ${ADDRESSES.serverHost}/32 via ${ADDRESSES.serverA} dev upa metric 100`,
      `route add ${ADDRESSES.serverHost}/32 via ${ADDRESSES.serverB} dev upb metric 200`,
    ]);
    await this.ipBatch("server", [
      "link set lo up",
      `addr add ${ADDRESSES.serverHost}/32 dev lo`,
      `addr add ${ADDRESSES.serverA}/24 dev wan0`,
      `addr add ${ADDRESSES.serverB}/24 dev wan1`,
      "link set wan0 up",
      "link set wan1 up",
    ]);
    await this.ipBatch("attacker", [
      `link add atk type veth peer name wan2 netns ${this.ns("server")}`,
      "link set lo up",
      `addr add ${ADDRESSES.attacker}/24 dev atk`,
      "link set atk up",
      `route add default via ${ADDRESSES.serverAttacker} dev atk`,
    ]);
    await this.ipBatch("server", [
      `addr add ${ADDRESSES.serverAttacker}/24 dev wan2`,
      "link set wan2 up",
    ]);
  }

  /**
   * Registers a file outside the directory that a program of ours may leave
   * behind when killed (wireguard-go's control socket), to be removed on dispose.
   */
  removeOnDispose(path: string): void {
    this.#outsideFiles.add(path);
  }

  /** Runs `ip` commands in a side's namespace, one per line; throws on failure. */
  async ipBatch(side: Side, commands: string[]): Promise<void> {
    await this.exec(side, ["ip", "-batch", "-"], {
      stdin: commands.join("\n") + "\n",
      check: true,
    });
  }

  /** Starts `cmd` in a side's namespace, ended by `timeout` after `boundS` at the latest. */
  spawn(side: Side, cmd: string[], options: SpawnOptions): BenchProcess {
    if (this.#disposed) throw new Error("the benchmark network is disposed");
    const child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        this.ns(side),
        "timeout",
        "--kill-after=3",
        String(Math.ceil(options.boundS)),
        ...cmd,
      ],
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      // Each side its own control-socket directory: the server and the client are both
      // tuxburst0, and concurrent runs must not meet in /run/tuxburst.
      env: { NO_COLOR: "1", TUXBURST_RUN_DIR: `${this.dir}/run/${side}` },
    }).spawn();
    const process = new BenchProcess(options.label ?? cmd[0], child, options.stdin);
    this.#processes.add(process);
    process.exited.then(() => this.#processes.delete(process));
    return process;
  }

  /** Runs `cmd` in a side's namespace to its end, at most `timeoutS` (default 20 s). */
  async exec(
    side: Side,
    cmd: string[],
    options: { timeoutS?: number; stdin?: string; check?: boolean } = {},
  ): Promise<ExecResult> {
    const timeoutS = options.timeoutS ?? 20;
    const process = this.spawn(side, cmd, {
      boundS: timeoutS,
      label: cmd.join(" "),
      stdin: options.stdin,
    });
    let status = await process.wait(timeoutS * 1000 + 5000);
    // `timeout` exits 124 when it ended the command, 137 when it had to kill it.
    const timedOut = status === undefined || status.code === 124 || status.code === 137;
    status ??= await process.stop(0);
    const result = {
      code: status?.code ?? -1,
      stdout: process.stdout,
      stderr: process.stderr,
      timedOut,
    };
    if (options.check && result.code !== 0) {
      throw new Error(
        `in ${this.ns(side)}: \`${cmd.join(" ")}\` failed (${
          timedOut ? `timed out after ${timeoutS} s` : `exit code ${result.code}`
        }): ${result.stderr.trim()}`,
      );
    }
    return result;
  }

  /** Kills every process by PID and deletes every namespace and the directory; idempotent. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await Promise.all([...this.#processes].map((process) => process.stop(2000)));
    this.#processes.clear();
    const problems: string[] = [];
    for (const ns of [...this.#made]) {
      // Whatever our processes started that still lives in our namespaces.
      const pids = await ipNetns(["pids", ns]);
      for (const pid of decoder.decode(pids.stdout).split(/\s+/).filter(Boolean)) {
        kill(Number(pid), "SIGKILL");
      }
      const result = await ipNetns(["del", ns]);
      if (result.success) this.#made = this.#made.filter((made) => made !== ns);
      else problems.push(`ip netns del ${ns}: ${decoder.decode(result.stderr).trim()}`);
    }
    for (const path of [this.dir, ...this.#outsideFiles]) {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    }
    cleanUpOnInterrupt(this, false);
    if (problems.length) throw new Error(`cleanup failed:\n${problems.join("\n")}`);
  }

  /** The same as dispose, without awaiting, for signal handlers. */
  disposeSync(): void {
    this.#disposed = true;
    for (const process of this.#processes) process.killSync();
    for (const ns of this.#made) {
      const pids = new Deno.Command("ip", { args: ["netns", "pids", ns], stderr: "null" })
        .outputSync();
      for (const pid of decoder.decode(pids.stdout).split(/\s+/).filter(Boolean)) {
        kill(Number(pid), "SIGKILL");
      }
      new Deno.Command("ip", { args: ["netns", "del", ns], stdout: "null", stderr: "null" })
        .outputSync();
    }
    this.#made = [];
    for (const path of [this.dir, ...this.#outsideFiles]) {
      try {
        Deno.removeSync(path, { recursive: true });
      } catch {
        // Already gone.
      }
    }
  }
}
