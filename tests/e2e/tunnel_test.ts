/**
 * End-to-end tests of the real CLI in the lab (see `lab/lab.ts`), run as a user
 * would: `tuxburst serve` in `srv`, `tuxburst connect` in `cli` with both
 * uplinks and the default route through the tunnel, traffic from `cli` to
 * `web` (which only `srv` can reach). Root only.
 *
 * Set `TB_E2E_DEBUG=1` to run tuxburst with `debug = true`; a failing test
 * prints the end of every tuxburst process's output.
 */
import assert from "node:assert/strict";
import {
  ADDRESSES,
  Lab,
  type LabProcess,
  type NsName,
  type PingResult,
  type TcpReport,
  tuxburstCommand,
  udpSinkCounts,
  waitUntil,
} from "../../lab/lab.ts";
import { udpDatagrams } from "../../lab/tools/pcap.ts";

const PORT = 40000;
const SERVER = `${ADDRESSES.srv}:${PORT}`;
const WEB = ADDRESSES.web;
const TUN = "tuxburst0";
const DEBUG = Deno.env.get("TB_E2E_DEBUG") === "1";

function skipReason(): string | undefined {
  const availability = Lab.available(["tcpdump", "setpriv", "ss"]);
  return availability.ok ? undefined : availability.reason;
}
const reason = skipReason();
const ignore = reason !== undefined;
if (reason) console.warn(`e2e tunnel tests skipped: ${reason}`);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function randomKey(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function serverToml(key: string, extra = ""): string {
  return `[common]
tun_name = "${TUN}"
tun_addr = "10.99.0.1/30"
mtu = 1400
debug = ${DEBUG}
[server]
listen = "0.0.0.0:${PORT}"
key = "${key}"
path_timeout = 30
${extra}`;
}

function clientToml(
  key: string,
  interfaces = ["upa", "upb"],
  extra = "",
  tunAddr = "10.99.0.2/30",
): string {
  return `[common]
tun_name = "${TUN}"
tun_addr = "${tunAddr}"
mtu = 1400
debug = ${DEBUG}
[client]
host = "${SERVER}"
key = "${key}"
interfaces = ${JSON.stringify(interfaces)}
keepalive = 1
${extra}
[client.routes]
tun_gateway = "10.99.0.1"
metric = 5
`;
}

/** Non-empty lines of a process's stderr. */
function lines(text: string): string[] {
  return text.split("\n").map((line) => line.trimEnd()).filter((line) => line.trim() !== "");
}

function pingSummary(result: PingResult): string {
  return `${result.received}/${result.transmitted} answered, lost seqs [${
    result.lost.join(",")
  }], ` +
    `longest loss run ${result.longestLossRun}, longest gap ${Math.round(result.longestGapMs)} ms`;
}

/**
 * One lab with tuxburst's configs, processes and helpers. Every process
 * started here is also killed by the lab's dispose.
 */
class Tunnel {
  readonly key = randomKey();
  readonly serverConfig: string;
  readonly clientConfig: string;
  server?: LabProcess;
  client?: LabProcess;
  /** Every tuxburst process of this test, for failure messages. */
  readonly all: LabProcess[] = [];

  constructor(readonly lab: Lab) {
    this.serverConfig = `${lab.dir}/server.toml`;
    this.clientConfig = `${lab.dir}/client.toml`;
    Deno.writeTextFileSync(this.serverConfig, serverToml(this.key));
    Deno.writeTextFileSync(this.clientConfig, clientToml(this.key));
  }

  /** Writes a config file into the lab's directory; returns its path. */
  write(name: string, text: string): string {
    const path = `${this.lab.dir}/${name}`;
    Deno.writeTextFileSync(path, text);
    return path;
  }

  command(role: "serve" | "connect", config: string): string[] {
    return tuxburstCommand(role, "-c", config);
  }

  /** Starts `tuxburst serve` and waits (bounded) until its UDP port is bound. */
  async startServer(config = this.serverConfig): Promise<LabProcess> {
    const server = this.lab.spawn("srv", this.command("serve", config), {
      label: `tuxburst serve #${this.all.length}`,
    });
    this.all.push(server);
    this.server = server;
    await waitUntil(
      `tuxburst serve to bind UDP ${PORT}\n${server.describe()}`,
      15_000,
      async () => {
        if (!server.running) throw new Error(`tuxburst serve exited early\n${server.describe()}`);
        const { stdout } = await this.lab.exec("srv", ["ss", "-Hunl", `sport = :${PORT}`]);
        return stdout.includes(`:${PORT}`);
      },
    );
    return server;
  }

  startClient(config = this.clientConfig): LabProcess {
    const client = this.lab.spawn("cli", this.command("connect", config), {
      label: `tuxburst connect #${this.all.length}`,
    });
    this.all.push(client);
    this.client = client;
    return client;
  }

  /** Waits until cli's pings reach web (only possible through the tunnel). */
  async waitUp(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const process of [this.server, this.client]) {
        if (process && !process.running) {
          throw new Error(`${process.label} exited\n${process.describe()}`);
        }
      }
      const result = await this.lab.ping("cli", WEB, { count: 1, replyWaitMs: 500 });
      if (result.received > 0) return;
      await sleep(100);
    }
    throw new Error(`no ping from cli reached web through the tunnel within ${timeoutMs} ms`);
  }

  /** Server and client, tunnel up. */
  async start(): Promise<void> {
    await this.startServer();
    this.startClient();
    await this.waitUp();
  }

  /** SIGTERM, and the exit code a user expects from it: 0, within 5 s. */
  async stop(process: LabProcess): Promise<void> {
    process.kill("SIGTERM");
    const status = await process.wait(5000);
    if (!status) await process.stop("SIGKILL");
    assert.ok(status, `${process.label} did not exit within 5 s of SIGTERM\n${process.describe()}`);
    assert.equal(
      status.code,
      0,
      `${process.label} exit status after SIGTERM\n${process.describe()}`,
    );
  }

  /** Runs tuxburst to its end (for commands that must fail), bounded. */
  async runToEnd(ns: NsName, role: "serve" | "connect", config: string, prefix: string[] = []) {
    const result = await this.lab.exec(ns, [...prefix, ...this.command(role, config)], {
      timeoutMs: 20_000,
    });
    assert.equal(
      result.timedOut,
      false,
      `tuxburst ${role} -c ${config} kept running:\n${result.stderr}`,
    );
    return result;
  }

  /** Whether `tuxburst0` exists in `ns`. */
  async tunExists(ns: NsName): Promise<boolean> {
    return (await this.lab.exec(ns, ["ip", "link", "show", TUN])).code === 0;
  }

  describe(): string {
    return this.all.map((process) => process.describe(40)).join("\n");
  }
}

