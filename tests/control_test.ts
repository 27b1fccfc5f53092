/**
 * The control socket over real Unix sockets in a temporary directory (no
 * root needed), socket selection, and `showStatus` once and in watch mode.
 */
import assert from "node:assert/strict";
import {
  ControlServer,
  controlSocketPath,
  NoDaemonError,
  request,
  runDir,
  selectSocket,
} from "../lib/control.ts";
import { startServer } from "../lib/app.ts";
import { parseServerConfig } from "../lib/config.ts";
import { UserError } from "../lib/errors.ts";
import { FakeNetwork, fakePlatform } from "./fakes.ts";
import type { StatusReport } from "../lib/link_stats.ts";
import { CLEAR_SCREEN, showStatus } from "../lib/status_view.ts";

const STATUS: StatusReport = {
  role: "client",
  tun: "tb0",
  pid: 42,
  uptimeSeconds: 3,
  peers: [],
  counters: { outboundPackets: 1 },
};

/** A socket file left by a process that was killed (SIGKILL leaves it; a clean close does not). */
async function staleSocket(path: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.listen({ transport: "unix", path: ${
        JSON.stringify(path)
      } }); console.log("ready"); setTimeout(() => {}, 10000);`,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read(); // "ready"
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  assert.ok((await Deno.lstat(path)).isSocket, "the killed process left its socket");
}

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-control-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("control: one JSON line in, one JSON line out; root-only modes; removed on close", async () => {
  await withDir(async (dir) => {
    const path = controlSocketPath(`${dir}/run`, "tb0");
    assert.equal(path, `${dir}/run/tb0.sock`);
    const seen: string[] = [];
    const server = await ControlServer.start(path, (req) => {
      seen.push(req.command);
      if (req.command !== "status") throw new Error(`unknown command "${req.command}"`);
      return { status: STATUS };
    });
    try {
      assert.equal((await Deno.stat(`${dir}/run`)).mode! & 0o777, 0o700);
      const info = await Deno.lstat(path);
      assert.ok(info.isSocket);
      assert.equal(info.mode! & 0o777, 0o600);

      assert.deepEqual(await request(path, { command: "status" }), { ok: true, status: STATUS });
      assert.deepEqual(await request(path, { command: "reboot" }), {
        ok: false,
        error: 'unknown command "reboot"',
      });
      assert.deepEqual(seen, ["status", "reboot"]);

      // Garbage gets an error answer, and the server keeps serving.
      const conn = await Deno.connect({ transport: "unix", path });
      await conn.write(new TextEncoder().encode("not json\n"));
      const buffer = new Uint8Array(1000);
      const n = await conn.read(buffer);
      conn.close();
      assert.equal(JSON.parse(new TextDecoder().decode(buffer.subarray(0, n!))).ok, false);
      assert.equal((await request(path, { command: "status" })).ok, true);
    } finally {
      await server.close();
    }
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
    await server.close(); // idempotent
  });
});

Deno.test("control: a silent client is dropped and does not block the next one", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/tb0.sock`;
    const server = await ControlServer.start(path, () => ({ status: STATUS }));
    try {
      const idle = await Deno.connect({ transport: "unix", path });
      assert.equal((await request(path, { command: "status" })).ok, true);
      // The server hangs up on the idle one within its request timeout.
      assert.equal(await idle.read(new Uint8Array(10)), null);
      idle.close();
    } finally {
      await server.close();
    }
  });
});

