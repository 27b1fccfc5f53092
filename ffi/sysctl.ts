/**
 * The few kernel settings tuxburst adjusts, through /proc/sys.
 *
 * @module
 */

const IPV4_CONF = "/proc/sys/net/ipv4/conf";

function readInt(path: string): number | undefined {
  try {
    return Number(Deno.readTextFileSync(path).trim());
  } catch {
    return undefined;
  }
}

/**
 * Makes reverse-path filtering on an uplink loose (2) if it is strict (1).
 *
 * With tuxburst's default route, the server's address is routed through the
 * tunnel, so strict filtering (RHEL's default) drops every reply from the
 * server that arrives on the uplink, and the tunnel never comes up. The
 * kernel uses the larger of `all` and the interface's value, so raising the
 * interface's own value is enough. Returns a function that restores the old
 * value, or `undefined` when nothing was changed.
 */
export function loosenReversePathFilter(device: string): (() => void) | undefined {
  const path = `${IPV4_CONF}/${device}/rp_filter`;
  const own = readInt(path);
  if (own === undefined) return undefined;
  const effective = Math.max(own, readInt(`${IPV4_CONF}/all/rp_filter`) ?? 0);
  if (effective !== 1) return undefined;
  try {
    Deno.writeTextFileSync(path, "2");
  } catch {
    return undefined; // read-only /proc (a container): the tunnel may not come up, the log says why
  }
  return () => {
    try {
      Deno.writeTextFileSync(path, String(own));
    } catch {
      // The interface is gone, and its setting with it.
    }
  };
}
