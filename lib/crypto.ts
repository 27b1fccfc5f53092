/**
 * Keys and ciphers. The pre-shared key never encrypts packets itself: each
 * handshake derives fresh per-direction AES-256-GCM keys from it and from a
 * random value of each side, so counters may restart at 0 in every session
 * without ever repeating a (key, nonce) pair, also across restarts.
 *
 * @module
 */
import { nonceFor, RANDOM_SIZE, TAG_SIZE } from "./wire.ts";

/** Size of the pre-shared key in bytes (256 bits). */
export const KEY_SIZE = 32;

const encoder = new TextEncoder();
const HANDSHAKE_INFO = encoder.encode("tuxburst/1 handshake mac");
const SESSION_INFO = encoder.encode("tuxburst/1 session keys");

/** Parses a 64-digit hex key (either case); returns an error text instead of throwing. */
export function parseKeyHex(text: string): Uint8Array | string {
  const hex = text.trim();
  if (!/^[0-9a-fA-F]*$/.test(hex)) return "must be hexadecimal digits (0-9, a-f)";
  if (hex.length !== KEY_SIZE * 2) {
    return `must be ${
      KEY_SIZE * 2
    } hex digits (256 bits), got ${hex.length}; make one with "tuxburst gen-key"`;
  }
  const key = new Uint8Array(KEY_SIZE);
  for (let i = 0; i < KEY_SIZE; i++) key[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return key;
}

/** Formats bytes as upper-case hex, as the SPEC shows keys. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
}

/** A fresh random key from the system's CSPRNG. */
export function generateKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(KEY_SIZE));
}

/** Fresh random bytes for a handshake. */
export function randomBytes(size = RANDOM_SIZE): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(size));
}

/** A random non-zero 32-bit session identity. */
export function randomSessionId(): number {
  const [id] = crypto.getRandomValues(new Uint32Array(1));
  return id === 0 ? 1 : id;
}

/** Authenticated encryption of packets under one key; nonces come from counters. */
export interface PacketCipher {
  /** Returns ciphertext followed by the 16-byte tag. */
  seal(counter: number, header: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array>;
  /** Returns the plaintext, or `null` when the tag does not verify. */
  open(counter: number, header: Uint8Array, sealed: Uint8Array): Promise<Uint8Array | null>;
  /**
   * Present on ciphers that run on the calling thread (libsodium, libcrypto): seals into
   * `out` (ciphertext, then the tag: `plaintext.length + 16` bytes) with no
   * allocation and no promise, which is what a packet's latency and the
   * garbage collector care about.
   */
  sealInto?(counter: number, header: Uint8Array, plaintext: Uint8Array, out: Uint8Array): void;
  /** The same for opening: the plaintext into `out`; false when the tag does not verify. */
  openInto?(counter: number, header: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean;
}

/**
 * A cipher that runs on the calling thread (a C library through FFI): it
 * implements `sealInto`/`openInto`, the promise and new-array forms follow.
 */
export abstract class InPlaceCipher implements PacketCipher {
  abstract sealInto(
    counter: number,
    header: Uint8Array,
    plaintext: Uint8Array,
    out: Uint8Array,
  ): void;
  abstract openInto(
    counter: number,
    header: Uint8Array,
    sealed: Uint8Array,
    out: Uint8Array,
  ): boolean;

  seal(counter: number, header: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    return Promise.resolve(this.sealSync(counter, header, plaintext));
  }

  open(counter: number, header: Uint8Array, sealed: Uint8Array): Promise<Uint8Array | null> {
    return Promise.resolve(this.openSync(counter, header, sealed));
  }

  sealSync(counter: number, header: Uint8Array, plaintext: Uint8Array): Uint8Array {
    const out = new Uint8Array(plaintext.length + TAG_SIZE);
    this.sealInto(counter, header, plaintext, out);
    return out;
  }

  openSync(counter: number, header: Uint8Array, sealed: Uint8Array): Uint8Array | null {
    if (sealed.length < TAG_SIZE) return null;
    const out = new Uint8Array(sealed.length - TAG_SIZE);
    return this.openInto(counter, header, sealed, out) ? out : null;
  }
}

/** AES-256-GCM through WebCrypto. */
export class WebCryptoCipher implements PacketCipher {
  constructor(private readonly key: CryptoKey) {}

  static async fromRaw(raw: Uint8Array): Promise<WebCryptoCipher> {
    const key = await crypto.subtle.importKey("raw", raw as BufferSource, "AES-GCM", false, [
      "encrypt",
      "decrypt",
    ]);
    return new WebCryptoCipher(key);
  }

  async seal(counter: number, header: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    const sealed = await crypto.subtle.encrypt(
      {
        name: "AES-GCM",
        iv: nonceFor(counter) as BufferSource,
        additionalData: header as BufferSource,
      },
      this.key,
      plaintext as BufferSource,
    );
    return new Uint8Array(sealed);
  }

  async open(counter: number, header: Uint8Array, sealed: Uint8Array): Promise<Uint8Array | null> {
    try {
      const plain = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: nonceFor(counter) as BufferSource,
          additionalData: header as BufferSource,
        },
        this.key,
        sealed as BufferSource,
      );
      return new Uint8Array(plain);
    } catch {
      return null; // wrong key, forged or corrupted: the caller drops it
    }
  }
}

