/**
 * A lab of network namespaces that mirrors how tuxburst is used (see
 * `shared/LAB.md`):
 *
 * ```text
 *   [cli] upa ==link A== cli [ispA] wan ==\                 /== wan [srv]  (the VDS)
 *                                          ispa [inet] srv
 *   [cli] upb ==link B== cli [ispB] wan ==/     ispb web    \== wan [web]  (a site)
 * ```
 *
 * With `wires: true`, a "wire" namespace sits on each link between `cli` and
 * its ISP, where an impairment program (`tools/impair.ts`, started with
 * `Lab.impair`) delays, drops and stalls the link's packets through a TUN
 * device and policy routing; `netem` is not available, see LAB.md:
 *
 * ```text
 *   [cli] upa ==10.1.1.0/24== a [wireA] b ==10.1.0.0/30== cli [ispA] wan == …
 *   [cli] upb ==10.2.2.0/24== a [wireB] b ==10.2.0.0/30== cli [ispB] wan == …
 * ```
 *
 * `cli`'s addresses and gateways are the same either way.
 *
 * With `ipv6: true` (without wires), every link also has an IPv6 /64
 * (`ADDRESSES6`) with the same roles: `cli` has two IPv6 default routes, the
 * ISPs masquerade its IPv6 too, `srv` masquerades the tunnel's fd99::/64,
 * and `inet` forwards IPv6 to `web` only from the server's IPv6 address.
 *
 * With `secondClient: true`, a second client namespace `cli2` hangs off
 * `ispA` too, so both clients reach the world from `ispA`'s one public address:
 *
 * ```text
 *   [cli2] up ==10.3.3.0/24== cli2 [ispA]
 * ```
 *
 * The ISPs masquerade their client side (carrier-grade NAT), `srv` masquerades
 * the tunnel's 10.99.0.0/24 out of its one uplink (unless `serverNat: false`
 * leaves that to tuxburst's `server.nat`), and `inet` forwards to `web` only
 * from the server's address, so a test cannot pass over a direct path.
 *
 * Nothing in the root namespace is touched: every veth pair is created inside
 * its first namespace with its peer placed directly into the second, and all
 * commands run inside the lab's namespaces. Names carry a prefix unique to
 * this process and lab (`tb<pid>x<n>-cli`); interfaces have fixed short names
 * inside each namespace. Disposing the lab (also after a failure, or on
 * SIGINT/SIGTERM of the test process) kills every process it started, by PID,
 * and deletes every namespace it made, by name. Every wait is bounded.
 *
 * @example
 * ```ts
 * const why = Lab.available();
 * if (why.ok) {
 *   await using lab = await Lab.create();
 *   const result = await lab.ping("cli", ADDRESSES.srv, { count: 3 });
 *   console.log(result.received);
 * }
 * ```
 *
 * @module
 */
import { cleanUpOnInterrupt } from "./interrupt.ts";
import { V8_FLAGS_ARGUMENT } from "../lib/v8_flags.ts";
import type { Report as TcpStreamReport } from "./tools/tcp_stream.ts";

/** The namespaces of every lab, by role. */
export const NAMESPACES = ["cli", "ispA", "ispB", "inet", "srv", "web"] as const;
/** The namespaces a lab made with `wires: true` has besides `NAMESPACES`. */
export const WIRE_NAMESPACES = ["wireA", "wireB"] as const;
/**
 * The namespace a lab made with `secondClient: true` has besides
 * `NAMESPACES`: another client behind `ispA`'s NAT (link `up`), like a phone
 * on the same Wi-Fi as the laptop.
 */
export const SECOND_CLIENT_NAMESPACES = ["cli2"] as const;
/** One of the lab's namespaces, by role. */
export type NsName =
  | typeof NAMESPACES[number]
  | typeof WIRE_NAMESPACES[number]
  | typeof SECOND_CLIENT_NAMESPACES[number];
/** The client's two uplinks: link A via `ispA`, link B via `ispB`. */
export type IspLink = "a" | "b";

/** Addresses of the lab (all /24). */
export const ADDRESSES = {
  /** `cli` on link A (`upa`) and its gateway: `ispA`, or `wireA` in a lab with wires. */
  cliA: "10.1.1.2",
  ispACli: "10.1.1.1",
  /** `cli` on link B (`upb`) and its gateway: `ispB`, or `wireB` in a lab with wires. */
  cliB: "10.2.2.2",
  ispBCli: "10.2.2.1",
  /** In a lab with wires: each wire's side towards its ISP, and the ISP's side of it. */
  wireAIsp: "10.1.0.1",
  ispAWire: "10.1.0.2",
  wireBIsp: "10.2.0.1",
  ispBWire: "10.2.0.2",
  /** The ISPs' public addresses: what the world sees of `cli` through their NAT. */
  ispA: "172.16.1.2",
  ispB: "172.16.2.2",
  /** In a lab with a second client: `cli2` on its link `up` to `ispA`, and `ispA`'s side. */
  cli2: "10.3.3.2",
  ispACli2: "10.3.3.1",
  /** The server's one public address. */
  srv: "172.16.3.2",
  /** The web host; `inet` forwards to it only from `srv`. */
  web: "172.16.4.2",
  /** `inet`'s side of each link. */
  inetA: "172.16.1.1",
  inetB: "172.16.2.1",
  inetSrv: "172.16.3.1",
  inetWeb: "172.16.4.1",
} as const;

/** IPv6 addresses of a lab made with `ipv6: true` (all /64), by the same names as `ADDRESSES`. */
export const ADDRESSES6 = {
  cliA: "fd01:1:1::2",
  ispACli: "fd01:1:1::1",
  cliB: "fd01:2:2::2",
  ispBCli: "fd01:2:2::1",
  ispA: "fd16:1::2",
  ispB: "fd16:2::2",
  srv: "fd16:3::2",
  web: "fd16:4::2",
  inetA: "fd16:1::1",
  inetB: "fd16:2::1",
  inetSrv: "fd16:3::1",
  inetWeb: "fd16:4::1",
} as const;

/** The tunnel's IPv6 subnet that `srv` masquerades towards `web` in a lab with IPv6. */
export const TUNNEL_SUBNET6 = "fd99::/64";

