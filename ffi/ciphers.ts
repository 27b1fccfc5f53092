/**
 * The packet cipher tuxburst uses: the first of libsodium, libcrypto and
 * WebCrypto that this machine has. All three produce the same AES-256-GCM
 * bytes, so the two ends need not use the same one.
 *
 * @module
 */
import { type CipherFactory, type InPlaceCipher, WebCryptoCipher } from "../lib/crypto.ts";
import { opensslAvailable, OpensslCipher } from "./openssl.ts";
import { sodiumAvailable, SodiumCipher } from "./sodium.ts";

/** A C library's cipher, usable where `available()` says so. */
export interface FfiCipher {
  library: string;
  /** The Debian package that brings it. */
  debianPackage: string;
  available(): boolean;
  create(key: Uint8Array): InPlaceCipher | undefined;
}

/** The C libraries in order of preference: libsodium's one call per packet first (README, "Crypto"). */
export const FFI_CIPHERS: readonly FfiCipher[] = [
  {
    library: "libsodium",
    debianPackage: "libsodium23",
    available: sodiumAvailable,
    create: SodiumCipher.create,
  },
  {
    library: "libcrypto",
    debianPackage: "libssl3",
    available: opensslAvailable,
    create: OpensslCipher.create,
  },
];

/** Makes a session cipher with the first library of `FFI_CIPHERS` available, else WebCrypto. */
export const makeFastestCipher: CipherFactory = (key) => {
  for (const cipher of FFI_CIPHERS) {
    const made = cipher.create(key);
    if (made) return made;
  }
  return WebCryptoCipher.fromRaw(key);
};

/** Which library `makeFastestCipher` uses here, for the start-up log. */
export function fastestCipherName(): string {
  return FFI_CIPHERS.find((cipher) => cipher.available())?.library ?? "WebCrypto";
}
