/**
 * IPv6 transport on fakes: a server with IPv4 and IPv6 addresses, uplinks
 * that reach only one family, send errors for the other family, and the
 * IPv6 default route through the tunnel.
 */
import assert from "node:assert/strict";
import { resetSync } from "@logtape/logtape";
import { type Platform, startClient, startServer } from "../lib/app.ts";
import type { ClientRole } from "../lib/client.ts";
import { parseClientConfig, parseServerConfig } from "../lib/config.ts";
import { Endpoint } from "../lib/endpoint.ts";
import type { ServerRole } from "../lib/server.ts";
import { captureLogs, FakeInterfaces, FakeNetwork, fakePlatform } from "./fakes.ts";

const KEY = "5543E0FF".repeat(8);
const V4 = new Endpoint("203.0.113.1", 40000);
const V6 = new Endpoint("2001:db8::1", 40000);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function clientConfig(interfaces: string[], hosts: string, extra = "") {
  return parseClientConfig(
    `[common]\ntun_addr = "10.99.0.2/30"\ntun_addr6 = "fd99::2/64"\n[client]\nhost = ${hosts}\n` +
      `key = "${KEY}"\ninterfaces = ${JSON.stringify(interfaces)}\nkeepalive = 0.2\n${extra}`,
    "client.toml",
  );
}

async function startServerAt(network: FakeNetwork, listen: Endpoint) {
  return await startServer(
    parseServerConfig(
      `[common]\ntun_addr = "10.99.0.1/30"\ntun_addr6 = "fd99::1/64"\n[server]\nlisten = "${listen.key}"\nkey = "${KEY}"\n`,
      "server.toml",
    ),
    fakePlatform(network),
  );
}