/** Builds a lab and a `Tunnel` (started unless `start` is false), and prints tuxburst's output on failure. */
async function withTunnel(
  fn: (tunnel: Tunnel, lab: Lab) => Promise<void>,
  start = true,
  labOptions: Parameters<typeof Lab.create>[0] = {},
): Promise<void> {
  await using lab = await Lab.create(labOptions);
  const tunnel = new Tunnel(lab);
  try {
    if (start) await tunnel.start();
    await fn(tunnel, lab);
  } catch (error) {
    console.error(`\n===== output of the tuxburst processes =====\n${tunnel.describe()}\n=====`);
    throw error;
  }
}

function assertIntact(report: TcpReport, client: LabProcess): void {
  assert.ok(
    report.ok,
    `the TCP transfer failed: ${JSON.stringify(report)}\n${client.describe()}`,
  );
  assert.ok(report.sent > 0 && report.received === report.sent);
}

Deno.test({
  name: "tunnel: ping and TCP from cli reach web through the tunnel, as the server",
  ignore,
}, async () => {
  await withTunnel(async (tunnel, lab) => {
    const route = await lab.exec("cli", ["ip", "route", "get", WEB], { check: true });
    assert.match(route.stdout, new RegExp(`dev ${TUN}`), "cli's route to web is not the tunnel");

    const ping = await lab.ping("cli", WEB, { count: 10, intervalMs: 100 });
    assert.equal(ping.received, 10, pingSummary(ping));

    const { report, remote, client } = await lab.tcpTransfer({
      drainSeconds: 25,
      seconds: 2,
      rate: 2_000_000,
    });
    assertIntact(report, client);
    assert.match(
      remote,
      new RegExp(`^${ADDRESSES.srv.replaceAll(".", "\\.")}:`),
      "web saw another source",
    );
    console.log(
      `TCP through the tunnel: ${report.received} bytes echoed, longest pause ${report.longestPauseMs} ms`,
    );
    assert.ok(tunnel.server?.running && tunnel.client?.running);
  });
});

