/**
 * Throughput and latency of tuxburst against the plain link, in one run:
 * two network namespaces joined by two veth pairs (no impairment), iperf3 TCP
 * and ping over the plain link, then through tuxburst with one uplink and
 * with two. Root only; everything it makes is removed at the end.
 *
 *     sudo deno task bench [--seconds 5] [--json]
 *
 * Absolute numbers on a shared machine move by ±20 %; compare the ratios.
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "5" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log("Usage: sudo deno task bench [--seconds N] [--json]");
  Deno.exit(0);
}
const SECONDS = Number(values.seconds);
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const PREFIX = `tbb${Deno.pid}`;
const CLIENT = `${PREFIX}-c`;
const SERVER = `${PREFIX}-s`;
const KEY = Array.from(
  crypto.getRandomValues(new Uint8Array(32)),
  (b) => b.toString(16).padStart(2, "0"),
)
  .join("");
const children: Deno.ChildProcess[] = [];

function progress(text: string): void {
  if (!values.json) console.error(text);
}

async function run(args: string[], timeoutMs = 60_000): Promise<string> {
  const output = await new Deno.Command(args[0], {
    args: args.slice(1),
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(`${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return text;
}

const inNs = (ns: string, args: string[]) => ["ip", "netns", "exec", ns, ...args];

function spawn(ns: string, args: string[]): Deno.ChildProcess {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...args],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  children.push(child);
  return child;
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // already gone
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, 5000);
  await child.status;
  clearTimeout(timer);
  await child.stderr.cancel().catch(() => {});
}

async function setUp(): Promise<void> {
  await run(["ip", "netns", "add", CLIENT]);
  await run(["ip", "netns", "add", SERVER]);
  for (const [i, name] of ["upa", "upb"].entries()) {
    await run([
      "ip",
      "-n",
      CLIENT,
      "link",
      "add",
      name,
      "type",
      "veth",
      "peer",
      "name",
      `wan${i}`,
      "netns",
      SERVER,
    ]);
    await run(["ip", "-n", CLIENT, "addr", "add", `192.168.${70 + i}.2/24`, "dev", name]);
    await run(["ip", "-n", SERVER, "addr", "add", `192.168.${70 + i}.1/24`, "dev", `wan${i}`]);
    await run(["ip", "-n", CLIENT, "link", "set", name, "up"]);
    await run(["ip", "-n", SERVER, "link", "set", `wan${i}`, "up"]);
  }
  for (const ns of [CLIENT, SERVER]) await run(["ip", "-n", ns, "link", "set", "lo", "up"]);
}

async function tearDown(): Promise<void> {
  await Promise.all(children.map(stop));
  for (const ns of [CLIENT, SERVER]) {
    await new Deno.Command("ip", { args: ["netns", "delete", ns], stderr: "null" }).output();
  }
}

interface Result {
  path: string;
  tcpMbps: number;
  pingP50Ms: number;
  pingP99Ms: number;
}

async function measure(path: string, target: string): Promise<Result> {
  progress(`measuring ${path}: ping, then ${SECONDS} s of iperf3 TCP`);
  const server = spawn(SERVER, ["iperf3", "-s", "-1"]);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const rtts = await pingSamples(target);
  const iperf = JSON.parse(
    await run(
      inNs(CLIENT, ["iperf3", "-c", target, "-t", String(SECONDS), "-J"]),
      (SECONDS + 20) * 1000,
    ),
  );
  await stop(server);
  const sorted = rtts.sort((a, b) => a - b);
  return {
    path,
    tcpMbps: Math.round(iperf.end.sum_received.bits_per_second / 1e6),
    pingP50Ms: sorted[Math.floor(sorted.length * 0.5)],
    pingP99Ms: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))],
  };
}

async function pingSamples(target: string): Promise<number[]> {
  const text = await run(inNs(CLIENT, ["ping", "-c", "100", "-i", "0.01", "-n", target]));
  return [...text.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

async function withTuxburst(uplinks: string[], body: () => Promise<Result>): Promise<Result> {
  const dir = await Deno.makeTempDir({ prefix: "tuxburst-bench-" });
  try {
    await Deno.writeTextFile(
      `${dir}/server.toml`,
      `[common]\ntun_addr = "10.99.0.1/30"\n[server]\nlisten = "0.0.0.0:40000"\nkey = "${KEY}"\n`,
    );
    await Deno.writeTextFile(
      `${dir}/client.toml`,
      `[common]\ntun_addr = "10.99.0.2/30"\n[client]\nhost = "192.168.70.1:40000"\nkey = "${KEY}"\n` +
        `interfaces = ${JSON.stringify(uplinks)}\nkeepalive = 1\n`,
    );
    // The second uplink reaches the server's first address through a host route on it.
    if (uplinks.includes("upb")) {
      await run([
        "ip",
        "-n",
        CLIENT,
        "route",
        "replace",
        "192.168.70.1/32",
        "via",
        "192.168.71.1",
        "dev",
        "upb",
        "metric",
        "50",
      ]);
      await run(["ip", "-n", SERVER, "route", "replace", "192.168.71.0/24", "dev", "wan1"]);
    }
    const server = spawn(SERVER, [
      Deno.execPath(),
      "run",
      "-A",
      MAIN,
      "serve",
      "-c",
      `${dir}/server.toml`,
    ]);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const client = spawn(CLIENT, [
      Deno.execPath(),
      "run",
      "-A",
      MAIN,
      "connect",
      "-c",
      `${dir}/client.toml`,
    ]);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const ok = await new Deno.Command("ip", {
        args: ["netns", "exec", CLIENT, "ping", "-c", "1", "-W", "1", "10.99.0.1"],
        stdout: "null",
        stderr: "null",
      }).output();
      if (ok.success) break;
    }
    try {
      return await body();
    } finally {
      await stop(client);
      await stop(server);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (Deno.uid() !== 0) {
  console.error("bench: run as root (sudo deno task bench): it builds network namespaces");
  Deno.exit(1);
}
const results: Result[] = [];
try {
  await setUp();
  results.push(await measure("plain veth", "192.168.70.1"));
  results.push(await withTuxburst(["upa"], () => measure("tuxburst, 1 uplink", "10.99.0.1")));
  results.push(
    await withTuxburst(["upa", "upb"], () => measure("tuxburst, 2 uplinks", "10.99.0.1")),
  );
} finally {
  await tearDown();
}

if (values.json) {
  console.log(JSON.stringify({ seconds: SECONDS, results }));
} else {
  const plain = results[0];
  console.log("\n| path | TCP Mbit/s | vs plain | ping p50 ms | ping p99 ms |");
  console.log("|---|---|---|---|---|");
  for (const r of results) {
    const ratio = (r.tcpMbps / plain.tcpMbps * 100).toFixed(1);
    console.log(`| ${r.path} | ${r.tcpMbps} | ${ratio} % | ${r.pingP50Ms} | ${r.pingP99Ms} |`);
  }
}
