/**
 * Linux interface names, checked before the kernel sees them: the kernel
 * silently truncates long names in some calls (SO_BINDTODEVICE).
 *
 * @module
 */

/** Interface names hold at most 15 bytes plus the NUL. */
export const IFNAMSIZ = 16;

/** Why `name` cannot be a Linux interface name (the kernel's `dev_valid_name`), if it cannot. */
export function interfaceNameProblem(name: string): string | undefined {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes === 0) return "an interface name cannot be empty";
  if (bytes >= IFNAMSIZ) return `Linux interface names are at most ${IFNAMSIZ - 1} characters`;
  if (name === "." || name === ".." || /[\s/:]/.test(name)) {
    return "an interface name cannot be . or .. nor contain /, : or spaces";
  }
  return undefined;
}
