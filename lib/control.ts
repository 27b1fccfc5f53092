/**
 * The control socket: a root-only Unix socket per running tunnel
 * (`/run/tuxburst/<tun_name>.sock`) that answers `tuxburst status`. Protocol:
 * the client sends one JSON line (`{"command":"status"}`), the daemon answers
 * one JSON line (`{"ok":true,"status":{…}}` or `{"ok":false,"error":"…"}`) and
 * closes. It runs on Deno's event loop beside the tunnel, which waits in a
 * non-blocking poll.
 *
 * @module
 */
import { UserError } from "./errors.ts";

/** Where control sockets live unless `TUXBURST_RUN_DIR` says otherwise. */
export const DEFAULT_RUN_DIR = "/run/tuxburst";
/** A request or answer longer than this is not ours. */
const MAX_MESSAGE_BYTES = 1 << 20;
/** A peer that sends no full request within this is dropped (a stuck client must not pile up). */
const REQUEST_TIMEOUT_MS = 2000;

/** The directory of control sockets: `$TUXBURST_RUN_DIR`, else `/run/tuxburst`. */
export function runDir(env: (name: string) => string | undefined = Deno.env.get): string {
  const dir = env("TUXBURST_RUN_DIR");
  return dir ? dir.replace(/\/+$/, "") || "/" : DEFAULT_RUN_DIR;
}

/** The control socket of the tunnel whose TUN device is `tunName`. */
export function controlSocketPath(dir: string, tunName: string): string {
  return `${dir}/${tunName}.sock`;
}

/** No daemon answers: `tuxburst status` prints this one line and exits 1. */
export class NoDaemonError extends UserError {
  override name = "NoDaemonError";
}

/** What one request asks for. */
export interface ControlRequest {
  command: string;
}

/** Computes the answer to one request; throwing answers `{ ok: false }`. */
export type ControlHandler = (request: ControlRequest) => unknown;

/**
 * A listening control socket. `start` refuses to run beside a live one of
 * the same name (a second tunnel with the same `tun_name`) and replaces a
 * stale one (a process that was killed).
 *
 * @example
 * ```ts
 * const control = await ControlServer.start("/run/tuxburst/tuxburst0.sock", () => ({ up: true }));
 * // … later
 * await control.close();
 * ```
 */
export class ControlServer {
  readonly #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  readonly #accepting: Promise<void>;
  readonly #connections = new Set<Deno.UnixConn>();
  #closed = false;

  private constructor(
    readonly path: string,
    listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>,
    handler: ControlHandler,
  ) {
    this.#listener = listener;
    this.#accepting = this.#accept(handler);
  }

  static async start(path: string, handler: ControlHandler): Promise<ControlServer> {
    const dir = path.slice(0, Math.max(1, path.lastIndexOf("/")));
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      // Whoever can connect can read the tunnel's state: root only, even if the directory existed.
      await Deno.chmod(dir, 0o700);
    } catch (error) {
      throw new UserError(`cannot create ${dir} for the control socket: ${describe(error)}`);
    }
    await removeStale(path);
    let listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
    try {
      listener = Deno.listen({ transport: "unix", path });
      await Deno.chmod(path, 0o600);
    } catch (error) {
      throw new UserError(`cannot open the control socket ${path}: ${describe(error)}`);
    }
    return new ControlServer(path, listener, handler);
  }

  /** Stops answering and removes the socket file. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener.close();
    for (const conn of this.#connections) closeQuietly(conn);
    await this.#accepting;
    await Deno.remove(this.path).catch(() => {});
  }

  async #accept(handler: ControlHandler): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // closed
      }
      this.#connections.add(conn);
      this.#serve(conn, handler).finally(() => {
        this.#connections.delete(conn);
        closeQuietly(conn);
      });
    }
  }

  async #serve(conn: Deno.UnixConn, handler: ControlHandler): Promise<void> {
    const timer = setTimeout(() => closeQuietly(conn), REQUEST_TIMEOUT_MS);
    try {
      const line = await readLine(conn);
      let answer: unknown;
      try {
        const request = JSON.parse(line ?? "");
        if (
          typeof request !== "object" || request === null || typeof request.command !== "string"
        ) {
          throw new Error('expected {"command": "status"}');
        }
        answer = { ok: true, ...(handler(request) as object) };
      } catch (error) {
        answer = { ok: false, error: error instanceof Error ? error.message : String(error) };
      }
      await writeAll(conn, new TextEncoder().encode(JSON.stringify(answer) + "\n"));
    } catch {
      // The client went away or was too slow: nothing to answer.
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Sends `request` to the control socket at `path` and returns the parsed
 * answer. Throws `NoDaemonError` when nothing answers there.
 */
