import { Buffer } from "node:buffer";
import { createHmac, randomInt, timingSafeEqual } from "node:crypto";

/**
 * One-time access codes: 6 digits from the CSPRNG, kept only as a keyed
 * digest (and, for a request, sealed under the patient's key so that it can
 * be delivered). Never log a code, never put one in an error message.
 *
 * The digest is HMAC-SHA256 under a key derived from the master key
 * (`deriveAccessCodeKey`) over a domain-separated message that binds the
 * code to its patient — and, for a request, to the request — so that the
 * same six digits of another patient or another request never match. A
 * share carries no id the redeemer knows (they bring the patient id and the
 * code), so its digest binds the patient only.
 *
 * @module
 */

/** How long a code may be used after it was issued. */
export const CODE_TTL_MS = 10 * 60_000;
/** Wrong codes that kill a request, or block a redeemer for a patient. */
export const MAX_WRONG_CODES = 5;
/** How long a redeemer is blocked for a patient after {@link MAX_WRONG_CODES} wrong ones. */
export const REDEEM_LOCK_MS = 15 * 60_000;

/**
 * A fresh 6-digit code, leading zeros kept. `randomInt` draws from the
 * CSPRNG by rejection sampling, so every code is equally likely (no modulo
 * bias).
 */
export const generateCode = (): string => String(randomInt(0, 1_000_000)).padStart(6, "0");

/** What a code is bound to. */
export type CodeBinding =
  | { kind: "request"; requestId: string; patientId: string }
  | { kind: "share"; patientId: string };

const DOMAIN = "chartlog/access-code/v1";

/**
 * The keyed digest of a code (hex), as the events and the read models keep
 * it. Fields are joined with NUL, which none of them can contain (UUIDs and
 * digits), so no two bindings spell the same message.
 */
export const codeDigest = (key: Uint8Array, binding: CodeBinding, code: string): string => {
  const parts = binding.kind === "request"
    ? [DOMAIN, "request", binding.requestId, binding.patientId, code]
    : [DOMAIN, "share", binding.patientId, code];
  return createHmac("sha256", key).update(parts.join("\0")).digest("hex");
};

/**
 * Constant-time comparison of two hex digests (a digest of a different
 * length, or not hex at all, is simply unequal).
 */
export const digestsEqual = (a: string, b: string): boolean => {
  const x = Buffer.from(a, "hex");
  const y = Buffer.from(b, "hex");
  if (x.length !== 32 || y.length !== 32) return false;
  return timingSafeEqual(x, y);
};
