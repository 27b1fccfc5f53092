/**
 * The tunnel benchmark (`deno task bench`) as CI runs it: `--quick --json`,
 * bounded to under three minutes. The figures are printed, not asserted (CI
 * machines are noisy); the test checks that the JSON is well formed, that
 * every path that could run was measured with positive figures, and that no
 * namespace of the benchmark is left behind.
 *
 * Root only; the command-line check runs anywhere.
 */
import assert from "node:assert/strict";
import { NAMESPACE_PREFIX } from "../../bench/net.ts";
import { missingNeed } from "../../bench/peers.ts";
import { runInterruptible } from "../../lab/lab.ts";
import type { BenchResult, Row } from "../../bench/report.ts";
import type { Figures } from "../../bench/measure.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/**
 * The whole quick run takes about 2 minutes here (more on a busy machine);
 * it is interrupted (and cleans up) after this.
 */
const TIMEOUT_MS = 240_000;

function skipReason(): string | undefined {
  if (Deno.build.os !== "linux") return "network namespaces need Linux";
  if (Deno.uid() !== 0) return "the benchmark needs root (network namespaces, veth, TUN)";
  const missing = missingNeed([
    { tool: "ip", pkg: "iproute2" },
    { tool: "iperf3", pkg: "iperf3" },
    { tool: "ping", pkg: "iputils-ping" },
    { tool: "sysctl", pkg: "procps" },
  ]);
  if (missing) return missing;
  try {
    Deno.statSync("/dev/net/tun");
  } catch {
    return "/dev/net/tun is missing (no TUN support)";
  }
  return undefined;
}
const reason = skipReason();
if (reason) console.warn(`e2e bench test skipped: ${reason}`);

/** Runs `deno task bench ARGS` to its end, interrupted (SIGINT, then SIGKILL) after `timeoutMs`. */
function runBench(args: string[], timeoutMs: number) {
  return runInterruptible([Deno.execPath(), "task", "--quiet", "bench", ...args], {
    cwd: ROOT,
    timeoutMs,
  });
}

/** Names of the namespaces that look like the benchmark's. */
async function benchNamespaces(): Promise<string[]> {
  const output = await new Deno.Command("ip", {
    args: ["netns", "list"],
    stdout: "piped",
    stderr: "null",
    signal: AbortSignal.timeout(10_000),
  }).output();
  return new TextDecoder().decode(output.stdout).split("\n")
    .map((line) => line.split(" ")[0])
    .filter((name) => name.startsWith(NAMESPACE_PREFIX));
}

/** The PID in a benchmark namespace's name (`tbb<pid>-c`), whose process made it. */
function ownerPid(name: string): number {
  return Number(name.slice(NAMESPACE_PREFIX.length).split("-")[0]);
}

function processAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Removes namespaces the run left behind (and kills what runs in them), so a failure leaves no mess. */
async function removeNamespaces(names: string[]): Promise<void> {
  for (const name of names) {
    const pids = await new Deno.Command("ip", { args: ["netns", "pids", name], stderr: "null" })
      .output();
    for (const pid of new TextDecoder().decode(pids.stdout).split(/\s+/).filter(Boolean)) {
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch {
        // Ended meanwhile.
      }
    }
    await new Deno.Command("ip", { args: ["netns", "del", name], stderr: "null" }).output();
  }
}

/** Figures that are a rate, a time or a size: positive wherever measured. */
const POSITIVE: (keyof Figures)[] = [
  "tcp1Mbps",
  "tcp4Mbps",
  "udp1300Kpps",
  "udp64Kpps",
  "pingStartP50Ms",
  "pingStartP99Ms",
  "pingIdleP50Ms",
  "pingIdleP99Ms",
  "pingLoadedP50Ms",
  "pingLoadedP99Ms",
];
/** Figures that only a tunnel has (its processes' CPU and memory). */
const TUNNEL_ONLY: (keyof Figures)[] = [
  "serverCpuTcp1Pct",
  "cpuTcp1Pct",
  "cpuTcp4Pct",
  "cpuUdp1300Pct",
  "cpuUdp64Pct",
  "cpuTcp1SecPerGbit",
  "cpuTcp4SecPerGbit",
  "rssMaxMiB",
];
/** Counts and slowest seconds: zero is possible (and a stall would be reported, not failed). */
const NON_NEGATIVE: (keyof Figures)[] = [
  "tcp1WorstSecondMbps",
  "tcp4WorstSecondMbps",
  "tcp1Retransmits",
  "tcp4Retransmits",
];
const SHARES: (keyof Figures)[] = [
  "udp1300LossPct",
  "udp64LossPct",
  "pingLoadedLossPct",
  "pingAfterFloodLossPct",
];