/** Per namespace and interface, its IPv6 address (a lab with `ipv6: true`). */
const LINK_ADDRESSES6: ReadonlyArray<readonly [NsName, string, string]> = [
  ["cli", "upa", ADDRESSES6.cliA],
  ["ispA", "cli", ADDRESSES6.ispACli],
  ["cli", "upb", ADDRESSES6.cliB],
  ["ispB", "cli", ADDRESSES6.ispBCli],
  ["ispA", "wan", ADDRESSES6.ispA],
  ["inet", "ispa", ADDRESSES6.inetA],
  ["ispB", "wan", ADDRESSES6.ispB],
  ["inet", "ispb", ADDRESSES6.inetB],
  ["srv", "wan", ADDRESSES6.srv],
  ["inet", "srv", ADDRESSES6.inetSrv],
  ["web", "wan", ADDRESSES6.web],
  ["inet", "web", ADDRESSES6.inetWeb],
];

/** IPv6 routes besides the connected ones, like `routes()`. */
const ROUTES6: Partial<Record<NsName, string[]>> = {
  cli: [
    `default via ${ADDRESSES6.ispACli} dev upa metric 100`,
    `default via ${ADDRESSES6.ispBCli} dev upb metric 200`,
  ],
  ispA: [`default via ${ADDRESSES6.inetA} dev wan`],
  ispB: [`default via ${ADDRESSES6.inetB} dev wan`],
  srv: [`default via ${ADDRESSES6.inetSrv} dev wan`],
  web: [`default via ${ADDRESSES6.inetWeb} dev wan`],
};

/** The IPv6 twins of `NFT_RULES`. */
function nftRules6(serverNat: boolean): Partial<Record<NsName, string>> {
  const masquerade = (subnet: string) => `
table ip6 tb6 {
  chain nat_post { type nat hook postrouting priority srcnat; oifname "wan" ip6 saddr ${subnet} masquerade; }
}`;
  return {
    ispA: masquerade("fd01:1:1::/64"),
    ispB: masquerade("fd01:2:2::/64"),
    inet: `
table ip6 tb6 {
  chain to_web {
    type filter hook forward priority filter; policy accept;
    oifname "web" ip6 saddr != ${ADDRESSES6.srv} counter drop;
  }
}`,
    ...(serverNat ? { srv: masquerade(TUNNEL_SUBNET6) } : {}),
  };
}

/** The tunnel subnet that `srv` masquerades towards `web`. */
export const TUNNEL_SUBNET = "10.99.0.0/24";

/** The client's uplink interface for each link. */
export const UPLINKS: Record<IspLink, string> = { a: "upa", b: "upb" };

/** The client's subnet on each link (what its ISP masquerades). */
export const CLIENT_NETS: Record<IspLink, string> = { a: "10.1.1.0/24", b: "10.2.2.0/24" };

/** The second client's subnet, which `ispA` masquerades too (same public address as link A). */
export const SECOND_CLIENT_NET = "10.3.3.0/24";

/** The wire namespace on each link, in a lab with wires. */
export const WIRES: Record<IspLink, NsName> = { a: "wireA", b: "wireB" };

/** The impairment program that `Lab.impair` runs in a wire namespace. */
export const IMPAIR_TOOL = new URL("../tools/impair.ts", import.meta.url).pathname;

/** The TUN device of the impairment program, and the routing table that sends a wire's traffic into it. */
const IMPAIR_TUN = "imp0";
const IMPAIR_TABLE = 100;

/** tuxburst's entry point in this checkout. */
const TUXBURST_MAIN = new URL("../main.ts", import.meta.url).pathname;

/**
 * The command that runs `tuxburst <args>` from this checkout the way users
 * run it: with the V8 flags that `deno task serve|connect` and the built
 * executable pass (`lib/v8_flags.ts`).
 */
export function tuxburstCommand(...args: string[]): string[] {
  return [
    Deno.execPath(),
    "run",
    "--allow-all",
    V8_FLAGS_ARGUMENT,
    TUXBURST_MAIN,
    ...args,
  ];
}

/** Directory of the helper programs (`tools/*.ts`) that run inside namespaces. */
export const TOOLS_DIR = new URL("./tools/", import.meta.url).pathname;

type LinkSpec = readonly [NsName, string, string, NsName, string, string];

/** The veth pairs, `[namespace, interface, address/prefix]` for both ends of each. */
function links(wires: boolean): LinkSpec[] {
  const access: LinkSpec[] = wires
    ? [
      ["cli", "upa", `${ADDRESSES.cliA}/24`, "wireA", "a", `${ADDRESSES.ispACli}/24`],
      ["wireA", "b", `${ADDRESSES.wireAIsp}/30`, "ispA", "cli", `${ADDRESSES.ispAWire}/30`],
      ["cli", "upb", `${ADDRESSES.cliB}/24`, "wireB", "a", `${ADDRESSES.ispBCli}/24`],
      ["wireB", "b", `${ADDRESSES.wireBIsp}/30`, "ispB", "cli", `${ADDRESSES.ispBWire}/30`],
    ]
    : [
      ["cli", "upa", `${ADDRESSES.cliA}/24`, "ispA", "cli", `${ADDRESSES.ispACli}/24`],
      ["cli", "upb", `${ADDRESSES.cliB}/24`, "ispB", "cli", `${ADDRESSES.ispBCli}/24`],
    ];
  return [
    ...access,
    ["ispA", "wan", `${ADDRESSES.ispA}/24`, "inet", "ispa", `${ADDRESSES.inetA}/24`],
    ["ispB", "wan", `${ADDRESSES.ispB}/24`, "inet", "ispb", `${ADDRESSES.inetB}/24`],
    ["srv", "wan", `${ADDRESSES.srv}/24`, "inet", "srv", `${ADDRESSES.inetSrv}/24`],
    ["web", "wan", `${ADDRESSES.web}/24`, "inet", "web", `${ADDRESSES.inetWeb}/24`],
  ];
}

