/**
 * Uplinks that come and go while the client runs, on fakes: interfaces
 * deleted and made again (a new index), missing at start, down and up, a
 * new address, and `interfaces = ["*"]`; plus the parsing of the kernel's
 * interface and route files.
 */
import assert from "node:assert/strict";
import { resetSync } from "@logtape/logtape";
import { type Running, startClient, startServer } from "../lib/app.ts";
import type { ClientRole } from "../lib/client.ts";
import { parseClientConfig, parseServerConfig } from "../lib/config.ts";
import { Endpoint } from "../lib/endpoint.ts";
import {
  globMatch,
  interfacePatternProblem,
  parseInterfaceNames,
  parseIpv4DefaultRoutes,
  parseIpv6DefaultRoutes,
  readInterfaces,
} from "../lib/interfaces.ts";
import type { ServerRole } from "../lib/server.ts";
import { captureLogs, FakeInterfaces, FakeNetwork, fakePlatform } from "./fakes.ts";

const KEY = "5543E0FF".repeat(8);
const SERVER = new Endpoint("203.0.113.1", 40000);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("hotplug: shell-style patterns match interface names", () => {
  assert.ok(globMatch("*", "wlan0"));
  assert.ok(globMatch("wl*", "wlan0"));
  assert.ok(globMatch("wl*", "wl"));
  assert.ok(!globMatch("wl*", "awlan0"));
  assert.ok(globMatch("enx????", "enx1234"));
  assert.ok(!globMatch("enx????", "enx123"));
  assert.ok(!globMatch("enx????", "enx12345"));
  assert.ok(globMatch("eth0.1?", "eth0.10"));
  assert.ok(!globMatch("eth0.1?", "eth0x10"), "a dot is a dot, not any character");
  assert.equal(interfacePatternProblem("w*"), undefined);
  assert.match(interfacePatternProblem("a/b*") ?? "", /cannot contain/);
  assert.match(interfacePatternProblem("wl[ab]*") ?? "", /only \* and \?/);
});

const ROUTE = `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
upa\t00000000\t0101010A\t0003\t0\t0\t100\t00000000\t0\t0\t0
upa\t0001010A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
upb\t0002020A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
down0\t00000000\t0103030A\t0002\t0\t0\t0\t00000000\t0\t0\t0
garbage line
`;
const IPV6_ROUTE =
  `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     upb
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     wwan0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
short line
`;
const DEV = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
   upa:    2000      20    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
   upb:    3000      30    0    0    0     0          0         0     3000      30    0    0    0     0       0          0
 wwan0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
 gone0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
