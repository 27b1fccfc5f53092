/**
 * The demo (`deno task demo`) as CI runs it: 20 seconds on a fixed schedule
 * in which link A stalls at 4 s and link B at 11 s, 3 s each, both dropping
 * everything, never at the same time; no random loss. The test reads
 * `--json` and checks what the demo claims for tuxburst:
 *
 * - no request lost or slower than 1 s, and no ping lost (an allowance of
 *   `PING_ALLOWANCE` pings, for a machine so loaded that a ping misses its
 *   3 s grace; zero is expected), while each link alone loses (nearly) all
 *   its pings during its stall;
 * - the tunnel's RTT p50 within a few ms of the better link's own;
 * - the bulk download never stops for a second (the stalls never overlap);
 * - the MPTCP row is there, with a subflow per link (skipped, with the
 *   package named, where `mptcpize` is missing).
 *
 * Root only; the command line checks run anywhere.
 */
import assert from "node:assert/strict";
import { Lab, runInterruptible } from "../../lab/lab.ts";
import type { PathResult } from "../../demo/measure.ts";
import type { DemoResult } from "../../demo/report.ts";

const DEMO = new URL("../../demo/main.ts", import.meta.url).pathname;
/** Pings the tunnel may lose in 400 before the test fails; zero is expected. */
const PING_ALLOWANCE = 1;
/** How much slower than the better link the tunnel's median RTT may be: crypto and two TUN hops. */
const TUNNEL_OVERHEAD_MS = 5;
const DURATION_S = 20;
const STALLS_A = "fixed:4:3:drop";
const STALLS_B = "fixed:11:3:drop";

const availability = Lab.available(["ss"]);
const ignore = !availability.ok;
if (!availability.ok) console.warn(`e2e demo test skipped: ${availability.reason}`);
const mptcp = Lab.available(["mptcpize"]);
if (availability.ok && !mptcp.ok) {
  console.warn(`demo test: the MPTCP comparison is skipped: ${mptcp.reason}`);
}

/** Runs the demo to its end, at most `timeoutMs` (then it is interrupted, and cleans up). */
function runDemo(args: string[], timeoutMs: number) {
  return runInterruptible([Deno.execPath(), "run", "-A", DEMO, ...args], { timeoutMs });
}

function path(result: DemoResult, id: PathResult["id"]): PathResult {
  const found = result.paths.find((p) => p.id === id);
  assert.ok(found, `no ${id} row in the result`);
  return found;
}

Deno.test("demo: a wrong command line is one line and exit code 2", async () => {
  for (
    const [args, mentions] of [
      [["--duration", "soon"], /--duration/],
      [["--stalls", "fixed:5"], /START:DURATION/],
      [["--stall-mode", "sometimes"], /--stall-mode/],
      [["--colour", "blue"], /colour/],
    ] as const
  ) {
    const result = await runDemo([...args], 20_000);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
    assert.match(result.stderr, mentions);
  }
  const help = await runDemo(["--help"], 20_000);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--duration/);
});