export async function request(
  path: string,
  message: ControlRequest,
  timeoutMs = 3000,
): Promise<Record<string, unknown>> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (error) {
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new UserError(`cannot open ${path}: permission denied (the control socket is root's)`);
    }
    const why = error instanceof Deno.errors.NotFound ? "no such socket" : describe(error);
    throw new NoDaemonError(`no running tuxburst found (${path}: ${why})`);
  }
  const timer = setTimeout(() => closeQuietly(conn), timeoutMs);
  try {
    await writeAll(conn, new TextEncoder().encode(JSON.stringify(message) + "\n"));
    const line = await readLine(conn).catch(() => undefined);
    if (line === undefined) {
      throw new NoDaemonError(`no running tuxburst found (${path} did not answer)`);
    }
    const answer = JSON.parse(line);
    if (typeof answer !== "object" || answer === null) throw new Error("not an object");
    return answer;
  } catch (error) {
    if (error instanceof UserError) throw error;
    throw new UserError(`${path} answered something that is not tuxburst's: ${describe(error)}`);
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}

/**
 * Which control socket `tuxburst status` talks to: `socket` if given, else
 * the one of `tunName` (from `-c`), else the only one in `dir`.
 */
export async function selectSocket(
  options: { dir: string; socket?: string; tunName?: string },
): Promise<string> {
  if (options.socket) return options.socket;
  if (options.tunName) return controlSocketPath(options.dir, options.tunName);
  const found: string[] = [];
  try {
    for await (const entry of Deno.readDir(options.dir)) {
      if (entry.name.endsWith(".sock")) found.push(entry.name);
    }
  } catch (error) {
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new UserError(`cannot read ${options.dir}: permission denied (run as root)`);
    }
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  found.sort();
  if (found.length === 1) return controlSocketPath(options.dir, found[0].slice(0, -5));
  if (found.length === 0) {
    throw new NoDaemonError(`no running tuxburst found (no control socket in ${options.dir})`);
  }
  throw new UserError(
    `several tuxburst tunnels are running (${
      found.map((name) => `${options.dir}/${name}`).join(", ")
    }); pass -c config.toml or --socket PATH`,
  );
}

/** Removes a socket left by a killed process; a live one means a second instance. */
async function removeStale(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch {
    return; // nothing there
  }
  if (!info.isSocket) {
    throw new UserError(`${path} exists and is not a socket; remove it`);
  }
  let live = false;
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    live = true;
    closeQuietly(conn);
  } catch {
    // Nobody listens: left behind by a process that was killed.
  }
  if (live) {
    const tun = path.slice(path.lastIndexOf("/") + 1).replace(/\.sock$/, "");
    throw new UserError(
      `another tuxburst with tun_name "${tun}" is already running (its control socket ${path} answers); stop it or use another tun_name`,
    );
  }
  await Deno.remove(path).catch(() => {});
}

/** Reads up to the first newline (or the end); `undefined` when nothing came. */
async function readLine(conn: Deno.Conn): Promise<string | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const buffer = new Uint8Array(16384);
  while (size <= MAX_MESSAGE_BYTES) {
    const n = await conn.read(buffer);
    if (n === null) break;
    const chunk = buffer.slice(0, n);
    const newline = chunk.indexOf(10);
    chunks.push(newline < 0 ? chunk : chunk.subarray(0, newline));
    size += n;
    if (newline >= 0) break;
  }
  if (size === 0) return undefined;
  const all = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return new TextDecoder().decode(all);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function describe(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  return error instanceof Error ? error.message : String(error);
}
