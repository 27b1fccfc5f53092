/**
 * Server NAT without root: the nftables text, the table names, the server's
 * use of `Platform.enableNat` (on after the TUN, off at exit, undone when the
 * start fails), and the one-line error when nftables is not installed.
 * `tests/e2e/nat_test.ts` runs the rules in the kernel.
 */
import assert from "node:assert/strict";
import { enableNat } from "../ffi/nat.ts";
import { startServer } from "../lib/app.ts";
import { parseServerConfig } from "../lib/config.ts";
import { Endpoint } from "../lib/endpoint.ts";
import { UserError } from "../lib/errors.ts";
import { natInstallScript, natRuleset, natTableName, tunnelSubnet } from "../lib/nat.ts";
import { ChannelTun, FakeNetwork, fakePlatform } from "./fakes.ts";

const SPEC = { tunName: "tuxburst0", subnet: "10.99.0.0/30", uplink: "eth0" };

Deno.test("nat: the ruleset masquerades the tunnel subnet out of the uplink, in its own table", () => {
  assert.equal(
    natRuleset(SPEC),
    `table ip tuxburst_tuxburst0 {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.99.0.0/30 oifname "eth0" counter masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "tuxburst0" oifname "eth0" counter accept
    iifname "eth0" oifname "tuxburst0" ct state established,related counter accept
  }
}
`,
  );
});

Deno.test("nat: the install script replaces a stale table of the same name in one go", () => {
  const lines = natInstallScript(SPEC).split("\n");
  assert.deepEqual(lines.slice(0, 3), [
    "table ip tuxburst_tuxburst0",
    "delete table ip tuxburst_tuxburst0",
    "table ip tuxburst_tuxburst0 {",
  ]);
  assert.equal(lines.slice(2).join("\n"), natRuleset(SPEC));
});

Deno.test("nat: a trailing * is matched literally, not as nft's wildcard", () => {
  const rules = natRuleset({ ...SPEC, uplink: "we*ird*" });
  assert.match(rules, /oifname "we\*ird\\\*" counter masquerade/);
});

Deno.test("nat: table names are valid nft names and differ for different TUN devices", () => {
  assert.equal(natTableName("tuxburst0"), "tuxburst_tuxburst0");
  assert.equal(natTableName("tb.vpn-1"), "tuxburst_tb.vpn-1");
  const names = ["tun_a", "tun-a", "tun_5fa", "tün", "a b", "a@b"].map(natTableName);
  assert.equal(new Set(names).size, names.length, names.join(" "));
  for (const name of names) assert.match(name, /^tuxburst_[A-Za-z0-9_.-]+$/);
});

Deno.test("nat: the tunnel subnet is the network of the server's tunnel address", () => {
  assert.equal(tunnelSubnet("10.99.0.1", 30), "10.99.0.0/30");
  assert.equal(tunnelSubnet("10.99.0.1", 24), "10.99.0.0/24");
  assert.equal(tunnelSubnet("172.31.255.254", 12), "172.16.0.0/12");
  assert.equal(tunnelSubnet("192.168.7.9", 32), "192.168.7.9/32");
  assert.equal(tunnelSubnet("200.1.2.3", 1), "128.0.0.0/1");
});

Deno.test("nat: without nftables, one line that says what to install", async () => {
  await assert.rejects(
    enableNat(SPEC, { nftDirs: ["/nonexistent"] }),
    (error: Error) => {
      assert.ok(error instanceof UserError, String(error));
      assert.equal(
        error.message,
        "server.nat needs nftables: apt-get install nftables (or remove nat and set up NAT by hand, see README)",
      );
      return true;
    },
  );
});

const LISTEN = new Endpoint("192.0.2.1", 40000);
const KEY = "5543E0FF".repeat(8);

function serverConfig(extra: string) {
  return parseServerConfig(
    `[common]\ntun_name = "tb9"\ntun_addr = "10.99.0.1/30"\n` +
      `[server]\nlisten = "${LISTEN.key}"\nkey = "${KEY}"\n${extra}`,
    "server.toml",
  );
}

Deno.test("nat: the server turns NAT on after its TUN and off when it stops", async () => {
  const platform = fakePlatform(new FakeNetwork(), { tun: new ChannelTun("tb9") });
  const running = await startServer(serverConfig('nat = "eth0"'), platform);
  assert.deepEqual(platform.nat.enabled, [
    { tunName: "tb9", subnet: "10.99.0.0/30", uplink: "eth0" },
  ]);
  assert.deepEqual(platform.nat.disabled, []);
  running.stop();
  await running.done;
  assert.deepEqual(platform.nat.disabled, platform.nat.enabled);
  assert.ok(platform.tun.closed);
});

Deno.test("nat: without server.nat the server leaves NAT alone", async () => {
  const platform = fakePlatform(new FakeNetwork());
  const running = await startServer(serverConfig(""), platform);
  running.stop();
  await running.done;
  assert.deepEqual(platform.nat, { enabled: [], disabled: [] });
});

Deno.test("nat: when NAT cannot be set up, the start fails and releases TUN and socket", async () => {
  const network = new FakeNetwork();
  const platform = fakePlatform(network, {
    natError: new UserError("server.nat: interface eth9 does not exist"),
  });
  await assert.rejects(
    startServer(serverConfig('nat = "eth9"'), platform),
    /server\.nat: interface eth9 does not exist/,
  );
  assert.ok(platform.tun.closed, "the TUN device was left open");
  assert.ok(platform.sockets.get(LISTEN.key)?.closed, "the socket was left open");
  // The port is free again: a second server can bind it.
  const again = fakePlatform(network);
  const running = await startServer(serverConfig(""), again);
  running.stop();
  await running.done;
});
