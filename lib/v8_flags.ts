/**
 * The V8 flags tuxburst runs with: `deno task serve|connect` and the
 * executable `deno task build` makes pass them, and so do the tests, the demo
 * and the benchmark (`tuxburstCommand` in `lab/lab.ts`), so that what is
 * measured is what users run. `tests/v8_flags_test.ts` keeps `deno.json` in
 * step with this list. V8 reads them only from the command line: set at run
 * time (`node:v8` `setFlagsFromString`) they change nothing.
 *
 * Why: V8 compiles a function with its optimizing compilers only after a few
 * hundred calls (Maglev) and a few thousand (TurboFan), and waits another 500
 * after each change in the types it has seen. A tunnel carrying one ping every
 * 10 ms makes a few calls per packet, so it ran unoptimized code, with every
 * FFI call on Deno's slow path, for its first ~8 s: ping p50 fell from
 * 0.9 ms to 0.55 ms over that time. With these flags it gets there in about 2 s
 * (README, "Measured results"). Everything tuxburst runs is small, so
 * compiling early costs nothing noticeable at start-up.
 *
 * @example
 * ```ts
 * const args = ["run", "--allow-all", V8_FLAGS_ARGUMENT, "main.ts", "serve"];
 * ```
 *
 * @module
 */
export const V8_FLAGS: readonly string[] = [
  "--invocation-count-for-maglev=4",
  "--invocation-count-for-turbofan=40",
  "--minimum-invocations-after-ic-update=10",
];

/** `V8_FLAGS` as the one argument `deno run` and `deno compile` take them in. */
export const V8_FLAGS_ARGUMENT = `--v8-flags=${V8_FLAGS.join(",")}`;