/** Routes besides the connected ones; `cli` has two defaults like NetworkManager makes. */
function routes(wires: boolean): Partial<Record<NsName, string[]>> {
  const common: Partial<Record<NsName, string[]>> = {
    cli: [
      `default via ${ADDRESSES.ispACli} dev upa metric 100`,
      `default via ${ADDRESSES.ispBCli} dev upb metric 200`,
    ],
    ispA: [`default via ${ADDRESSES.inetA} dev wan`],
    ispB: [`default via ${ADDRESSES.inetB} dev wan`],
    srv: [`default via ${ADDRESSES.inetSrv} dev wan`],
    web: [`default via ${ADDRESSES.inetWeb} dev wan`],
  };
  if (!wires) return common;
  return {
    ...common,
    ispA: [...common.ispA!, `${CLIENT_NETS.a} via ${ADDRESSES.wireAIsp} dev cli`],
    ispB: [...common.ispB!, `${CLIENT_NETS.b} via ${ADDRESSES.wireBIsp} dev cli`],
    // The client's side is connected; everything else is beyond the ISP.
    wireA: [`default via ${ADDRESSES.ispAWire} dev b`],
    wireB: [`default via ${ADDRESSES.ispBWire} dev b`],
  };
}

/** Namespaces that forward packets (`srv` only with `serverNat`). */
const ROUTERS: readonly NsName[] = ["ispA", "ispB", "inet", "srv", "wireA", "wireB"];

/**
 * An ISP: NAT of its client side, and empty chains where `blackhole()` puts
 * its drop rules. Ingress is dropped before conntrack (priority -300), egress
 * after NAT, so the link is dead both ways, also for the ISP's own packets.
 */
function ispRules(clientSubnet: string): string {
  return `
table ip tb {
  chain nat_post { type nat hook postrouting priority srcnat; oifname "wan" ip saddr ${clientSubnet} masquerade; }
  chain bh_in { type filter hook prerouting priority -300; }
  chain bh_out { type filter hook postrouting priority 300; }
}`;
}

const NFT_RULES: Partial<Record<NsName, string>> = {
  ispA: ispRules(CLIENT_NETS.a),
  ispB: ispRules(CLIENT_NETS.b),
  inet: `
table ip tb {
  chain to_web {
    type filter hook forward priority filter; policy accept;
    oifname "web" ip saddr != ${ADDRESSES.srv} counter drop;
  }
}`,
  srv: `
table ip tb {
  chain nat_post { type nat hook postrouting priority srcnat; oifname "wan" ip saddr ${TUNNEL_SUBNET} masquerade; }
}`,
};

/** Result of `Lab.exec`. */
export interface ExecResult {
  /** Exit code; -1 when killed by a signal. */
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  /** The command outlived its `timeoutMs` and was killed. */
  timedOut: boolean;
}

/** Options of `Lab.exec`. */
export interface ExecOptions {
  /** Kill the command after this long (default 10 s). */
  timeoutMs?: number;
  /** Written to the command's standard input, which is then closed. */
  stdin?: string | Uint8Array;
  /** Throw (with the command's stderr) unless it exits 0. */
  check?: boolean;
  env?: Record<string, string>;
}

/** Options of `Lab.spawn`. */
export interface SpawnOptions {
  /** How much of the end of stdout and of stderr to keep, each (default 256 KiB). */
  keepBytes?: number;
  env?: Record<string, string>;
  /** A short name for messages (default: the command's first words). */
  label?: string;
  /** Called with each complete line of stdout as it arrives (for live progress). */
  onLine?: (line: string) => void;
}

/** Result of `Lab.ping`. */
export interface PingResult {
  /** Echo requests sent (from ping's summary, else the highest sequence seen). */
  transmitted: number;
  /** Sequences answered at least once. */
  received: number;
  /** Sequences never answered, ascending. */
  lost: number[];
  /** Replies beyond the first for a sequence. */
  duplicates: number;
  /** First reply for each answered sequence, in arrival order; `at` in ms since the epoch. */
  replies: { seq: number; at: number; rttMs: number }[];
  /** The most consecutive sequences without a reply. */
  longestLossRun: number;
  /** The longest time between two consecutive replies, in ms. */
  longestGapMs: number;
  /** Ping's full output, for messages. */
  output: string;
}

/** Options of `Lab.ping`. */
export interface PingOptions {
  /** Echo requests to send (default 3). */
  count?: number;
  /** Time between requests (default 200 ms; below 200 needs root, which a lab has). */
  intervalMs?: number;
  /** How long to wait for each reply after the last request (default 1000 ms). */
  replyWaitMs?: number;
  /** Bind to this interface (`ping -I`). */
  device?: string;
  /** Bound on the whole run (default: count × interval + reply wait + 3 s). */
  timeoutMs?: number;
}

/** Options of `Lab.create`. */
export interface LabOptions {
  /**
   * Reverse-path filtering in every namespace (`net.ipv4.conf.{all,default}.rp_filter`).
   * Default 2 (loose), as systemd sets it on desktops: the client receives on
   * both uplinks from the server, whose address is routed via the tunnel once
   * it is up, which strict mode (1, RHEL's default) drops.
   */
  rpFilter?: 0 | 1 | 2;
  /**
   * Put a wire namespace (`wireA`, `wireB`) on each link between `cli` and
   * its ISP, for `Lab.impair` (default false). Until an impairment program
   * runs there, a wire just forwards.
   */
  wires?: boolean;
  /**
   * Add `cli2`, a second client behind `ispA`'s NAT (default false); see
   * `SECOND_CLIENT_NAMESPACES`.
   */
  secondClient?: boolean;
  /**
   * `srv` forwards and masquerades the tunnel subnet out of `wan` itself, as
   * the README's manual commands do (default true). With false, `srv` has
   * `ip_forward` 0 and no NAT rules, so traffic from the tunnel reaches `web`
   * only when tuxburst sets them up (`server.nat`).
   */
  serverNat?: boolean;
  /**
   * IPv6 on every link besides IPv4 (`ADDRESSES6`), routed and masqueraded
   * like IPv4 (default false). Not with `wires`.
   */
  ipv6?: boolean;
}

/** Options of `Lab.impair`. */
export interface ImpairOptions {
  /** Bound on the wait for the program's `ready` line (default 15 s). */
  readyTimeoutMs?: number;
  /** Passed to `Lab.spawn`. */
  label?: string;
  /** Called with every line the program prints on stdout (its JSON events), as it prints them. */
  onLine?: (line: string) => void;
}

/** The final line of `tools/tcp_stream.ts client`. */
export type TcpReport = TcpStreamReport;

