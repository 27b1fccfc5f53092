import assert from "node:assert/strict";
import { loadConfig, parseClientConfig, parseServerConfig } from "../lib/config.ts";
import { ConfigError } from "../lib/errors.ts";

const KEY = "5543E0FF".repeat(8);

/** The configs exactly as the SPEC shows them (with a full key). */
const SPEC_CLIENT = `
[common]
tun_name = "tuxburst0"
tun_addr = "10.99.0.2/30"
mtu = 1400
debug = false
[client]
host = "1.2.3.4:40000"
key = "${KEY}"
interfaces = ["wlo1", "enxf221672bb6de"]
[client.routes]
tun_gateway = "10.99.0.1"
metric = 5
`;

const SPEC_SERVER = `
[common]
tun_name = "tuxburst0"
tun_addr = "10.99.0.1/30"
mtu = 1400
debug = false
[server]
listen = "0.0.0.0:40000"
`;

const noFiles = (path: string): string => {
  throw new Deno.errors.NotFound(path);
};

function clientError(text: string): string {
  try {
    parseClientConfig(text, "client.toml", noFiles);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `not a ConfigError: ${error}`);
    assert.ok(!error.message.includes("\n"), "the message must be one line");
    return error.message;
  }
  assert.fail("no error");
}

function serverError(text: string, defaultKey?: string): string {
  try {
    parseServerConfig(text, "server.toml", defaultKey, noFiles);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `not a ConfigError: ${error}`);
    assert.ok(!error.message.includes("\n"), "the message must be one line");
    return error.message;
  }
  assert.fail("no error");
}

Deno.test("config: the SPEC's client config works as written", () => {
  const c = parseClientConfig(SPEC_CLIENT, "client.toml");
  assert.equal(c.common.tunName, "tuxburst0");
  assert.equal(c.common.tunAddress, "10.99.0.2");
  assert.equal(c.common.tunPrefixLength, 30);
  assert.equal(c.common.mtu, 1400);
  assert.equal(c.common.debug, false);
  assert.equal(c.serverHost, "1.2.3.4");
  assert.equal(c.serverPort, 40000);
  assert.equal(c.key.length, 32);
  assert.deepEqual(c.interfaces, ["wlo1", "enxf221672bb6de"]);
  assert.deepEqual(c.routes, { gateway: "10.99.0.1", metric: 5 });
  assert.equal(c.keepaliveMs, 5000);
});

Deno.test("config: the SPEC's server config works as written, key from server.key", () => {
  const s = parseServerConfig(SPEC_SERVER, "/etc/tuxburst/server.toml", `${KEY}\n`);
  assert.equal(s.listen.key, "0.0.0.0:40000");
  assert.equal(s.peers[0].key[0], 0x55);
  assert.equal(s.pathTimeoutMs, 30_000);
});

Deno.test("config: key and key_file are accepted on the server", () => {
  const inline = parseServerConfig(
    SPEC_SERVER.replace("[server]", `[server]\nkey = "${KEY}"`),
    "s.toml",
  );
  assert.equal(inline.peers[0].key[1], 0x43);
  const fromFile = parseServerConfig(
    SPEC_SERVER.replace("[server]", `[server]\nkey_file = "keys/k.hex"`),
    "/etc/tuxburst/server.toml",
    undefined,
    (path) => {
      assert.equal(path, "/etc/tuxburst/keys/k.hex");
      return `${KEY}\n`;
    },
  );
  assert.equal(fromFile.peers[0].key[1], 0x43);
});

Deno.test("config: optional keys have defaults; routes are optional", () => {
  const c = parseClientConfig(
    `[common]\ntun_addr = "10.99.0.2/30"\n[client]\nhost = "[2001:db8::1]:40000"\nkey = "${KEY}"\ninterfaces = ["eth0"]\nkeepalive = 0.5\n`,
    "c.toml",
  );
  assert.equal(c.common.tunName, "tuxburst0");
  assert.equal(c.common.mtu, 1400);
  assert.equal(c.routes, undefined);
  assert.equal(c.serverHost, "2001:db8::1");
  assert.equal(c.keepaliveMs, 500);
  const host = parseClientConfig(
    SPEC_CLIENT.replace("1.2.3.4:40000", "vpn.example.com:443"),
    "c.toml",
  );
  assert.equal(host.serverHost, "vpn.example.com");
});

