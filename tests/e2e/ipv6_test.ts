/**
 * IPv6 end to end, in a lab with IPv6 on every link (`Lab.create({ ipv6:
 * true })`): a dual-stack server (`listen = "[::]:40000"`), a client with an
 * IPv4-only and an IPv6-only uplink and both server addresses in
 * `client.host`, and IPv6 inside the tunnel (`tun_addr6` on both sides,
 * `tun_gateway6`): `ping -6` from `cli` reaches `web`'s IPv6 address, which
 * only the server may reach. Root only.
 */
import assert from "node:assert/strict";
import {
  ADDRESSES,
  ADDRESSES6,
  Lab,
  type LabProcess,
  tuxburstCommand,
  waitUntil,
} from "../../lab/lab.ts";

const PORT = 40000;
const DEBUG = Deno.env.get("TB_E2E_DEBUG") === "1";

const availability = Lab.available(["ss"]);
const ignore = !availability.ok;
if (!availability.ok) console.warn(`e2e IPv6 tests skipped: ${availability.reason}`);

function randomKey(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function describe(processes: Array<LabProcess | undefined>): string {
  return processes.filter((p) => p).map((p) => p!.describe(40)).join("\n");
}

Deno.test({
  name:
    "ipv6: an IPv4 and an IPv6 uplink to a dual-stack server; ping -6 and ping through the tunnel, over either uplink alone",
  ignore,
}, async () => {
  await using lab = await Lab.create({ ipv6: true });
  const key = randomKey();
  let server: LabProcess | undefined;
  let client: LabProcess | undefined;
  try {
    // Link A carries only IPv4, link B only IPv6.
    await lab.exec("cli", ["ip", "-batch", "-"], {
      stdin: `route del default via ${ADDRESSES6.ispACli} dev upa\n` +
        `addr del ${ADDRESSES6.cliA}/64 dev upa\n` +
        `route del default dev upb\naddr del ${ADDRESSES.cliB}/24 dev upb\n`,
      check: true,
    });

    const serverConfig = `${lab.dir}/server.toml`;
    Deno.writeTextFileSync(
      serverConfig,
      `[common]\ntun_addr = "10.99.0.1/30"\ntun_addr6 = "fd99::1/64"\ndebug = ${DEBUG}\n` +
        `[server]\nlisten = "[::]:${PORT}"\nkey = "${key}"\n`,
    );
    server = lab.spawn("srv", tuxburstCommand("serve", "-c", serverConfig), {
      label: "tuxburst serve",
    });
    await waitUntil("tuxburst serve to bind", 15_000, async () => {
      if (!server!.running) throw new Error(`tuxburst serve exited\n${server!.describe()}`);
      return (await lab.exec("srv", ["ss", "-Hunl", `sport = :${PORT}`])).stdout.includes(
        `:${PORT}`,
      );
    });

    const clientConfig = `${lab.dir}/client.toml`;
    Deno.writeTextFileSync(
      clientConfig,
      `[common]\ntun_addr = "10.99.0.2/30"\ntun_addr6 = "fd99::2/64"\ndebug = ${DEBUG}\n` +
        `[client]\nhost = ["${ADDRESSES.srv}:${PORT}", "[${ADDRESSES6.srv}]:${PORT}"]\n` +
        `key = "${key}"\ninterfaces = ["upa", "upb"]\nkeepalive = 1\n` +
        `[client.routes]\ntun_gateway = "10.99.0.1"\ntun_gateway6 = "fd99::1"\n`,
    );
    client = lab.spawn("cli", tuxburstCommand("connect", "-c", clientConfig), {
      label: "tuxburst connect",
    });

    await waitUntil(`both paths at the server\n${describe([server, client])}`, 20_000, () => {
      if (!client!.running) throw new Error(`tuxburst connect exited\n${client!.describe()}`);
      return new RegExp(`client path ${ADDRESSES.ispA}:\\d+ learned`).test(server!.stderr) &&
        new RegExp(`client path \\[${ADDRESSES6.ispB}\\]:\\d+ learned`).test(server!.stderr);
    });
    const route6 = await lab.exec("cli", ["ip", "-6", "route", "get", ADDRESSES6.web], {
      check: true,
    });
    assert.match(route6.stdout, /dev tuxburst0/, "cli's IPv6 route to web is not the tunnel");
    assert.ok(
      await lab.waitForPing("cli", ADDRESSES6.web, 15_000),
      `no IPv6 ping reached web\n${describe([server, client])}`,
    );

    const pingBoth = async (when: string) => {
      const [v6, v4] = await Promise.all([
        lab.ping("cli", ADDRESSES6.web, { count: 10, intervalMs: 100 }),
        lab.ping("cli", ADDRESSES.web, { count: 10, intervalMs: 100 }),
      ]);
      assert.equal(v6.received, 10, `ping -6 ${when}: lost ${v6.lost}`);
      assert.equal(v4.received, 10, `ping ${when}: lost ${v4.lost}`);
    };
    await pingBoth("over both uplinks");

    // Only the IPv6 uplink: link A (IPv4) drops everything.
    await lab.blackhole("a", true);
    await pingBoth("over the IPv6 uplink alone");
    await lab.blackhole("a", false);

    // Only the IPv4 uplink.
    await lab.exec("cli", ["ip", "link", "set", "upb", "down"], { check: true });
    await pingBoth("over the IPv4 uplink alone");

    assert.ok(server.running && client.running, describe([server, client]));
  } catch (error) {
    console.error(`\n===== tuxburst output =====\n${describe([server, client])}\n=====`);
    throw error;
  }
});
