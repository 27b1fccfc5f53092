/**
 * Server NAT on the real system: IP forwarding through /proc/sys, and the
 * rules of `lib/nat.ts` through the `nft` command (nftables has no stable C
 * API worth binding; `nft -f` applies a whole table in one transaction).
 *
 * @module
 */
import { PermissionError, UserError } from "../lib/errors.ts";
import { natInstallScript, type NatSpec, natTableName } from "../lib/nat.ts";
import { interfaceIndex } from "./udp.ts";

const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";
/** Bound on each run of `nft`; it takes milliseconds unless something is badly wrong. */
const NFT_TIMEOUT_MS = 10_000;

const NFT_MISSING =
  "server.nat needs nftables: apt-get install nftables (or remove nat and set up NAT by hand, see README)";

/** Where to look for `nft`; tests pass directories without it. */
export interface NatOptions {
  /** Directories to search for `nft` (default: `PATH`, then /usr/sbin and /sbin). */
  nftDirs?: string[];
}

/**
 * Turns on IPv4 forwarding and installs the NAT table for `spec` (replacing
 * one left by a killed tuxburst). Returns the undo: it deletes the table and
 * puts forwarding back as it was; it throws a `UserError` that says how to
 * clean up by hand if that fails.
 *
 * After a SIGKILL the table and forwarding stay; the next start replaces the
 * table, and then finds forwarding on, so it leaves it on at exit.
 *
 * @example
 * ```ts
 * const disable = await enableNat({ tunName: "tuxburst0", subnet: "10.99.0.0/30", uplink: "eth0" });
 * // … the tunnel runs …
 * await disable();
 * ```
 */
export async function enableNat(
  spec: NatSpec,
  options: NatOptions = {},
): Promise<() => Promise<void>> {
  const nft = findNft(options.nftDirs);
  if (interfaceIndex(spec.uplink) === 0) {
    throw new UserError(
      `server.nat: interface ${spec.uplink} does not exist; set nat to the uplink that reaches the internet (see "ip route show default")`,
    );
  }
  const table = natTableName(spec.tunName);
  const restoreForwarding = enableForwarding();
  try {
    await runNft(nft, ["-f", "-"], natInstallScript(spec), "could not add the NAT rules");
  } catch (error) {
    restoreForwarding();
    throw error;
  }
  return async () => {
    try {
      await runNft(
        nft,
        ["delete", "table", "ip", table],
        "",
        `could not remove the NAT rules; remove them with: nft delete table ip ${table}`,
      );
    } finally {
      restoreForwarding();
    }
  };
}

/** The `nft` executable, or the `UserError` that says how to install it. */
function findNft(dirs?: string[]): string {
  const search = dirs ??
    [...(Deno.env.get("PATH") ?? "").split(":").filter(Boolean), "/usr/sbin", "/sbin"];
  for (const dir of search) {
    const path = `${dir}/nft`;
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch {
      // Not in this directory.
    }
  }
  throw new UserError(NFT_MISSING);
}

/** Sets `ip_forward` to 1 if it is not; returns what puts the old value back. */
function enableForwarding(): () => void {
  let old: string;
  try {
    old = Deno.readTextFileSync(IP_FORWARD).trim();
  } catch (error) {
    throw new UserError(`server.nat: cannot read ${IP_FORWARD}: ${describe(error)}`);
  }
  if (old === "1") return () => {};
  try {
    Deno.writeTextFileSync(IP_FORWARD, "1");
  } catch (error) {
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new PermissionError(
        `server.nat: turning on IP forwarding needs root; run tuxburst with sudo (or set net.ipv4.ip_forward=1 yourself)`,
      );
    }
    throw new UserError(
      `server.nat: cannot turn on IP forwarding (${
        describe(error)
      }); set net.ipv4.ip_forward=1 on the host`,
    );
  }
  return () => {
    try {
      Deno.writeTextFileSync(IP_FORWARD, old);
    } catch {
      // /proc/sys became unwritable meanwhile; forwarding stays on, which harms nothing here.
    }
  };
}

/** Runs `nft args` with `stdin`, at most `NFT_TIMEOUT_MS`; a failure becomes a one-line `UserError`. */
async function runNft(nft: string, args: string[], stdin: string, what: string): Promise<void> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(nft, { args, stdin: "piped", stdout: "null", stderr: "piped" })
      .spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new UserError(NFT_MISSING);
    throw new UserError(`server.nat: cannot run ${nft}: ${describe(error)}`);
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Ended meanwhile.
    }
  }, NFT_TIMEOUT_MS);
  try {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin)).catch(() => {});
    await writer.close().catch(() => {});
    const { code, stderr } = await child.output();
    if (timedOut) {
      throw new UserError(`server.nat: ${what}: nft ran longer than ${NFT_TIMEOUT_MS / 1000} s`);
    }
    if (code === 0) return;
    // nft prints "Error: …" and then the offending line with carets: the first line says it.
    const message = new TextDecoder().decode(stderr).trim().split("\n")[0] || `exit code ${code}`;
    if (/Operation not permitted/.test(message)) {
      throw new PermissionError(
        "server.nat: changing nftables needs root or CAP_NET_ADMIN; run tuxburst with sudo",
      );
    }
    throw new UserError(`server.nat: ${what}: nft: ${message}`);
  } finally {
    clearTimeout(timer);
  }
}

function describe(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  return error instanceof Error ? error.message : String(error);
}
