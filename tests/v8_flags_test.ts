/**
 * The V8 flags of `lib/v8_flags.ts` reach every way users run tuxburst, and
 * still do what they are there for on this Deno.
 */
import assert from "node:assert/strict";
import { V8_FLAGS, V8_FLAGS_ARGUMENT } from "../lib/v8_flags.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("v8 flags: deno task serve, connect and build pass them", async () => {
  const { tasks } = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  for (const name of ["serve", "connect"]) {
    assert.match(tasks[name], /^deno run /, name);
    assert.ok(tasks[name].split(" ").includes(V8_FLAGS_ARGUMENT), `${name}: ${tasks[name]}`);
  }
  const compiles = (tasks.build as string).split("&&").map((command) => command.trim());
  assert.equal(compiles.length, 2, tasks.build);
  for (const command of compiles) {
    assert.match(command, /^deno compile /);
    assert.ok(command.split(" ").includes(V8_FLAGS_ARGUMENT), command);
  }
});

/** How many calls, each in its own task as a tunnel's are, until V8 has optimized a small function. */
async function callsUntilOptimized(flags: readonly string[]): Promise<number> {
  // %GetOptimizationStatus bit 4: optimized code (Maglev or TurboFan) is installed.
  const program = `
    const status = new Function("f", "return %GetOptimizationStatus(f)");
    const state = { total: 0 };
    function add(x) { state.total += x * 3; return state.total; }
    let calls = 0;
    function step() {
      add(calls++);
      if ((status(add) & 16) !== 0 || calls >= 2000) console.log(calls);
      else setTimeout(step, 0);
    }
    step();`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `--v8-flags=${["--allow-natives-syntax", ...flags].join(",")}`, program],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  assert.equal(stderr, "", "V8 warned about a flag");
  return Number(new TextDecoder().decode(output.stdout).trim());
}

Deno.test("v8 flags: V8 knows them and optimizes a function after tens of calls, not hundreds", async () => {
  const withFlags = await callsUntilOptimized(V8_FLAGS);
  const withoutFlags = await callsUntilOptimized([]);
  assert.ok(withFlags <= 100, `optimized after ${withFlags} calls with the flags`);
  assert.ok(
    withoutFlags >= 4 * withFlags,
    `${withoutFlags} calls without the flags, ${withFlags} with`,
  );
});
