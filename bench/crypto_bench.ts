/**
 * AES-256-GCM on one 1400-byte packet with each cipher we could use, side by
 * side in one run: `deno task bench:crypto`. (What the same calls cost with
 * cold caches, as an idle tunnel meets them: `deno task bench:cold`.)
 */
import { createCipheriv } from "node:crypto";
import { OpensslCipher } from "../ffi/openssl.ts";
import { FFI_CIPHERS } from "../ffi/ciphers.ts";
import { randomBytes, WebCryptoCipher } from "../lib/crypto.ts";
import { nonceFor } from "../lib/wire.ts";

const key = randomBytes(32);
const header = randomBytes(16);
const packet = randomBytes(1400);
const openssl = OpensslCipher.create(key);
const out = new Uint8Array(packet.length + 16);
const web = await WebCryptoCipher.fromRaw(key);
const batch = 64;
let counter = 0;

if (openssl) {
  Deno.bench(
    "libcrypto via FFI, synchronous (per packet)",
    { group: "seal", baseline: true },
    () => {
      openssl.sealSync(counter++, header, packet);
    },
  );
}

for (const { library, create } of FFI_CIPHERS) {
  const cipher = create(key);
  if (!cipher) continue;
  Deno.bench(`${library} via FFI, synchronous, into a reused buffer (per packet)`, {
    group: "seal",
  }, () => {
    cipher.sealInto(counter++, header, packet, out);
  });
}

Deno.bench("node:crypto createCipheriv (per packet)", { group: "seal" }, () => {
  const cipher = createCipheriv("aes-256-gcm", key, nonceFor(counter++));
  cipher.setAAD(header);
  cipher.update(packet);
  cipher.final();
  cipher.getAuthTag();
});

Deno.bench("WebCrypto, one at a time (per packet)", { group: "seal" }, async () => {
  await web.seal(counter++, header, packet);
});

Deno.bench(
  `WebCrypto, ${batch} in flight (per ${batch} packets)`,
  { group: "seal-batch" },
  async () => {
    await Promise.all(Array.from({ length: batch }, () => web.seal(counter++, header, packet)));
  },
);

if (openssl) {
  Deno.bench(
    `libcrypto via FFI (per ${batch} packets)`,
    { group: "seal-batch", baseline: true },
    () => {
      for (let i = 0; i < batch; i++) openssl.sealSync(counter++, header, packet);
    },
  );
}