Deno.test({
  name: "tunnel: comes up under strict reverse-path filtering, and restores it on exit",
  ignore,
}, async () => {
  await withTunnel(
    async (tunnel, lab) => {
      const ping = await lab.ping("cli", WEB, { count: 5, intervalMs: 100 });
      assert.equal(ping.received, 5, pingSummary(ping));
      const setting = async (device: string) =>
        (await lab.exec("cli", ["cat", `/proc/sys/net/ipv4/conf/${device}/rp_filter`])).stdout
          .trim();
      assert.equal(await setting("upa"), "2", "loose while tuxburst runs");
      await tunnel.stop(tunnel.client!);
      assert.equal(await setting("upa"), "1", "strict again after exit");
      assert.equal(await setting("upb"), "1", "strict again after exit");
    },
    true,
    { rpFilter: 1 },
  );
});

Deno.test(
  { name: "tunnel: a 10 Hz ping survives a blackhole of link A, then of link B", ignore },
  async () => {
    await withTunnel(async (tunnel, lab) => {
      const dropped: Record<string, number> = {};
      const pinging = lab.ping("cli", WEB, { count: 100, intervalMs: 100, replyWaitMs: 1000 });
      await sleep(1500);
      await lab.blackhole("a", true);
      await sleep(2000);
      dropped.a = await lab.blackhole("a", false);
      await sleep(2000);
      await lab.blackhole("b", true);
      await sleep(2000);
      dropped.b = await lab.blackhole("b", false);
      const result = await pinging;
      console.log(
        `blackholes: dropped A ${dropped.a}, B ${dropped.b}; ping: ${pingSummary(result)}`,
      );
      // Packets on each link during its outage prove both links were in use.
      assert.ok(
        dropped.a > 0 && dropped.b > 0,
        `the blackholes dropped nothing: ${JSON.stringify(dropped)}`,
      );
      assert.equal(result.transmitted, 100, result.output);
      assert.ok(
        result.lost.length <= 4,
        `lost more than 2 pings per outage: ${pingSummary(result)}`,
      );
      assert.ok(
        result.longestLossRun <= 2,
        `a switch lost more than 2 pings in a row: ${pingSummary(result)}`,
      );
      assert.ok(tunnel.server?.running && tunnel.client?.running);
    });
  },
);

for (const side of ["server", "client"] as const) {
  Deno.test(
    { name: `tunnel: a ${side} restart mid-transfer keeps the TCP connection`, ignore },
    async () => {
      await withTunnel(async (tunnel, lab) => {
        const { report, client } = await lab.tcpTransfer({
          drainSeconds: 25,
          seconds: 7,
          rate: 1_000_000,
          during: async () => {
            await sleep(2500);
            await tunnel.stop(tunnel[side]!);
            if (side === "server") await tunnel.startServer();
            else tunnel.startClient();
          },
        });
        console.log(
          `${side} restart: longest pause ${report.longestPauseMs} ms ` +
            `(ended at ${report.longestPauseEndedAt} s)`,
        );
        assertIntact(report, client);
      });
    },
  );
}

Deno.test(
  { name: "tunnel: replayed datagrams are delivered once, also after restarts", ignore },
  async () => {
    await withTunnel(async (tunnel, lab) => {
      const count = 100;
      const sink = lab.tool("web", "udp_sink.ts", ["--port", "7000"]);
      await sink.waitForOutput(/"listening"/);
      const capture = await lab.capture("ispA", "wan", ["udp", "and", "dst", "port", String(PORT)]);
      await lab.sendNumbered("cli", `${WEB}:7000`, sink, { count, prefix: "once", rate: 200 });
      await sleep(500);
      const captured = udpDatagrams(await capture.stop());
      const expected = new Map(
        Array.from({ length: count }, (_, i) => [`once-${String(i + 1).padStart(6, "0")}`, 1]),
      );
      const delivered = () => udpSinkCounts(sink);
      assert.deepEqual(
        delivered(),
        expected,
        "each datagram sent once through both links arrives once",
      );
      assert.ok(captured.length >= count, `captured only ${captured.length} datagrams on link A`);

      const replay = async (when: string) => {
        const replayer = lab.tool("ispA", "udp_send.ts", [
          "replay",
          "--to",
          SERVER,
          "--pcap",
          capture.file,
          "--dport",
          String(PORT),
          "--rate",
          "2000",
        ]);
        assert.equal((await replayer.wait(15_000))?.code, 0, replayer.describe());
        assert.match(replayer.stdout, new RegExp(`"sent":${captured.length}`));
        await sleep(1500);
        assert.deepEqual(
          delivered(),
          expected,
          `replayed datagrams were delivered again (${when})`,
        );
      };
      await replay("same processes");

      await tunnel.stop(tunnel.client!);
      await tunnel.stop(tunnel.server!);
      await tunnel.startServer();
      tunnel.startClient();
      await tunnel.waitUp();
      await replay("after restarting server and client");
      assert.ok(tunnel.server?.running, "the server died from replays");
    });
  },
);

