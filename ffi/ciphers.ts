/**
 * The packet cipher tuxburst uses: the first of libsodium, libcrypto and
 * WebCrypto that this machine has. All three produce the same AES-256-GCM
 * bytes, so the two ends need not use the same one.
 *
 * @module
 */
import { type CipherFactory, WebCryptoCipher } from "../lib/crypto.ts";
import { opensslAvailable, OpensslCipher } from "./openssl.ts";
import { sodiumAvailable, SodiumCipher } from "./sodium.ts";

/** Makes a session cipher with the fastest library available. */
export const makeFastestCipher: CipherFactory = (key) =>
  SodiumCipher.create(key) ?? OpensslCipher.create(key) ?? WebCryptoCipher.fromRaw(key);

/** Which library `makeFastestCipher` uses here, for the start-up log. */
export function fastestCipherName(): string {
  if (sodiumAvailable()) return "libsodium";
  if (opensslAvailable()) return "libcrypto";
  return "WebCrypto";
}
