/**
 * Memory over a long run at full load: one tuxburst tunnel (one uplink, as
 * in `tunnel_bench.ts`) carries iperf3 traffic for `--seconds` (default
 * 300), alternating 4-stream TCP and a UDP flood of 64-byte datagrams at
 * full rate in 30-second phases, while both tunnel processes' resident size
 * (VmRSS) is sampled every 5 seconds. The verdict compares the last minute
 * with the second (the first holds the warm-up): "flat" when the resident
 * size grew by less than 5 MiB.
 *
 *     sudo deno task bench:soak [--seconds S] [--json]
 *
 * Root only; everything it starts is bounded in time and removed at the end.
 *
 * @module
 */
import { readRssMiB } from "./measure.ts";
import { parseArgs } from "node:util";
import { BenchNet, type BenchProcess } from "./net.ts";
import { PEERS } from "./peers.ts";

const SAMPLE_EVERY_MS = 5000;
const PHASE_SECONDS = 30;
const FLAT_MIB = 5;
const IPERF_PORT = 5301;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "300" },
    json: { type: "boolean", default: false },
  },
});
const seconds = Number(values.seconds);
if (!Number.isInteger(seconds) || seconds < 120 || seconds > 3600) {
  console.error("bench:soak: --seconds must be a whole number from 120 to 3600");
  Deno.exit(2);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Sample {
  atS: number;
  phase: string;
  rssMiB: (number | null)[];
}

const samples: Sample[] = [];
const phases: { phase: string; ok: boolean; detail: string }[] = [];
{
  await using net = await BenchNet.create();
  const running = await PEERS.tuxburst1.start(net, seconds + 120);
  const started = performance.now();
  let phase = "starting";
  let done = false;
  const sampler = (async () => {
    while (!done) {
      samples.push({
        atS: Math.round((performance.now() - started) / 1000),
        phase,
        rssMiB: running.pids.map((pid) => {
          const value = readRssMiB(pid);
          return value === undefined ? null : Math.round(value * 10) / 10;
        }),
      });
      if (!values.json) {
        const last = samples[samples.length - 1];
        console.error(
          `[${String(last.atS).padStart(4)} s] ${phase}: RSS ${last.rssMiB.join(" / ")} MiB`,
        );
      }
      await sleep(SAMPLE_EVERY_MS);
    }
  })();
  try {
    const server = net.spawn("server", ["iperf3", "-s", "-p", String(IPERF_PORT), "--forceflush"], {
      boundS: seconds + 60,
      label: "iperf3 server",
    });
    try {
      await server.waitForOutput(/Server listening/, 5000);
      for (let n = 0; (performance.now() - started) / 1000 < seconds - 5; n++) {
        const left = Math.floor(seconds - (performance.now() - started) / 1000);
        const length = Math.min(PHASE_SECONDS, left);
        if (length < 5) break;
        const udp = n % 2 === 1;
        phase = udp ? "UDP 64 B flood" : "TCP 4 streams";
        const args = [
          "iperf3",
          "-c",
          running.target,
          "-p",
          String(IPERF_PORT),
          "-t",
          String(length),
        ];
        args.push(...(udp ? ["-u", "-b", "0", "-l", "64"] : ["-P", "4"]));
        const client: BenchProcess = net.spawn("client", args, {
          boundS: length + 30,
          label: "iperf3 client",
        });
        const status = await client.wait((length + 25) * 1000);
        const summary = client.stdout.trim().split("\n").filter((line) => /receiver/.test(line))
          .pop() ?? client.stderr.trim().split("\n").pop() ?? "";
        phases.push({ phase, ok: status?.success === true, detail: summary.trim() });
        await client.stop(0);
      }
    } finally {
      await server.stop(1000);
    }
  } finally {
    done = true;
    await sampler;
    await running.stop();
  }
}

/** Mean RSS per process over the samples taken in [fromS, toS). */
function meanRss(fromS: number, toS: number): number[] {
  const window = samples.filter((s) => s.atS >= fromS && s.atS < toS);
  const processes = samples[0]?.rssMiB.length ?? 0;
  return Array.from({ length: processes }, (_, i) => {
    const values = window.map((s) => s.rssMiB[i]).filter((v): v is number => v !== null);
    return values.length
      ? Math.round(values.reduce((a, b) => a + b, 0) / values.length * 10) / 10
      : NaN;
  });
}

const early = meanRss(60, 120);
const late = meanRss(seconds - 60, seconds + 60);
const growth = late.map((value, i) => Math.round((value - early[i]) * 10) / 10);
const peak = Math.max(...samples.flatMap((s) => s.rssMiB.filter((v): v is number => v !== null)));
const result = {
  command: ["sudo deno task bench:soak", ...Deno.args.filter((arg) => arg !== "--json")].join(" "),
  seconds,
  processes: ["tuxburst connect", "tuxburst serve"],
  secondMinuteMeanMiB: early,
  lastMinuteMeanMiB: late,
  growthMiB: growth,
  peakMiB: peak,
  flat: growth.every((g) => g < FLAT_MIB),
  under100MiB: peak < 100,
  phases,
  samples,
};
if (values.json) {
  console.log(JSON.stringify(result, null, 2));
} else {
  console.log(
    `Soak: ${seconds} s at full load through tuxburst (1 uplink), ${phases.length} phases`,
  );
  console.log(`RSS second minute (mean): ${early.join(" / ")} MiB (client / server)`);
  console.log(`RSS last minute (mean):   ${late.join(" / ")} MiB`);
  console.log(`growth: ${growth.join(" / ")} MiB; peak ${peak} MiB`);
  console.log(
    `flat (growth < ${FLAT_MIB} MiB): ${result.flat}; under 100 MiB: ${result.under100MiB}`,
  );
  for (const p of phases) console.log(`  ${p.ok ? "ok    " : "FAILED"} ${p.phase}: ${p.detail}`);
}
Deno.exit(result.flat && result.under100MiB && phases.every((p) => p.ok) ? 0 : 1);