/** Why the lab cannot run, when it cannot. */
export type Availability = { ok: true } | { ok: false; reason: string };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Polls `check` every 100 ms until it holds; throws after `timeoutMs`,
 * naming `what` it waited for. Every wait of the lab's users is bounded by it.
 */
export async function waitUntil(
  what: string,
  timeoutMs: number,
  check: () => boolean | Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise<void>((resolve) => setTimeout(resolve, 100));
  }
}

let labCounter = 0;

/** `name` is an executable somewhere on `PATH` (or in the sbin directories). */
function onPath(name: string): boolean {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"]);
  return dirs.some((dir) => {
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      return info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0;
    } catch {
      return false;
    }
  });
}

/** Debian package that holds each tool a lab may need, for skip messages. */
const PACKAGES: Record<string, string> = {
  ip: "iproute2",
  nft: "nftables",
  ping: "iputils-ping",
  tcpdump: "tcpdump",
  setpriv: "util-linux",
  unshare: "util-linux",
  sysctl: "procps",
  ss: "iproute2",
};

/** Keeps the last `keep` characters of a stream, reading it until EOF or `cancel()`. */
class Tail {
  #text = "";
  #reader?: ReadableStreamDefaultReader<Uint8Array>;
  /** Bytes read in total, also those no longer kept. */
  total = 0;
  readonly done: Promise<void>;

  #partial = "";

  constructor(
    stream: ReadableStream<Uint8Array>,
    readonly keep: number,
    readonly onLine?: (line: string) => void,
  ) {
    this.done = this.#pump(stream);
  }

  get text(): string {
    return this.#text;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    const reader = this.#reader = stream.getReader();
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        this.total += value.byteLength;
        this.#append(decoder.decode(value, { stream: true }));
      }
      this.#append(decoder.decode());
    } catch {
      // The stream was cancelled or broke: what was read is what we have.
    } finally {
      reader.releaseLock();
    }
  }

  #append(text: string): void {
    if (this.onLine) {
      const lines = (this.#partial + text).split("\n");
      this.#partial = lines.pop()!;
      for (const line of lines) this.onLine(line);
    }
    this.#text += text;
    if (this.#text.length > this.keep * 1.5) this.#text = this.#text.slice(-this.keep);
  }

  /** Stops reading (when a grandchild keeps the pipe open after the child exited). */
  async cancel(): Promise<void> {
    await this.#reader?.cancel().catch(() => {});
    await this.done;
  }
}

/**
 * A process started by `Lab.spawn` inside one namespace. It is killed by PID
 * when the lab is disposed, if it has not ended before.
 */
export class LabProcess {
  readonly pid: number;
  #child: Deno.ChildProcess;
  #out: Tail;
  #err: Tail;
  #status?: Deno.CommandStatus;
  readonly #exited: Promise<Deno.CommandStatus>;