Deno.test({
  name: "tunnel: garbage to the server's port neither stops it nor disturbs pings",
  ignore,
}, async () => {
  await withTunnel(async (tunnel, lab) => {
    const capture = await lab.capture("ispA", "wan", ["udp", "and", "dst", "port", String(PORT)]);
    const warmup = await lab.ping("cli", WEB, { count: 10, intervalMs: 50 });
    assert.equal(warmup.received, 10, pingSummary(warmup));
    await capture.stop();

    const logLinesBefore = lines(tunnel.server!.stderr).length;
    const pinging = lab.ping("cli", WEB, { count: 60, intervalMs: 100 });
    await sleep(500);
    const garbage = lab.tool("ispA", "garbage.ts", [
      "--to",
      SERVER,
      "--count",
      "6000",
      "--rate",
      "2500",
      "--pcap",
      capture.file,
      "--dport",
      String(PORT),
      "--damaged",
      "3000",
    ]);
    const garbageStatus = await garbage.wait(20_000);
    const result = await pinging;
    console.log(`garbage: ${garbage.stdout.trim()}; ping: ${pingSummary(result)}`);
    assert.equal(garbageStatus?.code, 0, garbage.describe());
    assert.match(garbage.stdout, /"sent":9000/);
    assert.ok(tunnel.server!.running, "the server died from garbage");
    assert.ok(
      result.lost.length <= 1,
      `pings were lost during the garbage: ${pingSummary(result)}`,
    );
    const logLines = lines(tunnel.server!.stderr).length - logLinesBefore;
    assert.ok(
      logLines < 50,
      `9000 garbage datagrams made ${logLines} log lines; they should be dropped silently`,
    );
    const after = await lab.ping("cli", WEB, { count: 5, intervalMs: 100 });
    assert.equal(after.received, 5, pingSummary(after));
  });
});

Deno.test({ name: "tunnel: kill -9 of the client restores cli's routing", ignore }, async () => {
  await withTunnel(async (tunnel, lab) => {
    const routes = async () =>
      (await lab.exec("cli", ["ip", "route", "show", "default"], { check: true })).stdout;
    assert.match(await routes(), new RegExp(`default via 10\\.99\\.0\\.1 dev ${TUN} .*metric 5`));
    tunnel.client!.kill("SIGKILL");
    assert.ok(await tunnel.client!.wait(5000), "the client survived SIGKILL");
    await waitUntil(
      `the route via ${TUN} to disappear`,
      5000,
      async () => !(await routes()).includes(TUN),
    );
    assert.equal(await tunnel.tunExists("cli"), false);
    const left = await routes();
    assert.match(left, /default via 10\.1\.1\.1 dev upa/);
    assert.match(left, /default via 10\.2\.2\.1 dev upb/);
  });
});

Deno.test({ name: "tunnel: a missing uplink interface", ignore }, async (t) => {
  await withTunnel(async (tunnel, lab) => {
    await t.step("as the only one: exit non-zero with one line naming it", async () => {
      const config = tunnel.write("only-missing.toml", clientToml(tunnel.key, ["nosuch0"]));
      const result = await tunnel.runToEnd("cli", "connect", config);
      assert.notEqual(result.code, 0, result.stderr);
      assert.equal(
        lines(result.stderr).length,
        1,
        `expected one line on stderr, got:\n${result.stderr}`,
      );
      assert.match(result.stderr, /nosuch0/);
      assert.equal(await tunnel.tunExists("cli"), false, `${TUN} was left behind`);
    });

    await t.step("beside a working one: the tunnel works", async () => {
      await tunnel.startServer();
      tunnel.startClient(
        tunnel.write("one-missing.toml", clientToml(tunnel.key, ["upa", "nosuch0"])),
      );
      await tunnel.waitUp();
      const ping = await lab.ping("cli", WEB, { count: 5, intervalMs: 100 });
      assert.equal(ping.received, 5, pingSummary(ping));
    });
  }, false);
});