/** HMAC-SHA256, truncated to 16 bytes, for handshake messages. */
export class HandshakeMac {
  private constructor(private readonly key: CryptoKey) {}

  /** Derives the handshake MAC key from the pre-shared key. */
  static async fromPsk(psk: Uint8Array): Promise<HandshakeMac> {
    const bits = await hkdf(psk, new Uint8Array(0), HANDSHAKE_INFO, 32);
    const key = await crypto.subtle.importKey(
      "raw",
      bits as BufferSource,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    return new HandshakeMac(key);
  }

  async mac(...parts: Uint8Array[]): Promise<Uint8Array> {
    const full = await crypto.subtle.sign("HMAC", this.key, concat(parts) as BufferSource);
    return new Uint8Array(full, 0, 16);
  }

  /** Constant-time check of a truncated MAC. */
  async verify(mac: Uint8Array, ...parts: Uint8Array[]): Promise<boolean> {
    const expected = await this.mac(...parts);
    if (mac.length !== expected.length) return false;
    let diff = 0;
    for (let i = 0; i < mac.length; i++) diff |= mac[i] ^ expected[i];
    return diff === 0;
  }
}

/** Makes a cipher for one raw 256-bit key (WebCrypto by default; libsodium or libcrypto from `ffi/`). */
export type CipherFactory = (key: Uint8Array) => PacketCipher | Promise<PacketCipher>;

/** The two ciphers of a session, one per direction. */
export interface SessionCiphers {
  clientToServer: PacketCipher;
  serverToClient: PacketCipher;
}

/** Derives a session's keys: HKDF-SHA256(PSK, salt = client random ‖ server random, info ‖ session). */
export async function deriveSessionCiphers(
  psk: Uint8Array,
  session: number,
  clientRandom: Uint8Array,
  serverRandom: Uint8Array,
  makeCipher: CipherFactory = WebCryptoCipher.fromRaw,
): Promise<SessionCiphers> {
  const info = new Uint8Array(SESSION_INFO.length + 4);
  info.set(SESSION_INFO);
  new DataView(info.buffer).setUint32(SESSION_INFO.length, session);
  const bits = await hkdf(psk, concat([clientRandom, serverRandom]), info, 64);
  const [clientToServer, serverToClient] = await Promise.all([
    makeCipher(bits.slice(0, 32)),
    makeCipher(bits.slice(32, 64)),
  ]);
  return { clientToServer, serverToClient };
}

async function hkdf(
  ikm: Uint8Array,
  salt: Uint8Array,
  info: Uint8Array,
  bytes: number,
): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", ikm as BufferSource, "HKDF", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: salt as BufferSource, info: info as BufferSource },
    key,
    bytes * 8,
  );
  return new Uint8Array(bits);
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