  constructor(
    readonly label: string,
    readonly ns: NsName,
    child: Deno.ChildProcess,
    keepBytes: number,
    onLine?: (line: string) => void,
  ) {
    this.#child = child;
    this.pid = child.pid;
    this.#out = new Tail(child.stdout, keepBytes, onLine);
    this.#err = new Tail(child.stderr, keepBytes);
    this.#exited = child.status.then(async (status) => {
      // Output written before the exit is in the pipes; a grandchild that
      // inherited them must not keep us waiting for EOF.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), 500));
      const drained = Promise.all([this.#out.done, this.#err.done]);
      if (await Promise.race([drained, late]) === "late") {
        await Promise.all([this.#out.cancel(), this.#err.cancel()]);
      }
      clearTimeout(timer);
      this.#status = status;
      return status;
    });
  }

  /** The kept end of standard output. */
  get stdout(): string {
    return this.#out.text;
  }

  /** The kept end of standard error. */
  get stderr(): string {
    return this.#err.text;
  }

  /** The exit status, once the process has ended. */
  get status(): Deno.CommandStatus | undefined {
    return this.#status;
  }

  get running(): boolean {
    return this.#status === undefined;
  }

  /** Sends a signal; false when the process had already ended. */
  kill(signal: Deno.Signal = "SIGTERM"): boolean {
    if (this.#status) return false;
    try {
      this.#child.kill(signal);
      return true;
    } catch {
      return false;
    }
  }

  /** Waits for the end, at most `timeoutMs`; `undefined` when still running. */
  async wait(timeoutMs: number): Promise<Deno.CommandStatus | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<undefined>((resolve) =>
      timer = setTimeout(() => resolve(undefined), timeoutMs)
    );
    try {
      return await Promise.race([this.#exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `signal`, then SIGKILL if it has not ended within `graceMs`; returns the final status. */
  async stop(signal: Deno.Signal = "SIGTERM", graceMs = 3000): Promise<Deno.CommandStatus> {
    this.kill(signal);
    const status = await this.wait(graceMs);
    if (status) return status;
    this.kill("SIGKILL");
    return (await this.wait(5000)) ?? { success: false, code: -1, signal: "SIGKILL" };
  }

  /**
   * Waits until `pattern` appears in the output (stdout, stderr or both).
   * Throws when the process ends first or after `timeoutMs`.
   */
  async waitForOutput(
    pattern: RegExp,
    { stream = "both", timeoutMs = 10_000 }: {
      stream?: "stdout" | "stderr" | "both";
      timeoutMs?: number;
    } = {},
  ): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    const text = () =>
      stream === "stdout"
        ? this.stdout
        : stream === "stderr"
        ? this.stderr
        : `${this.stdout}\n${this.stderr}`;
    while (true) {
      const match = text().match(pattern);
      if (match) return match;
      if (!this.running) {
        throw new Error(
          `${this.label} ended (${
            describeStatus(this.#status!)
          }) before printing ${pattern}\n${this.describe()}`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(
          `${this.label} did not print ${pattern} within ${timeoutMs} ms\n${this.describe()}`,
        );
      }
      await sleep(25);
    }
  }

  /** Lines of stdout parsed as JSON (lines that are not JSON objects are skipped). */
  jsonLines<T = Record<string, unknown>>(): T[] {
    const result: T[] = [];
    for (const line of this.stdout.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        result.push(JSON.parse(line) as T);
      } catch {
        // A line cut by the kept-bytes limit or still being written.
      }
    }
    return result;
  }

  /** Label, state and the end of both outputs, for assertion messages. */
  describe(lines = 30): string {
    const tail = (text: string) => text.trimEnd().split("\n").slice(-lines).join("\n");
    const state = this.#status ? `ended: ${describeStatus(this.#status)}` : "running";
    return `--- ${this.label} in ${this.ns} (pid ${this.pid}, ${state})\n` +
      `stderr:\n${tail(this.stderr)}\nstdout:\n${tail(this.stdout)}`;
  }
}

function describeStatus(status: Deno.CommandStatus): string {
  return status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
}

/** Runs a command in the root namespace: only `ip netns add|del|pids`, nothing else. */
function ipNetns(args: string[], timeoutMs = 10_000): Promise<Deno.CommandOutput> {
  const child = new Deno.Command("ip", {
    args: ["netns", ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already ended.
    }
  }, timeoutMs);
  return child.output().finally(() => clearTimeout(timer));
}

/** A running topology of namespaces; see the module doc. */
export class Lab implements AsyncDisposable {
  /** Prefix of every namespace of this lab, e.g. `tb4242x1`. */
  readonly prefix: string;
  /** A private temporary directory for configs and captures, removed on dispose. */
  readonly dir: string;
  #made: NsName[] = [];
  #processes = new Set<LabProcess>();
  #disposed = false;

  private constructor(dir: string) {
    this.prefix = `tb${Deno.pid}x${++labCounter}`;
    this.dir = dir;
  }

  /**
   * Checks that this process can build a lab: root, the `ip`, `nft` and
   * `ping` commands (plus any of `extraTools`), and `/dev/net/tun`.
   */
  static available(extraTools: string[] = []): Availability {
    if (Deno.build.os !== "linux") return { ok: false, reason: "network namespaces need Linux" };
    if (Deno.uid() !== 0) {
      return { ok: false, reason: "the lab needs root (network namespaces, veth, nftables)" };
    }
    for (const tool of ["ip", "nft", "ping", "sysctl", ...extraTools]) {
      if (!onPath(tool)) {
        return {
          ok: false,
          reason: `\`${tool}\` is not installed (apt-get install ${PACKAGES[tool] ?? tool})`,
        };
      }
    }
    try {
      Deno.statSync("/dev/net/tun");
    } catch {
      return { ok: false, reason: "/dev/net/tun is missing (no TUN support)" };
    }
    return { ok: true };
  }

  /** Builds a lab; on any failure removes what was made and throws. */
  static async create(options: LabOptions = {}): Promise<Lab> {
    const lab = new Lab(await Deno.makeTempDir({ prefix: "tuxburst-e2e-" }));
    cleanUpOnInterrupt(lab, true);
    try {
      if (options.ipv6 && options.wires) throw new Error("a lab with IPv6 cannot have wires yet");
      await lab.#build(
        options.rpFilter ?? 2,
        options.wires ?? false,
        options.serverNat ?? true,
        options.secondClient ?? false,
      );
      if (options.ipv6) await lab.#buildIpv6(options.serverNat ?? true);
    } catch (error) {
      await lab[Symbol.asyncDispose]();
      throw error;
    }
    return lab;
  }

  /** The real name of a namespace of this lab. */
  nsName(ns: NsName): string {
    return `${this.prefix}-${ns}`;
  }

  /** Where tuxburst processes started in `ns` keep their control sockets. */
  runDir(ns: NsName): string {
    return `${this.dir}/run/${ns}`;
  }

  /** Whether this lab has wire namespaces (`LabOptions.wires`). */
  get wires(): boolean {
    return this.#made.includes("wireA");
  }

  async #build(
    rpFilter: 0 | 1 | 2,
    wires: boolean,
    serverNat: boolean,
    secondClient: boolean,
  ): Promise<void> {
    const namespaces: NsName[] = [
      ...NAMESPACES,
      ...(wires ? WIRE_NAMESPACES : []),
      ...(secondClient ? SECOND_CLIENT_NAMESPACES : []),
    ];
    const linkSpecs = links(wires);
    const routeSpecs = routes(wires);
    if (secondClient) {
      linkSpecs.push(
        ["cli2", "up", `${ADDRESSES.cli2}/24`, "ispA", "cli2", `${ADDRESSES.ispACli2}/24`],
      );
      routeSpecs.cli2 = [`default via ${ADDRESSES.ispACli2} dev up`];
    }
    for (const ns of namespaces) {
      const result = await ipNetns(["add", this.nsName(ns)]);
      if (!result.success) {
        throw new Error(
          `ip netns add ${this.nsName(ns)}: ${new TextDecoder().decode(result.stderr).trim()}`,
        );
      }
      this.#made.push(ns);
    }
    // Set before the links exist, so that they inherit `default`.
    await Promise.all(namespaces.map((ns) => {
      // A wire forwards whatever comes back out of the impairer's TUN device,
      // whose reverse path is never that device.
      const rp = WIRE_NAMESPACES.some((wire) => wire === ns) ? 0 : rpFilter;
      return this.exec(ns, [
        "sysctl",
        "-q",
        "-w",
        `net.ipv4.conf.all.rp_filter=${rp}`,
        `net.ipv4.conf.default.rp_filter=${rp}`,
        `net.ipv4.ip_forward=${ROUTERS.includes(ns) && (ns !== "srv" || serverNat) ? 1 : 0}`,
      ], { check: true });
    }));
    const pairs = new Map<NsName, string[]>();
    for (const [ns, name, , peerNs, peerName] of linkSpecs) {
      pairs.set(ns, [
        ...(pairs.get(ns) ?? []),
        `link add name ${name} type veth peer name ${peerName} netns ${this.nsName(peerNs)}`,
      ]);
    }
    for (const [ns, commands] of pairs) await this.#ipBatch(ns, commands);
    await Promise.all(namespaces.map((ns) => {
      const commands = ["link set lo up"];
      for (const [a, aName, aAddr, b, bName, bAddr] of linkSpecs) {
        if (a === ns) commands.push(`addr add ${aAddr} dev ${aName}`, `link set dev ${aName} up`);
        if (b === ns) commands.push(`addr add ${bAddr} dev ${bName}`, `link set dev ${bName} up`);
      }
      commands.push(...(routeSpecs[ns] ?? []).map((route) => `route add ${route}`));
      return this.#ipBatch(ns, commands);
    }));
    await Promise.all(
      Object.entries(NFT_RULES)
        .filter(([ns]) => ns !== "srv" || serverNat)
        .map(([ns, rules]) =>
          this.exec(ns as NsName, ["nft", "-f", "-"], { stdin: rules, check: true })
        ),
    );
    if (secondClient) {
      await this.exec("ispA", ["nft", "-f", "-"], {
        stdin: `add rule ip tb nat_post oifname "wan" ip saddr ${SECOND_CLIENT_NET} masquerade\n`,
        check: true,
      });
    }
  }

  /** IPv6 on top of the IPv4 lab: addresses (no DAD wait), routes, forwarding, NAT and filter. */
  async #buildIpv6(serverNat: boolean): Promise<void> {
    await Promise.all(NAMESPACES.map(async (ns) => {
      const router = ROUTERS.includes(ns) && (ns !== "srv" || serverNat);
      await this.exec(ns, [
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.all.disable_ipv6=0",
        "net.ipv6.conf.default.disable_ipv6=0",
        `net.ipv6.conf.all.forwarding=${router ? 1 : 0}`,
      ], { check: true });
      const commands = LINK_ADDRESSES6
        .filter(([owner]) => owner === ns)
        .map(([, device, address]) => `addr add ${address}/64 dev ${device} nodad`);
      commands.push(...(ROUTES6[ns] ?? []).map((route) => `route add ${route}`));
      if (commands.length > 0) await this.#ipBatch(ns, commands);
    }));
    await Promise.all(
      Object.entries(nftRules6(serverNat)).map(([ns, rules]) =>
        this.exec(ns as NsName, ["nft", "-f", "-"], { stdin: rules, check: true })
      ),
    );
  }

  #ipBatch(ns: NsName, commands: string[]): Promise<ExecResult> {
    return this.exec(ns, ["ip", "-batch", "-"], { stdin: commands.join("\n") + "\n", check: true });
  }

  /**
   * Starts `cmd` inside namespace `ns`. The process is tracked and killed on
   * dispose; its output is kept (the last `keepBytes` of each stream).
   */
  spawn(ns: NsName, cmd: string[], options: SpawnOptions = {}): LabProcess {
    return this.#spawn(ns, cmd, options, false).process;
  }

  #spawn(
    ns: NsName,
    cmd: string[],
    options: SpawnOptions,
    pipeStdin: boolean,
  ): { process: LabProcess; child: Deno.ChildProcess } {
    if (this.#disposed) throw new Error("the lab is disposed");
    if (!this.#made.includes(ns)) throw new Error(`namespace ${ns} was not made`);
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", this.nsName(ns), ...cmd],
      stdin: pipeStdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      // Per namespace, so tunnels of concurrent labs (and a lab's client and server,
      // both named tuxburst0) never meet in /run/tuxburst; `tuxburst status` run
      // in the same namespace finds them there.
      env: { NO_COLOR: "1", TUXBURST_RUN_DIR: this.runDir(ns), ...options.env },
    }).spawn();
    const label = options.label ?? cmd.slice(0, 3).map((word) => word.split("/").pop()).join(" ");
    const process = new LabProcess(
      label,
      ns,
      child,
      options.keepBytes ?? 256 * 1024,
      options.onLine,
    );
    this.#processes.add(process);
    return { process, child };
  }