Deno.test("config: every error names the file, the key and what is wrong", () => {
  const cases: Array<[string, RegExp]> = [
    [
      SPEC_CLIENT.replace("mtu = 1400", "mtu = 1400\nmtuu = 1"),
      /^client\.toml: common\.mtuu: unknown key; did you mean "mtu"\?/,
    ],
    [
      SPEC_CLIENT.replace("metric = 5", "metric = 5\ngateway = 1"),
      /client\.routes\.gateway: unknown key/,
    ],
    [SPEC_CLIENT + "\n[extra]\na = 1\n", /client\.toml: extra: unknown key/],
    [
      SPEC_CLIENT.replace("10.99.0.2/30", "10.99.0.2"),
      /common\.tun_addr: expected an IPv4 address with prefix length/,
    ],
    [SPEC_CLIENT.replace("10.99.0.2/30", "10.99.0.300/30"), /common\.tun_addr/],
    [SPEC_CLIENT.replace("10.99.0.2/30", "10.99.0.2/33"), /common\.tun_addr/],
    [
      SPEC_CLIENT.replace("mtu = 1400", "mtu = 100"),
      /common\.mtu: must be between 576 and 9000, got 100/,
    ],
    [SPEC_CLIENT.replace("mtu = 1400", "mtu = 1400.5"), /common\.mtu: must be a whole number/],
    [
      SPEC_CLIENT.replace("mtu = 1400", 'mtu = "1400"'),
      /common\.mtu: must be a number, got "1400"/,
    ],
    [SPEC_CLIENT.replace("debug = false", 'debug = "no"'), /common\.debug: must be true or false/],
    [
      SPEC_CLIENT.replace('tun_name = "tuxburst0"', 'tun_name = "a-very-long-interface-name"'),
      /common\.tun_name: .*15 characters/,
    ],
    [
      SPEC_CLIENT.replace(KEY, "abc"),
      /client\.key: must be 64 hex digits \(256 bits\), got 3; make one with "tuxburst gen-key"/,
    ],
    [SPEC_CLIENT.replace(KEY, "zz".repeat(32)), /client\.key: must be hexadecimal/],
    [SPEC_CLIENT.replace(`key = "${KEY}"`, ""), /client\.key: is required/],
    [
      SPEC_CLIENT.replace(`key = "${KEY}"`, `key = "${KEY}"\nkey_file = "k"`),
      /client\.key_file: set either key or key_file, not both/,
    ],
    [
      SPEC_CLIENT.replace(`key = "${KEY}"`, `key_file = "missing.key"`),
      /client\.key_file: cannot read missing\.key: no such file/,
    ],
    [SPEC_CLIENT.replace("1.2.3.4:40000", "1.2.3.4"), /client\.host: expected "address:port"/],
    [SPEC_CLIENT.replace("1.2.3.4:40000", "1.2.3.4:70000"), /client\.host: port must be 1-65535/],
    [
      SPEC_CLIENT.replace('["wlo1", "enxf221672bb6de"]', "[]"),
      /client\.interfaces: list at least one/,
    ],
    [
      SPEC_CLIENT.replace('["wlo1", "enxf221672bb6de"]', '"wlo1"'),
      /client\.interfaces: must be a list of strings/,
    ],
    [
      SPEC_CLIENT.replace('["wlo1", "enxf221672bb6de"]', '["wlo1", "wlo1"]'),
      /client\.interfaces: "wlo1" is listed twice/,
    ],
    [
      SPEC_CLIENT.replace('["wlo1", "enxf221672bb6de"]', '["bad name"]'),
      /client\.interfaces: "bad name"/,
    ],
    [
      SPEC_CLIENT.replace('["wlo1", "enxf221672bb6de"]', '["wl[ab]*"]'),
      /client\.interfaces: "wl\[ab\]\*": only \* and \? are supported/,
    ],
    [
      SPEC_CLIENT.replace('["wlo1", "enxf221672bb6de"]', '["e n*"]'),
      /client\.interfaces: "e n\*": a pattern cannot contain/,
    ],
    [
      SPEC_CLIENT.replace('tun_gateway = "10.99.0.1"', 'tun_gateway = "10.98.0.1"'),
      /client\.routes\.tun_gateway: 10\.98\.0\.1 must be the server's address inside tun_addr/,
    ],
    [
      SPEC_CLIENT.replace('tun_gateway = "10.99.0.1"', 'tun_gateway = "10.99.0.2"'),
      /client\.routes\.tun_gateway/,
    ],
    [
      SPEC_CLIENT.replace('tun_gateway = "10.99.0.1"', ""),
      /client\.routes\.tun_gateway: is required/,
    ],
    [SPEC_CLIENT.replace("metric = 5", "metric = -1"), /client\.routes\.metric: must be between/],
    [
      SPEC_CLIENT.replace("[client]", "[klient]"),
      /client\.toml: klient: unknown key; did you mean "client"\?/,
    ],
    [SPEC_CLIENT.replace('tun_addr = "10.99.0.2/30"', ""), /common\.tun_addr: is required/],
    [
      SPEC_CLIENT.replace("mtu = 1400", "mtu = = 1400"),
      /client\.toml: not valid TOML at line \d+, column \d+/,
    ],
    [SPEC_SERVER, /this is a server config .* use "tuxburst serve"/],
  ];
  for (const [text, pattern] of cases) assert.match(clientError(text), pattern);
  assert.match(
    clientError(`[common]\ntun_addr = "10.99.0.2/30"\n`),
    /client\.toml: \[client\]: this section is missing/,
  );
});