Deno.test({
  name: "demo: on a fixed schedule, tuxburst loses nothing while each link alone stalls",
  ignore,
}, async () => {
  const out = await Deno.makeTempDir({ prefix: "tuxburst-demo-test-" });
  try {
    const args = [
      "--duration",
      String(DURATION_S),
      "--json",
      "--seed",
      "1",
      "--stalls-a",
      STALLS_A,
      "--stalls-b",
      STALLS_B,
      "--stall-mode",
      "drop",
      "--loss",
      "0",
      "--out",
      out,
      ...(mptcp.ok ? [] : ["--no-mptcp"]),
    ];
    const run = await runDemo(args, (DURATION_S + 40) * 1000);
    const context = `demo ${args.join(" ")}\nexit ${run.code}${
      run.timedOut ? " (timed out)" : ""
    }\nstderr:\n${run.stderr.slice(-4000)}`;
    assert.equal(run.code, 0, context);
    const result = JSON.parse(run.stdout) as DemoResult;
    const report = `${context}\nresult:\n${JSON.stringify(result.paths, null, 1)}`;

    assert.deepEqual(result.problems, [], `tuxburst misbehaved:\n${report}`);
    // The schedule ran as given: one stall per link, no overlap.
    assert.equal(result.stalls.a.length, 1, report);
    assert.equal(result.stalls.b.length, 1, report);
    assert.equal(result.stalls.overlaps.length, 0, report);

    const a = path(result, "a");
    const b = path(result, "b");
    const tunnel = path(result, "tunnel");

    // Each link alone loses (nearly) everything during its stall: a ping sent
    // within the last one-way delay of a stall gets through after it.
    for (const single of [a, b]) {
      const own = single.ping?.inOwnStalls;
      assert.ok(own && own.sent >= 50, `${single.label}: pings during its stall: ${report}`);
      assert.ok(
        own.failed >= own.sent * 0.9,
        `${single.label} lost only ${own.failed}/${own.sent}`,
      );
      assert.ok(single.requests.slow + single.requests.lost > 0, `${single.label}: ${report}`);
    }

    // Through the tunnel: nothing lost, nothing slow.
    assert.ok(tunnel.ping && tunnel.ping.sent >= DURATION_S * 20 * 0.95, report);
    assert.ok(
      tunnel.ping.lost <= PING_ALLOWANCE,
      `the tunnel lost ${tunnel.ping.lost} pings (allowed: ${PING_ALLOWANCE}): ${report}`,
    );
    assert.equal(tunnel.requests.lost, 0, report);
    assert.equal(tunnel.requests.slow, 0, report);
    assert.ok(tunnel.requests.sent >= DURATION_S * 10 * 0.95, report);

    // The better link's round-trip time, plus little.
    const better = Math.min(a.ping!.rttMs!.p50, b.ping!.rttMs!.p50);
    assert.ok(
      tunnel.ping.rttMs!.p50 <= better + TUNNEL_OVERHEAD_MS,
      `tunnel RTT p50 ${tunnel.ping.rttMs!.p50} ms, better link ${better} ms: ${report}`,
    );

    // The bulk download never stops for long; each link alone stops for its stall.
    assert.ok(tunnel.bulk, report);
    assert.deepEqual(tunnel.bulk.errors, [], report);
    assert.ok(
      tunnel.bulk.longestStallMs < 1000,
      `tunnel bulk stalled ${tunnel.bulk.longestStallMs} ms: ${report}`,
    );
    assert.ok(a.bulk!.longestStallMs >= 2500 && b.bulk!.longestStallMs >= 2500, report);

    if (mptcp.ok) {
      const row = path(result, "mptcp");
      assert.equal(result.mptcp.ran, true);
      assert.equal(result.mptcp.subflowsPerConnection, 2, `MPTCP used one link only: ${report}`);
      assert.ok(row.requests.sent >= DURATION_S * 10 * 0.95, report);
      assert.ok(row.bulk && row.bulk.bytes > 0, report);
    } else {
      assert.match(result.mptcp.skipped ?? "", /mptcpize/);
    }

    const chart = await Deno.readTextFile(`${out}/chart.svg`);
    assert.match(chart, /^<svg /);
    assert.equal(result.chart, `${await Deno.realPath(out)}/chart.svg`);
    console.log(
      `demo: tunnel lost ${tunnel.ping.lost} pings, ${
        tunnel.requests.lost + tunnel.requests.slow
      } ` +
        `requests lost or slow, RTT p50 ${tunnel.ping.rttMs!.p50} ms (better link ${better} ms), ` +
        `bulk longest stall ${tunnel.bulk.longestStallMs} ms`,
    );
  } finally {
    await Deno.remove(out, { recursive: true }).catch(() => {});
  }
});
