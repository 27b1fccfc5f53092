/**
 * Several clients on one server, with the real CLI in the lab (see
 * `lab/lab.ts`, `secondClient: true`): the laptop in `cli` (two uplinks
 * behind the ISPs' NATs), a roaming phone in `cli2` behind `ispA`'s NAT (the
 * same public address as the laptop's link A), an attacker with a key the
 * server does not list, the laptop forging another tunnel address, and a
 * tablet whose key is added with SIGHUP while the others run. Root only.
 *
 * Set `TB_E2E_DEBUG=1` to run tuxburst with `debug = true`.
 */
import assert from "node:assert/strict";
import {
  ADDRESSES,
  Lab,
  type LabProcess,
  type NsName,
  type PingResult,
  tuxburstCommand,
} from "../../lab/lab.ts";

const PORT = 40000;
const SERVER = `${ADDRESSES.srv}:${PORT}`;
const SERVER_TUN = "10.99.0.1";
const DEBUG = Deno.env.get("TB_E2E_DEBUG") === "1";

const reason = (() => {
  const availability = Lab.available(["ss"]);
  return availability.ok ? undefined : availability.reason;
})();
if (reason) console.warn(`e2e peers tests skipped: ${reason}`);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function randomKey(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

interface Peer {
  name: string;
  tunAddr: string;
  /** The key as hex, or the name of a key file beside the server's config. */
  key: { hex: string } | { file: string };
}

function serverToml(peers: Peer[]): string {
  return `[common]
tun_addr = "${SERVER_TUN}/24"
debug = ${DEBUG}
[server]
listen = "0.0.0.0:${PORT}"
path_timeout = 30
` + peers.map((peer) => `
[[server.peers]]
name = "${peer.name}"
${"hex" in peer.key ? `key = "${peer.key.hex}"` : `key_file = "${peer.key.file}"`}
tun_addr = "${peer.tunAddr}"
`).join("");
}

function clientToml(
  options: { tunName: string; tunAddr: string; key: string; interfaces: string[] },
  routes = "",
): string {
  return `[common]
tun_name = "${options.tunName}"
tun_addr = "${options.tunAddr}/24"
debug = ${DEBUG}
[client]
host = "${SERVER}"
key = "${options.key}"
interfaces = ${JSON.stringify(options.interfaces)}
keepalive = 1
${routes}`;
}

function summary(result: PingResult): string {
  return `${result.received}/${result.transmitted} answered, lost seqs [${
    result.lost.join(",")
  }], ` +
    `longest loss run ${result.longestLossRun}`;
}

function matching(process: LabProcess, pattern: RegExp): string[] {
  return process.stderr.split("\n").filter((line) => pattern.test(line));
}

class Rig {
  readonly all: LabProcess[] = [];
  constructor(readonly lab: Lab) {}

  write(name: string, text: string): string {
    const path = `${this.lab.dir}/${name}`;
    Deno.writeTextFileSync(path, text);
    return path;
  }

  spawn(ns: NsName, role: "serve" | "connect", config: string, label: string): LabProcess {
    const process = this.lab.spawn(ns, tuxburstCommand(role, "-c", config), {
      label,
    });
    this.all.push(process);
    return process;
  }

  async waitForPing(ns: NsName, address: string, timeoutMs = 20_000): Promise<void> {
    if (await this.lab.waitForPing(ns, address, timeoutMs)) return;
    throw new Error(`no ping from ${ns} reached ${address} within ${timeoutMs} ms`);
  }

  describe(): string {
    return this.all.map((process) => process.describe(40)).join("\n");
  }
}

Deno.test({
  name:
    "peers: two clients (one behind a shared NAT, one roaming) at once, an outsider and a forged source kept out, a peer added by SIGHUP without loss",
  ignore: reason !== undefined,
}, async () => {
  await using lab = await Lab.create({ secondClient: true });
  const rig = new Rig(lab);
  try {
    // The server's keys: the laptop's inline, the phone's in a file made by gen-key.
    const laptopKey = randomKey();
    const phoneKeyFile = `${lab.dir}/phone.key`;
    const generated = await lab.exec(
      "srv",
      tuxburstCommand("gen-key", "-o", phoneKeyFile),
      { check: true, timeoutMs: 20_000 },
    );
    const phoneKey = generated.stdout.trim();
    assert.match(phoneKey, /^[0-9A-F]{64}$/);
    const laptop: Peer = { name: "laptop", tunAddr: "10.99.0.2", key: { hex: laptopKey } };
    const phone: Peer = { name: "phone", tunAddr: "10.99.0.3", key: { file: "phone.key" } };
    const tabletKey = randomKey();
    const tablet: Peer = { name: "tablet", tunAddr: "10.99.0.4", key: { hex: tabletKey } };
    const serverConfig = rig.write("server.toml", serverToml([laptop, phone]));

    const server = rig.spawn("srv", "serve", serverConfig, "server");
    await server.waitForOutput(/server started/, { timeoutMs: 15_000 });
    rig.spawn(
      "cli",
      "connect",
      rig.write(
        "laptop.toml",
        clientToml(
          {
            tunName: "tuxburst0",
            tunAddr: "10.99.0.2",
            key: laptopKey,
            interfaces: ["upa", "upb"],
          },
          `[client.routes]\ntun_gateway = "${SERVER_TUN}"\n`,
        ),
      ),
      "laptop",
    );
    rig.spawn(
      "cli2",
      "connect",
      rig.write(
        "phone.toml",
        clientToml({
          tunName: "tuxburst0",
          tunAddr: "10.99.0.3",
          key: phoneKey,
          interfaces: ["up"],
        }),
      ),
      "phone",
    );
    // Someone who knows the server's address and protocol, but has no listed key.
    const outsider = rig.spawn(
      "ispB",
      "connect",
      rig.write(
        "outsider.toml",
        clientToml({
          tunName: "tbout0",
          tunAddr: "10.99.0.9",
          key: randomKey(),
          interfaces: ["wan"],
        }),
      ),
      "outsider",
    );
    // The tablet runs from the start; the server will list it only later.
    const tabletClient = rig.spawn(
      "web",
      "connect",
      rig.write(
        "tablet.toml",
        clientToml({
          tunName: "tbtab0",
          tunAddr: "10.99.0.4",
          key: tabletKey,
          interfaces: ["wan"],
        }),
      ),
      "tablet",
    );

    await rig.waitForPing("cli", ADDRESSES.web); // through the tunnel: web answers only srv
    await rig.waitForPing("cli2", SERVER_TUN);
    // Laptop to phone: the server routes by destination between its peers.
    await rig.waitForPing("cli", "10.99.0.3");

    // Behind one NAT: both clients reach the server from ispA's one public address.
    const learned = (name: string) =>
      matching(
        server,
        new RegExp(`peer ${name} path ${ADDRESSES.ispA.replaceAll(".", "\\.")}:\\d+ learned`),
      );
    assert.equal(learned("laptop").length, 1, server.stderr);
    assert.equal(learned("phone").length, 1, server.stderr);

    // Both ping at once; the phone moves to another address in the middle of it.
    const count = 80;
    const intervalMs = 100;
    const started = Date.now();
    const laptopPing = lab.ping("cli", ADDRESSES.web, { count, intervalMs });
    const phonePing = lab.ping("cli2", SERVER_TUN, { count, intervalMs });
    await sleep(3000);
    const roamedAt = Date.now();
    await lab.exec("cli2", ["ip", "-batch", "-"], {
      check: true,
      stdin: [
        `addr del ${ADDRESSES.cli2}/24 dev up`,
        "addr add 10.3.3.3/24 dev up",
        `route add default via ${ADDRESSES.ispACli2} dev up`,
      ].join("\n") + "\n",
    });
    const [laptopResult, phoneResult] = await Promise.all([laptopPing, phonePing]);
    assert.equal(laptopResult.received, count, `laptop: ${summary(laptopResult)}`);
    // The phone loses pings only around the switch, then goes on from its new address.
    const roamSeq = Math.floor((roamedAt - started) / intervalMs) + 1;
    assert.ok(phoneResult.received >= count - 20, `phone: ${summary(phoneResult)}`);
    assert.ok(
      phoneResult.lost.every((seq) => seq >= roamSeq - 3 && seq <= roamSeq + 20),
      `phone lost pings away from the switch at seq ${roamSeq}: ${summary(phoneResult)}`,
    );
    assert.ok(
      phoneResult.replies.some((reply) => reply.seq > roamSeq + 20),
      `phone: ${summary(phoneResult)}`,
    );
    assert.equal(learned("phone").length, 2, `the new address was not learned\n${server.stderr}`);
    console.log(
      `roaming: phone lost ${phoneResult.lost.length} of ${count} pings (longest run ${phoneResult.longestLossRun} × ${intervalMs} ms); laptop lost ${
        count - laptopResult.received
      }`,
    );

    // The outsider got nowhere.
    const outsiderPing = await lab.ping("ispB", SERVER_TUN, { count: 3, replyWaitMs: 500 });
    assert.equal(outsiderPing.received, 0, outsiderPing.output);
    assert.deepEqual(matching(outsider, /connected to/), [], outsider.stderr);
    assert.deepEqual(matching(tabletClient, /connected to/), [], "the tablet is not listed yet");

    // The laptop posing as another tunnel address: the server drops it (counted as spoofed).
    await lab.exec("cli", ["ip", "addr", "add", "10.99.0.50/32", "dev", "tuxburst0"], {
      check: true,
    });
    const forged = await lab.ping("cli", SERVER_TUN, {
      count: 3,
      replyWaitMs: 500,
      device: "10.99.0.50", // ping -I with an address: the source address
    });
    assert.equal(forged.received, 0, forged.output);
    await lab.exec("cli", ["ip", "addr", "del", "10.99.0.50/32", "dev", "tuxburst0"], {
      check: true,
    });

    // Adding the tablet: SIGHUP while the laptop pings; nobody else notices.
    const sessionsBefore = matching(server, /peer (laptop|phone) session \d+ started/);
    const duringReload = lab.ping("cli", ADDRESSES.web, { count: 50, intervalMs });
    await sleep(1500);
    rig.write("server.toml", serverToml([laptop, phone, tablet]));
    server.kill("SIGHUP");
    await server.waitForOutput(/peer tablet added/, { timeoutMs: 5000 });
    const reloadResult = await duringReload;
    assert.equal(reloadResult.received, 50, `laptop during the reload: ${summary(reloadResult)}`);
    await rig.waitForPing("web", SERVER_TUN);
    assert.deepEqual(
      matching(server, /peer (laptop|phone) session \d+ started/),
      sessionsBefore,
      "the reload replaced a session of a peer that did not change",
    );
    assert.ok(server.running, server.describe());
    assert.deepEqual(matching(outsider, /connected to/), [], outsider.stderr);

    // A broken config on SIGHUP: one error line, and everything keeps working.
    rig.write("server.toml", serverToml([laptop, { ...phone, tunAddr: "10.98.0.3" }]));
    server.kill("SIGHUP");
    await server.waitForOutput(/config not reloaded/, { timeoutMs: 5000 });
    assert.equal(matching(server, /config not reloaded/).length, 1, server.stderr);
    assert.match(
      server.stderr,
      /server\.peers\[2\]\.tun_addr: 10\.98\.0\.3 is outside the tunnel subnet/,
    );
    const after = await lab.ping("cli2", SERVER_TUN, { count: 5, intervalMs });
    assert.equal(after.received, 5, `phone after the bad reload: ${summary(after)}`);
    const tabletAfter = await lab.ping("web", SERVER_TUN, { count: 5, intervalMs });
    assert.equal(tabletAfter.received, 5, `tablet after the bad reload: ${summary(tabletAfter)}`);

    // The outsider's handshakes were seen and refused, not lost somewhere on the way.
    server.kill("SIGTERM");
    const status = await server.wait(5000);
    assert.equal(status?.code, 0, server.describe());
    const totals = /stopped; totals: .*badAuth=(\d+) .*spoofed=(\d+)/.exec(server.stderr);
    assert.ok(totals && Number(totals[1]) > 0, `no refused handshake counted\n${server.stderr}`);
    assert.equal(Number(totals[2]), 3, `the forged pings were not counted\n${server.stderr}`);
  } catch (error) {
    console.error(`\n===== output of the tuxburst processes =====\n${rig.describe()}\n=====`);
    throw error;
  }
});
