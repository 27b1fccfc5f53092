/**
 * `deno task demo`: runs the lab, measures link A alone, link B alone,
 * tuxburst over both and MPTCP over both at once, and prints the report (or
 * `--json`), writing the chart. Run with `--help` for the options.
 *
 * Exit status: 0 after a run (whatever it measured), 1 when the run could
 * not be done (not root, a tool missing, the lab failed), 2 for a wrong
 * command line.
 *
 * @module
 */
import { ScheduleError, StallSchedule } from "../lib/impairment.ts";
import { renderChart } from "./chart.ts";
import { DemoUsageError, HELP, parseDemoArgs } from "./options.ts";
import { buildResult, formatReport } from "./report.ts";
import { type Progress, runDemo, whyNot } from "./run.ts";

function stderrProgress(): Progress {
  const encoder = new TextEncoder();
  const tty = Deno.stderr.isTerminal();
  let statusShown = false;
  const write = (text: string) => Deno.stderr.writeSync(encoder.encode(text));
  return {
    say(text) {
      if (statusShown) write("\r\x1b[K");
      statusShown = false;
      write(`demo: ${text}\n`);
    },
    status(text) {
      if (tty) {
        // One line that is rewritten: it must not wrap.
        const columns = Deno.consoleSize().columns;
        write(`\r\x1b[K${text.length > columns - 1 ? text.slice(0, columns - 2) + "…" : text}`);
        statusShown = text !== "";
      } else if (text) write(`${text}\n`);
    },
  };
}

async function main(args: string[]): Promise<number> {
  let options;
  try {
    options = parseDemoArgs(args);
    for (const link of ["a", "b"] as const) {
      StallSchedule.parse(options.stalls[link], options.seed);
    }
  } catch (error) {
    if (!(error instanceof DemoUsageError || error instanceof ScheduleError)) throw error;
    console.error(`demo: ${error.message} (see --help)`);
    return 2;
  }
  if (options.help) {
    console.log(HELP);
    return 0;
  }
  const why = whyNot();
  if (why) {
    console.error(`demo: cannot run: ${why}`);
    return 1;
  }
  const outDir = options.outDir ?? await Deno.makeTempDir({ prefix: "tuxburst-demo-" });
  await Deno.mkdir(outDir, { recursive: true });
  const progress = stderrProgress();
  // The lab removes itself on these signals, then exits; this only says so.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => progress.say(`${signal}: stopping, removing the lab`));
  }
  let samples;
  try {
    samples = await runDemo(options, progress);
  } catch (error) {
    console.error(`demo: the run failed: ${error instanceof Error ? error.message : error}`);
    return 1;
  }
  const chart = `${await Deno.realPath(outDir)}/chart.svg`;
  const result = buildResult(options, samples, chart);
  await Deno.writeTextFile(chart, renderChart(result, samples));
  await Deno.writeTextFile(`${outDir}/result.json`, JSON.stringify(result, null, 2) + "\n");
  // Every probe and bulk sample, for a closer look than the table gives.
  await Deno.writeTextFile(`${outDir}/samples.json`, JSON.stringify(samples) + "\n");
  progress.say(`chart: ${chart}`);
  console.log(options.json ? JSON.stringify(result) : formatReport(result));
  return 0;
}

Deno.exit(await main(Deno.args));
