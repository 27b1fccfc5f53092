/**
 * The whole data path (both roles, handshake, replication, de-duplication)
 * on in-memory fakes: no root, no kernel.
 */
import assert from "node:assert/strict";
import { type Platform, type Running, startClient, startServer } from "../lib/app.ts";
import { parseClientConfig, parseServerConfig } from "../lib/config.ts";
import type { ClientRole } from "../lib/client.ts";
import { Endpoint } from "../lib/endpoint.ts";
import type { ServerRole } from "../lib/server.ts";
import { WebCryptoCipher } from "../lib/crypto.ts";
import { FFI_CIPHERS } from "../ffi/ciphers.ts";
import { resetSync } from "@logtape/logtape";
import { captureLogs, ChannelTun, FakeNetwork, fakePlatform, type FakeSocket } from "./fakes.ts";

const KEY = "5543E0FF".repeat(8);
const OTHER_KEY = "0123ABCD".repeat(8);
const SERVER = new Endpoint("203.0.113.1", 40000);
const UPLINKS = { wlan0: "192.0.2.10", lte0: "198.51.100.20" };

function serverConfig(key = KEY, pathTimeout = 30) {
  return parseServerConfig(
    `[common]\ntun_addr = "10.99.0.1/30"\n[server]\nlisten = "${SERVER.key}"\nkey = "${key}"\npath_timeout = ${pathTimeout}\n`,
    "server.toml",
  );
}

function clientConfig(key = KEY, interfaces = ["wlan0", "lte0"], keepalive = 0.2) {
  return parseClientConfig(
    `[common]\ntun_addr = "10.99.0.2/30"\n[client]\nhost = "${SERVER.key}"\nkey = "${key}"\n` +
      `interfaces = ${JSON.stringify(interfaces)}\nkeepalive = ${keepalive}\n`,
    "client.toml",
  );
}

/** A numbered fake IP packet, so each delivery can be told apart. */
function packet(n: number, size = 100): Uint8Array {
  const p = new Uint8Array(size);
  p[0] = 0x45;
  new DataView(p.buffer).setUint32(4, n);
  return p;
}

function numbers(packets: Uint8Array[]): number[] {
  return packets.map((p) => new DataView(p.buffer, p.byteOffset).getUint32(4));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Rig {
  network: FakeNetwork;
  server: Running;
  client: Running;
  serverTun: ChannelTun;
  clientTun: ChannelTun;
  uplink(name: string): FakeSocket;
  /** The server's one socket. */
  serverSocket(): FakeSocket;
  stop(): Promise<void>;
}

const CIPHERS: [string, Platform["makeCipher"]][] = [
  ...FFI_CIPHERS.map(({ library, create }): [string, Platform["makeCipher"]] => [
    library,
    (key) => create(key) ?? WebCryptoCipher.fromRaw(key),
  ]),
  ["WebCrypto", WebCryptoCipher.fromRaw],
];

async function rig(
  options: {
    seed?: number;
    clientKey?: string;
    interfaces?: string[];
    makeCipher?: Platform["makeCipher"];
  } = {},
): Promise<Rig> {
  const network = new FakeNetwork(options.seed ?? 1);
  const { makeCipher } = options;
  const serverPlatform = fakePlatform(network, { makeCipher });
  const clientPlatform = fakePlatform(network, { uplinks: UPLINKS, makeCipher });
  const server = await startServer(serverConfig(), serverPlatform);
  const client = await startClient(
    clientConfig(options.clientKey, options.interfaces),
    clientPlatform,
  );
  return {
    network,
    server,
    client,
    serverTun: serverPlatform.tun,
    clientTun: clientPlatform.tun,
    uplink: (name) => clientPlatform.sockets.get(name)!,
    serverSocket: () => [...serverPlatform.sockets.values()][0],
    stop: async () => {
      server.stop();
      client.stop();
      await Promise.all([server.done, client.done]);
    },
  };
}

/** Waits (bounded) until the client has a session the server confirmed. */
async function connected(r: Rig, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const serverRole = r.server.role as ServerRole;
    if ((r.client.role as ClientRole).currentSession && serverRole.paths.length > 0) return;
    await sleep(10);
  }
  throw new Error("no session within the time limit");
}

async function sendAndCollect(
  from: ChannelTun,
  to: ChannelTun,
  count: number,
  start = 0,
): Promise<number[]> {
  const before = to.written.length;
  for (let i = 0; i < count; i++) {
    from.inject(packet(start + i));
    if (i % 16 === 15) await sleep(1); // let the loops run, as a real sender would
  }
  await to.waitForWritten(before + count, 3000);
  await sleep(100); // late duplicates would show up here
  return numbers(to.written.slice(before));
}

