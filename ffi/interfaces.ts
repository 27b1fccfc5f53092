/**
 * The machine's interfaces for the client's hotplug watch: names and routes
 * from `/proc/net` (which follows the caller's network namespace), addresses
 * from `Deno.networkInterfaces()`, index and flags from the kernel.
 *
 * @module
 */
import { type InterfaceInfo, readInterfaces } from "../lib/interfaces.ts";
import {
  AF_INET,
  closeQuietly,
  IFF_RUNNING,
  IFF_UP,
  IFREQ,
  libc,
  SIOCGIFFLAGS,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  writeCString,
} from "./libc.ts";
import { interfaceIndex } from "./udp.ts";

/**
 * Every interface of this network namespace, as `lib/interfaces.ts`
 * describes them. Never throws: what cannot be read counts as absent.
 *
 * @example
 * ```ts
 * const withDefault = listInterfaces().filter((i) => i.defaultRoute).map((i) => i.name);
 * ```
 */
export function listInterfaces(): InterfaceInfo[] {
  const socket = libc().socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  try {
    let addresses: Deno.NetworkInterfaceInfo[] = [];
    try {
      addresses = Deno.networkInterfaces();
    } catch {
      // Without addresses the index and route checks still work.
    }
    return readInterfaces({
      dev: readText("/proc/net/dev"),
      route: readText("/proc/net/route"),
      ipv6Route: readText("/proc/net/ipv6_route"),
      addresses,
      index: interfaceIndex,
      up: (name) => socket >= 0 && isUp(socket, name),
    });
  } finally {
    if (socket >= 0) closeQuietly(socket);
  }
}

function readText(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return ""; // no IPv6, or no /proc: nothing listed from it
  }
}

/** IFF_UP and IFF_RUNNING (carrier) by SIOCGIFFLAGS; false when it cannot be asked. */
function isUp(socket: number, name: string): boolean {
  const ifr = new Uint8Array(IFREQ.size);
  writeCString(ifr, IFREQ.name, name);
  if (libc().ioctl(socket, SIOCGIFFLAGS, ifr) < 0) return false;
  const flags = new DataView(ifr.buffer).getUint16(IFREQ.flags, true);
  return (flags & IFF_UP) !== 0 && (flags & IFF_RUNNING) !== 0;
}
