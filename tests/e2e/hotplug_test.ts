/**
 * Uplinks that come and go under a running `tuxburst connect`, in the lab
 * (see `lab/lab.ts`): an uplink's veth deleted and made again while pings
 * flow, an uplink missing at start, a changed address, and
 * `interfaces = ["*"]`. Root only; everything happens in the lab's
 * namespaces.
 */
import assert from "node:assert/strict";
import { ADDRESSES, Lab, type LabProcess, tuxburstCommand, waitUntil } from "../../lab/lab.ts";

const PORT = 40000;
const WEB = ADDRESSES.web;
const DEBUG = Deno.env.get("TB_E2E_DEBUG") === "1";

function skipReason(): string | undefined {
  const availability = Lab.available(["ss"]);
  return availability.ok ? undefined : availability.reason;
}
const reason = skipReason();
const ignore = reason !== undefined;
if (reason) console.warn(`e2e hotplug tests skipped: ${reason}`);

function randomKey(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/**
 * A server and a client in one lab. Keepalive is 5 s (the default), so a
 * path the server learns within a second or two was shown to it by the
 * client's reaction to the change, not by the next keepalive.
 */
class Hotplug {
  readonly key = randomKey();
  server?: LabProcess;
  client?: LabProcess;

  constructor(readonly lab: Lab) {}

  async startServer(): Promise<void> {
    const config = `${this.lab.dir}/server.toml`;
    Deno.writeTextFileSync(
      config,
      `[common]\ntun_addr = "10.99.0.1/30"\ndebug = ${DEBUG}\n` +
        `[server]\nlisten = "0.0.0.0:${PORT}"\nkey = "${this.key}"\n`,
    );
    const server = this.lab.spawn("srv", tuxburstCommand("serve", "-c", config), {
      label: "tuxburst serve",
    });
    this.server = server;
    await waitUntil(`tuxburst serve to bind UDP ${PORT}`, 15_000, async () => {
      if (!server.running) throw new Error(`tuxburst serve exited early\n${server.describe()}`);
      const { stdout } = await this.lab.exec("srv", ["ss", "-Hunl", `sport = :${PORT}`]);
      return stdout.includes(`:${PORT}`);
    });
  }

  startClient(interfaces: string[]): LabProcess {
    const config = `${this.lab.dir}/client.toml`;
    Deno.writeTextFileSync(
      config,
      `[common]\ntun_addr = "10.99.0.2/30"\ndebug = ${DEBUG}\n` +
        `[client]\nhost = "${ADDRESSES.srv}:${PORT}"\nkey = "${this.key}"\n` +
        `interfaces = ${JSON.stringify(interfaces)}\n` +
        `[client.routes]\ntun_gateway = "10.99.0.1"\n`,
    );
    const client = this.lab.spawn(
      "cli",
      tuxburstCommand("connect", "-c", config),
      { label: "tuxburst connect" },
    );
    this.client = client;
    return client;
  }

  /** Waits until pings from cli reach web, which only the tunnel can do. */
  /** Starts the server, then a client on `interfaces`, and waits until a ping gets through. */
  async start(interfaces: string[]): Promise<LabProcess> {
    await this.startServer();
    const client = this.startClient(interfaces);
    await this.waitUp();
    return client;
  }

  async waitUp(): Promise<void> {
    if (!(await this.lab.waitForPing("cli", WEB, 20_000))) {
      throw new Error(`no ping reached web through the tunnel\n${this.describe()}`);
    }
  }

  /** Waits (bounded) until `process`'s log matches `pattern` (which may span lines); returns the match. */
  async logged(process: LabProcess, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    let match: RegExpExecArray | null = null;
    await waitUntil(
      `${pattern} in the log of ${process.label}\n${this.describe()}`,
      timeoutMs,
      () => {
        match = pattern.exec(process.stderr);
        return match !== null;
      },
    );
    return match![0];
  }

  describe(): string {
    return [this.server, this.client].filter((p) => p).map((p) => p!.describe(40)).join("\n");
  }
}

async function withHotplug(fn: (h: Hotplug, lab: Lab) => Promise<void>): Promise<void> {
  await using lab = await Lab.create();
  const h = new Hotplug(lab);
  try {
    await fn(h, lab);
  } catch (error) {
    console.error(`\n===== output of the tuxburst processes =====\n${h.describe()}\n=====`);
    throw error;
  } finally {
    for (const process of [h.client, h.server]) if (process?.running) await process.stop();
  }
}

/** The two uplinks as the lab first makes them: cli's veth, the ISP's end, and the route's metric. */
const LINKS = {
  A: { device: "upa", isp: "ispA", cli: ADDRESSES.cliA, gateway: ADDRESSES.ispACli, metric: 100 },
  B: { device: "upb", isp: "ispB", cli: ADDRESSES.cliB, gateway: ADDRESSES.ispBCli, metric: 200 },
} as const;

/** Makes a link's veth again, as the lab first made it: addresses, up, cli's default route. */
async function createLink(lab: Lab, which: keyof typeof LINKS): Promise<void> {
  const link = LINKS[which];
  await lab.exec("cli", [
    "ip",
    "link",
    "add",
    link.device,
    "type",
    "veth",
    "peer",
    "name",
    "cli",
    "netns",
    lab.nsName(link.isp),
  ], { check: true });
  await lab.exec(link.isp, ["ip", "-batch", "-"], {
    stdin: `addr add ${link.gateway}/24 dev cli\nlink set dev cli up\n`,
    check: true,
  });
  await lab.exec("cli", ["ip", "-batch", "-"], {
    stdin: `addr add ${link.cli}/24 dev ${link.device}\nlink set dev ${link.device} up\n` +
      `route add default via ${link.gateway} dev ${link.device} metric ${link.metric}\n`,
    check: true,
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

Deno.test({
  name: "hotplug: an uplink deleted and made again mid-ping: nothing lost, logged down then up",
  ignore,
}, async () => {
  await withHotplug(async (h, lab) => {
    const client = await h.start(["upa", "upb"]);
    await h.logged(client, /uplink upa is up/);
    await h.logged(client, /uplink upb is up/);
    const upBefore = client.stderr.split("\n").filter((l) => /uplink upa is up/.test(l)).length;

    // 10 Hz for 9 s; link A goes away at 1.5 s and is back at 4 s.
    const pinging = lab.ping("cli", WEB, { count: 90, intervalMs: 100, replyWaitMs: 1000 });
    await sleep(1500);
    await lab.exec("cli", ["ip", "link", "del", "upa"], { check: true });
    await h.logged(client, /uplink upa is down/, 5000);
    await sleep(1000);
    await createLink(lab, "A");
    await waitUntil(
      `upa up again in the client's log\n${h.describe()}`,
      5000,
      () => client.stderr.split("\n").filter((l) => /uplink upa is up/.test(l)).length > upBefore,
    );
    const ping = await pinging;
    assert.equal(ping.transmitted, 90);
    assert.deepEqual(ping.lost, [], `pings lost while upa was re-made: ${ping.lost.join(",")}`);
    assert.ok(client.running, "the client exited");
    assert.match(client.stderr, /uplink upa was re-created|uplink upa opened/);
  });
});

Deno.test(
  { name: "hotplug: an uplink missing at start is used once it appears", ignore },
  async () => {
    await withHotplug(async (h, lab) => {
      await lab.exec("cli", ["ip", "link", "del", "upb"], { check: true });
      const client = await h.start(["upa", "upb"]);
      await h.logged(client, /uplink upb cannot be used.*upb does not exist/);
      await h.logged(h.server!, new RegExp(`client path ${ADDRESSES.ispA}:\\d+ learned`));
      await createLink(lab, "B");
      const start = Date.now();
      await h.logged(h.server!, new RegExp(`client path ${ADDRESSES.ispB}:\\d+ learned`), 10_000);
      const took = Date.now() - start;
      await h.logged(client, /uplink upb is up/);
      // Keepalive is 5 s: this fast only because the client reacted to the new interface.
      assert.ok(took < 4000, `the server learned link B ${took} ms after it appeared`);
    });
  },
);

Deno.test({
  name: "hotplug: a changed address is shown to the server, which learns the new path",
  ignore,
}, async () => {
  await withHotplug(async (h, lab) => {
    const client = await h.start(["upa", "upb"]);
    await h.logged(h.server!, new RegExp(`client path ${ADDRESSES.ispA}:\\d+ learned`));
    const learned = () =>
      h.server!.stderr.split("\n").filter((l) => /client path .* learned/.test(l));
    const before = learned().length;
    // A new address on link A: the old one's conntrack entry at the ISP still
    // holds its port, so the NAT gives the new one another port (a new path).
    await lab.exec("cli", ["ip", "-batch", "-"], {
      stdin: `addr add 10.1.1.3/24 dev upa\n`,
      check: true,
    });
    await lab.exec("cli", ["sysctl", "-q", "-w", "net.ipv4.conf.upa.promote_secondaries=1"], {
      check: true,
    });
    const start = Date.now();
    await lab.exec("cli", ["ip", "-batch", "-"], {
      stdin: `addr del ${ADDRESSES.cliA}/24 dev upa\n` +
        `route replace default via ${ADDRESSES.ispACli} dev upa metric 100\n`,
      check: true,
    });
    await h.logged(client, /uplink upa changed: up, 10\.1\.1\.3/, 5000);
    await waitUntil(
      `a new path at the server\n${h.describe()}`,
      10_000,
      () => learned().length > before,
    );
    const took = Date.now() - start;
    assert.match(learned().at(-1)!, new RegExp(`client path ${ADDRESSES.ispA}:\\d+ learned`));
    assert.ok(took < 4000, `the server learned the new path after ${took} ms (keepalive 5 s)`);
    // And the tunnel still works over link A alone.
    await lab.exec("cli", ["ip", "link", "set", "upb", "down"], { check: true });
    const ping = await lab.ping("cli", WEB, { count: 5, intervalMs: 200 });
    assert.equal(ping.received, 5, `pings over the new address: ${ping.received}/5`);
  });
});

Deno.test({
  name: 'hotplug: interfaces = ["*"] follows default routes, never the TUN or lo',
  ignore,
}, async () => {
  await withHotplug(async (h, lab) => {
    const client = await h.start(["*"]);
    await h.logged(client, /uplink upa is up/);
    await h.logged(client, /uplink upb is up/);
    assert.doesNotMatch(client.stderr, /uplink (lo|tuxburst0)\b/);

    await lab.exec("cli", ["ip", "route", "del", "default", "dev", "upb"], { check: true });
    await h.logged(client, /uplink upb dropped: it has no default route any more/, 5000);
    const ping = await lab.ping("cli", WEB, { count: 5, intervalMs: 200 });
    assert.equal(ping.received, 5, `pings over link A alone: ${ping.received}/5`);

    await lab.exec("cli", [
      "ip",
      "route",
      "add",
      "default",
      "via",
      ADDRESSES.ispBCli,
      "dev",
      "upb",
      "metric",
      "200",
    ], { check: true });
    await h.logged(client, /uplink upb added: it matches \* and has a default route/, 5000);
    await h.logged(client, /uplink upb added[\s\S]*uplink upb is up/, 5000);
  });
});

Deno.test(
  { name: "hotplug: an uplink taken down and up again carries traffic again", ignore },
  async () => {
    await withHotplug(async (h, lab) => {
      const client = await h.start(["upa", "upb"]);
      await h.logged(client, /uplink upa is up/);
      // Down takes the default route with it, as on a real machine; up brings back only the address.
      await lab.exec("cli", ["ip", "link", "set", "upa", "down"], { check: true });
      await h.logged(client, /uplink upa changed: down/, 5000);
      await lab.exec("cli", ["ip", "-batch", "-"], {
        stdin: `link set upa up\nroute add default via ${ADDRESSES.ispACli} dev upa metric 100\n`,
        check: true,
      });
      await h.logged(client, /uplink upa changed: down[\s\S]*uplink upa changed: up/, 5000);
      // Link B dead: what still arrives came over link A.
      await lab.blackhole("b", true);
      const ping = await lab.ping("cli", WEB, { count: 10, intervalMs: 100 });
      assert.equal(ping.received, 10, `pings over upa after it came back: lost ${ping.lost}`);
    });
  },
);
