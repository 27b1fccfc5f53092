import assert from "node:assert/strict";
import { parseCommand, UsageError, VERSION } from "../lib/cli.ts";
import { ControlServer } from "../lib/control.ts";
import { parseKeyHex } from "../lib/crypto.ts";
import { writeNewKey } from "../lib/keygen.ts";

Deno.test("cli: the SPEC's commands parse", () => {
  assert.deepEqual(parseCommand(["serve", "-c", "server.toml"]), {
    kind: "serve",
    config: "server.toml",
    logFormat: "text",
  });
  assert.deepEqual(parseCommand(["connect", "--config", "c.toml", "--log-format", "json"]), {
    kind: "connect",
    config: "c.toml",
    logFormat: "json",
  });
  assert.deepEqual(parseCommand(["gen-key"]), {
    kind: "gen-key",
    output: "server.key",
    force: false,
  });
  assert.deepEqual(parseCommand(["gen-key", "-o", "k", "--force"]), {
    kind: "gen-key",
    output: "k",
    force: true,
  });
  assert.deepEqual(parseCommand(["status"]), {
    kind: "status",
    config: undefined,
    socket: undefined,
    json: false,
    watch: false,
  });
  assert.deepEqual(parseCommand(["status", "-c", "c.toml", "--json", "-w"]), {
    kind: "status",
    config: "c.toml",
    socket: undefined,
    json: true,
    watch: true,
  });
  assert.deepEqual(parseCommand(["status", "--socket", "/tmp/t.sock"]), {
    kind: "status",
    config: undefined,
    socket: "/tmp/t.sock",
    json: false,
    watch: false,
  });
});

Deno.test("cli: --help on every command, and --version", () => {
  assert.match((parseCommand([]) as { text: string }).text, /tuxburst serve\s+-c server\.toml/);
  assert.match((parseCommand(["--help"]) as { text: string }).text, /gen-key/);
  for (const command of ["gen-key", "serve", "connect", "status"]) {
    const help = parseCommand([command, "--help"]);
    assert.equal(help.kind, "help");
    assert.match((help as { text: string }).text, new RegExp(`Usage: tuxburst ${command}`));
  }
  assert.deepEqual(parseCommand(["--version"]), { kind: "version", text: `tuxburst ${VERSION}\n` });
});

Deno.test("cli: wrong command lines are usage errors that say what to do", () => {
  const cases: Array<[string[], RegExp]> = [
    [["serv"], /unknown command "serv"; run "tuxburst --help"/],
    [["serve"], /serve: -c FILE is required/],
    [["connect", "-c"], /connect: .*; run "tuxburst connect --help"/],
    [["serve", "-c", "x", "--bogus"], /serve: .*bogus/],
    [["serve", "-c", "x", "extra"], /serve: /],
    [["connect", "-c", "x", "--log-format", "xml"], /--log-format must be text or json/],
    [["status", "-c", "x", "--socket", "y"], /status: give either -c FILE or --socket PATH/],
    [["status", "--bogus"], /status: .*bogus/],
  ];
  for (const [args, pattern] of cases) {
    assert.throws(
      () => parseCommand(args),
      (e: Error) => e instanceof UsageError && pattern.test(e.message),
    );
  }
});