Deno.test("datapath: packets cross in both directions, each exactly once over two links", async () => {
  const r = await rig();
  try {
    await connected(r);
    const up = await sendAndCollect(r.clientTun, r.serverTun, 200);
    assert.deepEqual(up, [...Array(200).keys()]);
    const down = await sendAndCollect(r.serverTun, r.clientTun, 200, 1000);
    assert.deepEqual(down, Array.from({ length: 200 }, (_, i) => 1000 + i));
    // Every packet really went out twice (once per uplink), and half were dropped as copies.
    assert.ok(
      r.server.counters.duplicates >= 150,
      `server dropped ${r.server.counters.duplicates} copies`,
    );
    assert.equal((r.server.role as ServerRole).paths.length, 2, "server learned both uplinks");
  } finally {
    await r.stop();
  }
});

Deno.test("datapath: short sendmmsg batches on every socket lose, repeat and reorder nothing", async () => {
  const r = await rig();
  try {
    await connected(r);
    r.uplink("wlan0").batchLimit = 3;
    r.uplink("lte0").batchLimit = 1;
    r.serverSocket().batchLimit = 2;
    r.uplink("lte0").impairment = { down: true }; // only wlan0's short batches can deliver
    const up = await sendAndCollect(r.clientTun, r.serverTun, 300);
    assert.deepEqual(up, [...Array(300).keys()]);
    const down = await sendAndCollect(r.serverTun, r.clientTun, 300, 1000);
    assert.deepEqual(down, Array.from({ length: 300 }, (_, i) => 1000 + i));
    assert.equal(r.client.counters.sendErrors + r.server.counters.sendErrors, 0);
  } finally {
    await r.stop();
  }
});

Deno.test("datapath: status counts every copy per link and each first arrival once", async () => {
  const r = await rig();
  try {
    await connected(r);
    await sendAndCollect(r.clientTun, r.serverTun, 200);
    await sendAndCollect(r.serverTun, r.clientTun, 200, 1000);
    const client = r.client.status();
    assert.equal(client.role, "client");
    assert.equal(client.peers.length, 1);
    const [server] = client.peers;
    assert.equal(server.address, SERVER.key);
    assert.ok(
      server.session && server.session.id === (r.client.role as ClientRole).currentSession?.id,
    );
    assert.deepEqual(server.links.map((l) => [l.name, l.up]), [["wlan0", true], ["lte0", true]]);
    for (const link of server.links) {
      // Every packet went out on both uplinks, and both copies of each reply came in.
      assert.ok(link.txDatagrams >= 200 && link.txBytes >= 200 * 100, JSON.stringify(link));
      assert.ok(link.rxDatagrams >= 200, `${link.name} received ${link.rxDatagrams}`);
      assert.ok(link.rttSmoothedMs !== null && link.rttSmoothedMs >= 0, "probes were answered");
      assert.ok(link.lastHeardSecondsAgo !== null && link.lastHeardSecondsAgo < 1);
    }
    const firsts = server.links.reduce((sum, l) => sum + l.firstPackets, 0);
    assert.equal(firsts, 200, "each data packet arrived first on exactly one uplink");
    const shares = server.links.reduce((sum, l) => sum + l.firstPercent!, 0);
    assert.ok(Math.abs(shares - 100) < 1e-9, `shares add up to ${shares}`);
    assert.equal(client.counters.inboundPackets, 200);

    const status = r.server.status();
    assert.equal(status.role, "server");
    const [peer] = status.peers;
    assert.equal(peer.session?.id, server.session!.id);
    assert.equal(peer.links.length, 2);
    const sources = Object.values(UPLINKS);
    for (const link of peer.links) {
      assert.ok(sources.some((address) => link.name.startsWith(`${address}:`)), link.name);
      assert.ok(link.rxDatagrams >= 200 && link.txDatagrams >= 200, JSON.stringify(link));
      assert.equal(link.lossPercent, null, "the server sends no probes");
    }
    assert.equal(peer.links.reduce((sum, l) => sum + l.firstPackets, 0), 200);
  } finally {
    await r.stop();
  }
});

