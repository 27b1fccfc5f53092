/**
 * What one packet's building blocks cost after an idle pause, side by side
 * in one run: `deno task bench:cold`.
 *
 * A ping through an idle tunnel finds the CPU caches cold: between two
 * packets the thread sleeps and other work (the peer, the kernel, other
 * tenants of the host) takes the cache. Each sample here sleeps 2 ms and
 * writes over 24 MiB before running the operation once, so the figures are
 * the cold costs that decide idle latency, not the warm ones of a
 * throughput loop (printed beside them). "nothing" is the baseline: the
 * cost of the timer itself.
 *
 * @module
 */
import { FFI_CIPHERS } from "../ffi/ciphers.ts";
import { randomBytes } from "../lib/crypto.ts";

const SAMPLES = 300;
const libc = Deno.dlopen("libc.so.6", {
  usleep: { parameters: ["u32"], result: "i32" },
  getppid: { parameters: [], result: "i32" },
}).symbols;
const evict = new Uint8Array(24 << 20);

/** Median and 90th percentile of one run of `operation`, cold and warm, in µs. */
function measure(operation: () => unknown): { cold: number; coldP90: number; warm: number } {
  const cold: number[] = [];
  const warm: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    libc.usleep(2000);
    for (let j = 0; j < evict.length; j += 64) evict[j]++;
    let start = performance.now();
    operation();
    cold.push((performance.now() - start) * 1000);
    start = performance.now();
    operation();
    warm.push((performance.now() - start) * 1000);
  }
  cold.sort((a, b) => a - b);
  warm.sort((a, b) => a - b);
  const at = (values: number[], fraction: number) => values[Math.floor(values.length * fraction)];
  return { cold: at(cold, 0.5), coldP90: at(cold, 0.9), warm: at(warm, 0.5) };
}

const key = randomBytes(32);
const header = randomBytes(16);
const ping = randomBytes(84);
const out = new Uint8Array(2000);
const back = new Uint8Array(2000);
const rows: [string, () => unknown][] = [["nothing (baseline)", () => {}]];
rows.push(["one FFI system call (getppid)", () => libc.getppid()]);
rows.push(["performance.now()", () => performance.now()]);
for (const { library, create } of FFI_CIPHERS) {
  const cipher = create(key);
  if (!cipher) {
    console.error(`${library}: not available here, skipped`);
    continue;
  }
  const sealed = cipher.sealSync(1, header, ping);
  rows.push([`${library}: seal an 84-byte ping`, () => cipher.sealInto(1, header, ping, out)]);
  rows.push([`${library}: open an 84-byte ping`, () => cipher.openInto(1, header, sealed, back)]);
}

const results = rows.map(([name, operation]) => ({ name, ...measure(operation) }));
const base = results[0].cold;
console.log("| operation | cold p50 (µs) | cold p90 | cold − baseline | warm p50 |");
console.log("|---|---:|---:|---:|---:|");
for (const r of results) {
  const fixed = (value: number) => value.toFixed(1);
  console.log(
    `| ${r.name} | ${fixed(r.cold)} | ${fixed(r.coldP90)} | ${fixed(r.cold - base)} | ${
      fixed(r.warm)
    } |`,
  );
}