Deno.test("gen-key: writes a 0600 key file and refuses to overwrite it without --force", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-keygen-" });
  try {
    const path = `${dir}/server.key`;
    const hex = await writeNewKey(path, false);
    assert.match(hex, /^[0-9A-F]{64}$/);
    assert.equal((await Deno.readTextFile(path)).trim(), hex);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.ok(parseKeyHex(hex) instanceof Uint8Array);

    await assert.rejects(writeNewKey(path, false), /already exists; use --force/);
    assert.equal((await Deno.readTextFile(path)).trim(), hex, "the old key is untouched");

    await Deno.chmod(path, 0o644);
    const second = await writeNewKey(path, true);
    assert.notEqual(second, hex);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    await assert.rejects(writeNewKey(`${dir}/no/such/dir/k`, false), /directory does not exist/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Runs the real CLI as a user would, bounded in time. */
async function tuxburst(args: string[], cwd?: string, env?: Record<string, string>) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN, ...args],
    cwd,
    env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

Deno.test("cli: tuxburst gen-key prints the key and writes server.key with mode 0600", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-cli-" });
  try {
    const first = await tuxburst(["gen-key"], dir);
    assert.equal(first.code, 0, first.stderr);
    const hex = first.stdout.trim();
    assert.match(hex, /^[0-9A-F]{64}$/);
    assert.equal((await Deno.readTextFile(`${dir}/server.key`)).trim(), hex);
    assert.equal((await Deno.stat(`${dir}/server.key`)).mode! & 0o777, 0o600);

    const again = await tuxburst(["gen-key"], dir);
    assert.equal(again.code, 1);
    assert.equal(again.stderr.trim().split("\n").length, 1, again.stderr);
    assert.match(again.stderr, /server\.key already exists; use --force/);
    assert.equal((await Deno.readTextFile(`${dir}/server.key`)).trim(), hex);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: --help, --version and usage errors as a user sees them", async () => {
  const help = await tuxburst(["serve", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: tuxburst serve -c server\.toml/);
  const version = await tuxburst(["--version"]);
  assert.equal(version.code, 0);
  assert.equal(version.stdout, `tuxburst ${VERSION}\n`);
  const usage = await tuxburst(["connect"]);
  assert.equal(usage.code, 2);
  assert.equal(
    usage.stderr,
    'tuxburst: connect: -c FILE is required; run "tuxburst connect --help"\n',
  );
});

Deno.test("cli: a bad config ends with one line naming file and key, exit 1, nothing created", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-cli-" });
  try {
    await Deno.writeTextFile(
      `${dir}/client.toml`,
      '[common]\ntun_addr = "10.99.0.2/30"\n[client]\nhost = "1.2.3.4:40000"\nkey = "abc"\ninterfaces = ["eth0"]\n',
    );
    const result = await tuxburst(["connect", "-c", `${dir}/client.toml`]);
    assert.equal(result.code, 1);
    assert.equal(
      result.stderr,
      `tuxburst: ${dir}/client.toml: client.key: must be 64 hex digits (256 bits), got 3; make one with "tuxburst gen-key"\n`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: tuxburst status without a running tunnel says so in one line, exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-cli-" });
  const env = { TUXBURST_RUN_DIR: `${dir}/run` };
  try {
    const none = await tuxburst(["status"], dir, env);
    assert.equal(none.code, 1);
    assert.equal(
      none.stderr,
      `tuxburst: no running tuxburst found (no control socket in ${dir}/run)\n`,
    );

    await Deno.writeTextFile(`${dir}/c.toml`, '[common]\ntun_name = "tb9"\n');
    const byConfig = await tuxburst(["status", "-c", `${dir}/c.toml`], dir, env);
    assert.equal(byConfig.code, 1);
    assert.equal(
      byConfig.stderr,
      `tuxburst: no running tuxburst found (${dir}/run/tb9.sock: no such socket)\n`,
    );
    const badConfig = await tuxburst(["status", "-c", `${dir}/missing.toml`], dir, env);
    assert.equal(badConfig.code, 1);
    assert.match(badConfig.stderr, /^tuxburst: .*missing\.toml: cannot read the config file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: tuxburst status prints the table or --json of the only tunnel running", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-cli-" });
  const env = { TUXBURST_RUN_DIR: dir };
  const status = {
    role: "server",
    tun: "tb3",
    pid: 99,
    uptimeSeconds: 61,
    peers: [{ name: "client", address: null, session: null, links: [] }],
    counters: { outboundPackets: 5 },
  };
  const control = await ControlServer.start(`${dir}/tb3.sock`, () => ({ status }));
  try {
    const table = await tuxburst(["status"], dir, env);
    assert.equal(table.code, 0, table.stderr);
    assert.match(
      table.stdout,
      /^tuxburst server on tb3 \(pid 99\), up 1m01s\npeer client: no session\n/,
    );
    const json = await tuxburst(["status", "--json", "--socket", `${dir}/tb3.sock`], dir);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), status);
  } finally {
    await control.close();
    await Deno.remove(dir, { recursive: true });
  }
});
