/**
 * `deno task build` makes one executable that behaves like `deno run main.ts`.
 * `deno compile` downloads its runtime (denort) once; where that cannot be
 * reached and is not cached, the test is skipped and says why.
 */
import assert from "node:assert/strict";
import { V8_FLAGS_ARGUMENT } from "../lib/v8_flags.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DENORT = `denort-${Deno.build.arch}-unknown-linux-gnu.zip`;

async function whyNotBuildable(): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return "tuxburst builds for Linux only";
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
  })
    .output();
  const { denoDir } = JSON.parse(new TextDecoder().decode(info.stdout));
  try {
    await Deno.stat(`${denoDir}/dl/release/v${Deno.version.deno}/${DENORT}`);
    return undefined; // cached
  } catch {
    // not cached: try the network
  }
  try {
    const response = await fetch(`https://dl.deno.land/release/v${Deno.version.deno}/${DENORT}`, {
      method: "HEAD",
      signal: AbortSignal.timeout(3000),
    });
    await response.body?.cancel();
    return response.ok ? undefined : `dl.deno.land answered ${response.status} for ${DENORT}`;
  } catch {
    return `deno compile needs to download ${DENORT} from dl.deno.land, which this machine cannot reach`;
  }
}

const reason = await whyNotBuildable();
if (reason) console.log(`build_test skipped: ${reason}`);

Deno.test(
  { name: "build: the compiled tuxburst runs and answers --version", ignore: !!reason },
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "tuxburst-build-" });
    try {
      const output = `${dir}/tuxburst`;
      const compile = await new Deno.Command(Deno.execPath(), {
        args: [
          "compile",
          "--allow-all",
          V8_FLAGS_ARGUMENT,
          "--output",
          output,
          `${ROOT}/main.ts`,
        ],
        cwd: ROOT,
        stderr: "piped",
        signal: AbortSignal.timeout(180_000),
      }).output();
      assert.equal(compile.code, 0, new TextDecoder().decode(compile.stderr));
      const run = await new Deno.Command(output, { args: ["--version"], stdout: "piped" }).output();
      assert.equal(run.code, 0);
      assert.match(new TextDecoder().decode(run.stdout), /^tuxburst \d+\.\d+\.\d+/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
