/**
 * End-to-end tests of the server's own NAT (`[server] nat = "wan"`) with the
 * real CLI, in a lab whose `srv` neither forwards nor masquerades by itself
 * (`Lab.create({ serverNat: false })`), so traffic from `cli` reaches `web`
 * only through what tuxburst sets up. Root only.
 */
import assert from "node:assert/strict";
import { ADDRESSES, Lab, type LabProcess, type NsName, tuxburstCommand } from "../../lab/lab.ts";

const PORT = 40000;
const WEB = ADDRESSES.web;
const TUN = "tuxburst0";
const TABLE = "tuxburst_tuxburst0";
const NFT_MISSING =
  "tuxburst: server.nat needs nftables: apt-get install nftables (or remove nat and set up NAT by hand, see README)";

function skipReason(): string | undefined {
  const availability = Lab.available(["ss", "unshare"]);
  if (!availability.ok) return availability.reason;
  return undefined;
}
const reason = skipReason();
const ignore = reason !== undefined;
if (reason) console.warn(`e2e NAT tests skipped: ${reason}`);

function randomKey(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function lines(text: string): string[] {
  return text.split("\n").map((line) => line.trimEnd()).filter((line) => line.trim() !== "");
}

/** The lab, tuxburst's configs and processes, and what NAT looks like in `srv`. */
class NatRig {
  readonly key = randomKey();
  readonly clientConfig: string;
  readonly all: LabProcess[] = [];

  constructor(readonly lab: Lab) {
    this.clientConfig = this.write(
      "client.toml",
      `[common]
tun_name = "${TUN}"
tun_addr = "10.99.0.2/30"
[client]
host = "${ADDRESSES.srv}:${PORT}"
key = "${this.key}"
interfaces = ["upa", "upb"]
keepalive = 1
[client.routes]
tun_gateway = "10.99.0.1"
`,
    );
  }

  write(name: string, text: string): string {
    const path = `${this.lab.dir}/${name}`;
    Deno.writeTextFileSync(path, text);
    return path;
  }

  /** A server config; `nat` is the value of `server.nat`, none when undefined. */
  serverConfig(nat?: string): string {
    return this.write(
      `server-${nat ?? "manual"}.toml`,
      `[common]
tun_name = "${TUN}"
tun_addr = "10.99.0.1/30"
[server]
listen = "0.0.0.0:${PORT}"
key = "${this.key}"
${nat === undefined ? "" : `nat = "${nat}"`}
`,
    );
  }

  command(role: "serve" | "connect", config: string): string[] {
    return tuxburstCommand(role, "-c", config);
  }

  spawn(ns: NsName, role: "serve" | "connect", config: string): LabProcess {
    const process = this.lab.spawn(ns, this.command(role, config), {
      label: `tuxburst ${role} #${this.all.length}`,
    });
    this.all.push(process);
    return process;
  }

  /** Starts the server and waits (bounded) for its start line, and the NAT line with `nat`. */
  async startServer(config: string, nat: boolean): Promise<LabProcess> {
    const server = this.spawn("srv", "serve", config);
    await server.waitForOutput(nat ? /NAT on/ : /server started/, { timeoutMs: 15_000 });
    return server;
  }

  /** Waits until a ping from cli reaches `address`; throws after `timeoutMs`. */
  async waitForPing(address: string, timeoutMs = 20_000): Promise<void> {
    if (await this.lab.waitForPing("cli", address, timeoutMs)) return;
    throw new Error(`no ping from cli reached ${address} within ${timeoutMs} ms`);
  }

  /** SIGTERM, then exit code 0 within 5 s, as a user expects. */
  async stop(process: LabProcess): Promise<void> {
    process.kill("SIGTERM");
    const status = await process.wait(5000);
    if (!status) await process.stop("SIGKILL");
    assert.ok(status, `${process.label} did not exit within 5 s of SIGTERM\n${process.describe()}`);
    assert.equal(status.code, 0, `${process.label} exit status\n${process.describe()}`);
  }

  /** The NAT table in srv (its listing, undefined when absent) and srv's `ip_forward`. */
  async natState(): Promise<{ table?: string; forward: string }> {
    const list = await this.lab.exec("srv", ["nft", "list", "table", "ip", TABLE]);
    const forward = await this.lab.exec("srv", ["cat", "/proc/sys/net/ipv4/ip_forward"], {
      check: true,
    });
    return { table: list.code === 0 ? list.stdout : undefined, forward: forward.stdout.trim() };
  }

  async ruleset(): Promise<string> {
    return (await this.lab.exec("srv", ["nft", "list", "ruleset"], { check: true })).stdout;
  }

  async tunExists(ns: NsName): Promise<boolean> {
    return (await this.lab.exec(ns, ["ip", "link", "show", TUN])).code === 0;
  }

  describe(): string {
    return this.all.map((process) => process.describe(40)).join("\n");
  }
}

async function withRig(fn: (rig: NatRig, lab: Lab) => Promise<void>): Promise<void> {
  await using lab = await Lab.create({ serverNat: false });
  const rig = new NatRig(lab);
  try {
    await fn(rig, lab);
  } catch (error) {
    console.error(`\n===== output of the tuxburst processes =====\n${rig.describe()}\n=====`);
    throw error;
  }
}

/** A 2 s TCP echo from cli to web; returns the address web saw. */
async function tcpThrough(lab: Lab): Promise<string> {
  const { report, remote, client } = await lab.tcpTransfer({
    seconds: 2,
    rate: 1_000_000,
    drainSeconds: 10,
  });
  assert.ok(report.ok && report.sent > 0, `the TCP transfer failed\n${client.describe()}`);
  assert.equal(report.received, report.sent);
  return remote;
}

/** Packets the masquerade rule of the NAT table has counted. */
function masqueraded(table: string): number {
  const match = /counter packets (\d+) bytes \d+ masquerade/.exec(table);
  assert.ok(match, `no masquerade counter in\n${table}`);
  return Number(match[1]);
}

Deno.test({
  name: "nat: server.nat carries cli's traffic to web, and removes exactly its rules on exit",
  ignore,
}, async () => {
  await withRig(async (rig, lab) => {
    // Someone else's rules in srv, which tuxburst must leave as they are.
    await lab.exec("srv", ["nft", "-f", "-"], {
      check: true,
      stdin: "table inet theirs {\n  set keep { type ipv4_addr; elements = { 192.0.2.1 } }\n}\n",
    });
    const before = await rig.ruleset();
    assert.deepEqual(await rig.natState(), { table: undefined, forward: "0" });

    const server = await rig.startServer(rig.serverConfig("wan"), true);
    const on = await rig.natState();
    assert.equal(on.forward, "1", "ip_forward while the server runs");
    assert.ok(on.table, `no table ${TABLE} while the server runs`);
    assert.match(on.table, /ip saddr 10\.99\.0\.0\/30 oifname "wan" .*masquerade/);
    assert.match(on.table, /iifname "tuxburst0" oifname "wan" .*accept/);
    assert.match(on.table, /iifname "wan" oifname "tuxburst0" ct state established,related/);
    assert.equal(
      lines(server.stderr).filter((line) => /NAT on/.test(line)).length,
      1,
      server.stderr,
    );

    const client = rig.spawn("cli", "connect", rig.clientConfig);
    await rig.waitForPing(WEB);
    const ping = await lab.ping("cli", WEB, { count: 10, intervalMs: 100 });
    assert.equal(ping.received, 10, ping.output);
    const remote = await tcpThrough(lab);
    assert.match(remote, new RegExp(`^${ADDRESSES.srv.replaceAll(".", "\\.")}:`), "web's view");
    const running = await rig.natState();
    assert.ok(masqueraded(running.table!) > 0, `the table's rule masqueraded nothing`);

    await rig.stop(server);
    assert.deepEqual(await rig.natState(), { table: undefined, forward: "0" }, "after exit");
    assert.equal(await rig.ruleset(), before, "srv's other rules changed");
    await rig.stop(client);
  });
});

Deno.test({
  name: "nat: after kill -9 the table stays, and a restart replaces it",
  ignore,
}, async () => {
  await withRig(async (rig, lab) => {
    const config = rig.serverConfig("wan");
    const first = await rig.startServer(config, true);
    first.kill("SIGKILL");
    assert.ok(await first.wait(5000), "the server survived SIGKILL");
    const stale = await rig.natState();
    assert.ok(stale.table, "kill -9 cannot remove the table, so it must still be there");
    // Marks the stale table, to see that the restart builds a new one.
    await lab.exec("srv", ["nft", "add", "chain", "ip", TABLE, "stale_marker"], { check: true });

    const second = await rig.startServer(config, true);
    const fresh = await rig.natState();
    assert.ok(fresh.table, `no table ${TABLE} after the restart`);
    assert.doesNotMatch(fresh.table, /stale_marker/, "the stale table was kept");
    assert.equal(
      fresh.table.match(/masquerade/g)?.length,
      1,
      `rules piled up:\n${fresh.table}`,
    );
    assert.equal(fresh.forward, "1");

    const client = rig.spawn("cli", "connect", rig.clientConfig);
    await rig.waitForPing(WEB);
    const ping = await lab.ping("cli", WEB, { count: 5, intervalMs: 100 });
    assert.equal(ping.received, 5, ping.output);

    await rig.stop(second);
    assert.equal(
      (await rig.natState()).table,
      undefined,
      "the table outlived the restarted server",
    );
    await rig.stop(client);
  });
});

Deno.test({
  name: "nat: without server.nat srv forwards nothing here; a bad nat fails with one line",
  ignore,
}, async (t) => {
  await withRig(async (rig, lab) => {
    await t.step("without nat: the tunnel is up, but web is out of reach", async () => {
      const server = await rig.startServer(rig.serverConfig(), false);
      const client = rig.spawn("cli", "connect", rig.clientConfig);
      await rig.waitForPing("10.99.0.1");
      const ping = await lab.ping("cli", WEB, { count: 3, intervalMs: 200, replyWaitMs: 500 });
      assert.equal(ping.received, 0, `web answered without NAT:\n${ping.output}`);
      assert.deepEqual(await rig.natState(), { table: undefined, forward: "0" });
      await rig.stop(client);
      await rig.stop(server);
    });

    const failsWithOneLine = async (config: string, prefix: string[] = []) => {
      const result = await lab.exec("srv", [...prefix, ...rig.command("serve", config)], {
        timeoutMs: 20_000,
      });
      assert.equal(result.timedOut, false, `tuxburst serve kept running:\n${result.stderr}`);
      assert.equal(result.code, 1, result.stderr);
      assert.equal(lines(result.stderr).length, 1, `expected one line:\n${result.stderr}`);
      assert.equal(await rig.tunExists("srv"), false, `${TUN} was left behind`);
      assert.deepEqual(await rig.natState(), { table: undefined, forward: "0" });
      return result.stderr.trim();
    };

    await t.step("nat names a missing interface", async () => {
      const line = await failsWithOneLine(rig.serverConfig("nosuch0"));
      assert.match(line, /server\.nat: interface nosuch0 does not exist/);
    });

    await t.step("nftables is not installed", async () => {
      // A private mount namespace in which nft is not a file; nothing outside it changes.
      const withoutNft = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        'for d in $(echo "$PATH" | tr : " ") /usr/sbin /sbin; do ' +
        '[ -f "$d/nft" ] && mount --bind /dev/null "$d/nft"; done; exec "$@"',
        "sh",
      ];
      assert.equal(await failsWithOneLine(rig.serverConfig("wan"), withoutNft), NFT_MISSING);
    });
  });
});