  /** Runs a Deno program from `tools/` inside `ns`; see each tool for its arguments. */
  tool(ns: NsName, name: string, args: string[], options: SpawnOptions = {}): LabProcess {
    return this.spawn(
      ns,
      [Deno.execPath(), "run", "-A", "--quiet", `${TOOLS_DIR}${name}`, ...args],
      {
        label: options.label ?? name,
        ...options,
      },
    );
  }

  /**
   * Sends `count` numbered datagrams (`<prefix>-000001`, …) from `ns` to `to`
   * with `tools/udp_send.ts unique`, at most `rate` per second, and waits
   * (bounded) until `sink`, a running `tools/udp_sink.ts`, has each of them.
   */
  async sendNumbered(
    ns: NsName,
    to: string,
    sink: LabProcess,
    { count, prefix, rate }: { count: number; prefix: string; rate: number },
  ): Promise<void> {
    const sender = this.tool(ns, "udp_send.ts", [
      "unique",
      "--to",
      to,
      "--count",
      String(count),
      "--prefix",
      prefix,
      "--rate",
      String(rate),
    ]);
    const status = await sender.wait(15_000 + count * 1000 / rate);
    if (status?.code !== 0) throw new Error(`udp_send.ts failed\n${sender.describe()}`);
    const numbered = () =>
      new Map([...udpSinkCounts(sink)].filter(([payload]) => payload.startsWith(`${prefix}-`)));
    await waitUntil(
      `${count} datagrams "${prefix}-…" at the sink`,
      10_000,
      () => numbered().size >= count,
    );
  }

  /**
   * A TCP echo through the lab with `tools/tcp_stream.ts`: the server in
   * `web`, the client in `cli` streaming to `web` for `seconds` at `rate`
   * bytes/s; `during` runs while the stream flows. Bounded; the server is
   * stopped afterwards. Returns the client's report and the address the
   * server saw the connection come from.
   */
  async tcpTransfer(options: {
    seconds: number;
    rate: number;
    drainSeconds: number;
    during?: () => Promise<void>;
  }): Promise<{ report: TcpReport; remote: string; client: LabProcess }> {
    const { seconds, rate, drainSeconds } = options;
    const server = this.tool("web", "tcp_stream.ts", [
      "server",
      "--port",
      "5001",
      "--max-seconds",
      String(seconds + drainSeconds + 60),
    ]);
    await server.waitForOutput(/"listening"/);
    const client = this.tool("cli", "tcp_stream.ts", [
      "client",
      "--host",
      ADDRESSES.web,
      "--port",
      "5001",
      "--seconds",
      String(seconds),
      "--rate",
      String(rate),
      "--drain-seconds",
      String(drainSeconds),
    ]);
    await client.waitForOutput(/"connected"/, { timeoutMs: 10_000 });
    await options.during?.();
    await client.wait((seconds + drainSeconds + 10) * 1000);
    const report = client.jsonLines<TcpReport>().find((line) => line.event === "report");
    if (!report) throw new Error(`the TCP client printed no report\n${client.describe()}`);
    const accept = server.jsonLines<{ event: string; remote: string }>().find((line) =>
      line.event === "accept"
    );
    await server.stop();
    return { report, remote: accept?.remote ?? "", client };
  }