Deno.test("datapath: one dead uplink does not matter, in either direction", async () => {
  const r = await rig();
  try {
    await connected(r);
    r.uplink("wlan0").impairment = { down: true };
    assert.deepEqual(await sendAndCollect(r.clientTun, r.serverTun, 100), [...Array(100).keys()]);
    assert.deepEqual(
      await sendAndCollect(r.serverTun, r.clientTun, 100, 500),
      Array.from({ length: 100 }, (_, i) => 500 + i),
    );
    r.uplink("wlan0").impairment = {};
    r.uplink("lte0").impairment = { down: true };
    assert.deepEqual(
      await sendAndCollect(r.clientTun, r.serverTun, 100, 2000),
      Array.from({ length: 100 }, (_, i) => 2000 + i),
    );
  } finally {
    await r.stop();
  }
});

Deno.test("datapath: a send error on one uplink never stops the other", async () => {
  const r = await rig();
  try {
    await connected(r);
    r.uplink("wlan0").sendError = "ENETUNREACH";
    assert.deepEqual(await sendAndCollect(r.clientTun, r.serverTun, 50), [...Array(50).keys()]);
    assert.ok(r.client.counters.sendErrors >= 50);
  } finally {
    await r.stop();
  }
});

// Every cipher: libsodium and libcrypto answer at once into reused buffers, WebCrypto later and out of order.
for (const [cipher, makeCipher] of CIPHERS) {
  Deno.test(`datapath (${cipher}): loss, duplication, reordering and corruption on both links: nothing twice, nothing corrupt`, async () => {
    const r = await rig({ seed: 7, makeCipher });
    try {
      await connected(r);
      const bad = { loss: 0.2, duplicate: 0.2, reorder: 0.2, corrupt: 0.1 };
      r.uplink("wlan0").impairment = bad;
      r.uplink("lte0").impairment = bad;
      const count = 500;
      const before = r.serverTun.written.length;
      for (let i = 0; i < count; i++) {
        r.clientTun.inject(packet(i, 200));
        if (i % 16 === 15) await sleep(1);
      }
      await sleep(500);
      const delivered = r.serverTun.written.slice(before);
      const got = numbers(delivered);
      assert.equal(new Set(got).size, got.length, "a packet was delivered twice");
      for (const p of delivered) {
        const n = new DataView(p.buffer, p.byteOffset).getUint32(4);
        assert.deepEqual(p, packet(n, 200), `packet ${n} arrived corrupted`);
      }
      // A packet is lost only if both copies are (loss or corruption on each link: ~0.28² ≈ 8 %).
      assert.ok(got.length >= count * 0.85, `only ${got.length} of ${count} delivered`);
      assert.ok(r.server.counters.badAuth > 0, "corrupted copies were seen and rejected");
    } finally {
      await r.stop();
    }
  });
}

Deno.test("datapath: the first copy wins when one link is slower", async () => {
  const r = await rig();
  try {
    await connected(r);
    r.uplink("wlan0").impairment = { delayMs: 1000 };
    const start = performance.now();
    r.clientTun.inject(packet(1));
    await r.serverTun.waitForWritten(r.serverTun.written.length + 1, 2000);
    const elapsed = performance.now() - start;
    // Far below the slow link's 1000 ms, with room for a busy machine.
    assert.ok(elapsed < 500, `took ${elapsed} ms: delivered by the slow link, not the fast one`);
    await sleep(1200); // the slow copy arrives meanwhile, and must not be delivered again
    assert.equal(numbers(r.serverTun.written).filter((n) => n === 1).length, 1);
  } finally {
    await r.stop();
  }
});

Deno.test("datapath: garbage and replays sent to the server change nothing", async () => {
  const r = await rig();
  try {
    await connected(r);
    await sendAndCollect(r.clientTun, r.serverTun, 50);
    const recorded = r.network.captured.filter((c) => c.to.key === SERVER.key).map((c) => c);
    const attacker = new Endpoint("192.0.2.66", 6666);
    const random = r.network.random;
    for (let i = 0; i < 3000; i++) {
      const g = new Uint8Array(Math.floor(random() * 1500));
      for (let j = 0; j < g.length; j++) g[j] = random() * 256;
      if (g.length >= 4 && i % 3 === 0) g.set([1 + (i % 2), 0, 0, 0]); // passes the socket filter
      r.network.inject(g, attacker, SERVER);
    }
    const before = r.serverTun.written.length;
    for (const c of recorded) r.network.inject(c.data, c.from, SERVER); // replays from the real addresses
    for (const c of recorded) {
      const truncated = c.data.subarray(0, Math.floor(c.data.length / 2));
      r.network.inject(truncated, attacker, SERVER);
    }
    await sleep(300);
    assert.equal(
      r.serverTun.written.length,
      before,
      "a replayed or garbage datagram was delivered",
    );
    // Good traffic still flows.
    assert.deepEqual(
      await sendAndCollect(r.clientTun, r.serverTun, 50, 100),
      Array.from({ length: 50 }, (_, i) => 100 + i),
    );
    // Most garbage never reaches tuxburst (the kernel's socket filter); what looks like a
    // message does, and is dropped there: unknown sessions, or too short to be one.
    assert.ok(r.serverSocket().filtered > 1000, `${r.serverSocket().filtered} filtered`);
    const counters = r.server.counters;
    assert.ok(counters.unknownSession + counters.garbage + counters.badAuth > 500);
  } finally {
    await r.stop();
  }
});

