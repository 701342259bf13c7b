import assert from "node:assert/strict";
import { deriveJwtKey, signAccessToken, verifyAccessToken } from "../src/auth/tokens.ts";
import { UnauthorizedError } from "../src/errors.ts";

const claims = {
  sub: crypto.randomUUID(),
  role: "clinical_ops" as const,
  sid: crypto.randomUUID(),
  amr: ["pwd"],
};

Deno.test("tokens: a verified token is remembered, yet still expires and stays bound to its key", async () => {
  const key = await deriveJwtKey(crypto.getRandomValues(new Uint8Array(32)));
  const other = await deriveJwtKey(crypto.getRandomValues(new Uint8Array(32)));
  const t0 = new Date("2026-12-01T10:00:00Z");
  const token = await signAccessToken(key, claims, 60, t0);

  assert.deepEqual(await verifyAccessToken(key, token, t0), claims);
  // the second check is answered from memory, with the same claims (a copy)
  const again = await verifyAccessToken(key, token, new Date(t0.getTime() + 59_000));
  assert.deepEqual(again, claims);
  again.amr.push("otp");
  assert.deepEqual((await verifyAccessToken(key, token, t0)).amr, ["pwd"]);

  // at exp and after, the remembered token is refused as a fresh one would be
  await assert.rejects(
    verifyAccessToken(key, token, new Date(t0.getTime() + 60_000)),
    UnauthorizedError,
  );
  await assert.rejects(
    verifyAccessToken(key, token, new Date(t0.getTime() + 3_600_000)),
    UnauthorizedError,
  );
  // remembered under its own key only: another key never accepts it
  await assert.rejects(verifyAccessToken(other, token, t0), UnauthorizedError);
  // and a tampered copy is checked from scratch
  const [h, p, s] = token.split(".") as [string, string, string];
  const forged = `${h}.${p}.${s.slice(0, -2)}${s.endsWith("AA") ? "BB" : "AA"}`;
  await assert.rejects(verifyAccessToken(key, forged, t0), UnauthorizedError);
});