Deno.test(
  { name: "tunnel: a client with the wrong key gets nothing through", ignore },
  async () => {
    await withTunnel(async (tunnel, lab) => {
      await tunnel.startServer();
      const wrong = tunnel.startClient(tunnel.write("wrong-key.toml", clientToml(randomKey())));
      await sleep(1500);
      const ping = await lab.ping("cli", WEB, { count: 15, intervalMs: 200, replyWaitMs: 500 });
      assert.equal(ping.received, 0, `pings passed with a wrong key: ${pingSummary(ping)}`);
      assert.ok(tunnel.server!.running, "the server died from a client with a wrong key");
      await tunnel.stop(wrong);
      // The server still serves a client with the right key.
      tunnel.startClient();
      await tunnel.waitUp();
    }, false);
  },
);

Deno.test(
  { name: "tunnel: bad configs and missing privileges fail with one line", ignore },
  async (t) => {
    await withTunnel(async (tunnel, lab) => {
      const key = tunnel.key;
      const cases: { name: string; role: "serve" | "connect"; text: string; mentions: RegExp }[] = [
        {
          name: "unknown key in [client]",
          role: "connect",
          text: clientToml(key, ["upa", "upb"], 'colour = "blue"'),
          mentions: /colour/,
        },
        {
          name: "unknown key in [server]",
          role: "serve",
          text: serverToml(key, 'colour = "blue"'),
          mentions: /colour/,
        },
        {
          name: "bad tun_addr",
          role: "connect",
          text: clientToml(key, ["upa", "upb"], "", "10.99.0.300/30"),
          mentions: /tun_addr/,
        },
        {
          name: "bad key hex (client)",
          role: "connect",
          text: clientToml("zz".repeat(32)),
          mentions: /\bkey\b/,
        },
        {
          name: "bad key hex (server)",
          role: "serve",
          text: serverToml("g".repeat(64)),
          mentions: /\bkey\b/,
        },
      ];
      for (const [i, { name, role, text, mentions }] of cases.entries()) {
        await t.step(name, async () => {
          const file = tunnel.write(`bad-${i}.toml`, text);
          const result = await tunnel.runToEnd(role === "serve" ? "srv" : "cli", role, file);
          assert.notEqual(result.code, 0, result.stderr);
          assert.equal(
            lines(result.stderr).length,
            1,
            `expected one line on stderr, got:\n${result.stderr}`,
          );
          assert.ok(
            result.stderr.includes(file),
            `the line does not name ${file}: ${result.stderr}`,
          );
          assert.match(result.stderr, mentions);
          assert.equal(
            await tunnel.tunExists(role === "serve" ? "srv" : "cli"),
            false,
            `${TUN} was left behind`,
          );
        });
      }

      await t.step("without CAP_NET_ADMIN", async () => {
        const noCaps = [
          "setpriv",
          "--bounding-set=-all",
          "--inh-caps=-all",
          "--ambient-caps=-all",
          "--",
        ];
        const status = await lab.exec("cli", [...noCaps, "cat", "/proc/self/status"], {
          check: true,
        });
        assert.match(status.stdout, /^Uid:\s+0\s/m, "the test must run as uid 0");
        assert.match(status.stdout, /^CapEff:\s+0+$/m, "setpriv did not drop the capabilities");
        for (
          const [role, ns, config] of [["connect", "cli", tunnel.clientConfig], [
            "serve",
            "srv",
            tunnel.serverConfig,
          ]] as const
        ) {
          const result = await tunnel.runToEnd(ns, role, config, noCaps);
          assert.notEqual(result.code, 0, result.stderr);
          assert.equal(
            lines(result.stderr).length,
            1,
            `${role}: expected one line on stderr, got:\n${result.stderr}`,
          );
          assert.match(result.stderr, /CAP_NET_ADMIN|root|permission|privilege/i);
          assert.equal(await tunnel.tunExists(ns), false, `${TUN} was left behind`);
        }
      });
    }, false);
  },
);