Deno.test("datapath: a wrong key gets no session and delivers nothing", async () => {
  const r = await rig({ clientKey: OTHER_KEY });
  try {
    await sleep(300);
    assert.equal((r.client.role as ClientRole).currentSession, undefined);
    r.clientTun.inject(packet(1));
    await sleep(100);
    assert.equal(r.serverTun.written.length, 0);
    assert.ok(r.server.counters.badAuth > 0);
  } finally {
    await r.stop();
  }
});

Deno.test("datapath: a server restart is survived, and old datagrams are not accepted by the new server", async () => {
  const r = await rig();
  let second: Running | undefined;
  try {
    await connected(r);
    await sendAndCollect(r.clientTun, r.serverTun, 20);
    const recorded = r.network.captured.filter((c) => c.to.key === SERVER.key);
    r.server.stop();
    await r.server.done;

    const platform = fakePlatform(r.network, { tun: new ChannelTun() });
    second = await startServer(serverConfig(), platform);
    for (const c of recorded) r.network.inject(c.data, c.from, SERVER);
    // The client learns of the restart from its next packet and makes a new session.
    const deadline = performance.now() + 3000;
    let n = 100;
    while (platform.tun.written.length === 0 && performance.now() < deadline) {
      r.clientTun.inject(packet(n++));
      await sleep(20);
    }
    assert.ok(platform.tun.written.length > 0, "no packet crossed after the server restart");
    assert.ok(
      numbers(platform.tun.written).every((x) => x >= 100),
      "an old datagram was replayed into the new server",
    );
    const back = await sendAndCollect(platform.tun, r.clientTun, 20, 5000);
    assert.deepEqual(back, Array.from({ length: 20 }, (_, i) => 5000 + i));
  } finally {
    second?.stop();
    r.client.stop();
    await Promise.all([second?.done, r.client.done]);
  }
});

Deno.test("datapath: a client restart is survived, and the old client's datagrams are not accepted", async () => {
  const r = await rig();
  let second: Running | undefined;
  try {
    await connected(r);
    await sendAndCollect(r.clientTun, r.serverTun, 20);
    const recorded = r.network.captured.filter((c) => c.to.key === SERVER.key);
    r.client.stop();
    await r.client.done;

    const platform = fakePlatform(r.network, { uplinks: UPLINKS, tun: new ChannelTun() });
    second = await startClient(clientConfig(), platform);
    const deadline = performance.now() + 3000;
    while (!(second.role as ClientRole).currentSession && performance.now() < deadline) {
      await sleep(10);
    }
    const up = await sendAndCollect(platform.tun, r.serverTun, 20, 300);
    assert.deepEqual(up, Array.from({ length: 20 }, (_, i) => 300 + i));
    const before = r.serverTun.written.length;
    for (const c of recorded) r.network.inject(c.data, c.from, SERVER);
    await sleep(200);
    assert.equal(r.serverTun.written.length, before, "an old client's datagram was delivered");
    const down = await sendAndCollect(r.serverTun, platform.tun, 20, 700);
    assert.deepEqual(down, Array.from({ length: 20 }, (_, i) => 700 + i));
  } finally {
    second?.stop();
    r.server.stop();
    await Promise.all([second?.done, r.server.done]);
  }
});

Deno.test("datapath: a missing uplink is reported and retried, the other one carries traffic", async () => {
  const r = await rig({ interfaces: ["wlan0", "usb9"] });
  try {
    await connected(r);
    const client = r.client.role as ClientRole;
    assert.equal(client.uplinks.find((u) => u.name === "usb9")?.socket, undefined);
    assert.match(
      client.uplinks.find((u) => u.name === "usb9")?.problem ?? "",
      /usb9 does not exist/,
    );
    assert.deepEqual(await sendAndCollect(r.clientTun, r.serverTun, 30), [...Array(30).keys()]);
  } finally {
    await r.stop();
  }
});