  /** Runs `cmd` inside `ns` to its end, at most `timeoutMs` (then it is killed). */
  async exec(ns: NsName, cmd: string[], options: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const { process, child } = this.#spawn(
      ns,
      cmd,
      { env: options.env, label: cmd.join(" ") },
      true,
    );
    try {
      const writer = child.stdin.getWriter();
      const input = options.stdin ?? "";
      await writer.write(typeof input === "string" ? new TextEncoder().encode(input) : input).catch(
        () => {},
      );
      await writer.close().catch(() => {});
      let status = await process.wait(timeoutMs);
      const timedOut = status === undefined;
      if (timedOut) status = await process.stop("SIGKILL", 2000);
      const result: ExecResult = {
        code: status!.signal ? -1 : status!.code,
        signal: status!.signal,
        stdout: process.stdout,
        stderr: process.stderr,
        timedOut,
      };
      if (options.check && (timedOut || result.code !== 0)) {
        const why = timedOut ? `timed out after ${timeoutMs} ms` : `exit code ${result.code}`;
        throw new Error(`in ${ns}: \`${cmd.join(" ")}\` failed (${why}): ${result.stderr.trim()}`);
      }
      return result;
    } finally {
      this.#processes.delete(process);
    }
  }

  /**
   * Pings `address` from `ns` (`ping -n -O -D`) and reports per-sequence
   * replies, so a test can count lost pings and find the longest gap.
   */
  async ping(ns: NsName, address: string, options: PingOptions = {}): Promise<PingResult> {
    const count = options.count ?? 3;
    const intervalMs = options.intervalMs ?? 200;
    const replyWaitMs = options.replyWaitMs ?? 1000;
    const args = [
      "ping",
      "-n",
      "-O",
      "-D",
      "-c",
      String(count),
      "-i",
      (intervalMs / 1000).toFixed(3),
      "-W",
      (replyWaitMs / 1000).toFixed(3),
    ];
    if (options.device) args.push("-I", options.device);
    args.push(address);
    const timeoutMs = options.timeoutMs ?? count * intervalMs + replyWaitMs + 3000;
    const result = await this.exec(ns, args, { timeoutMs });
    return parsePing(result.stdout + result.stderr);
  }

  /** Waits until one ping from `ns` to `address` is answered; false after `timeoutMs`. */
  async waitForPing(ns: NsName, address: string, timeoutMs = 15_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const result = await this.ping(ns, address, { count: 1, replyWaitMs: 500 });
      if (result.received > 0) return true;
      await sleep(100);
    }
    return false;
  }

  /**
   * Starts the impairment program (`tools/impair.ts`) on `link`'s wire with
   * `args` (delay, jitter, loss, stalls; see that program), waits for its
   * `ready` line, then sends both directions of the link through its TUN
   * device. Stopping the program removes the device, and with it the route,
   * so the wire forwards plainly again. Needs a lab made with `wires: true`.
   *
   * @example
   * ```ts
   * await using lab = await Lab.create({ wires: true });
   * const impairer = await lab.impair("a", ["--delay", "15", "--stalls", "fixed:5:2"]);
   * // … traffic over link A now takes 30 ms more per round trip and stalls at 5 s for 2 s.
   * await impairer.stop();
   * ```
   */
  async impair(link: IspLink, args: string[], options: ImpairOptions = {}): Promise<LabProcess> {
    if (!this.wires) throw new Error("Lab.impair needs a lab made with { wires: true }");
    const ns = WIRES[link];
    const process = this.spawn(ns, [
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      IMPAIR_TOOL,
      "--tun",
      IMPAIR_TUN,
      "--client-net",
      CLIENT_NETS[link],
      ...args,
    ], { label: options.label ?? `impair ${link}`, onLine: options.onLine });
    await process.waitForOutput(/"event"\s*:\s*"ready"/, {
      stream: "stdout",
      timeoutMs: options.readyTimeoutMs ?? 15_000,
    });
    // Rules left by an earlier impairer on this wire would make `rule add` fail.
    for (const pref of [100, 101]) await this.exec(ns, ["ip", "rule", "del", "pref", String(pref)]);
    // Both directions of the link, but not what comes back out of the TUN device.
    await this.#ipBatch(ns, [
      `rule add iif a lookup ${IMPAIR_TABLE} pref 100`,
      `rule add iif b lookup ${IMPAIR_TABLE} pref 101`,
      `route replace default dev ${IMPAIR_TUN} table ${IMPAIR_TABLE}`,
      // Room for what the kernel routes into the device while the program is busy.
      `link set dev ${IMPAIR_TUN} txqueuelen 10000`,
    ]);
    return process;
  }

  /**
   * Makes an ISP link drop everything, both ways (`on`), or pass again. When
   * turned off, returns how many packets it dropped meanwhile.
   */
  async blackhole(link: IspLink, on: boolean): Promise<number> {
    const ns: NsName = link === "a" ? "ispA" : "ispB";
    const dropped = on ? 0 : await this.blackholeDrops(link);
    const rules = [
      "flush chain ip tb bh_in",
      "flush chain ip tb bh_out",
      ...(on
        ? [
          'add rule ip tb bh_in iifname "cli" counter drop',
          'add rule ip tb bh_out oifname "cli" counter drop',
        ]
        : []),
    ];
    await this.exec(ns, ["nft", "-f", "-"], { stdin: rules.join("\n") + "\n", check: true });
    return dropped;
  }

  /** Packets dropped so far by the current blackhole of `link` (0 when none). */
  async blackholeDrops(link: IspLink): Promise<number> {
    const ns: NsName = link === "a" ? "ispA" : "ispB";
    const { stdout } = await this.exec(ns, ["nft", "list", "table", "ip", "tb"], { check: true });
    let packets = 0;
    for (const match of stdout.matchAll(/counter packets (\d+) bytes \d+ drop/g)) {
      packets += Number(match[1]);
    }
    return packets;
  }

  /**
   * Starts `tcpdump -w` on `iface` in `ns` with a capture `filter` and waits
   * until it listens. `stop()` ends it and returns the pcap file's bytes.
   */
  async capture(
    ns: NsName,
    iface: string,
    filter: string[],
    maxPackets = 100_000,
  ): Promise<PacketCapture> {
    const file = `${this.dir}/capture-${ns}-${iface}-${Date.now()}.pcap`;
    const process = this.spawn(ns, [
      "tcpdump",
      "-i",
      iface,
      "-n",
      "-U",
      "--immediate-mode",
      "-Z",
      "root",
      "-s",
      "4096",
      "-c",
      String(maxPackets),
      "-w",
      file,
      ...filter,
    ], { label: `tcpdump ${ns}/${iface}` });
    await process.waitForOutput(/listening on/, { stream: "stderr", timeoutMs: 10_000 });
    return new PacketCapture(file, process);
  }

  /** Kills the lab's processes and deletes its namespaces and directory; idempotent. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const problems: string[] = [];
    await Promise.all([...this.#processes].map((process) => process.stop("SIGTERM", 2000)));
    this.#processes.clear();
    for (const ns of this.#made) {
      // Whatever our processes started that still lives in our namespaces.
      const pids = await ipNetns(["pids", this.nsName(ns)]);
      for (const pid of new TextDecoder().decode(pids.stdout).split(/\s+/).filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch {
          // Ended meanwhile.
        }
      }
    }
    for (const ns of [...this.#made]) {
      const result = await ipNetns(["del", this.nsName(ns)]);
      if (result.success) this.#made = this.#made.filter((made) => made !== ns);
      else {problems.push(
          `ip netns del ${this.nsName(ns)}: ${new TextDecoder().decode(result.stderr).trim()}`,
        );}
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    cleanUpOnInterrupt(this, false);
    if (problems.length) throw new Error(`lab cleanup failed:\n${problems.join("\n")}`);
  }

  /** The same as dispose, synchronously, for signal handlers. */
  disposeSync(): void {
    this.#disposed = true;
    for (const process of this.#processes) {
      try {
        Deno.kill(process.pid, "SIGKILL");
      } catch {
        // Ended meanwhile.
      }
    }
    for (const ns of this.#made) {
      const pids = new Deno.Command("ip", {
        args: ["netns", "pids", this.nsName(ns)],
        stderr: "null",
      }).outputSync();
      for (const pid of new TextDecoder().decode(pids.stdout).split(/\s+/).filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch {
          // Ended meanwhile.
        }
      }
      new Deno.Command("ip", {
        args: ["netns", "del", this.nsName(ns)],
        stdout: "null",
        stderr: "null",
      }).outputSync();
    }
    this.#made = [];
    try {
      Deno.removeSync(this.dir, { recursive: true });
    } catch {
      // Already gone.
    }
  }
}

