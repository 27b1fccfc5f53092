/**
 * `tuxburst gen-key`: a fresh key, printed and written to a file only root can read.
 *
 * @module
 */
import { generateKey, toHex } from "./crypto.ts";
import { UserError } from "./errors.ts";

/**
 * Writes a new key as hex to `path` with mode 0600 and returns the hex.
 * Refuses to replace an existing file unless `force`, because overwriting a
 * key locks out every client configured with the old one.
 */
export async function writeNewKey(path: string, force: boolean): Promise<string> {
  const hex = toHex(generateKey());
  try {
    await Deno.writeTextFile(path, `${hex}\n`, { mode: 0o600, createNew: !force });
    // An existing file keeps its old mode when overwritten: tighten it.
    await Deno.chmod(path, 0o600);
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      throw new UserError(
        `${path} already exists; use --force to replace it (clients with the old key stop working)`,
      );
    }
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new UserError(`cannot write ${path}: permission denied`);
    }
    if (error instanceof Deno.errors.NotFound) {
      throw new UserError(`cannot write ${path}: its directory does not exist`);
    }
    throw error;
  }
  return hex;
}
