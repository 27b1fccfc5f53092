/**
 * Logging setup: structured records (logtape) written as one line each to
 * stderr, as text for people or as JSON lines for log collectors.
 *
 * @module
 */
import {
  configureSync,
  getTextFormatter,
  jsonLinesFormatter,
  type LogRecord,
  resetSync,
} from "@logtape/logtape";

export type LogFormat = "text" | "json";

/** One line per record; strings bare, objects as `key=value` pairs. */
const textFormatter = getTextFormatter({
  timestamp: "date-time-timezone",
  value: (value, inspect) => {
    if (typeof value === "string") return value;
    if (value && typeof value === "object" && !Array.isArray(value)) {
      return Object.entries(value).map(([k, v]) => `${k}=${typeof v === "string" ? v : inspect(v)}`)
        .join(" ");
    }
    return inspect(value);
  },
});

/** Sends every `tuxburst` log record to stderr; `debug` adds per-handshake and per-error detail. */
export function setupLogging(options: { debug: boolean; format?: LogFormat }): void {
  const format = options.format === "json" ? jsonLinesFormatter : textFormatter;
  const encoder = new TextEncoder();
  resetSync();
  configureSync({
    sinks: {
      stderr: (record: LogRecord) => {
        try {
          Deno.stderr.writeSync(encoder.encode(format(record)));
        } catch {
          // stderr closed (a supervisor went away): logging must not stop the tunnel.
        }
      },
    },
    loggers: [
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
      { category: ["tuxburst"], lowestLevel: options.debug ? "debug" : "info", sinks: ["stderr"] },
    ],
  });
}
