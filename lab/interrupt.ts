/**
 * Cleanup when a test or demo run is interrupted (Ctrl-C, SIGTERM): every
 * registered lab deletes its namespaces and kills its processes
 * synchronously, then the process exits. One listener serves every lab kind.
 *
 * @module
 */

/** A lab that can clean up without awaiting. */
export interface Interruptible {
  disposeSync(): void;
}

const live = new Set<Interruptible>();
const SIGNALS: Deno.Signal[] = ["SIGINT", "SIGTERM"];

function onInterrupt(): void {
  for (const item of live) item.disposeSync();
  Deno.exit(130);
}

/** Registers (`alive` true) or forgets a lab; signal listeners exist only while one is registered. */
export function cleanUpOnInterrupt(item: Interruptible, alive: boolean): void {
  const before = live.size;
  if (alive) live.add(item);
  else live.delete(item);
  if (before === 0 && live.size === 1) {
    for (const signal of SIGNALS) Deno.addSignalListener(signal, onInterrupt);
  } else if (before > 0 && live.size === 0) {
    for (const signal of SIGNALS) Deno.removeSignalListener(signal, onInterrupt);
  }
}
