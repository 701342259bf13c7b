import { createHash, randomBytes } from "node:crypto";
import { jwtVerify, SignJWT } from "jose";
import { z } from "zod";
import { type Role, ROLES } from "../../events/user.ts";
import { UnauthorizedError } from "../errors.ts";

export const ISSUER = "chartlog";
export const AUDIENCE = "chartlog-api";

export interface AccessClaims {
  sub: string;
  role: Role;
  sid: string;
  /** How the session was authenticated (RFC 8176): ["pwd"] or ["pwd", "otp"]. */
  amr: string[];
}

/**
 * The HMAC key for access tokens, derived from the master key with HKDF so
 * there is no second secret to manage; rotating the master key logs
 * everybody out.
 */
export const deriveJwtKey = async (masterKey: Uint8Array<ArrayBuffer>): Promise<CryptoKey> => {
  const base = await crypto.subtle.importKey("raw", masterKey, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt: new TextEncoder().encode("chartlog"),
      info: new TextEncoder().encode("access-token/v1"),
    },
    base,
    256,
  );
  // imported once: jose would otherwise import raw key bytes on every call
  return await crypto.subtle.importKey("raw", bits, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
};

/** 32 bytes derived from the master key with HKDF under their own label. */
const deriveBytes = async (masterKey: Uint8Array<ArrayBuffer>, label: string) => {
  const base = await crypto.subtle.importKey("raw", masterKey, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(
    await crypto.subtle.deriveBits(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new TextEncoder().encode("chartlog"),
        info: new TextEncoder().encode(label),
      },
      base,
      256,
    ),
  );
};

/** Raw bytes for keyed digests of identifiers (HKDF from the master key, its own label). */
export const deriveIndexKey = (masterKey: Uint8Array<ArrayBuffer>): Promise<Uint8Array> =>
  deriveBytes(masterKey, "index-digest/v1");

/**
 * The HMAC key for recovery-code digests: a 40-bit code hashed without a
 * secret key falls to brute force in seconds, keyed it does not.
 */
export const deriveRecoveryCodeKey = (masterKey: Uint8Array<ArrayBuffer>): Promise<Uint8Array> =>
  deriveBytes(masterKey, "recovery-code/v1");

/**
 * The HMAC key for one-time access-code digests (src/auth/access_codes.ts):
 * a 6-digit code has a million values, so an unkeyed digest in the log would
 * give it away at once.
 */
export const deriveAccessCodeKey = (masterKey: Uint8Array<ArrayBuffer>): Promise<Uint8Array> =>
  deriveBytes(masterKey, "access-code/v1");

/** Signs a short-lived access token (HS256; iss, aud, sub, role, sid, amr, jti). */
export const signAccessToken = async (
  key: CryptoKey,
  claims: AccessClaims,
  ttlSec: number,
  now: Date,
): Promise<string> =>
  await new SignJWT({ role: claims.role, sid: claims.sid, amr: claims.amr })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(claims.sub)
    .setJti(crypto.randomUUID())
    .setIssuedAt(Math.floor(now.getTime() / 1000))
    .setExpirationTime(Math.floor(now.getTime() / 1000) + ttlSec)
    .sign(key);

/**
 * The claims a token of ours carries, checked after the signature: a token
 * signed with our key but minted by a bug or a leaked key must still not
 * reach SQL with a `sid` that is no UUID (that was a 500, not a 401).
 */
const Claims = z.object({
  sub: z.uuid(),
  sid: z.uuid(),
  role: z.enum(ROLES),
  jti: z.string().min(1).max(200),
  iat: z.number().int().optional(),
  exp: z.number().int(),
  // absent on tokens minted before sessions recorded it: read as no factor at all
  amr: z.array(z.enum(["pwd", "otp"])).max(2).optional(),
});

/**
 * Verifies signature, algorithm (HS256 only: `none` and key confusion are
 * refused), issuer, audience, expiry and the claims' shapes. Any failure is
 * one 401.
 */
/**
 * Tokens whose signature and claims were already checked, per signing key:
 * every API request carries one, and a client sends the same token until it
 * expires. What a signature proved cannot change, so a hit skips the HMAC
 * and the claim parsing; what depends on time (`exp`, `nbf`) is checked
 * again on every use, and the session behind the token is still looked up
 * by the caller each time (a revocation takes effect at once).
 */
const verified = new WeakMap<
  CryptoKey,
  Map<string, { claims: AccessClaims; exp: number; nbf: number | undefined }>
>();
/** Bound on remembered tokens per key; the oldest are dropped first. */
const VERIFIED_MAX = 10_000;

export const verifyAccessToken = async (
  key: CryptoKey,
  token: string,
  now: Date = new Date(),
): Promise<AccessClaims> => {
  let cache = verified.get(key);
  if (!cache) verified.set(key, cache = new Map());
  const hit = cache.get(token);
  if (hit) {
    const t = Math.floor(now.getTime() / 1000);
    // as jose judges them (no clock tolerance): expired at exp, valid from nbf
    if (t >= hit.exp || (hit.nbf !== undefined && t < hit.nbf)) {
      throw new UnauthorizedError("invalid or expired access token");
    }
    return { ...hit.claims, amr: [...hit.claims.amr] };
  }
  try {
    const { payload } = await jwtVerify(token, key, {
      issuer: ISSUER,
      audience: AUDIENCE,
      algorithms: ["HS256"],
      requiredClaims: ["sub", "sid", "exp", "jti"],
      currentDate: now,
    });
    const claims = Claims.parse(payload);
    const out: AccessClaims = {
      sub: claims.sub,
      role: claims.role,
      sid: claims.sid,
      amr: claims.amr ?? [],
    };
    if (cache.size >= VERIFIED_MAX) cache.delete(cache.keys().next().value!);
    cache.set(token, {
      claims: out,
      exp: claims.exp,
      nbf: typeof payload.nbf === "number" ? payload.nbf : undefined,
    });
    return out;
  } catch {
    throw new UnauthorizedError("invalid or expired access token");
  }
};

/** A new opaque refresh token: 256 random bits, base64url. */
export const newRefreshToken = (): string => randomBytes(32).toString("base64url");

/** Refresh tokens are stored only as this digest. */
export const refreshDigest = (token: string): string =>
  createHash("sha256").update(token).digest("hex");
