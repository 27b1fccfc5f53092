/**
 * AES-256-GCM from OpenSSL's libcrypto, called synchronously through FFI.
 *
 * WebCrypto runs every operation on a worker thread and answers through a
 * promise; for one 1400-byte packet that hop costs more than the cipher
 * itself, and it adds latency to every packet. A synchronous FFI call costs
 * well under a microsecond, so six of them per packet are still cheaper
 * (see the README's crypto figures, `deno task bench:crypto`).
 *
 * @module
 */
import { InPlaceCipher } from "../lib/crypto.ts";
import { nonceFor, TAG_SIZE } from "../lib/wire.ts";
import { openFirst } from "./libc.ts";

const SYMBOLS = {
  // EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void);
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  // void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx);
  EVP_CIPHER_CTX_free: { parameters: ["pointer"], result: "void" },
  // const EVP_CIPHER *EVP_aes_256_gcm(void);
  EVP_aes_256_gcm: { parameters: [], result: "pointer" },
  // int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl,
  //                        const unsigned char *key, const unsigned char *iv);
  EVP_EncryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  // int EVP_DecryptInit_ex(same as above);
  EVP_DecryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  // int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
  //                       const unsigned char *in, int inl);
  EVP_EncryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  // int EVP_DecryptUpdate(same as above);
  EVP_DecryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  // int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
  EVP_EncryptFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  // int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
  EVP_DecryptFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  // int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr);
  EVP_CIPHER_CTX_ctrl: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

const EVP_CTRL_GCM_GET_TAG = 0x10;
const EVP_CTRL_GCM_SET_TAG = 0x11;

type Crypto = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let library: Crypto | null | undefined;

/** libcrypto, or `null` when it cannot be loaded (then WebCrypto is used). */
function load(): Crypto | null {
  if (library === undefined) library = openFirst(["libcrypto.so.3", "libcrypto.so"], SYMBOLS);
  return library;
}

/** Whether libcrypto is available on this machine. */
export function opensslAvailable(): boolean {
  return load() !== null;
}

const contexts = new FinalizationRegistry<Deno.PointerValue>((ctx) => {
  if (ctx) load()?.EVP_CIPHER_CTX_free(ctx);
});

/** A GCM context holding one key, for one direction. */
class GcmContext {
  readonly ctx: Deno.PointerValue;

  constructor(readonly lib: Crypto, key: Uint8Array, encrypt: boolean) {
    const ctx = lib.EVP_CIPHER_CTX_new();
    if (!ctx) throw new Error("EVP_CIPHER_CTX_new failed");
    const init = encrypt ? lib.EVP_EncryptInit_ex : lib.EVP_DecryptInit_ex;
    // The key is set once; each packet then sets only its nonce.
    if (init(ctx, lib.EVP_aes_256_gcm(), null, key as Uint8Array<ArrayBuffer>, null) !== 1) {
      lib.EVP_CIPHER_CTX_free(ctx);
      throw new Error("EVP_*Init_ex with the key failed");
    }
    this.ctx = ctx;
    contexts.register(this, ctx);
  }
}

/**
 * AES-256-GCM with libcrypto; the same wire result as `WebCryptoCipher`.
 * Not safe to share across threads, which Deno's main thread never does.
 */
export class OpensslCipher extends InPlaceCipher {
  readonly #seal: GcmContext;
  readonly #open: GcmContext;
  readonly #lib: Crypto;
  readonly #nonce = new Uint8Array(12);
  readonly #length = new Int32Array(1);

  private constructor(lib: Crypto, key: Uint8Array) {
    super();
    this.#lib = lib;
    this.#seal = new GcmContext(lib, key, true);
    this.#open = new GcmContext(lib, key, false);
  }

  /** `undefined` when libcrypto is missing. */
  static create(key: Uint8Array): OpensslCipher | undefined {
    const lib = load();
    return lib ? new OpensslCipher(lib, key) : undefined;
  }

  sealInto(counter: number, header: Uint8Array, plaintext: Uint8Array, out: Uint8Array): void {
    const lib = this.#lib;
    const ctx = this.#seal.ctx;
    const length = this.#length as unknown as Uint8Array<ArrayBuffer>;
    const textLength = plaintext.length;
    if (out.length < textLength + TAG_SIZE) throw new RangeError("sealInto: output too small");
    const text = out as Uint8Array<ArrayBuffer>;
    const tag = out.subarray(textLength, textLength + TAG_SIZE) as Uint8Array<ArrayBuffer>;
    nonceFor(counter, this.#nonce);
    if (
      lib.EVP_EncryptInit_ex(ctx, null, null, null, this.#nonce) !== 1 ||
      lib.EVP_EncryptUpdate(ctx, null, length, header as Uint8Array<ArrayBuffer>, header.length) !==
        1 ||
      lib.EVP_EncryptUpdate(ctx, text, length, plaintext as Uint8Array<ArrayBuffer>, textLength) !==
        1 ||
      lib.EVP_EncryptFinal_ex(ctx, tag, length) !== 1 ||
      lib.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, tag) !== 1
    ) {
      throw new Error("AES-GCM encryption failed in libcrypto");
    }
  }

  openInto(counter: number, header: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean {
    if (sealed.length < TAG_SIZE) return false;
    const lib = this.#lib;
    const ctx = this.#open.ctx;
    const length = this.#length as unknown as Uint8Array<ArrayBuffer>;
    const textLength = sealed.length - TAG_SIZE;
    if (out.length < textLength) throw new RangeError("openInto: output too small");
    const tag = sealed.subarray(textLength) as Uint8Array<ArrayBuffer>;
    nonceFor(counter, this.#nonce);
    // A tag that does not verify (forged, corrupted or another key) fails the final call.
    return lib.EVP_DecryptInit_ex(ctx, null, null, null, this.#nonce) === 1 &&
      lib.EVP_DecryptUpdate(ctx, null, length, header as Uint8Array<ArrayBuffer>, header.length) ===
        1 &&
      lib.EVP_DecryptUpdate(
          ctx,
          out as Uint8Array<ArrayBuffer>,
          length,
          sealed as Uint8Array<ArrayBuffer>,
          textLength,
        ) === 1 &&
      lib.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, tag) === 1 &&
      lib.EVP_DecryptFinal_ex(ctx, out.subarray(textLength) as Uint8Array<ArrayBuffer>, length) ===
        1;
  }
}