Deno.test("control: a stale socket is replaced, a live one is a second instance", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/tb0.sock`;
    await staleSocket(path);
    const first = await ControlServer.start(path, () => ({ status: STATUS }));
    try {
      assert.equal((await request(path, { command: "status" })).ok, true);
      await assert.rejects(
        ControlServer.start(path, () => ({})),
        (error: Error) =>
          error instanceof UserError &&
          /another tuxburst with tun_name "tb0" is already running/.test(error.message),
      );
      // The refused second instance must not have removed the first one's socket.
      assert.equal((await request(path, { command: "status" })).ok, true);
    } finally {
      await first.close();
    }
    await Deno.writeTextFile(path, "x");
    await assert.rejects(ControlServer.start(path, () => ({})), /is not a socket/);
  });
});

Deno.test("control: nothing listening is 'no running tuxburst found'", async () => {
  await withDir(async (dir) => {
    await assert.rejects(
      request(`${dir}/none.sock`, { command: "status" }),
      (error: Error) =>
        error instanceof NoDaemonError &&
        error.message === `no running tuxburst found (${dir}/none.sock: no such socket)`,
    );
    await staleSocket(`${dir}/stale.sock`);
    await assert.rejects(
      request(`${dir}/stale.sock`, { command: "status" }),
      (error: Error) =>
        error instanceof NoDaemonError && /no running tuxburst found/.test(error.message),
    );
  });
});

Deno.test("control: socket selection by --socket, by tun_name, or the only one there", async () => {
  await withDir(async (dir) => {
    assert.equal(await selectSocket({ dir, socket: "/x/y.sock" }), "/x/y.sock");
    assert.equal(await selectSocket({ dir, tunName: "tb7" }), `${dir}/tb7.sock`);
    await assert.rejects(
      selectSocket({ dir: `${dir}/missing` }),
      (error: Error) =>
        error instanceof NoDaemonError &&
        error.message === `no running tuxburst found (no control socket in ${dir}/missing)`,
    );
    await assert.rejects(selectSocket({ dir }), NoDaemonError);
    await Deno.writeTextFile(`${dir}/notes.txt`, "not a socket name");
    await Deno.writeTextFile(`${dir}/tb1.sock`, "");
    assert.equal(await selectSocket({ dir }), `${dir}/tb1.sock`);
    await Deno.writeTextFile(`${dir}/tb0.sock`, "");
    await assert.rejects(selectSocket({ dir }), (error: Error) => {
      assert.ok(!(error instanceof NoDaemonError));
      assert.equal(
        error.message,
        `several tuxburst tunnels are running (${dir}/tb0.sock, ${dir}/tb1.sock); pass -c config.toml or --socket PATH`,
      );
      return true;
    });
  });
});

Deno.test("control: the run directory comes from TUXBURST_RUN_DIR, else /run/tuxburst", () => {
  assert.equal(runDir(() => undefined), "/run/tuxburst");
  assert.equal(runDir(() => ""), "/run/tuxburst");
  assert.equal(runDir(() => "/tmp/x/"), "/tmp/x");
});

Deno.test("status: prints once; --watch redraws until stopped, and ends with one line when the daemon goes away", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/tb0.sock`;
    let uptime = 0;
    const server = await ControlServer.start(path, () => ({
      status: { ...STATUS, uptimeSeconds: uptime++ },
    }));
    let out = "";
    const write = (text: string) => out += text;
    try {
      assert.equal(await showStatus({ socket: path, json: true, watch: false, write }), 0);
      assert.equal(JSON.parse(out).uptimeSeconds, 0);

      out = "";
      const stop = new AbortController();
      const watching = showStatus({
        socket: path,
        json: false,
        watch: true,
        write,
        signal: stop.signal,
        intervalMs: 20,
      });
      await new Promise((resolve) => setTimeout(resolve, 150));
      stop.abort();
      assert.equal(await watching, 0);
      const frames = out.split(CLEAR_SCREEN).filter((frame) => frame !== "");
      assert.ok(frames.length >= 3, `only ${frames.length} frames`);
      assert.match(frames[0], /^tuxburst client on tb0 \(pid 42\)/);
      assert.notEqual(frames[0], frames[2], "each frame is a new answer");

      out = "";
      const watched = showStatus({ socket: path, json: false, watch: true, write, intervalMs: 20 });
      await new Promise((resolve) => setTimeout(resolve, 60));
      await server.close();
      assert.equal(await watched, 1);
      assert.ok(out.endsWith(`tuxburst at ${path} went away (it stopped)\n`), out.slice(-200));
    } finally {
      await server.close();
    }
  });
});

function serverConfig() {
  return parseServerConfig(
    `[common]\ntun_name = "tbx"\ntun_addr = "10.99.0.1/30"\n[server]\nlisten = "203.0.113.1:40000"\nkey = "${
      "5543E0FF".repeat(8)
    }"\n`,
    "server.toml",
  );
}

Deno.test("control: a started tunnel answers on <dir>/<tun_name>.sock and removes it when it stops", async () => {
  await withDir(async (dir) => {
    const platform = { ...fakePlatform(new FakeNetwork()), controlDir: `${dir}/run` };
    const running = await startServer(serverConfig(), platform);
    const path = `${dir}/run/tbx.sock`;
    try {
      const answer = await request(path, { command: "status" });
      assert.equal(answer.ok, true);
      const status = answer.status as StatusReport;
      assert.equal(status.role, "server");
      assert.equal(status.tun, platform.tun.name);
      assert.deepEqual(status.peers, [{ name: "client", address: null, session: null, links: [] }]);
      assert.equal(status.counters.duplicates, 0);
    } finally {
      running.stop();
      await running.done;
    }
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
  });
});

Deno.test("control: a start that fails after the socket was made removes it", async () => {
  await withDir(async (dir) => {
    const platform = {
      ...fakePlatform(new FakeNetwork()),
      controlDir: dir,
      openTun: () => {
        socketWhenTunOpened = Deno.lstatSync(`${dir}/tbx.sock`).isSocket === true;
        throw new UserError("cannot create TUN device tbx: busy");
      },
    };
    let socketWhenTunOpened = false;
    await assert.rejects(startServer(serverConfig(), platform), /cannot create TUN device/);
    assert.ok(socketWhenTunOpened, "the control socket comes before the TUN device");
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing left in the run directory");
  });
});