/** The garbage-flood test's figures, for the paths that have it (one per tunnel server). */
const FLOOD_POSITIVE: (keyof Figures)[] = ["floodSentKpps", "decoySentKpps", "floodServerCpuPct"];
/** Throughput may drop to nothing under a flood: that is a finding, not a broken benchmark. */
const FLOOD_NON_NEGATIVE: (keyof Figures)[] = [
  "floodTcp1Mbps",
  "floodTcp1Ratio",
  "floodSocketDrops",
  "decoyTcp1Mbps",
];
const FLOODED = ["wireguard", "openvpn", "tuxburst1"];

function checkRow(row: Row, context: string): void {
  assert.ok(row.runs.length >= 1, `${row.label}: no run measured: ${context}`);
  assert.ok(row.median, `${row.label}: no medians: ${context}`);
  for (const figures of [...row.runs, row.median]) {
    for (const key of POSITIVE) {
      assert.ok(figures[key]! > 0, `${row.label}: ${key} = ${figures[key]}: ${context}`);
    }
    for (const key of TUNNEL_ONLY) {
      if (row.id === "plain") assert.equal(figures[key], null, `${row.label}: ${key}`);
      else assert.ok(figures[key]! > 0, `${row.label}: ${key} = ${figures[key]}: ${context}`);
    }
    for (const key of NON_NEGATIVE) {
      assert.ok(figures[key]! >= 0, `${row.label}: ${key} = ${figures[key]}: ${context}`);
    }
    for (const key of SHARES) {
      const value = figures[key]!;
      assert.ok(value >= 0 && value <= 100, `${row.label}: ${key} = ${value}: ${context}`);
    }
    for (const key of [...FLOOD_POSITIVE, ...FLOOD_NON_NEGATIVE]) {
      const value = figures[key];
      if (!FLOODED.includes(row.id)) {
        assert.equal(value, null, `${row.label}: ${key}`);
      } else if (FLOOD_POSITIVE.includes(key)) {
        assert.ok(value! > 0, `${row.label}: ${key} = ${value}: ${context}`);
      } else {
        assert.ok(value! >= 0, `${row.label}: ${key} = ${value}: ${context}`);
      }
    }
  }
}

Deno.test("bench: a wrong command line is one line and exit code 2", async () => {
  for (const args of [["--reps", "zero"], ["--only", "ipsec"], ["--colour"]]) {
    const result = await runBench(args, 30_000);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  }
});

Deno.test({
  name: "bench: --quick --json measures every path and leaves no namespace behind",
  ignore: reason !== undefined,
}, async () => {
  const before = new Set(await benchNamespaces());
  let leftover: string[] = [];
  try {
    const run = await runBench(["--quick", "--json"], TIMEOUT_MS);
    // New since the start and owned by a process that has ended: ours. A benchmark that other
    // work on this machine runs meanwhile has its own, and its process still lives.
    leftover = (await benchNamespaces()).filter((name) =>
      !before.has(name) && !processAlive(ownerPid(name))
    );
    const context = `exit ${run.code}${run.timedOut ? " (timed out)" : ""}\n` +
      `stderr:\n${run.stderr.slice(-6000)}`;
    assert.equal(run.timedOut, false, `the quick benchmark took over ${TIMEOUT_MS} ms: ${context}`);
    assert.deepEqual(leftover, [], `namespaces left behind: ${context}`);

    let result: BenchResult;
    try {
      result = JSON.parse(run.stdout);
    } catch {
      assert.fail(`--json printed no JSON object: ${run.stdout.slice(0, 2000)}\n${context}`);
    }
    console.log(result.markdown);
    assert.equal(run.code, 0, context);
    assert.equal(result.quick, true);
    assert.ok(result.repetitions >= 1 && result.seconds > 0);
    assert.match(result.prefix, new RegExp(`^${NAMESPACE_PREFIX}\\d+$`));
    assert.deepEqual(
      result.rows.map((row) => row.id),
      ["plain", "wireguard", "openvpn", "tuxburst1", "tuxburst2"],
    );
    for (const row of result.rows) {
      if (row.status === "skipped") {
        // Only a path that needs another program, and the message names its package.
        assert.ok(!["plain", "tuxburst1", "tuxburst2"].includes(row.id), row.label);
        assert.match(row.skipped ?? "", /apt-get install \S+/);
        console.warn(`bench test: ${row.label} skipped: ${row.skipped}`);
        continue;
      }
      assert.equal(row.status, "ok", `${row.label}: ${row.failures.join("\n")}\n${context}`);
      checkRow(row, context);
      if (row.id !== "plain") assert.ok(row.vsPlain?.tcp1Mbps! > 0, `${row.label}: no ratio`);
    }
    const wireguard = result.rows.find((row) => row.id === "wireguard")!;
    for (const row of result.rows.filter((row) => row.id.startsWith("tuxburst"))) {
      if (wireguard.status === "ok") assert.ok(row.vsWireguard?.tcp1Mbps! > 0, row.label);
    }
    assert.match(result.markdown, /^\| path \| TCP 1 stream/m);
    assert.match(result.markdown, /^\| tuxburst, 1 uplink \| [\d.]+ \| [\d.]+ \| [\d.]+ %/m);
  } finally {
    await removeNamespaces(leftover);
  }
});