Deno.test("datapath: a client whose only uplink is missing fails with a clear error", async () => {
  const network = new FakeNetwork();
  await assert.rejects(
    startClient(clientConfig(KEY, ["usb9"]), fakePlatform(network, { uplinks: UPLINKS })),
    /interface usb9 does not exist/,
  );
});

Deno.test("datapath: the server forgets a client address that falls silent", async () => {
  const network = new FakeNetwork();
  const serverPlatform = fakePlatform(network);
  const server = await startServer(serverConfig(KEY, 1), serverPlatform);
  const client = await startClient(
    clientConfig(KEY, ["wlan0", "lte0"], 0.2),
    fakePlatform(network, { uplinks: UPLINKS }),
  );
  try {
    const role = server.role as ServerRole;
    const deadline = performance.now() + 3000;
    while (role.paths.length < 2 && performance.now() < deadline) await sleep(10);
    assert.equal(role.paths.length, 2);
    // Silence lte0 (all its datagrams lost) for longer than path_timeout = 1 s.
    (client.role as ClientRole).uplinks.find((u) => u.name === "lte0")!.socket!.close();
    await sleep(1500);
    assert.deepEqual(role.paths.map((p) => p.endpoint.address), [UPLINKS.wlan0]);
  } finally {
    server.stop();
    client.stop();
    await Promise.all([server.done, client.done]);
  }
});

Deno.test("datapath: an uplink that is down from the start is reported once, and the other one works", async () => {
  const logs = captureLogs("info");
  const network = new FakeNetwork();
  const serverPlatform = fakePlatform(network);
  const server = await startServer(serverConfig(), serverPlatform);
  const clientPlatform = fakePlatform(network, {
    uplinks: UPLINKS,
    sendErrors: { lte0: "ENETDOWN" },
  });
  const client = await startClient(clientConfig(KEY, ["wlan0", "lte0"], 0.2), clientPlatform);
  try {
    await sleep(3500); // the silence limit is 3 keepalives, at least 3 s
    const about = logs.filter((line) =>
      line.includes("lte0") && line.includes("not reached the server")
    );
    assert.equal(about.length, 1, logs.join("\n"));
    assert.match(about[0], /sending fails: ENETDOWN/);
    assert.ok(logs.some((line) => line.includes("wlan0 is up")), logs.join("\n"));
    clientPlatform.tun.inject(packet(1));
    const written = await serverPlatform.tun.waitForWritten(1, 1000);
    assert.equal(written.length, 1);
  } finally {
    resetSync();
    server.stop();
    client.stop();
    await Promise.all([server.done, client.done]);
  }
});

Deno.test("datapath: debug = true logs which copy came first and why later ones were dropped; off logs none", async () => {
  const logs = captureLogs("debug");
  const perPacket = (line: string) => /^inbound \d+:\d+ /.test(line);
  try {
    for (const debug of [false, true]) {
      logs.length = 0;
      const network = new FakeNetwork();
      const serverPlatform = fakePlatform(network);
      const clientPlatform = fakePlatform(network, { uplinks: UPLINKS });
      const base = clientConfig();
      const server = await startServer(serverConfig(), serverPlatform);
      const client = await startClient(
        { ...base, common: { ...base.common, debug } },
        clientPlatform,
      );
      try {
        const deadline = performance.now() + 3000;
        while (!(client.role as ClientRole).currentSession && performance.now() < deadline) {
          await sleep(10);
        }
        await sendAndCollect(serverPlatform.tun, clientPlatform.tun, 20);
      } finally {
        server.stop();
        client.stop();
        await Promise.all([server.done, client.done]);
      }
      const lines = logs.filter(perPacket);
      if (!debug) {
        assert.deepEqual(lines, [], "debug off: no per-packet line, though the logger takes debug");
        continue;
      }
      const firsts = lines.filter((l) => / data: first copy, via (wlan0|lte0) from /.test(l));
      assert.ok(firsts.length >= 20, `${firsts.length} first-copy lines\n${lines.join("\n")}`);
      assert.ok(
        lines.some((l) => / dropped via (wlan0|lte0) from .*: later copy/.test(l)),
        `no drop line for the second copies\n${lines.slice(0, 20).join("\n")}`,
      );
    }
  } finally {
    resetSync();
  }
});
