/**
 * Several clients on one server, on in-memory fakes: each peer is told apart
 * by its key, gets only the packets for its tunnel address, may send only from
 * it, and a reload (SIGHUP) adds and removes peers without disturbing the others.
 */
import assert from "node:assert/strict";
import { resetSync } from "@logtape/logtape";
import { type Running, startClient, startServer } from "../lib/app.ts";
import type { ClientRole } from "../lib/client.ts";
import { loadConfig, parseClientConfig, parseServerConfig } from "../lib/config.ts";
import { Endpoint, parseIpv4, parseIpv6 } from "../lib/endpoint.ts";
import type { ServerRole } from "../lib/server.ts";
import { captureLogs, ChannelTun, FakeNetwork, fakePlatform, type FakeSocket } from "./fakes.ts";

const LAPTOP_KEY = "5543E0FF".repeat(8);
const PHONE_KEY = "0123ABCD".repeat(8);
const TABLET_KEY = "89ABCDEF".repeat(8);
const SERVER = new Endpoint("203.0.113.1", 40000);
const SERVER_TUN = "10.99.0.1";
const LAPTOP = { name: "laptop", key: LAPTOP_KEY, v4: "10.99.0.2" };
const PHONE = { name: "phone", key: PHONE_KEY, v4: "10.99.0.3", v6: "fd99::3" };
const TABLET = { name: "tablet", key: TABLET_KEY, v4: "10.99.0.4" };
/** Both clients' uplinks have the same address: two clients behind one NAT, told apart by port. */
const NAT_ADDRESS = "192.0.2.10";

type Peer = { name: string; key: string; v4: string; v6?: string };

function serverToml(peers: Peer[]): string {
  return `[common]\ntun_addr = "${SERVER_TUN}/24"\n[server]\nlisten = "${SERVER.key}"\n` +
    peers.map((p) =>
      `[[server.peers]]\nname = "${p.name}"\nkey = "${p.key}"\ntun_addr = "${p.v4}"\n` +
      (p.v6 ? `tun_addr6 = "${p.v6}"\n` : "")
    ).join("");
}

function clientConfig(peer: Peer) {
  return parseClientConfig(
    `[common]\ntun_addr = "${peer.v4}/24"\n[client]\nhost = "${SERVER.key}"\nkey = "${peer.key}"\n` +
      `interfaces = ["wlan0"]\nkeepalive = 0.2\n`,
    "client.toml",
  );
}

/** An IP packet from `source` to `destination` (both IPv4 or both IPv6) carrying number `n`. */
function ipPacket(source: string, destination: string, n: number): Uint8Array {
  const v4 = !source.includes(":");
  const packet = new Uint8Array(v4 ? 60 : 80);
  const view = new DataView(packet.buffer);
  if (v4) {
    packet[0] = 0x45;
    view.setUint32(12, parseIpv4(source)!);
    view.setUint32(16, parseIpv4(destination)!);
    view.setUint32(20, n);
  } else {
    packet[0] = 0x60;
    packet.set(parseIpv6(source)!, 8);
    packet.set(parseIpv6(destination)!, 24);
    view.setUint32(40, n);
  }
  return packet;
}