Deno.test("config: server errors", () => {
  assert.match(
    serverError(SPEC_SERVER),
    /server\.key: no key: set key = .* or put server\.key .* next to the config/,
  );
  assert.match(serverError(SPEC_SERVER, "nothex\n"), /^server\.key: the key must be hexadecimal/);
  assert.match(
    serverError(SPEC_SERVER.replace("0.0.0.0:40000", "0.0.0.0"), KEY),
    /server\.listen: expected "address:port"/,
  );
  assert.match(
    serverError(SPEC_SERVER.replace("0.0.0.0:40000", "localhost:40000"), KEY),
    /server\.listen: "localhost" is not an IPv4 address/,
  );
  assert.match(
    serverError(SPEC_SERVER.replace("[server]", "[server]\npath_timeout = 0"), KEY),
    /server\.path_timeout: must be between 1 and 86400/,
  );
  assert.match(
    serverError(SPEC_SERVER.replace("[server]", "[server]\ninterfaces = []"), KEY),
    /server\.interfaces: unknown key/,
  );
  assert.match(serverError(SPEC_CLIENT), /this is a client config .* use "tuxburst connect"/);
});

Deno.test("config: loadConfig reads files, finds server.key beside the config and warns about its mode", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-config-" });
  try {
    await Deno.writeTextFile(`${dir}/server.toml`, SPEC_SERVER);
    await assert.rejects(loadConfig(`${dir}/server.toml`, "server"), /no key/);
    await Deno.writeTextFile(`${dir}/server.key`, `${KEY}\n`, { mode: 0o600 });
    const s = await loadConfig(`${dir}/server.toml`, "server");
    assert.equal(s.peers[0].key[0], 0x55);

    await Deno.writeTextFile(`${dir}/client.key`, `${KEY}\n`);
    await Deno.chmod(`${dir}/client.key`, 0o644);
    await Deno.writeTextFile(
      `${dir}/client.toml`,
      SPEC_CLIENT.replace(`key = "${KEY}"`, `key_file = "client.key"`),
    );
    const c = await loadConfig(`${dir}/client.toml`, "client");
    assert.equal(c.key[0], 0x55);
    assert.match(c.warnings[0], /can be read by other users; run: chmod 600/);

    await assert.rejects(
      loadConfig(`${dir}/nope.toml`, "client"),
      (e: Error) =>
        e instanceof ConfigError &&
        /nope\.toml: cannot read the config file: no such file/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: server.nat names the uplink to masquerade out of; absent means no NAT", () => {
  assert.equal(parseServerConfig(SPEC_SERVER, "server.toml", KEY).nat, undefined);
  const s = parseServerConfig(
    SPEC_SERVER.replace("[server]", '[server]\nnat = "ens3"'),
    "server.toml",
    KEY,
  );
  assert.equal(s.nat, "ens3");
});

Deno.test("config: server.nat errors name the key", () => {
  const withNat = (value: string, tunName = "tuxburst0") =>
    SPEC_SERVER.replace("[server]", `[server]\nnat = ${value}`).replace(
      'tun_name = "tuxburst0"',
      `tun_name = ${JSON.stringify(tunName)}`,
    );
  assert.match(serverError(withNat("true"), KEY), /server\.nat: must be a string in quotes/);
  assert.match(
    serverError(withNat('""'), KEY),
    /server\.nat: "": an interface name cannot be empty/,
  );
  assert.match(
    serverError(withNat('"a-very-long-uplink0"'), KEY),
    /server\.nat: "a-very-long-uplink0": Linux interface names are at most 15 characters/,
  );
  assert.match(
    serverError(withNat('"eth0:1"'), KEY),
    /server\.nat: "eth0:1": .*cannot .*contain \//,
  );
  assert.match(
    serverError(withNat(String.raw`'e"th0'`), KEY),
    /server\.nat: "e"th0": nftables cannot match an interface name with " or \\ in it/,
  );
  assert.match(
    serverError(withNat('"tuxburst0"'), KEY),
    /server\.nat: must be the uplink to the internet, like "eth0", not the TUN device/,
  );
  assert.match(
    serverError(withNat('"eth0"', 'tb"0'), KEY),
    /common\.tun_name: "tb"0": nftables cannot match/,
  );
  // A TUN name nft cannot spell is fine as long as no rule has to match it.
  const noNat = SPEC_SERVER.replace('tun_name = "tuxburst0"', String.raw`tun_name = 'tb"0'`);
  assert.equal(parseServerConfig(noNat, "server.toml", KEY).common.tunName, 'tb"0');
  assert.match(serverError(withNat("eth0", "tb0"), KEY), /not valid TOML/);
  assert.match(
    serverError(SPEC_SERVER.replace("[server]", '[server]\nnta = "eth0"'), KEY),
    /server\.nta: unknown key; did you mean "nat"\?/,
  );
});

Deno.test("config: interfaces may be shell-style patterns beside plain names", () => {
  const c = parseClientConfig(
    SPEC_CLIENT.replace('["wlo1", "enxf221672bb6de"]', '["wl*", "enx????", "usb0"]'),
    "client.toml",
  );
  assert.deepEqual(c.interfaces, ["wl*", "enx????", "usb0"]);
  assert.deepEqual(
    parseClientConfig(SPEC_CLIENT.replace('["wlo1", "enxf221672bb6de"]', '["*"]'), "c.toml")
      .interfaces,
    ["*"],
  );
});

Deno.test("config: host may be a list of IPv4 and IPv6 addresses; the string form still works", () => {
  const c = parseClientConfig(
    SPEC_CLIENT.replace(
      '"1.2.3.4:40000"',
      '["1.2.3.4:40000", "[2001:DB8::1]:40001", "vpn.example.com:443"]',
    ),
    "c.toml",
  );
  assert.deepEqual(c.servers, [
    { host: "1.2.3.4", port: 40000 },
    { host: "2001:DB8::1", port: 40001 },
    { host: "vpn.example.com", port: 443 },
  ]);
  assert.equal(c.serverHost, "1.2.3.4");
  assert.deepEqual(parseClientConfig(SPEC_CLIENT, "c.toml").servers, [{
    host: "1.2.3.4",
    port: 40000,
  }]);
});

Deno.test("config: tun_addr6 and tun_gateway6 set up IPv6 inside the tunnel", () => {
  const c = parseClientConfig(
    SPEC_CLIENT.replace(
      'tun_addr = "10.99.0.2/30"',
      'tun_addr = "10.99.0.2/30"\ntun_addr6 = "FD99:0::2/64"',
    )
      .replace('tun_gateway = "10.99.0.1"', 'tun_gateway = "10.99.0.1"\ntun_gateway6 = "fd99::1"'),
    "c.toml",
  );
  assert.deepEqual(c.common.tunAddress6, { address: "fd99::2", prefixLength: 64 });
  assert.deepEqual(c.routes, { gateway: "10.99.0.1", gateway6: "fd99::1", metric: 5 });
  assert.equal(parseClientConfig(SPEC_CLIENT, "c.toml").common.tunAddress6, undefined);
});

Deno.test("config: IPv6 mistakes name their key", () => {
  const cases: Array<[string, RegExp]> = [
    [SPEC_CLIENT.replace('"1.2.3.4:40000"', "[]"), /client\.host: list at least one server/],
    [
      SPEC_CLIENT.replace('"1.2.3.4:40000"', '["1.2.3.4"]'),
      /client\.host: expected "address:port"/,
    ],
    [
      SPEC_CLIENT.replace('"1.2.3.4:40000"', '"[2001:zz::1]:40000"'),
      /client\.host: "2001:zz::1" is not an IPv6/,
    ],
    [SPEC_CLIENT.replace('"1.2.3.4:40000"', "[1, 2]"), /client\.host: must be a list of strings/],
    [
      SPEC_CLIENT.replace('"1.2.3.4:40000"', '["1.2.3.4:1", "1.2.3.4:1"]'),
      /client\.host: "1\.2\.3\.4:1" is listed twice/,
    ],
    [
      SPEC_CLIENT.replace(
        'tun_addr = "10.99.0.2/30"',
        'tun_addr = "10.99.0.2/30"\ntun_addr6 = "fd99::2"',
      ),
      /common\.tun_addr6: expected an IPv6 address with prefix length/,
    ],
    [
      SPEC_CLIENT.replace(
        'tun_addr = "10.99.0.2/30"',
        'tun_addr = "10.99.0.2/30"\ntun_addr6 = "fd99::2/129"',
      ),
      /common\.tun_addr6: expected/,
    ],
    [
      SPEC_CLIENT.replace(
        'tun_addr = "10.99.0.2/30"',
        'tun_addr = "10.99.0.2/30"\ntun_addr6 = "fe80::2/64"',
      ),
      /common\.tun_addr6: a link-local address/,
    ],
    [
      SPEC_CLIENT.replace(
        'tun_gateway = "10.99.0.1"',
        'tun_gateway = "10.99.0.1"\ntun_gateway6 = "fd99::1"',
      ),
      /client\.routes\.tun_gateway6: needs common\.tun_addr6/,
    ],
    [
      SPEC_CLIENT.replace(
        'tun_addr = "10.99.0.2/30"',
        'tun_addr = "10.99.0.2/30"\ntun_addr6 = "fd99::2/64"',
      )
        .replace(
          'tun_gateway = "10.99.0.1"',
          'tun_gateway = "10.99.0.1"\ntun_gateway6 = "fd98::1"',
        ),
      /client\.routes\.tun_gateway6: fd98::1 must be the server's address inside tun_addr6 fd99::2\/64/,
    ],
    [
      SPEC_CLIENT.replace(
        'tun_addr = "10.99.0.2/30"',
        'tun_addr = "10.99.0.2/30"\ntun_addr6 = "fd99::2/64"',
      )
        .replace(
          'tun_gateway = "10.99.0.1"',
          'tun_gateway = "10.99.0.1"\ntun_gateway6 = "FD99::2"',
        ),
      /client\.routes\.tun_gateway6: FD99::2 must be the server's address/,
    ],
    [
      SPEC_CLIENT.replace(
        'tun_addr = "10.99.0.2/30"',
        'tun_addr = "10.99.0.2/30"\ntun_addr6 = "fd99::2/64"',
      )
        .replace(
          'tun_gateway = "10.99.0.1"',
          'tun_gateway = "10.99.0.1"\ntun_gateway6 = "10.99.0.1"',
        ),
      /client\.routes\.tun_gateway6: "10\.99\.0\.1" is not an IPv6 address/,
    ],
  ];
  for (const [text, expected] of cases) {
    assert.throws(() => parseClientConfig(text, "client.toml"), (error: Error) => {
      assert.match(error.message, /^client\.toml: /);
      assert.match(error.message, expected);
      assert.equal(error.message.split("\n").length, 1);
      return true;
    });
  }
  const server = parseServerConfig(
    SPEC_SERVER.replace('"0.0.0.0:40000"', '"[::]:40000"').replace(
      'tun_addr = "10.99.0.1/30"',
      'tun_addr = "10.99.0.1/30"\ntun_addr6 = "fd99::1/64"',
    ),
    "s.toml",
    KEY,
  );
  assert.equal(server.listen.key, "[::]:40000");
  assert.deepEqual(server.common.tunAddress6, { address: "fd99::1", prefixLength: 64 });
});

const KEY2 = "0123ABCD".repeat(8);
const KEY3 = "89ABCDEF".repeat(8);

/** A server config with `[[server.peers]]` blocks; `common` replaces the tunnel address. */
function peersConfig(peers: string[], tunAddr = "10.99.0.1/24", server = ""): string {
  return `[common]\ntun_addr = "${tunAddr}"\n[server]\nlisten = "0.0.0.0:40000"\n${server}\n` +
    peers.map((peer) => `[[server.peers]]\n${peer}\n`).join("");
}

const LAPTOP = `name = "laptop"\nkey = "${KEY}"\ntun_addr = "10.99.0.2"`;
const PHONE = `name = "phone"\nkey = "${KEY2}"\ntun_addr = "10.99.0.3/32"\ntun_addr6 = "FD99:0::3"`;

Deno.test("config: [[server.peers]] gives each peer its name, key and tunnel addresses", () => {
  const s = parseServerConfig(
    peersConfig([
      LAPTOP,
      `name = "phone"\nkey_file = "keys/phone.key"\ntun_addr = "10.99.0.3/32"\ntun_addr6 = "FD99:0::3"`,
    ]),
    "/etc/tuxburst/server.toml",
    undefined,
    (path) => {
      assert.equal(path, "/etc/tuxburst/keys/phone.key");
      return `${KEY2}\n`;
    },
  );
  assert.deepEqual(
    s.peers.map((p) => [p.name, p.key[0], p.tunAddress, p.tunAddress6]),
    [["laptop", 0x55, "10.99.0.2", undefined], ["phone", 0x01, "10.99.0.3", "fd99::3"]],
  );
});

Deno.test("config: the one-key server config is one peer that takes every address", () => {
  const s = parseServerConfig(
    SPEC_SERVER.replace("[server]", `[server]\nkey = "${KEY}"`),
    "s.toml",
  );
  assert.equal(s.peers.length, 1);
  assert.equal(s.peers[0].name, "client");
  assert.equal(s.peers[0].tunAddress, undefined);
});

Deno.test("config: peer errors are one line naming the peer's key", () => {
  const cases: Array<[string, RegExp]> = [
    [
      peersConfig([LAPTOP], "10.99.0.1/24", `key = "${KEY3}"`),
      /^server\.toml: server\.peers: set either server\.key \/ key_file \(one client\) or \[\[server\.peers\]\]/,
    ],
    [
      peersConfig([LAPTOP], "10.99.0.1/24", `key_file = "x.key"`),
      /^server\.toml: server\.peers: set either/,
    ],
    [
      peersConfig([LAPTOP, LAPTOP.replace(KEY, KEY2).replace("0.2", "0.3")]),
      /^server\.toml: server\.peers\[2\]\.name: the same name as peer "laptop" \(server\.peers\[1\]\)/,
    ],
    [
      peersConfig([LAPTOP, PHONE.replace(KEY2, KEY.toLowerCase())]),
      /^server\.toml: server\.peers\[2\]\.key: the same key as peer "laptop" \(server\.peers\[1\]\); every peer needs its own/,
    ],
    [
      peersConfig([LAPTOP, PHONE.replace("10.99.0.3/32", "10.99.0.2")]),
      /^server\.toml: server\.peers\[2\]\.tun_addr: the same tun_addr as peer "laptop"/,
    ],
    [
      peersConfig([
        PHONE,
        PHONE.replace("phone", "tablet").replace(KEY2, KEY3).replace("0.3/32", "0.4"),
      ]),
      /^server\.toml: server\.peers\[2\]\.tun_addr6: the same tun_addr6 as peer "phone"/,
    ],
    [
      peersConfig([LAPTOP.replace("10.99.0.2", "10.98.0.2")]),
      /^server\.toml: server\.peers\[1\]\.tun_addr: 10\.98\.0\.2 is outside the tunnel subnet 10\.99\.0\.0\/24 \(common\.tun_addr\)$/,
    ],
    [
      peersConfig([LAPTOP.replace("10.99.0.2", "10.99.0.1")]),
      /server\.peers\[1\]\.tun_addr: 10\.99\.0\.1 is the server's own address/,
    ],
    [
      peersConfig([LAPTOP.replace("10.99.0.2", "10.99.0.255")]),
      /server\.peers\[1\]\.tun_addr: 10\.99\.0\.255 is the network or broadcast address/,
    ],
    [
      peersConfig([LAPTOP.replace("10.99.0.2", "10.99.0.2/24")]),
      /server\.peers\[1\]\.tun_addr: expected the client's tunnel address like "10\.99\.0\.2"/,
    ],
    [
      peersConfig([PHONE.replace("FD99:0::3", "ff02::1")]),
      /server\.peers\[1\]\.tun_addr6: expected the client's IPv6 tunnel address/,
    ],
    [
      peersConfig([`name = "laptop"\ntun_addr = "10.99.0.2"`]),
      /server\.peers\[1\]\.key: is required/,
    ],
    [
      peersConfig([`key = "${KEY}"\ntun_addr = "10.99.0.2"`]),
      /server\.peers\[1\]\.name: is required/,
    ],
    [
      peersConfig([LAPTOP.replace('"laptop"', '"my laptop"')]),
      /server\.peers\[1\]\.name: "my laptop": use 1-32 letters/,
    ],
    [peersConfig([`name = "laptop"\nkey = "${KEY}"`]), /server\.peers\[1\]\.tun_addr: is required/],
    [
      peersConfig([`${LAPTOP}\ntun_adr = "x"`]),
      /server\.peers\[1\]\.tun_adr: unknown key; did you mean "tun_addr"\?/,
    ],
    [peersConfig([LAPTOP.replace(KEY, "abc")]), /server\.peers\[1\]\.key: must be 64 hex digits/],
    [
      `[common]\ntun_addr = "10.99.0.1/24"\n[server]\nlisten = "0.0.0.0:40000"\npeers = []\n`,
      /server\.toml: server\.peers: list at least one \[\[server\.peers\]\]/,
    ],
    [
      `[common]\ntun_addr = "10.99.0.1/24"\n[server]\nlisten = "0.0.0.0:40000"\npeers = "laptop"\n`,
      /server\.toml: server\.peers: must be a list of \[\[server\.peers\]\] sections/,
    ],
  ];
  for (const [text, expected] of cases) assert.match(serverError(text), expected, text);
});

Deno.test("config: a peer's key_file with another peer's key names key_file", () => {
  const text = peersConfig([
    LAPTOP,
    `name = "phone"\nkey_file = "phone.key"\ntun_addr = "10.99.0.3"`,
  ]);
  try {
    parseServerConfig(text, "server.toml", undefined, () => KEY.toLowerCase());
    assert.fail("no error");
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    assert.match(
      error.message,
      /^server\.toml: server\.peers\[2\]\.key_file: the same key as peer "laptop"/,
    );
  }
});

Deno.test("config: with [[server.peers]], a server.key beside the config is not used", () => {
  const s = parseServerConfig(peersConfig([LAPTOP]), "server.toml", `${KEY3}\n`, noFiles);
  assert.deepEqual(s.peers.map((p) => p.name), ["laptop"]);
});