async function until(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

Deno.test("ipv6: each uplink sends to the server addresses of the families it has", async () => {
  const network = new FakeNetwork();
  // Only the IPv6 address answers, so only the uplink with IPv6 can get through.
  const server = await startServerAt(network, V6);
  const interfaces = new FakeInterfaces();
  interfaces.add("wlan0", "192.0.2.10");
  interfaces.add("lte0", "2001:db8:2::20");
  const client = await startClient(
    clientConfig(["wlan0", "lte0"], `["${V4.key}", "${V6.key}"]`),
    fakePlatform(network, { interfaces }),
  );
  try {
    const role = client.role as ClientRole;
    const uplink = (name: string) => role.uplinks.find((u) => u.name === name)!;
    await until("lte0 up", () => uplink("lte0").up);
    await sleep(500);
    const sentTo = (address: string) =>
      new Set(network.captured.filter((c) => c.from.address === address).map((c) => c.to.key));
    assert.deepEqual(sentTo("192.0.2.10"), new Set([V4.key]), "the IPv4 uplink sent to IPv6");
    assert.deepEqual(sentTo("2001:db8:2::20"), new Set([V6.key]), "the IPv6 uplink sent to IPv4");
    assert.equal(uplink("wlan0").up, false);
  } finally {
    server.stop();
    client.stop();
    await Promise.all([server.done, client.done]);
  }
});

Deno.test("ipv6: an uplink of unknown family tries every address, then keeps to the one that answers; the other family's errors are logged once", async () => {
  const logs = captureLogs("debug");
  const network = new FakeNetwork();
  const server = await startServerAt(network, V4);
  // No interface list: the client cannot know the uplink's families.
  const platform = fakePlatform(network, { uplinks: { wlan0: "192.0.2.10" } });
  const openUdp = platform.openUdp;
  const families: number[] = [];
  const clientPlatform: Platform = {
    ...platform,
    openUdp: (options) => {
      families.push(options.family);
      const socket = openUdp(options);
      // This link has no IPv6 route.
      platform.sockets.get("wlan0")!.sendErrorTo = (to) => to.family === 6 ? "ENETUNREACH" : null;
      return socket;
    },
  };
  const client = await startClient(
    clientConfig(["wlan0"], `["${V6.key}", "${V4.key}"]`),
    clientPlatform,
  );
  try {
    assert.deepEqual(families, [6], "one dual-stack socket reaches both families");
    const role = client.role as ClientRole;
    await until("wlan0 up", () => role.uplinks[0].up);
    assert.equal(role.uplinks[0].active?.endpoint.key, V4.key);
    await sleep(1000); // five keepalives
    const sendErrors = logs.filter((l) => /failed: ENETUNREACH/.test(l));
    assert.ok(
      sendErrors.length <= 1,
      `logged ${sendErrors.length} times:\n${sendErrors.join("\n")}`,
    );
    // Data goes to the address that answered only: no copy to the unreachable one.
    const before = network.captured.length;
    platform.tun.inject(new Uint8Array([0x45, ...new Array(39).fill(0)]));
    await sleep(100);
    const sent = network.captured.slice(before).filter((c) => c.from.address === "192.0.2.10");
    assert.ok(sent.length >= 1);
    assert.ok(sent.every((c) => c.to.key === V4.key), sent.map((c) => c.to.key).join(", "));
  } finally {
    resetSync();
    server.stop();
    client.stop();
    await Promise.all([server.done, client.done]);
  }
});

Deno.test("ipv6: the client adds an IPv6 default route via tun_gateway6 with the tunnel's metric", async () => {
  const network = new FakeNetwork();
  const server = await startServerAt(network, V4);
  const platform = fakePlatform(network, { uplinks: { wlan0: "192.0.2.10" } });
  const routes: Array<{ device: string; gateway: string; metric: number }> = [];
  const opened: unknown[] = [];
  const client = await startClient(
    clientConfig(
      ["wlan0"],
      `"${V4.key}"`,
      `[client.routes]\ntun_gateway = "10.99.0.1"\ntun_gateway6 = "fd99::1"\nmetric = 7\n`,
    ),
    {
      ...platform,
      addDefaultRoute: (route) => void routes.push(route),
      openTun: (options) => {
        opened.push(options.address6);
        return platform.openTun(options);
      },
    },
  );
  try {
    assert.deepEqual(opened, [{ address: "fd99::2", prefixLength: 64 }]);
    assert.deepEqual(routes, [
      { device: "fake0", gateway: "10.99.0.1", metric: 7 },
      { device: "fake0", gateway: "fd99::1", metric: 7 },
    ]);
  } finally {
    server.stop();
    client.stop();
    await Promise.all([server.done, client.done]);
  }
});

Deno.test("ipv6: an IPv6 packet from the server's TUN reaches the client's TUN", async () => {
  const network = new FakeNetwork();
  const serverPlatform = fakePlatform(network);
  const server = await startServer(
    parseServerConfig(
      `[common]\ntun_addr = "10.99.0.1/30"\ntun_addr6 = "fd99::1/64"\n[server]\nlisten = "${V6.key}"\nkey = "${KEY}"\n`,
      "server.toml",
    ),
    serverPlatform,
  );
  const clientPlatform = fakePlatform(network, { uplinks: { lte0: "2001:db8:2::20" } });
  const client = await startClient(clientConfig(["lte0"], `"${V6.key}"`), clientPlatform);
  try {
    await until("connected", () => (client.role as ClientRole).uplinks[0].up);
    await until("the server knows the path", () => (server.role as ServerRole).paths.length > 0);
    const packet = new Uint8Array(60);
    packet[0] = 0x60;
    packet[6] = 58; // ICMPv6
    packet.set([0xfd, 0x99, ...new Array(13).fill(0), 2], 24); // to fd99::2
    serverPlatform.tun.inject(packet);
    const written = await clientPlatform.tun.waitForWritten(1, 2000);
    assert.deepEqual(written.map((p) => p[0] >> 4), [6]);
  } finally {
    server.stop();
    client.stop();
    await Promise.all([server.done, client.done]);
  }
});

Deno.test("ipv6: a host name's A and AAAA records are all server addresses; one that fails to resolve is skipped", async () => {
  const logs = captureLogs("info");
  const network = new FakeNetwork();
  const server = await startServerAt(network, V6);
  const interfaces = new FakeInterfaces();
  interfaces.add("lte0", "2001:db8:2::20");
  const platform: Platform = {
    ...fakePlatform(network, { interfaces }),
    resolveHost: (host) =>
      host === "vpn.example.com"
        ? Promise.resolve([V4.address, "2001:DB8:0::1"])
        : Promise.reject(new Error("NXDOMAIN")),
  };
  const client = await startClient(
    clientConfig(["lte0"], `["vpn.example.com:40000", "gone.example.com:40000"]`),
    platform,
  );
  try {
    const role = client.role as ClientRole;
    await until("lte0 up", () => role.uplinks[0].up);
    // The canonical form, so the server's answers match the address sent to.
    assert.equal(role.uplinks[0].active?.endpoint.key, V6.key);
    assert.ok(logs.some((l) => /cannot resolve "gone\.example\.com": NXDOMAIN/.test(l)));
    assert.ok(logs.some((l) => l.includes(`server ${V4.key}, ${V6.key}`)), logs.join("\n"));
  } finally {
    resetSync();
    server.stop();
    client.stop();
    await Promise.all([server.done, client.done]);
  }
  await assert.rejects(
    startClient(clientConfig(["lte0"], `"gone.example.com:40000"`), platform),
    /client\.toml: client\.host: cannot resolve "gone\.example\.com": NXDOMAIN/,
  );
});
