import assert from "node:assert/strict";
import { opensslAvailable, OpensslCipher } from "../ffi/openssl.ts";
import { randomBytes, WebCryptoCipher } from "../lib/crypto.ts";

const ignore = !opensslAvailable();
if (ignore) console.log("openssl_test skipped: libcrypto.so.3 not found (Debian package libssl3)");

Deno.test({ name: "openssl: same bytes as WebCrypto AES-256-GCM, both ways", ignore }, async () => {
  for (const size of [0, 1, 15, 16, 17, 1400, 9000]) {
    const key = randomBytes(32);
    const header = randomBytes(16);
    const plaintext = randomBytes(size);
    const ours = OpensslCipher.create(key)!;
    const web = await WebCryptoCipher.fromRaw(key);
    const counter = 2 ** 40 + size;
    const sealed = await ours.seal(counter, header, plaintext);
    assert.deepEqual(sealed, await web.seal(counter, header, plaintext), `size ${size}`);
    assert.deepEqual(await web.open(counter, header, sealed), plaintext);
    assert.deepEqual(await ours.open(counter, header, sealed), plaintext);
  }
});

Deno.test(
  { name: "openssl: forged, truncated, other-key or other-nonce input is refused", ignore },
  async () => {
    const key = randomBytes(32);
    const cipher = OpensslCipher.create(key)!;
    const header = randomBytes(16);
    const sealed = await cipher.seal(7, header, randomBytes(100));
    for (const index of [0, 50, 99, 100, 115]) {
      const bad = sealed.slice();
      bad[index] ^= 0x01;
      assert.equal(await cipher.open(7, header, bad), null, `flipped byte ${index}`);
    }
    const badHeader = header.slice();
    badHeader[3] ^= 1;
    assert.equal(await cipher.open(7, badHeader, sealed), null, "header is authenticated");
    assert.equal(await cipher.open(8, header, sealed), null, "other counter");
    assert.equal(await cipher.open(7, header, sealed.subarray(0, 10)), null, "truncated");
    assert.equal(
      await OpensslCipher.create(randomBytes(32))!.open(7, header, sealed),
      null,
      "other key",
    );
    // A failure leaves the context usable for the next good packet.
    assert.equal((await cipher.open(7, header, sealed))?.length, 100);
  },
);
