// Mints JWTs with `jose` (an implementation independent of the relay's) for
// tests/jwt_interop.rs: fresh ES256 and EdDSA key pairs, and one token per
// algorithm plus refused cases. Run from sdk/js: node scripts/mint-jwt-fixtures.mjs
import { mkdirSync, writeFileSync } from "node:fs";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";

const dir = new URL("../../../tests/data/jwt/", import.meta.url);
mkdirSync(dir, { recursive: true });

const SECRET = new TextEncoder().encode("jose-interop-secret");
const EXP = 4102444800; // 2100-01-01T00:00:00Z
const base = { channel: "room-1", role: "publish" };

async function mint(alg, key, claims = {}, { aud = "georelay", iss = "interop-app", exp = EXP } = {}) {
  const jwt = new SignJWT({ ...base, ...claims })
    .setProtectedHeader({ alg, typ: "JWT" })
    .setIssuer(iss)
    .setSubject("carol")
    .setAudience(aud)
    .setIssuedAt(1750000000)
    .setExpirationTime(exp);
  return jwt.sign(key);
}

const es = await generateKeyPair("ES256", { extractable: true });
const ed = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
writeFileSync(new URL("es256.pub.pem", dir), await exportSPKI(es.publicKey));
writeFileSync(new URL("eddsa.pub.pem", dir), await exportSPKI(ed.publicKey));

const tokens = {
  secret: "jose-interop-secret",
  hs256: await mint("HS256", SECRET),
  es256: await mint("ES256", es.privateKey, { role: "subscribe" }, { iss: "interop-es" }),
  eddsa: await mint("EdDSA", ed.privateKey, { nbf: 1750000000 }, { iss: "interop-ed" }),
  wrong_audience: await mint("HS256", SECRET, {}, { aud: "someone-else" }),
  expired: await mint("HS256", SECRET, {}, { exp: 1750000000 }),
  not_yet_valid: await mint("HS256", SECRET, { nbf: 4102444000 }),
  es256_for_hs_only_app: await mint("ES256", es.privateKey),
};
writeFileSync(new URL("tokens.json", dir), JSON.stringify(tokens, null, 2) + "\n");
console.log(`wrote ${Object.keys(tokens).length - 1} tokens to ${dir.pathname}`);