function numbers(packets: Uint8Array[]): number[] {
  return packets.map((p) => {
    const view = new DataView(p.buffer, p.byteOffset);
    return view.getUint32(p[0] >> 4 === 4 ? 20 : 40);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Client {
  running: Running;
  tun: ChannelTun;
  /** The client's one uplink socket. */
  uplink(): FakeSocket;
}

class Rig {
  readonly network = new FakeNetwork();
  readonly serverTun = new ChannelTun();
  readonly clients = new Map<string, Client>();
  server!: Running;

  get role(): ServerRole {
    return this.server.role as ServerRole;
  }

  async start(config: Parameters<typeof startServer>[0]): Promise<void> {
    this.server = await startServer(config, fakePlatform(this.network, { tun: this.serverTun }));
  }

  async connect(peer: Peer): Promise<Client> {
    const platform = fakePlatform(this.network, { uplinks: { wlan0: NAT_ADDRESS } });
    const client = {
      running: await startClient(clientConfig(peer), platform),
      tun: platform.tun,
      uplink: () => platform.sockets.get("wlan0")!,
    };
    this.clients.set(peer.name, client);
    return client;
  }

  /** Waits (bounded) until the server has a session and a path for peer `name`, of client `client`. */
  async connected(name: string, client = name, timeoutMs = 3000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const status = this.role.peers.find((p) => p.name === name);
      const role = this.clients.get(client)?.running.role as ClientRole | undefined;
      if (status?.session !== undefined && status.paths.length > 0 && role?.currentSession) {
        return;
      }
      await sleep(10);
    }
    throw new Error(`${name} got no session within ${timeoutMs} ms`);
  }

  async stop(): Promise<void> {
    for (const client of this.clients.values()) client.running.stop();
    this.server?.stop();
    await Promise.all([
      ...[...this.clients.values()].map((c) => c.running.done),
      this.server?.done,
    ]);
  }
}

/** Injects `packets` into `from` and returns the numbers that reached `to` (waits for `expect`). */
async function cross(
  from: ChannelTun,
  to: ChannelTun,
  packets: Uint8Array[],
  expect = packets.length,
): Promise<number[]> {
  const before = to.written.length;
  for (const p of packets) from.inject(p);
  await to.waitForWritten(before + expect, 2000);
  await sleep(100); // anything that should not arrive would show up here
  return numbers(to.written.slice(before));
}

function range(start: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + i);
}

async function withRig(peers: Peer[], fn: (rig: Rig) => Promise<void>): Promise<void> {
  const rig = new Rig();
  try {
    await rig.start(parseServerConfig(serverToml(peers), "server.toml"));
    await fn(rig);
  } finally {
    await rig.stop();
  }
}

/** Like `withRig`, with the server's config in a file that the test may rewrite and reload. */
async function withServerFile(
  peers: Peer[],
  fn: (rig: Rig, file: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-peers-" });
  const file = `${dir}/server.toml`;
  const rig = new Rig();
  try {
    await Deno.writeTextFile(file, serverToml(peers));
    await rig.start(await loadConfig(file, "server"));
    await fn(rig, file);
  } finally {
    await rig.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("peers: each client is told apart by its key and gets only its own packets, IPv4 and IPv6", async () => {
  await withRig([LAPTOP, PHONE], async (rig) => {
    const laptop = await rig.connect(LAPTOP);
    const phone = await rig.connect(PHONE);
    await rig.connected("laptop");
    await rig.connected("phone");
    const [laptopStatus, phoneStatus] = rig.role.peers;
    assert.notEqual(laptopStatus.session, phoneStatus.session);
    // Behind one NAT: the same public address, told apart by port, each a path of its own peer.
    assert.equal(laptopStatus.paths[0].endpoint.address, NAT_ADDRESS);
    assert.equal(phoneStatus.paths[0].endpoint.address, NAT_ADDRESS);
    assert.notEqual(laptopStatus.paths[0].endpoint.port, phoneStatus.paths[0].endpoint.port);

    // Outbound: by destination, interleaved so that a mix-up would show.
    const down = [];
    for (let i = 0; i < 30; i++) {
      down.push(ipPacket(SERVER_TUN, LAPTOP.v4, 100 + i));
      down.push(ipPacket(SERVER_TUN, PHONE.v4, 200 + i));
      down.push(ipPacket("fd99::1", PHONE.v6, 300 + i));
    }
    const phoneBefore = phone.tun.written.length;
    assert.deepEqual(await cross(rig.serverTun, laptop.tun, down, 30), range(100, 30));
    await phone.tun.waitForWritten(phoneBefore + 60, 2000);
    const toPhone = numbers(phone.tun.written.slice(phoneBefore));
    assert.deepEqual(toPhone.filter((n) => n < 300), range(200, 30));
    assert.deepEqual(toPhone.filter((n) => n >= 300), range(300, 30), "IPv6 routed by tun_addr6");

    // Inbound: both at once, each from its own address.
    const up = [
      ...range(0, 20).map((i) => ipPacket(LAPTOP.v4, SERVER_TUN, 1000 + i)),
    ];
    for (const p of up) laptop.tun.inject(p);
    const fromPhone = range(0, 20).map((i) => ipPacket(PHONE.v4, SERVER_TUN, 2000 + i));
    const got = await cross(phone.tun, rig.serverTun, fromPhone, 40);
    assert.deepEqual(got.sort((a, b) => a - b), [...range(1000, 20), ...range(2000, 20)]);
    assert.equal(rig.server.counters.spoofed, 0);
  });
});

Deno.test("peers: a packet for no peer's address is dropped and counted", async () => {
  await withRig([LAPTOP, PHONE], async (rig) => {
    const laptop = await rig.connect(LAPTOP);
    await rig.connected("laptop");
    const stray = [
      ipPacket(SERVER_TUN, "10.99.0.77", 1),
      ipPacket("fd99::1", "fd99::2", 2), // the laptop has no tun_addr6
      new Uint8Array([0x45, 0, 0]), // not even an IP header
    ];
    assert.deepEqual(await cross(rig.serverTun, laptop.tun, stray, 0), []);
    assert.equal(rig.server.counters.noPeer, 3);
    // Known but not connected yet: no session, which is not a wrong address.
    await cross(rig.serverTun, laptop.tun, [ipPacket(SERVER_TUN, PHONE.v4, 3)], 0);
    assert.equal(rig.server.counters.noPeer, 3);
    assert.equal(rig.server.counters.noRoute, 4);
  });
});

Deno.test("peers: a client sending from another address (another peer's, or any) is dropped and counted", async () => {
  await withRig([LAPTOP, PHONE], async (rig) => {
    const laptop = await rig.connect(LAPTOP);
    await rig.connect(PHONE);
    await rig.connected("laptop");
    await rig.connected("phone");
    const forged = [
      ipPacket(PHONE.v4, SERVER_TUN, 1), // poses as the phone
      ipPacket("10.99.0.77", SERVER_TUN, 2),
      ipPacket("192.168.1.5", "8.8.8.8", 3),
      ipPacket(PHONE.v6, "fd99::1", 4), // the phone's IPv6 address
      new Uint8Array([0x45, 1, 2, 3]), // too short to have a source at all
    ];
    const honest = ipPacket(LAPTOP.v4, SERVER_TUN, 5);
    assert.deepEqual(await cross(laptop.tun, rig.serverTun, [...forged, honest], 1), [5]);
    assert.equal(rig.server.counters.spoofed, forged.length);
  });
});

Deno.test("peers: with one server.key (no [[server.peers]]) the client takes and sends every address, as before", async () => {
  const rig = new Rig();
  try {
    await rig.start(parseServerConfig(
      `[common]\ntun_addr = "${SERVER_TUN}/30"\n[server]\nlisten = "${SERVER.key}"\nkey = "${LAPTOP_KEY}"\n`,
      "server.toml",
    ));
    const laptop = await rig.connect(LAPTOP);
    await rig.connected("client", "laptop");
    const anywhere = [
      ipPacket("8.8.8.8", LAPTOP.v4, 1),
      ipPacket(SERVER_TUN, "10.77.0.9", 2),
      ipPacket("fd00::1", "fd00::2", 3),
    ];
    assert.deepEqual(await cross(rig.serverTun, laptop.tun, anywhere), [1, 2, 3]);
    const fromAnywhere = [ipPacket("192.168.1.5", "8.8.8.8", 4), ipPacket("fd00::2", "::1", 5)];
    assert.deepEqual(await cross(laptop.tun, rig.serverTun, fromAnywhere), [4, 5]);
    assert.equal(rig.server.counters.spoofed, 0);
    assert.equal(rig.server.counters.noPeer, 0);
  } finally {
    await rig.stop();
  }
});

Deno.test("peers: a client with a key the server does not list gets nothing through", async () => {
  await withRig([LAPTOP], async (rig) => {
    const laptop = await rig.connect(LAPTOP);
    const intruder = await rig.connect({ ...PHONE });
    await rig.connected("laptop");
    await sleep(300);
    assert.equal((intruder.running.role as ClientRole).currentSession, undefined);
    assert.deepEqual(
      await cross(intruder.tun, rig.serverTun, [ipPacket(LAPTOP.v4, SERVER_TUN, 1)], 0),
      [],
    );
    assert.ok(rig.server.counters.badAuth > 0);
    assert.deepEqual(rig.role.peers.map((p) => p.name), ["laptop"]);
    assert.deepEqual(
      await cross(laptop.tun, rig.serverTun, [ipPacket(LAPTOP.v4, SERVER_TUN, 2)]),
      [2],
    );
  });
});

Deno.test("peers: after a server restart every client is asked for a new handshake and comes back", async () => {
  const rig = new Rig();
  const config = parseServerConfig(serverToml([LAPTOP, PHONE]), "server.toml");
  try {
    await rig.start(config);
    const laptop = await rig.connect(LAPTOP);
    const phone = await rig.connect(PHONE);
    await rig.connected("laptop");
    await rig.connected("phone");
    rig.server.stop();
    await rig.server.done;
    await rig.start(config);
    // Each client's next packet names a session the new server does not know; the answers (one
    // per peer key) make both start over at once, long before they would notice the silence.
    const deadline = performance.now() + 1500;
    let n = 0;
    while (rig.role.peers.some((p) => p.paths.length === 0) && performance.now() < deadline) {
      laptop.tun.inject(ipPacket(LAPTOP.v4, SERVER_TUN, n++));
      phone.tun.inject(ipPacket(PHONE.v4, SERVER_TUN, n++));
      await sleep(20);
    }
    assert.ok(rig.role.peers.every((p) => p.session !== undefined), "a client did not come back");
    assert.deepEqual(
      await cross(rig.serverTun, phone.tun, [ipPacket(SERVER_TUN, PHONE.v4, 9000)]),
      [9000],
    );
  } finally {
    await rig.stop();
  }
});

/** Collects the text of every log record while `fn` runs. */
async function withLogs(fn: (logs: string[]) => Promise<void>): Promise<void> {
  const logs = captureLogs("info", { withLevel: true });
  try {
    await fn(logs);
  } finally {
    resetSync();
  }
}

Deno.test("peers: a reload adds and removes peers, and the other peer's session and traffic go on", async () => {
  await withLogs(async (logs) => {
    await withServerFile([LAPTOP], async (rig, file) => {
      const laptop = await rig.connect(LAPTOP);
      await rig.connected("laptop");
      const session = rig.role.peers[0].session;
      const phone = await rig.connect(PHONE);
      await sleep(300);
      assert.equal((phone.running.role as ClientRole).currentSession, undefined, "not listed yet");

      // The laptop keeps sending while the phone is added.
      let n = 0;
      const sending = (async () => {
        for (let i = 0; i < 50; i++) {
          laptop.tun.inject(ipPacket(LAPTOP.v4, SERVER_TUN, n++));
          await sleep(5);
        }
      })();
      await Deno.writeTextFile(file, serverToml([LAPTOP, PHONE]));
      await rig.server.reload!();
      await sending;
      await rig.connected("phone");
      await rig.serverTun.waitForWritten(50, 2000);
      assert.deepEqual(numbers(rig.serverTun.written), range(0, 50), "laptop lost packets");
      assert.equal(rig.role.peers[0].session, session, "the laptop's session was replaced");
      assert.deepEqual(
        await cross(rig.serverTun, phone.tun, [ipPacket(SERVER_TUN, PHONE.v4, 500)]),
        [500],
      );
      assert.ok(
        logs.some((line) => line.includes("peer phone added (10.99.0.3, fd99::3)")),
        logs.join("\n"),
      );
      assert.ok(logs.some((line) => /peer phone session \d+ started/.test(line)), logs.join("\n"));
      assert.ok(logs.some((line) => /peer phone path 192\.0\.2\.10:\d+ learned/.test(line)));

      // A bad config changes nothing, and says why in one line.
      await Deno.writeTextFile(file, serverToml([LAPTOP, { ...PHONE, key: LAPTOP_KEY }]));
      await rig.server.reload!();
      const errors = logs.filter((line) => line.startsWith("error"));
      assert.equal(errors.length, 1, logs.join("\n"));
      assert.match(
        errors[0],
        /config not reloaded, the running one stays: .*server\.peers\[2\]\.key: the same key/,
      );
      assert.ok(!errors[0].includes("\n"));
      assert.deepEqual(rig.role.peers.map((p) => p.name), ["laptop", "phone"]);

      // The laptop removed: its session is gone at once, the phone carries on.
      const phoneSession = rig.role.peers[1].session;
      await Deno.writeTextFile(file, serverToml([PHONE, TABLET]));
      await rig.server.reload!();
      assert.deepEqual(rig.role.peers.map((p) => p.name), ["phone", "tablet"]);
      assert.equal(rig.role.peers[0].session, phoneSession);
      assert.ok(logs.some((line) => line.includes("peer laptop removed")), logs.join("\n"));
      assert.deepEqual(
        await cross(laptop.tun, rig.serverTun, [ipPacket(LAPTOP.v4, SERVER_TUN, 700)], 0),
        [],
        "a removed peer's packet was delivered",
      );
      assert.deepEqual(
        await cross(phone.tun, rig.serverTun, [ipPacket(PHONE.v4, SERVER_TUN, 701)]),
        [701],
      );
      assert.deepEqual(
        await cross(rig.serverTun, phone.tun, [ipPacket(SERVER_TUN, PHONE.v4, 702)]),
        [702],
      );
    });
  });
});

Deno.test("peers: a reload with a changed key drops that peer's sessions; a changed address moves its traffic", async () => {
  await withServerFile([LAPTOP, PHONE], async (rig, file) => {
    const laptop = await rig.connect(LAPTOP);
    const phone = await rig.connect(PHONE);
    await rig.connected("laptop");
    await rig.connected("phone");
    const phoneSession = rig.role.peers[1].session;

    // The phone moves to 10.99.0.9: same key, same session, new address.
    await Deno.writeTextFile(
      file,
      serverToml([{ ...LAPTOP, key: TABLET_KEY }, { ...PHONE, v4: "10.99.0.9" }]),
    );
    await rig.server.reload!();
    assert.equal(rig.role.peers[1].session, phoneSession);
    assert.deepEqual(
      await cross(rig.serverTun, phone.tun, [
        ipPacket(SERVER_TUN, "10.99.0.9", 1),
        ipPacket(SERVER_TUN, PHONE.v4, 2),
      ], 1),
      [1],
    );
    // The laptop's old key no longer counts: no session, and its packets are not delivered.
    assert.equal(rig.role.peers[0].session, undefined);
    assert.deepEqual(
      await cross(laptop.tun, rig.serverTun, [ipPacket(LAPTOP.v4, SERVER_TUN, 3)], 0),
      [],
    );
  });
});

Deno.test("peers: a flood of unknown-session datagrams gets a bounded number of answers, however many peers", async () => {
  const many: Peer[] = Array.from({ length: 8 }, (_, i) => ({
    name: `peer${i}`,
    key: (i + 1).toString(16).toUpperCase().padStart(8, "0").repeat(8),
    v4: `10.99.0.${10 + i}`,
  }));
  await withRig(many, async (rig) => {
    const attacker = new Endpoint("198.51.100.66", 6666);
    const fake = new Uint8Array(48);
    fake[0] = 1; // Data
    for (let i = 0; i < 200; i++) {
      new DataView(fake.buffer).setUint32(4, 1000 + i); // a session the server never made
      rig.network.inject(fake, attacker, SERVER);
    }
    await sleep(300);
    const answers = rig.network.captured.filter((c) => c.to.key === attacker.key);
    // One answer per peer key for the first datagrams, then the limit of 20 a second (plus refill).
    assert.ok(answers.length >= many.length, `only ${answers.length} answers`);
    assert.ok(answers.length <= 20 + 10, `${answers.length} answers to 200 forged datagrams`);
    assert.equal(rig.server.counters.unknownSession, 200);
    assert.ok(rig.server.counters.rateLimited >= 200 - 30);
  });
});

Deno.test("peers: a reload that changes more than the peers says which settings need a restart", async () => {
  await withLogs(async (logs) => {
    await withServerFile([LAPTOP], async (rig, file) => {
      await Deno.writeTextFile(
        file,
        serverToml([LAPTOP, PHONE]).replace("[server]\n", "[server]\npath_timeout = 10\n"),
      );
      await rig.server.reload!();
      const warnings = logs.filter((line) => line.startsWith("warning"));
      assert.equal(warnings.length, 1, logs.join("\n"));
      assert.match(warnings[0], /reload: server\.path_timeout changed; .* only after a restart/);
      assert.deepEqual(rig.role.peers.map((p) => p.name), ["laptop", "phone"], "peers applied");
    });
  });
});

Deno.test("peers: a roaming client is reached at its new address; the other peer's paths stay as they were", async () => {
  await withRig([LAPTOP, PHONE], async (rig) => {
    const laptop = await rig.connect(LAPTOP);
    const phone = await rig.connect(PHONE);
    await rig.connected("laptop");
    await rig.connected("phone");
    const laptopPaths = rig.role.peers[0].paths.map((p) => p.endpoint.key);

    // The phone moves from the shared NAT address to another network.
    rig.network.rebind(phone.uplink(), "198.51.100.7");
    assert.deepEqual(
      await cross(phone.tun, rig.serverTun, [ipPacket(PHONE.v4, SERVER_TUN, 1)]),
      [1],
    );
    const phonePaths = rig.role.peers[1].paths.map((p) => p.endpoint.address);
    assert.deepEqual(phonePaths, [NAT_ADDRESS, "198.51.100.7"]);
    assert.deepEqual(rig.role.peers[0].paths.map((p) => p.endpoint.key), laptopPaths);
    // Traffic for the phone reaches it at the new address (the old one is gone).
    assert.deepEqual(
      await cross(rig.serverTun, phone.tun, [ipPacket(SERVER_TUN, PHONE.v4, 2)]),
      [2],
    );
    // A replay of the phone's datagram from an attacker's address teaches the server nothing.
    const recorded = rig.network.captured.filter((c) => c.to.key === SERVER.key).at(-1)!;
    rig.network.inject(recorded.data, new Endpoint("192.0.2.66", 6666), SERVER);
    await sleep(100);
    assert.equal(rig.role.peers[1].paths.length, 2);
    assert.deepEqual(
      await cross(rig.serverTun, laptop.tun, [ipPacket(SERVER_TUN, LAPTOP.v4, 3)]),
      [3],
    );
  });
});
