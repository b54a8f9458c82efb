// The JWT fixtures the relay's tests verify (tests/jwt_interop.rs,
// tests/jwt_relay.rs) are what `jose` mints with the documented claims: each
// verifies under its committed key with jose itself, with aud "georelay".
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { decodeProtectedHeader, importSPKI, jwtVerify } from "jose";

const dir = (name: string) => fileURLToPath(new URL(`../../../../tests/data/jwt/${name}`, import.meta.url));
const tokens = JSON.parse(readFileSync(dir("tokens.json"), "utf8")) as Record<string, string>;

test("the jose fixtures carry the documented claims and verify under their keys", async () => {
  const cases: [string, string, CryptoKey | Uint8Array][] = [
    ["hs256", "interop-app", new TextEncoder().encode(tokens.secret)],
    ["es256", "interop-es", await importSPKI(readFileSync(dir("es256.pub.pem"), "utf8"), "ES256")],
    ["eddsa", "interop-ed", await importSPKI(readFileSync(dir("eddsa.pub.pem"), "utf8"), "EdDSA")],
  ];
  for (const [name, iss, key] of cases) {
    const { payload } = await jwtVerify(tokens[name]!, key, { audience: "georelay", issuer: iss });
    assert.equal(payload.sub, "carol", name);
    assert.equal(payload.channel, "room-1", name);
    assert.ok(payload.role === "publish" || payload.role === "subscribe", name);
    assert.equal(payload.exp, 4102444800, name);
  }
  assert.equal(decodeProtectedHeader(tokens.wrong_audience!).alg, "HS256");
  await assert.rejects(
    jwtVerify(tokens.wrong_audience!, new TextEncoder().encode(tokens.secret), { audience: "georelay" }),
  );
});