`;

Deno.test("hotplug: default routes and interfaces are read from the kernel's text files", () => {
  assert.deepEqual([...parseIpv4DefaultRoutes(ROUTE)], ["upa"], "down0's route is not RTF_UP");
  assert.deepEqual(
    [...parseIpv6DefaultRoutes(IPV6_ROUTE)],
    ["wwan0"],
    "lo's reject route is no default",
  );
  assert.deepEqual(parseInterfaceNames(DEV), ["lo", "upa", "upb", "wwan0", "gone0"]);
  assert.deepEqual(parseIpv4DefaultRoutes(""), new Set());
  const indexes: Record<string, number> = { lo: 1, upa: 7, upb: 8, wwan0: 9 };
  const list = readInterfaces({
    dev: DEV,
    route: ROUTE,
    ipv6Route: IPV6_ROUTE,
    addresses: [
      { name: "upa", address: "10.1.1.2" },
      { name: "upa", address: "fe80::1" },
      { name: "upb", address: "fd00::2" },
      { name: "upb", address: "10.2.2.2" },
    ],
    index: (name) => indexes[name] ?? 0,
    up: (name) => name !== "upb",
  });
  assert.deepEqual(list, [
    { name: "lo", index: 1, up: true, addresses: [], defaultRoute: false },
    { name: "upa", index: 7, up: true, addresses: ["10.1.1.2"], defaultRoute: true },
    { name: "upb", index: 8, up: false, addresses: ["10.2.2.2", "fd00::2"], defaultRoute: false },
    { name: "wwan0", index: 9, up: true, addresses: [], defaultRoute: true },
  ]);
});

/** A server and a client on fakes, with the client's interfaces in `interfaces`, and the log. */
async function hotplugRig(clientInterfaces: string[], interfaces: FakeInterfaces) {
  const logs = captureLogs("info");
  const network = new FakeNetwork();
  const serverPlatform = fakePlatform(network);
  const server = await startServer(
    parseServerConfig(
      `[common]\ntun_addr = "10.99.0.1/30"\n[server]\nlisten = "${SERVER.key}"\nkey = "${KEY}"\npath_timeout = 30\n`,
      "server.toml",
    ),
    serverPlatform,
  );
  let client: Running | undefined;
  try {
    client = await startClient(
      parseClientConfig(
        `[common]\ntun_addr = "10.99.0.2/30"\n[client]\nhost = "${SERVER.key}"\nkey = "${KEY}"\n` +
          `interfaces = ${JSON.stringify(clientInterfaces)}\nkeepalive = 5\n`,
        "client.toml",
      ),
      fakePlatform(network, { interfaces }),
    );
  } catch (error) {
    server.stop();
    await server.done;
    resetSync();
    throw error;
  }
  const role = client.role as ClientRole;
  const serverRole = server.role as ServerRole;
  return {
    logs,
    role,
    serverRole,
    /** Addresses the server sends to, sorted. */
    serverPaths: () => serverRole.paths.map((p) => p.endpoint.address).sort(),
    async until(what: string, check: () => boolean, timeoutMs = 3000): Promise<number> {
      const start = performance.now();
      while (!check()) {
        if (performance.now() - start > timeoutMs) {
          throw new Error(`timed out waiting for ${what}\n${logs.join("\n")}`);
        }
        await sleep(10);
      }
      return performance.now() - start;
    },
    async stop() {
      server.stop();
      client!.stop();
      await Promise.all([server.done, client!.done]);
      resetSync();
    },
  };
}

/** A client with wlan0 and lte0, once the server has learned both paths. */
async function bothUplinksConnected() {
  const interfaces = new FakeInterfaces();
  interfaces.add("wlan0", "192.0.2.10");
  interfaces.add("lte0", "198.51.100.20");
  const r = await hotplugRig(["wlan0", "lte0"], interfaces);
  try {
    await r.until("both paths at the server", () => r.serverPaths().length === 2);
  } catch (error) {
    await r.stop();
    throw error;
  }
  return { interfaces, r };
}

Deno.test("hotplug: an uplink deleted and made again (new index) is reopened; the other one never stops", async () => {
  const { interfaces, r } = await bothUplinksConnected();
  try {
    const wlan = () => r.role.uplinks.find((u) => u.name === "wlan0")!;
    const oldSocket = wlan().socket;
    interfaces.remove("wlan0");
    await r.until("wlan0 reported gone", () => r.logs.some((l) => /wlan0 is down/.test(l)), 2500);
    assert.equal(wlan().socket, undefined);
    assert.ok(r.role.uplinks.find((u) => u.name === "lte0")!.socket, "lte0 was touched");
    // Made again with the same name and address: a new index, so the old socket is dead.
    interfaces.add("wlan0", "192.0.2.10");
    const took = await r.until("wlan0 reopened", () => wlan().socket !== undefined, 2500);
    assert.notEqual(wlan().socket, oldSocket);
    assert.ok(took < 2000, `reopened after ${took} ms`);
    await r.until("wlan0 up again", () => wlan().up);
    assert.ok(r.logs.some((l) => /uplink wlan0 is up/.test(l)), r.logs.join("\n"));
  } finally {
    await r.stop();
  }
});

Deno.test("hotplug: re-creation between two checks is noticed by the index alone", async () => {
  const { interfaces, r } = await bothUplinksConnected();
  try {
    const before = interfaces.index("wlan0");
    interfaces.add("wlan0", "192.0.2.10"); // remove + add at once: same name, new index
    assert.notEqual(interfaces.index("wlan0"), before);
    await r.until(
      "the re-creation logged",
      () => r.logs.some((l) => /wlan0 was re-created/.test(l)),
      2500,
    );
    const wlan = r.role.uplinks.find((u) => u.name === "wlan0")!;
    await r.until(
      "wlan0 up on its new socket",
      () => wlan.up && wlan.index === interfaces.index("wlan0"),
    );
  } finally {
    await r.stop();
  }
});

Deno.test("hotplug: an uplink missing at start is used once it appears", async () => {
  const interfaces = new FakeInterfaces();
  interfaces.add("wlan0", "192.0.2.10");
  const r = await hotplugRig(["wlan0", "usb0"], interfaces);
  try {
    await r.until("one path at the server", () => r.serverPaths().length === 1);
    interfaces.add("usb0", "198.51.100.30");
    const took = await r.until("usb0's path at the server", () => r.serverPaths().length === 2);
    // Keepalive is 5 s: only a probe sent at once can teach the server this fast.
    assert.ok(took < 2000, `the server learned usb0 after ${took} ms`);
    assert.deepEqual(r.serverPaths(), ["192.0.2.10", "198.51.100.30"]);
  } finally {
    await r.stop();
  }
});

Deno.test("hotplug: a new address is shown to the server at once", async () => {
  const { interfaces, r } = await bothUplinksConnected();
  try {
    interfaces.setAddress("wlan0", "192.0.2.99");
    const took = await r.until(
      "the new address at the server",
      () => r.serverPaths().includes("192.0.2.99"),
    );
    assert.ok(took < 2000, `learned after ${took} ms, with keepalive 5 s`);
    assert.ok(r.logs.some((l) => /wlan0 changed: up, 192\.0\.2\.99/.test(l)), r.logs.join("\n"));
  } finally {
    await r.stop();
  }
});

Deno.test("hotplug: an uplink that goes down and up is probed as soon as it is up", async () => {
  const { interfaces, r } = await bothUplinksConnected();
  try {
    interfaces.setUp("wlan0", false);
    await r.until("down logged", () => r.logs.some((l) => /wlan0 changed: down/.test(l)), 2500);
    const wlan = r.role.uplinks.find((u) => u.name === "wlan0")!;
    const heard = wlan.lastHeard;
    interfaces.setUp("wlan0", true);
    const took = await r.until("wlan0 answered again", () => wlan.lastHeard > heard);
    assert.ok(took < 2000, `answered after ${took} ms, with keepalive 5 s`);
  } finally {
    await r.stop();
  }
});

Deno.test('hotplug: interfaces = ["*"] uses every interface with a default route, as they come and go', async () => {
  const interfaces = new FakeInterfaces();
  interfaces.add("lo", "127.0.0.1");
  interfaces.add("wlan0", "192.0.2.10");
  interfaces.add("docker0", "172.17.0.1", { defaultRoute: false });
  interfaces.add("tuxburst0", "10.99.0.2"); // its own TUN, even with a default route
  const r = await hotplugRig(["*"], interfaces);
  const names = () => r.role.uplinks.map((u) => u.name).sort();
  try {
    assert.deepEqual(names(), ["wlan0"]);
    await r.until("wlan0 at the server", () => r.serverPaths().length === 1);
    interfaces.add("enx0", "198.51.100.40");
    await r.until("enx0 added", () => names().includes("enx0"), 2500);
    await r.until("enx0 at the server", () => r.serverPaths().length === 2);
    assert.ok(r.logs.some((l) => /enx0 added: it matches \* and has a default route/.test(l)));
    interfaces.setDefaultRoute("wlan0", false);
    await r.until("wlan0 dropped", () => !names().includes("wlan0"), 2500);
    assert.ok(
      r.logs.some((l) => /wlan0 dropped: it has no default route/.test(l)),
      r.logs.join("\n"),
    );
    interfaces.remove("enx0");
    await r.until("enx0 dropped", () => names().length === 0, 2500);
    assert.ok(r.logs.some((l) => /enx0 dropped: the interface is gone/.test(l)), r.logs.join("\n"));
  } finally {
    await r.stop();
  }
});

Deno.test("hotplug: a pattern matching nothing yet starts and waits; a plain name does not", async () => {
  const interfaces = new FakeInterfaces();
  interfaces.add("eth0", "192.0.2.10");
  const r = await hotplugRig(["wl*"], interfaces);
  try {
    assert.equal(r.role.uplinks.length, 0);
    assert.ok(r.logs.some((l) => /no interface with a default route matches wl\* yet/.test(l)));
    interfaces.add("wlan0", "192.0.2.20");
    await r.until("wlan0 at the server", () => r.serverPaths().length === 1);
    assert.deepEqual(r.serverPaths(), ["192.0.2.20"]);
  } finally {
    await r.stop();
  }
  await assert.rejects(hotplugRig(["wlan9"], interfaces), /interface wlan9 does not exist/);
});