/** A running `tcpdump -w`; see `Lab.capture`. */
export class PacketCapture {
  constructor(readonly file: string, readonly process: LabProcess) {}

  /** Ends the capture (tcpdump flushes on SIGINT) and returns the pcap bytes. */
  async stop(): Promise<Uint8Array> {
    // Packets still in the kernel's capture buffer need a moment to be written.
    await sleep(200);
    await this.process.stop("SIGINT", 3000);
    return await Deno.readFile(this.file);
  }
}

/** What `runInterruptible` saw. */
export interface InterruptibleResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The program was still running at the time limit and was interrupted. */
  timedOut: boolean;
}

/**
 * Runs a program (in this namespace) to its end, as a user at a terminal
 * would: after `timeoutMs` it gets SIGINT, as from Ctrl-C, so it can clean
 * up, and SIGKILL 15 s after that.
 */
export async function runInterruptible(
  command: string[],
  { cwd, timeoutMs }: { cwd?: string; timeoutMs: number },
): Promise<InterruptibleResult> {
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let timedOut = false;
  const signal = (name: Deno.Signal) => {
    try {
      child.kill(name);
    } catch {
      // Ended meanwhile.
    }
  };
  const interrupt = setTimeout(() => {
    timedOut = true;
    signal("SIGINT");
  }, timeoutMs);
  const kill = setTimeout(() => signal("SIGKILL"), timeoutMs + 15_000);
  try {
    const output = await child.output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(interrupt);
    clearTimeout(kill);
  }
}

/** The distinct payloads a `tools/udp_sink.ts` has printed so far, with how often each arrived. */
export function udpSinkCounts(sink: LabProcess): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of sink.jsonLines<{ b64?: string }>()) {
    if (line.b64 === undefined) continue;
    const text = atob(line.b64);
    counts.set(text, (counts.get(text) ?? 0) + 1);
  }
  return counts;
}

/** Parses the output of `ping -n -O -D`; see `PingResult`. */
export function parsePing(output: string): PingResult {
  const replies: PingResult["replies"] = [];
  const answered = new Set<number>();
  let duplicates = 0;
  let highest = 0;
  const replyLine =
    /^\[(\d+\.\d+)\] \d+ bytes from \S+: icmp_seq=(\d+) .*time=([\d.]+) ms( \(DUP!\))?/;
  for (const line of output.split("\n")) {
    const seqMatch = /icmp_seq=(\d+)/.exec(line);
    if (seqMatch) highest = Math.max(highest, Number(seqMatch[1]));
    const match = replyLine.exec(line);
    if (!match) continue;
    const seq = Number(match[2]);
    if (match[4] || answered.has(seq)) {
      duplicates++;
      continue;
    }
    answered.add(seq);
    replies.push({ seq, at: Number(match[1]) * 1000, rttMs: Number(match[3]) });
  }
  const summary = /(\d+) packets transmitted/.exec(output);
  const transmitted = summary ? Number(summary[1]) : highest;
  const lost: number[] = [];
  let run = 0;
  let longestLossRun = 0;
  for (let seq = 1; seq <= transmitted; seq++) {
    if (answered.has(seq)) {
      run = 0;
      continue;
    }
    lost.push(seq);
    longestLossRun = Math.max(longestLossRun, ++run);
  }
  let longestGapMs = 0;
  for (let i = 1; i < replies.length; i++) {
    longestGapMs = Math.max(longestGapMs, replies[i].at - replies[i - 1].at);
  }
  return {
    transmitted,
    received: answered.size,
    lost,
    duplicates,
    replies,
    longestLossRun,
    longestGapMs,
    output,
  };
}
