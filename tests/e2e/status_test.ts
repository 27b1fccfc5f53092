/**
 * `tuxburst status` end to end, as a user runs it: the real client and server
 * in the lab (`lab/lab.ts`, two uplinks), a ping through the tunnel, then
 * `tuxburst status --json` in each namespace; then link A is blackholed and
 * the status must say so. Root only.
 *
 * Each namespace of the lab gets its own control-socket directory
 * (`TUXBURST_RUN_DIR`, see `Lab.runDir`), so the client and the server (both
 * `tuxburst0`) and concurrent labs never share `/run/tuxburst`.
 */
import assert from "node:assert/strict";
import {
  ADDRESSES,
  Lab,
  type LabProcess,
  type NsName,
  tuxburstCommand,
  waitUntil,
} from "../../lab/lab.ts";
import type { LinkStatus, StatusReport } from "../../lib/link_stats.ts";

const PORT = 40000;
const TUN = "tuxburst0";
const DEBUG = Deno.env.get("TB_E2E_DEBUG") === "1";

const availability = Lab.available(["ss"]);
const ignore = !availability.ok;
if (!availability.ok) console.warn(`e2e status tests skipped: ${availability.reason}`);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function randomKey(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function configs(key: string): { server: string; client: string } {
  const common = (address: string) =>
    `[common]\ntun_name = "${TUN}"\ntun_addr = "${address}"\nmtu = 1400\ndebug = ${DEBUG}\n`;
  return {
    server: `${common("10.99.0.1/30")}[server]\nlisten = "0.0.0.0:${PORT}"\nkey = "${key}"\n` +
      `path_timeout = 30\n`,
    client: `${common("10.99.0.2/30")}[client]\nhost = "${ADDRESSES.srv}:${PORT}"\n` +
      `key = "${key}"\ninterfaces = ["upa", "upb"]\nkeepalive = 1\n` +
      `[client.routes]\ntun_gateway = "10.99.0.1"\nmetric = 5\n`,
  };
}

/** `tuxburst status` in `ns`, bounded; fails the test on anything but exit 0. */
async function status(lab: Lab, ns: NsName, args: string[] = ["--json"]): Promise<string> {
  const result = await lab.exec(ns, tuxburstCommand("status", ...args), {
    timeoutMs: 20_000,
  });
  assert.equal(result.code, 0, `tuxburst status ${args.join(" ")} in ${ns}: ${result.stderr}`);
  return result.stdout;
}

async function statusJson(lab: Lab, ns: NsName): Promise<StatusReport> {
  return JSON.parse(await status(lab, ns)) as StatusReport;
}

function linksOf(report: StatusReport): LinkStatus[] {
  assert.equal(report.peers.length, 1, JSON.stringify(report));
  return report.peers[0].links;
}

function byName(links: LinkStatus[], name: string): LinkStatus {
  const link = links.find((l) => l.name === name || l.name.startsWith(`${name}:`));
  assert.ok(link, `no link ${name} in ${JSON.stringify(links.map((l) => l.name))}`);
  return link;
}

Deno.test({
  name:
    "status: both uplinks and both paths with RTT and growing bytes; a blackholed link shows down",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using lab = await Lab.create();
  const files = configs(randomKey());
  const serverConfig = `${lab.dir}/server.toml`;
  const clientConfig = `${lab.dir}/client.toml`;
  await Deno.writeTextFile(serverConfig, files.server);
  await Deno.writeTextFile(clientConfig, files.client);
  const processes: LabProcess[] = [];
  const describe = () => processes.map((p) => p.describe()).join("\n");
  try {
    const server = lab.spawn("srv", tuxburstCommand("serve", "-c", serverConfig), {
      label: "tuxburst serve",
    });
    processes.push(server);
    await waitUntil(`tuxburst serve to bind UDP ${PORT}\n${describe()}`, 15_000, async () => {
      if (!server.running) throw new Error(`tuxburst serve exited\n${describe()}`);
      const { stdout } = await lab.exec("srv", ["ss", "-Hunl", `sport = :${PORT}`]);
      return stdout.includes(`:${PORT}`);
    });
    const client = lab.spawn("cli", tuxburstCommand("connect", "-c", clientConfig), {
      label: "tuxburst connect",
    });
    processes.push(client);
    await waitUntil(`the tunnel to carry a ping\n${describe()}`, 20_000, async () => {
      if (!client.running) throw new Error(`tuxburst connect exited\n${describe()}`);
      return (await lab.ping("cli", ADDRESSES.web, { count: 1, replyWaitMs: 500 })).received > 0;
    });

    // Root-only control sockets, one per tunnel, where the lab told tuxburst to put them.
    const clientSocket = `${lab.runDir("cli")}/${TUN}.sock`;
    const serverSocket = `${lab.runDir("srv")}/${TUN}.sock`;
    for (const path of [clientSocket, serverSocket]) {
      const info = await Deno.lstat(path);
      assert.ok(info.isSocket, path);
      assert.equal(info.mode! & 0o777, 0o600, path);
      assert.equal((await Deno.stat(path.slice(0, path.lastIndexOf("/")))).mode! & 0o777, 0o700);
      assert.equal(info.uid, 0);
    }

    // A second server with the same tun_name is refused with one clear line.
    const second = await lab.exec("srv", tuxburstCommand("serve", "-c", serverConfig), {
      timeoutMs: 20_000,
    });
    assert.equal(second.code, 1, second.stderr);
    assert.match(
      second.stderr,
      /^tuxburst: another tuxburst with tun_name "tuxburst0" is already running \(its control socket .* answers\); stop it or use another tun_name\n$/,
    );
    assert.ok((await Deno.lstat(serverSocket)).isSocket, "the refused one left the socket alone");

    // 5 pings a second through the tunnel for the whole test.
    const pinging = lab.ping("cli", ADDRESSES.web, {
      count: 150,
      intervalMs: 200,
      timeoutMs: 60_000,
    });
    await sleep(2500); // a few probes per uplink

    const before = await statusJson(lab, "cli");
    assert.equal(before.role, "client");
    assert.equal(before.tun, TUN);
    assert.ok(before.peers[0].session, "the client has a session");
    for (const name of ["upa", "upb"]) {
      const link = byName(linksOf(before), name);
      assert.equal(link.up, true, `${name}: ${JSON.stringify(link)}`);
      assert.ok(
        link.rttSmoothedMs !== null && link.rttSmoothedMs > 0 && link.rttSmoothedMs < 500,
        `${name} RTT ${link.rttSmoothedMs} ms in a lab without delay`,
      );
      assert.ok(link.rttRecentMs !== null && link.rttRecentMs < 500, `${name} recent RTT`);
      assert.equal(link.lossPercent, 0, `${name}: ${JSON.stringify(link)}`);
      assert.ok(link.lastHeardSecondsAgo !== null && link.lastHeardSecondsAgo < 2);
    }
    const serverBefore = await statusJson(lab, "srv");
    assert.equal(serverBefore.role, "server");
    assert.equal(serverBefore.peers[0].session?.id, before.peers[0].session!.id);
    for (const link of linksOf(serverBefore)) assert.equal(link.up, true, JSON.stringify(link));
    // The server sees the client through each ISP's NAT.
    byName(linksOf(serverBefore), ADDRESSES.ispA);
    byName(linksOf(serverBefore), ADDRESSES.ispB);
    assert.equal(linksOf(serverBefore).length, 2, JSON.stringify(linksOf(serverBefore)));

    await sleep(1500);
    const later = await statusJson(lab, "cli");
    const serverLater = await statusJson(lab, "srv");
    for (const name of ["upa", "upb"]) {
      const [a, b] = [byName(linksOf(before), name), byName(linksOf(later), name)];
      assert.ok(b.txBytes > a.txBytes && b.rxBytes > a.rxBytes, `${name} bytes did not grow`);
      assert.ok(b.rxDatagrams > a.rxDatagrams, `${name} datagrams did not grow`);
    }
    for (const isp of [ADDRESSES.ispA, ADDRESSES.ispB]) {
      const [a, b] = [byName(linksOf(serverBefore), isp), byName(linksOf(serverLater), isp)];
      assert.ok(b.rxBytes > a.rxBytes && b.txBytes > a.txBytes, `server path ${isp} bytes`);
    }
    const shares = linksOf(later).map((l) => l.firstPercent ?? 0);
    assert.ok(Math.abs(shares[0] + shares[1] - 100) < 0.01, `first shares ${shares}`);

    // Cut link A both ways: the client must call it down, and upb must win every race.
    await lab.blackhole("a", true);
    let cut: StatusReport | undefined;
    let serverCut: StatusReport | undefined;
    // Each side forgets link A's first arrivals when they leave its own 10 s window.
    await waitUntil(`upa to show down and upb 100 % first\n${describe()}`, 25_000, async () => {
      cut = await statusJson(lab, "cli");
      serverCut = await statusJson(lab, "srv");
      const [a, b] = [byName(linksOf(cut), "upa"), byName(linksOf(cut), "upb")];
      const [pa, pb] = [
        byName(linksOf(serverCut), ADDRESSES.ispA),
        byName(linksOf(serverCut), ADDRESSES.ispB),
      ];
      return !a.up && b.up && b.firstPercent === 100 && a.firstPercent === 0 &&
        pb.firstPercent === 100 && pa.firstPercent === 0;
    });
    const upa = byName(linksOf(cut!), "upa");
    assert.ok(upa.lossPercent !== null && upa.lossPercent > 0, `upa loss ${upa.lossPercent}`);
    assert.ok(upa.lastHeardSecondsAgo! >= 3, `upa last heard ${upa.lastHeardSecondsAgo}`);
    const pathA = byName(linksOf(serverCut!), ADDRESSES.ispA);
    assert.ok(pathA.lastHeardSecondsAgo! >= 3, JSON.stringify(pathA));
    assert.equal(pathA.up, false, "the server sees the client's probes stop on path A");
    assert.equal(byName(linksOf(serverCut!), ADDRESSES.ispB).up, true);

    // The table a person reads says the same.
    const table = await status(lab, "cli", []);
    assert.match(table, /^\s+upa\s+down\s/m, table);
    assert.match(table, /^\s+upb\s+up\s.*\s100 %\s/m, table);
    console.log(`tuxburst status (client, link A cut):\n${table}`);
    console.log(`tuxburst status (server, link A cut):\n${await status(lab, "srv", [])}`);
    await lab.blackhole("a", false);
    const ping = await pinging;
    assert.ok(ping.received > 0, ping.output);

    // SIGTERM: both exit 0 and take their control sockets with them.
    for (const process of [client, server]) {
      process.kill("SIGTERM");
      const exit = await process.wait(5000);
      assert.equal(exit?.code, 0, `${process.label} after SIGTERM\n${describe()}`);
    }
    await assert.rejects(Deno.lstat(clientSocket), Deno.errors.NotFound);
    await assert.rejects(Deno.lstat(serverSocket), Deno.errors.NotFound);
    const gone = await lab.exec("cli", tuxburstCommand("status"));
    assert.equal(gone.code, 1);
    assert.match(
      gone.stderr,
      /^tuxburst: no running tuxburst found \(no control socket in .*\)\n$/,
    );
  } catch (error) {
    console.error(describe());
    throw error;
  }
});
