import assert from "node:assert/strict";
import { FFI_CIPHERS } from "../ffi/ciphers.ts";
import { randomBytes, WebCryptoCipher } from "../lib/crypto.ts";

// Each FFI cipher against WebCrypto; a missing library is skipped with its package.
for (const { library: name, debianPackage, available, create } of FFI_CIPHERS) {
  const ignore = !available();
  if (ignore) {
    console.log(
      `${name} cipher tests skipped: not installed (${debianPackage}) or not usable here`,
    );
  }

  Deno.test(
    { name: `${name}: same bytes as WebCrypto AES-256-GCM, both ways`, ignore },
    async () => {
      for (const size of [0, 1, 15, 16, 17, 1400, 9000]) {
        const key = randomBytes(32);
        const header = randomBytes(16);
        const plaintext = randomBytes(size);
        const ours = create(key)!;
        const web = await WebCryptoCipher.fromRaw(key);
        const counter = 2 ** 40 + size;
        const sealed = await ours.seal(counter, header, plaintext);
        assert.deepEqual(sealed, await web.seal(counter, header, plaintext), `size ${size}`);
        assert.deepEqual(await web.open(counter, header, sealed), plaintext);
        assert.deepEqual(await ours.open(counter, header, sealed), plaintext);
      }
    },
  );

  Deno.test(
    { name: `${name}: sealInto and openInto work in reused, larger buffers`, ignore },
    () => {
      const key = randomBytes(32);
      const cipher = create(key)!;
      const header = randomBytes(16);
      const out = new Uint8Array(2000).fill(0xaa);
      const back = new Uint8Array(2000);
      for (const size of [1400, 84, 1]) {
        const plaintext = randomBytes(size);
        cipher.sealInto(size, header, plaintext, out.subarray(0, size + 16));
        assert.deepEqual(out.subarray(0, size + 16), cipher.sealSync(size, header, plaintext));
        assert.ok(cipher.openInto(size, header, out.subarray(0, size + 16), back));
        assert.deepEqual(back.subarray(0, size), plaintext);
      }
      assert.throws(
        () => cipher.sealInto(1, header, new Uint8Array(10), new Uint8Array(25)),
        RangeError,
      );
    },
  );

  Deno.test(
    { name: `${name}: forged, truncated, other-key or other-nonce input is refused`, ignore },
    async () => {
      const key = randomBytes(32);
      const cipher = create(key)!;
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
      assert.equal(await create(randomBytes(32))!.open(7, header, sealed), null, "other key");
      // A failure leaves the cipher usable for the next good packet.
      assert.equal((await cipher.open(7, header, sealed))?.length, 100);
    },
  );
}
