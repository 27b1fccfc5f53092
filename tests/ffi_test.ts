/**
 * `ffi/` against the real kernel. Root only. Following `shared/LAB.md`,
 * nothing here touches the root network namespace: every test makes its own
 * namespaces (`tb-<pid>-ffi<n>-<role>`), runs `tests/fixtures/ffi_child.ts`
 * inside them with `ip netns exec`, checks the result with `ip -j`, and
 * deletes the namespaces and kills its children in `finally`.
 *
 * @module
 */
import assert from "node:assert/strict";

const FIXTURE = new URL("./fixtures/ffi_child.ts", import.meta.url).pathname;
const COMMAND_TIMEOUT_MS = 10_000;
/** Deno's start-up inside a namespace can be slow on a loaded machine. */
const MESSAGE_TIMEOUT_MS = 20_000;

function has(command: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${command}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const skipReason = Deno.uid() !== 0
  ? "needs root (network namespaces and TUN devices)"
  : !has("ip")
  ? "needs `ip` (apt-get install iproute2)"
  : undefined;
if (skipReason) console.warn(`ffi_test: skipping kernel tests: ${skipReason}`);

/** A root-only test; its name says why when it is skipped. */
function kernelTest(name: string, fn: () => Promise<void>, needs: string[] = []): void {
  const missing = needs.find((command) => !has(command));
  const reason = skipReason ?? (missing ? `needs \`${missing}\` (util-linux)` : undefined);
  Deno.test({ name: reason ? `${name} [skipped: ${reason}]` : name, ignore: !!reason, fn });
}

/** Runs `ip ARGS`, bounded; returns stdout; throws with stderr on failure. */
async function ip(...args: string[]): Promise<string> {
  const output = await new Deno.Command("ip", {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(COMMAND_TIMEOUT_MS),
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return text;
}

async function ipJson<T>(...args: string[]): Promise<T> {
  return JSON.parse((await ip("-j", ...args)) || "[]") as T;
}

interface AddrInfo {
  family: string;
  local: string;
  prefixlen: number;
}
interface Link {
  ifname: string;
  mtu: number;
  flags: string[];
  addr_info?: AddrInfo[];
}
interface Route {
  dst: string;
  gateway?: string;
  dev: string;
  metric?: number;
}

/** A fixture process inside a namespace, reporting JSON lines. */
class Child {
  readonly #process: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stderr = "";
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(namespace: string, wrapper: string[], args: string[]) {
    const process = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        namespace,
        ...wrapper,
        Deno.execPath(),
        "run",
        "-A",
        FIXTURE,
        ...args,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#process = process;
    this.#stdin = process.stdin.getWriter();
    this.#lines = lines(process.stdout);
    (async () => {
      for await (const chunk of process.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr += chunk;
      }
    })();
    this.status = process.status.finally(() => this.#exited = true);
  }

  get pid(): number {
    return this.#process.pid;
  }

  /** The next JSON message, within `timeoutMs`. */
  async next(timeoutMs = MESSAGE_TIMEOUT_MS): Promise<Record<string, unknown>> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no message in ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const line = await Promise.race([this.#lines.next(), timeout]);
      if (line.done) throw new Error("the child ended without a message");
      return JSON.parse(line.value);
    } catch (error) {
      throw new Error(`${(error as Error).message}; child stderr:\n${this.#stderr}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes stdin (the child's signal to finish) and waits, bounded. */
  async finish(): Promise<Deno.CommandStatus> {
    await this.#stdin.close().catch(() => {});
    return await this.#bounded(this.status);
  }

  /** Kills the child by its PID and waits for it to be gone, bounded. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<Deno.CommandStatus> {
    if (!this.#exited) this.#process.kill(signal);
    return await this.#bounded(this.status);
  }

  async #bounded<T>(promise: Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        promise,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("child did not exit")), COMMAND_TIMEOUT_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL by PID without waiting; never throws. */
  killNow(): void {
    try {
      if (!this.#exited) this.#process.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }

  /** For `finally`: never throws. */
  async dispose(): Promise<void> {
    await this.#stdin.close().catch(() => {});
    await this.kill().catch(() => {});
    await this.#process.stdout.cancel().catch(() => {});
  }
}

let labCount = 0;
const liveLabs = new Set<Lab>();
const INTERRUPTS: Deno.Signal[] = ["SIGINT", "SIGTERM"];

/** Ctrl-C skips `finally`, so clean up here, synchronously, and leave. */
function onInterrupt(): void {
  for (const lab of liveLabs) lab.disposeNow();
  Deno.exit(130);
}

/**
 * The namespaces and children of one test; disposing removes them all, and
 * so does SIGINT/SIGTERM of the test process while the lab exists.
 */
class Lab implements AsyncDisposable {
  readonly #prefix = `tb-${Deno.pid}-ffi${++labCount}`;
  readonly #namespaces: string[] = [];
  readonly #children: Child[] = [];

  constructor() {
    if (liveLabs.size === 0) { for (const s of INTERRUPTS) Deno.addSignalListener(s, onInterrupt); }
    liveLabs.add(this);
  }

  /** A fresh namespace with `lo` up. */
  async namespace(role: string): Promise<string> {
    const name = `${this.#prefix}-${role}`;
    await ip("netns", "add", name);
    this.#namespaces.push(name);
    await ip("-n", name, "link", "set", "lo", "up");
    return name;
  }

  /** Runs the fixture in `namespace`, optionally through `wrapper` (e.g. setpriv). */
  spawn(namespace: string, args: string[], wrapper: string[] = []): Child {
    const child = new Child(namespace, wrapper, args);
    this.#children.push(child);
    return child;
  }

  /** Runs the fixture to its end and returns its messages. */
  async run(namespace: string, args: string[], wrapper: string[] = []): Promise<Message[]> {
    const child = this.spawn(namespace, args, wrapper);
    const messages: Message[] = [];
    try {
      for (;;) messages.push(await child.next());
    } catch (error) {
      const status = await child.finish();
      if (!status.success) throw error;
    }
    return messages;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const child of this.#children) await child.dispose();
    for (const name of this.#namespaces.reverse()) {
      await ip("netns", "del", name).catch((error) => console.error(`cleanup: ${error}`));
    }
    this.#namespaces.length = 0;
    liveLabs.delete(this);
    if (liveLabs.size === 0) {
      for (const s of INTERRUPTS) {
        Deno.removeSignalListener(s, onInterrupt);
      }
    }
  }

  /** The same, without waiting for anything: for the interrupt handler. */
  disposeNow(): void {
    for (const child of this.#children) child.killNow();
    for (const name of this.#namespaces) {
      new Deno.Command("ip", { args: ["netns", "del", name], stderr: "null" }).outputSync();
    }
  }
}

type Message = Record<string, unknown>;

/** The non-empty lines of a byte stream. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (pending + chunk).split("\n");
    pending = parts.pop()!;
    for (const line of parts) if (line.trim()) yield line;
  }
  if (pending.trim()) yield pending;
}

/** Retries `check` for up to `timeoutMs` (the kernel tears devices down asynchronously). */
async function eventually(check: () => Promise<void>, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

kernelTest(
  "TUN: configured device moves packets both ways, default route has its metric, all gone after SIGKILL",
  async () => {
    await using lab = new Lab();
    const ns = await lab.namespace("tun");
    const child = lab.spawn(ns, [
      "tun",
      "tbtest0",
      "10.77.0.1",
      "24",
      "1380",
      "10.77.0.2",
      "10.77.0.9",
      "7",
    ]);
    const ready = await child.next();
    assert.equal(ready.event, "ready", JSON.stringify(ready));
    assert.equal(ready.name, "tbtest0");
    assert.equal(
      ready.outbound,
      "10.77.0.2:9",
      "a datagram the kernel routed into the TUN is read from it",
    );
    assert.equal(ready.sendResult, null);
    assert.equal(ready.written, true);
    assert.deepEqual(ready.inbound, { from: "10.77.0.2:7777", payload: `inbound-${child.pid}` });
    assert.deepEqual(ready.duplicateRoute, {
      error: "UserError",
      message: "a default route with metric 7 already exists on tbtest0; " +
        "choose another metric or remove that route",
    });

    const [link] = await ipJson<Link[]>("-n", ns, "addr", "show", "dev", "tbtest0");
    assert.equal(link.mtu, 1380);
    assert.ok(link.flags.includes("UP"), `flags: ${link.flags}`);
    const v4 = link.addr_info?.filter((a) => a.family === "inet");
    assert.deepEqual(v4?.map((a) => `${a.local}/${a.prefixlen}`), ["10.77.0.1/24"]);
    assert.deepEqual(await ipJson<Route[]>("-n", ns, "route", "show", "default"), [
      { dst: "default", gateway: "10.77.0.9", dev: "tbtest0", metric: 7, flags: [] },
    ]);

    // A second process asking for the same name is told so.
    const [busy] = await lab.run(ns, ["tun-error", "tbtest0", "10.77.0.1", "24", "1380"]);
    assert.equal(busy.error, "UserError");
    assert.match(String(busy.message), /^another process already uses TUN device tbtest0/);

    const status = await child.kill("SIGKILL");
    assert.equal(status.signal, "SIGKILL");
    await eventually(async () => {
      const links = await ipJson<Link[]>("-n", ns, "link", "show");
      assert.deepEqual(links.map((l) => l.ifname), ["lo"]);
      assert.deepEqual(await ipJson<Route[]>("-n", ns, "route", "show"), []);
    });
  },
);

kernelTest("TUN: bad name or MTU is a UserError and leaves no device behind", async () => {
  await using lab = new Lab();
  const ns = await lab.namespace("bad");
  const [tooLong] = await lab.run(ns, ["tun-error", "tuxburst-tunnel0", "10.77.0.1", "24", "1400"]);
  assert.equal(tooLong.error, "UserError");
  assert.equal(
    tooLong.message,
    'cannot create TUN device "tuxburst-tunnel0": Linux interface names are at most 15 characters',
  );
  const [badMtu] = await lab.run(ns, ["tun-error", "tbtest1", "10.77.0.1", "24", "40"]);
  assert.deepEqual([badMtu.error, badMtu.message], [
    "UserError",
    "TUN device tbtest1 does not accept MTU 40",
  ]);
  assert.equal(badMtu.index, 0, "the half-configured device is gone before the error is thrown");
  const links = await ipJson<Link[]>("-n", ns, "link", "show");
  assert.deepEqual(links.map((l) => l.ifname), ["lo"]);
});

kernelTest(
  "TUN: refused writes return false; a deleted device ends reads with a UserError",
  async () => {
    await using lab = new Lab();
    const ns = await lab.namespace("del");
    const [r] = await lab.run(ns, ["tun-deleted", "tbtest4"]);
    assert.deepEqual(r.refused, { empty: false, notIp: false, tooBig: false });
    assert.equal(r.deleted, true);
    assert.ok((r.readyAfter as number) < 1000, "poll() reports the dead device at once");
    assert.deepEqual(r.read, {
      error: "UserError",
      message: "TUN device tbtest4 was deleted while tuxburst was using it",
    });
    assert.equal(r.writeAfterDelete, false);
    assert.deepEqual([r.fd, r.readAfterClose, r.writeAfterClose], [-1, null, false]);
  },
);

kernelTest("TUN without CAP_NET_ADMIN is a PermissionError that says to use sudo", async () => {
  await using lab = new Lab();
  const ns = await lab.namespace("nocap");
  // uid 0 with an empty bounding set: exec gives it no capabilities at all.
  const setpriv = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"];
  const [result] = await lab.run(ns, ["tun-error", "tbtest2", "10.77.0.1", "24", "1400"], setpriv);
  assert.equal(result.capEff, "0000000000000000", "the capabilities were really dropped");
  assert.equal(result.error, "PermissionError");
  assert.equal(
    result.message,
    "creating TUN device tbtest2 needs root or CAP_NET_ADMIN; run tuxburst with sudo",
  );
}, ["setpriv"]);

kernelTest("TUN without /dev/net/tun says to modprobe tun", async () => {
  await using lab = new Lab();
  const ns = await lab.namespace("nodev");
  // A private mount namespace whose /dev/net is empty; the host's is untouched.
  const hide = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs tmpfs /dev/net && exec "$0" "$@"',
  ];
  const [result] = await lab.run(ns, ["tun-error", "tbtest3", "10.77.0.1", "24", "1400"], hide);
  assert.equal(result.error, "UserError");
  assert.match(String(result.message), /^\/dev\/net\/tun is missing.*"modprobe tun"$/);
}, ["unshare"]);

kernelTest(
  "UDP: sockets bound to a veth talk between namespaces, each through its own uplink",
  async () => {
    await using lab = new Lab();
    const cli = await lab.namespace("cli");
    const srv = await lab.namespace("srv");
    // Two links, like two uplinks; the server's address is on neither.
    for (const n of [1, 2]) {
      await ip(
        "-n",
        cli,
        "link",
        "add",
        `up${n}`,
        "type",
        "veth",
        "peer",
        "name",
        `dn${n}`,
        "netns",
        srv,
      );
      await ip("-n", cli, "addr", "add", `10.88.${n}.1/24`, "dev", `up${n}`);
      await ip("-n", srv, "addr", "add", `10.88.${n}.2/24`, "dev", `dn${n}`);
      await ip("-n", cli, "link", "set", `up${n}`, "up");
      await ip("-n", srv, "link", "set", `dn${n}`, "up");
      // One default route per uplink with different metrics, as NetworkManager does.
      await ip("-n", cli, "route", "add", "default", "via", `10.88.${n}.2`, "metric", `${n * 100}`);
    }
    await ip("-n", cli, "addr", "add", "fd00:88:1::1/64", "dev", "up1", "nodad");
    await ip("-n", srv, "addr", "add", "fd00:88:1::2/64", "dev", "dn1", "nodad");
    await ip("-n", srv, "addr", "add", "10.88.9.9/32", "dev", "lo");

    // A server on an address of its own, so its replies come from that address.
    const server = lab.spawn(srv, ["udp-echo", "4", "10.88.9.9:40000"]);
    assert.deepEqual(await server.next(), { event: "ready", label: "10.88.9.9:40000" });
    // One IPv6 socket on [::] serves IPv4 and IPv6 clients.
    const dualStack = lab.spawn(srv, ["udp-echo", "6", "[::]:40001"]);
    assert.deepEqual(await dualStack.next(), { event: "ready", label: "[::]:40001" });

    // up2 is the worse default route, yet the socket bound to it sends through it.
    const [viaUp2] = await lab.run(cli, ["udp-send", "4", "up2", "10.88.9.9:40000", "3"]);
    assert.deepEqual(viaUp2.sent, [null, null, null]);
    assert.deepEqual(viaUp2.payloads, ["ping 0", "ping 1", "ping 2"]);
    assert.deepEqual(viaUp2.from, ["10.88.9.9:40000"]);
    assert.equal(
      viaUp2.senderObjects,
      1,
      "one Endpoint object for repeated datagrams of one sender",
    );
    assert.equal(viaUp2.label, "up2");
    for (let i = 0; i < 3; i++) {
      const echo = await server.next();
      assert.equal(echo.sent, null);
      assert.match(String(echo.from), /^10\.88\.2\.1:\d+$/, "the datagram left through up2");
    }
    const [viaUp1] = await lab.run(cli, ["udp-send", "4", "up1", "10.88.9.9:40000", "1"]);
    assert.deepEqual(viaUp1.payloads, ["ping 0"]);
    assert.match(String((await server.next()).from), /^10\.88\.1\.1:\d+$/);

    const [v4] = await lab.run(cli, ["udp-send", "4", "up1", "10.88.1.2:40001", "1"]);
    assert.deepEqual([v4.payloads, v4.from], [["ping 0"], ["10.88.1.2:40001"]]);
    const v4Echo = await dualStack.next();
    assert.match(String(v4Echo.from), /^10\.88\.1\.1:\d+$/, "IPv4-mapped shown as plain IPv4");
    assert.equal(v4Echo.sent, null, "and answered through the IPv6 socket");
    const [v6] = await lab.run(cli, ["udp-send", "6", "up1", "[fd00:88:1::2]:40001", "2"]);
    assert.deepEqual([v6.payloads, v6.from], [["ping 0", "ping 1"], ["[fd00:88:1::2]:40001"]]);
    assert.match(String((await dualStack.next()).from), /^\[fd00:88:1::1\]:\d+$/);

    // Closing stdin ends the servers' wait through wake(), so they exit cleanly.
    assert.equal((await server.finish()).code, 0);
    assert.equal((await dualStack.finish()).code, 0);
  },
);

kernelTest(
  "UDP: a server on 0.0.0.0 or [::] answers each client from the address it wrote to",
  async () => {
    await using lab = new Lab();
    const cli = await lab.namespace("cli");
    const srv = await lab.namespace("srv");
    await ip("-n", cli, "link", "add", "up0", "type", "veth", "peer", "name", "dn0", "netns", srv);
    await ip("-n", cli, "addr", "add", "10.89.0.1/24", "dev", "up0");
    await ip("-n", cli, "addr", "add", "fd00:89::1/64", "dev", "up0", "nodad");
    // The server has three addresses of each family: the veth's primary (what
    // routing answers from), a second one on the veth, and one on lo.
    await ip("-n", srv, "addr", "add", "10.89.0.2/24", "dev", "dn0");
    await ip("-n", srv, "addr", "add", "10.89.0.3/24", "dev", "dn0");
    await ip("-n", srv, "addr", "add", "fd00:89::2/64", "dev", "dn0", "nodad");
    await ip("-n", srv, "addr", "add", "fd00:89::3/64", "dev", "dn0", "nodad");
    await ip("-n", srv, "addr", "add", "10.89.9.9/32", "dev", "lo");
    await ip("-n", srv, "addr", "add", "fd00:89:9::9/128", "dev", "lo", "nodad");
    await ip("-n", cli, "link", "set", "up0", "up");
    await ip("-n", srv, "link", "set", "dn0", "up");
    await ip("-n", cli, "route", "add", "10.89.9.9/32", "via", "10.89.0.2");
    await ip("-n", cli, "route", "add", "fd00:89:9::9/128", "via", "fd00:89::2");

    const v4Server = lab.spawn(srv, ["udp-echo", "4", "0.0.0.0:40000"]);
    assert.deepEqual(await v4Server.next(), { event: "ready", label: "0.0.0.0:40000" });
    const dualStack = lab.spawn(srv, ["udp-echo", "6", "[::]:40001"]);
    assert.deepEqual(await dualStack.next(), { event: "ready", label: "[::]:40001" });
    // Tied to its interface: the plain path, where routing picks the source.
    const deviceServer = lab.spawn(srv, ["udp-echo", "4", "0.0.0.0:40002", "dn0"]);
    assert.deepEqual(await deviceServer.next(), { event: "ready", label: "dn0" });

    /** One client socket writes to each target in turn, twice; every echo must come back from it. */
    const alternate = async (
      server: Child,
      family: 4 | 6,
      targets: string[],
      device = "",
    ): Promise<Message> => {
      const rounds = 2;
      const [result] = await lab.run(cli, [
        "udp-alternate",
        `${family}`,
        targets.join(","),
        `${rounds}`,
        device,
      ]);
      for (let i = 0; i < rounds * targets.length; i++) {
        assert.equal((await server.next()).sent, null, "the server's send succeeded");
      }
      return result;
    };
    const answeredFromTarget = (result: Message, targets: string[]) => {
      const expected = [...targets, ...targets].map((to) => ({ to, sent: null, from: to }));
      assert.deepEqual(result.replies, expected);
    };

    const v4Targets = ["10.89.9.9:40000", "10.89.0.3:40000", "10.89.0.2:40000"];
    answeredFromTarget(await alternate(v4Server, 4, v4Targets), v4Targets);
    const v6Targets = ["[fd00:89:9::9]:40001", "[fd00:89::3]:40001", "[fd00:89::2]:40001"];
    answeredFromTarget(await alternate(dualStack, 6, v6Targets), v6Targets);
    const mappedTargets = ["10.89.9.9:40001", "10.89.0.3:40001", "10.89.0.2:40001"];
    answeredFromTarget(await alternate(dualStack, 4, mappedTargets), mappedTargets);

    // A client socket tied to its uplink keeps the plain path and still hears every answer.
    const viaDevice = await alternate(v4Server, 4, v4Targets, "up0");
    assert.equal(viaDevice.label, "up0");
    answeredFromTarget(viaDevice, v4Targets);
    // So does a server tied to its interface: routing answers from the veth's primary address.
    const deviceTargets = ["10.89.9.9:40002", "10.89.0.3:40002"];
    const fromRouting = await alternate(deviceServer, 4, deviceTargets);
    assert.deepEqual(
      fromRouting.replies,
      [...deviceTargets, ...deviceTargets].map((to) => ({
        to,
        sent: null,
        from: "10.89.0.2:40002",
      })),
    );

    for (const server of [v4Server, dualStack, deviceServer]) {
      assert.equal((await server.finish()).code, 0);
    }
  },
);

kernelTest(
  "UDP: the address to answer from is kept per client and dropped when it goes away; recvmmsg fills only the caller's buffer",
  async () => {
    await using lab = new Lab();
    const ns = await lab.namespace("source");
    const results = await lab.run(ns, ["udp-source"]);
    const byWhat = Object.fromEntries(results.map(({ what, ...rest }) => [what, rest]));
    for (
      const [server, extra, plain] of [
        ["0.0.0.0:4500", "10.89.7.7:4500", "127.0.0.1:4500"],
        ["[::]:4501", "[fd00:89:7::7]:4501", "[::1]:4501"],
        ["[::]:4502", "10.89.7.8:4502", "127.0.0.1:4502"],
      ]
    ) {
      assert.deepEqual(byWhat[server], {
        sameSender: true,
        // Two clients, each answered from the address it wrote to.
        perSender: [{ sent: null, from: extra }, { sent: null, from: plain }],
        // The same with recvmmsg/sendmmsg: one source address per datagram of a batch.
        batch: { sent: { sent: 2, error: null }, from: [extra, plain] },
        // The kernel refuses the removed source; the answer still goes out.
        afterRemoval: [{ sent: null, from: plain }, { sent: null, from: plain }],
        afterReturn: { sent: null, from: extra },
      }, server);
    }
    // recvmmsg writes where the caller's buffer is, whatever its offset or size.
    const texts = [0, 1, 2, 3, 4, 5].map((i) => `datagram ${i}`);
    assert.deepEqual(
      byWhat["buffers"],
      {
        received: texts.map((text, i) =>
          i === 3
            ? { length: 0, text: "", changedOutside: false } // an empty buffer: truncated to nothing
            : { length: text.length, text, changedOutside: false }
        ),
        drained: null,
      },
    );
  },
);

kernelTest(
  "UDP: sendmmsg/recvmmsg move bursts intact and in order; a refused datagram stops only itself",
  async () => {
    await using lab = new Lab();
    const ns = await lab.namespace("batch");
    const [r] = await lab.run(ns, ["udp-batch"]);
    // 100 datagrams: one vector of 64, then the remaining 36.
    assert.deepEqual(r.calls, [{ sent: 64, error: null }, { sent: 36, error: null }]);
    assert.equal(r.received, 100);
    assert.equal(r.intact, 100, "every datagram in order, with its own length and bytes");
    assert.ok((r.bursts as number[]).every((n) => n >= 1 && n <= 64), `bursts ${r.bursts}`);
    assert.ok((r.bursts as number[]).length < 100, "recvmmsg read more than one per call");
    assert.deepEqual(r.from, ["127.0.0.1:4601"]);
    assert.equal(r.drained, 0);
    assert.deepEqual(r.wrongFamily, { sent: 1, error: "EAFNOSUPPORT" });
    // sendmmsg sends the first and reports the count; the next call names the error.
    assert.deepEqual(r.tooLarge, { sent: 1, error: null });
    assert.deepEqual(r.afterTooLarge, { sent: 0, error: "EMSGSIZE" });
  },
);

kernelTest(
  "UDP: the kernel drops datagrams that cannot be messages for this side before queueing them",
  async () => {
    await using lab = new Lab();
    const ns = await lab.namespace("filter");
    const [r] = await lab.run(ns, ["udp-filter"]);
    for (const family of ["ipv4", "ipv6"]) {
      assert.deepEqual(r[family], ["data 32", "probe 48", "init 48"], family);
    }
  },
);

kernelTest("UDP: a missing interface or a taken address is a UserError naming it", async () => {
  await using lab = new Lab();
  const ns = await lab.namespace("udp");
  const results = await lab.run(ns, ["udp-errors"]);
  const byWhat = Object.fromEntries(results.map(({ what, ...rest }) => [what, rest]));
  assert.deepEqual(byWhat["missing device"], {
    error: "UserError",
    message: "interface tbmissing0 does not exist",
  });
  assert.deepEqual(byWhat["port in use"], {
    error: "UserError",
    message: "127.0.0.1:4001 is already in use (is another tuxburst running?)",
  });
  assert.deepEqual(byWhat["foreign address"], {
    error: "UserError",
    message: "cannot listen on 192.0.2.1:4000: 192.0.2.1 is not an address here",
  });
  assert.deepEqual(byWhat["closed socket"], {
    fd: -1,
    send: "EBADF",
    receive: null,
    ipv6To4Socket: "EAFNOSUPPORT",
  });
});

kernelTest("UDP: each of several interleaved senders is one Endpoint object", async () => {
  await using lab = new Lab();
  const ns = await lab.namespace("senders");
  const [r] = await lab.run(ns, ["udp-senders"]);
  const a = "127.0.0.1:4201", b = "[::1]:4202";
  assert.deepEqual(r.from, [a, b, a, b, a, b]);
  assert.equal(r.distinctObjects, 2);
  assert.deepEqual(r.replies, [null, null, null, null, null, null]);
});

kernelTest(
  "PollReactor wakes on a readable fd, on timeout, and on wake(), and says which source is ready",
  async () => {
    await using lab = new Lab();
    const ns = await lab.namespace("poll");
    const [r] = await lab.run(ns, ["poll"]);
    const ms = (key: string) => r[key] as number;
    // Generous upper bounds: a shared, loaded machine; the point is "woken" vs "waited 5 s".
    assert.ok(ms("timeout") >= 199 && ms("timeout") < 1000, `timeout 200 ms took ${ms("timeout")}`);
    // Hot for 20 ms, then cold for the rest: 100 ms in all, not 100 after the 20.
    assert.ok(ms("hotTimeout") >= 99 && ms("hotTimeout") < 118, `hot 100 ms: ${ms("hotTimeout")}`);
    assert.ok(ms("subMillisecond") < 100, "a 0.01 ms timeout rounds up to 1 ms, not forever");
    assert.ok(
      ms("wokenByTimer") >= 45 && ms("wokenByTimer") < 1000,
      `timer: ${ms("wokenByTimer")}`,
    );
    assert.equal(r.timerFired, true, "timers run while poll() blocks");
    assert.ok(ms("wokenBySignal") < 1000, `signal listener's wake(): ${ms("wokenBySignal")}`);
    assert.ok(ms("wokenBefore") < 1000, "a wake() before wait() ends the next wait");
    assert.ok(ms("afterOneWake") >= 99, "one wake() ends one wait only");
    assert.ok(ms("readable") >= 45 && ms("readable") < 1000, `readable: ${ms("readable")}`);
    assert.equal(r.received, 1);
    assert.deepEqual(r.readyAfterData, [true, false], "ready: only the socket that has a datagram");
    assert.ok(ms("alreadyReadable") < 1000);
    assert.deepEqual(r.readyAfterWake, [false, false], "woken: no source is ready");
    assert.equal(r.notWaitedFor, true, "a source the wait did not watch may have input");
    // 500 ms of waits that return at once: turns for the event loop about every 50 ms.
    assert.ok(ms("busyWaits") > 100, `busy: ${ms("busyWaits")} waits in 500 ms`);
    assert.ok(
      ms("busyTicks") >= 4,
      `a 10 ms timer ran ${ms("busyTicks")} times in 500 ms of traffic`,
    );
    assert.ok(
      r.signalAfterMs !== null && ms("signalAfterMs") < 200,
      `signal listener ran after ${r.signalAfterMs} ms of traffic`,
    );
    assert.ok(ms("closedSourceSkipped") >= 99, "a closed source (fd -1) is not polled");
    assert.ok(ms("closedWhileWaiting") < 1000, "close() ends a running wait");
    assert.ok(ms("afterClose") < 100, "wait() after close() returns at once");
  },
);

kernelTest(
  "interfaces: index, up, addresses and default routes as the client's hotplug watch sees them",
  async () => {
    await using lab = new Lab();
    const cli = await lab.namespace("cli");
    const srv = await lab.namespace("srv");
    await ip("-n", cli, "link", "add", "upa", "type", "veth", "peer", "name", "dna", "netns", srv);
    await ip("-n", cli, "link", "add", "upb", "type", "veth", "peer", "name", "dnb", "netns", srv);
    await ip("-n", cli, "addr", "add", "10.87.1.2/24", "dev", "upa");
    await ip("-n", cli, "addr", "add", "fd00:87:2::2/64", "dev", "upb", "nodad");
    await ip("-n", srv, "link", "set", "dna", "up");
    await ip("-n", srv, "link", "set", "dnb", "up");
    await ip("-n", cli, "link", "set", "upa", "up");
    await ip("-n", cli, "link", "set", "upb", "up");
    await ip("-n", cli, "route", "add", "default", "via", "10.87.1.1", "dev", "upa");
    await ip("-n", cli, "-6", "route", "add", "default", "via", "fd00:87:2::1", "dev", "upb");

    type Info = {
      name: string;
      index: number;
      up: boolean;
      addresses: string[];
      defaultRoute: boolean;
    };
    const list = async () => {
      const [message] = await lab.run(cli, ["interfaces"]);
      return new Map((message.interfaces as Info[]).map((i) => [i.name, i]));
    };
    const indexOf = async (name: string) =>
      (await ipJson<Array<{ ifindex: number }>>("-n", cli, "link", "show", name))[0].ifindex;

    const first = await list();
    assert.deepEqual([...first.keys()].sort(), ["lo", "upa", "upb"]);
    assert.deepEqual(first.get("upa"), {
      name: "upa",
      index: await indexOf("upa"),
      up: true,
      addresses: ["10.87.1.2"],
      defaultRoute: true,
    });
    assert.equal(first.get("upb")?.defaultRoute, true, "an IPv6 default route counts");
    assert.deepEqual(first.get("upb")?.addresses, ["fd00:87:2::2"], "no link-local addresses");
    assert.equal(first.get("lo")?.defaultRoute, false);

    // Down (the default route goes with it), then deleted and made again: a new index.
    await ip("-n", cli, "link", "set", "upa", "down");
    const down = (await list()).get("upa");
    assert.deepEqual([down?.up, down?.defaultRoute], [false, false]);
    await ip("-n", cli, "link", "del", "upa");
    assert.equal((await list()).has("upa"), false);
    await ip("-n", cli, "link", "add", "upa", "type", "veth", "peer", "name", "dna", "netns", srv);
    const again = (await list()).get("upa");
    assert.ok(
      again && again.index !== first.get("upa")!.index,
      "a re-created interface has a new index",
    );
  },
);

kernelTest(
  "TUN with IPv6: its address without link-local noise, an IPv6 default route, packets both ways, gone after SIGKILL",
  async () => {
    await using lab = new Lab();
    const ns = await lab.namespace("tun6");
    const child = lab.spawn(ns, ["tun6", "tbtest6", "fd77::1", "64", "fd77::9", "7"]);
    const ready = await child.next();
    assert.equal(ready.event, "ready", JSON.stringify(ready));
    assert.equal(ready.sendResult, null);
    assert.equal(ready.outbound, "[2001:db8:77::9]:9", "an IPv6 datagram routed into the TUN");
    assert.equal(ready.written, true);
    assert.deepEqual(ready.inbound, {
      from: "[2001:db8:77::9]:7777",
      payload: `inbound6-${child.pid}`,
    });
    assert.deepEqual(ready.stray, [], "the kernel sent packets of its own into the tunnel");
    assert.deepEqual(ready.duplicateRoute, {
      error: "UserError",
      message: "an IPv6 default route with metric 7 already exists on tbtest6; " +
        "choose another metric or remove that route",
    });

    const [link] = await ipJson<Link[]>("-n", ns, "addr", "show", "dev", "tbtest6");
    const v6 = link.addr_info?.filter((a) => a.family === "inet6");
    assert.deepEqual(v6?.map((a) => `${a.local}/${a.prefixlen}`), ["fd77::1/64"], "no link-local");
    const v4 = link.addr_info?.filter((a) => a.family === "inet");
    assert.deepEqual(v4?.map((a) => `${a.local}/${a.prefixlen}`), ["10.76.0.1/24"]);
    const routes = await ipJson<Route[]>("-n", ns, "-6", "route", "show", "default");
    assert.deepEqual(
      routes.map((r) => [r.dst, r.gateway, r.dev, r.metric]),
      [["default", "fd77::9", "tbtest6", 7]],
    );

    const status = await child.kill("SIGKILL");
    assert.equal(status.signal, "SIGKILL");
    await eventually(async () => {
      const links = await ipJson<Link[]>("-n", ns, "link", "show");
      assert.deepEqual(links.map((l) => l.ifname), ["lo"]);
      assert.deepEqual(await ipJson<Route[]>("-n", ns, "-6", "route", "show", "default"), []);
    });
  },
);
