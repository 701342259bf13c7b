import { createHmac, randomBytes } from "node:crypto";
import * as OTPAuth from "otpauth";
import type { EventMetadata } from "../../events/metadata.ts";
import { ConflictError, NotFoundError, UnauthorizedError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { ERASED, type SealedValue } from "../store/phi_codec.ts";
import { sql } from "../store/sql.ts";
import type { NewEventOf } from "../store/catalog.ts";
import type { MfaVerified } from "../../events/auth.ts";
import { runSessionCommand } from "./session_commands.ts";
import { authStream } from "./credentials.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { type MfaCommand, mfaDecider } from "../domain/mfa.ts";

/**
 * TOTP (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step of clock drift) through the
 * otpauth library, plus ten single-use recovery codes stored as keyed
 * digests. The TOTP secret stays sealed at rest, in the read model too: it is
 * opened through the PHI codec only to check a code.
 */
const totp = (secret: string, label: string) =>
  new OTPAuth.TOTP({
    issuer: "Chartlog",
    label,
    algorithm: "SHA1",
    digits: 6,
    period: 30,
    secret: OTPAuth.Secret.fromBase32(secret),
  });

/**
 * Decides an MFA command over the account's auth stream and appends at that
 * version; a login or another change in between is read and decided again
 * (a code used meanwhile is still refused where it is recorded).
 */
export const runMfaCommand = (store: EventStore, cmd: MfaCommand, metadata: EventMetadata) =>
  handleCommand(store, mfaDecider, authStream(cmd.userId), cmd, {
    metadata,
    unseal: false,
    retry: true,
  });
/**
 * A recovery code's digest: HMAC-SHA-256 under a key derived from the master
 * key (see deriveRecoveryCodeKey). The prefix tells these from the unkeyed
 * SHA-256 digests of earlier versions, which the read model no longer keeps.
 */
export const RECOVERY_DIGEST_PREFIX = "hmac:";
const digest = (key: Uint8Array, code: string) =>
  RECOVERY_DIGEST_PREFIX +
  createHmac("sha256", key).update(code.replace(/[\s-]/g, "").toUpperCase()).digest("hex");

interface MfaRow {
  secret: string;
  enabled: boolean;
  recovery_digests: string[];
  last_step: string | number | null;
}

const mfaRow = async (store: EventStore, userId: string): Promise<MfaRow | null> => {
  const [r] = await store.db.query<Omit<MfaRow, "secret"> & { sealed_secret: SealedValue }>(
    sql`select sealed_secret, enabled, recovery_digests, last_step
      from user_mfa where user_id = ${userId}::uuid`,
  );
  if (!r) return null;
  const secret = await store.codec.unseal("secret", r.sealed_secret);
  // a shredded user key leaves no usable second factor
  if (secret === ERASED || typeof secret !== "string") return null;
  return { ...r, secret };
};

/**
 * The `MfaVerified` event for a code, or null when it is wrong: a TOTP code
 * of the current step ±1 not used before, or an unused recovery code.
 */
const check = (
  row: MfaRow,
  key: Uint8Array,
  code: string,
  now: Date,
  userId: string,
): NewEventOf<typeof MfaVerified> | null => {
  const clean = code.replace(/\s/g, "");
  if (/^\d{6}$/.test(clean)) {
    const delta = totp(row.secret, userId).validate({
      token: clean,
      timestamp: now.getTime(),
      window: 1,
    });
    if (delta === null) return null;
    const step = Math.floor(now.getTime() / 30_000) + delta;
    if (row.last_step !== null && step <= Number(row.last_step)) return null;
    return {
      type: "MfaVerified",
      data: { userId, method: "totp", step, recoveryCodeDigest: null },
    };
  }
  const d = digest(key, clean);
  if (!row.enabled || !row.recovery_digests.includes(d)) return null;
  return {
    type: "MfaVerified",
    data: { userId, method: "recovery_code", step: null, recoveryCodeDigest: d },
  };
};

/** Starts TOTP enrolment: returns the otpauth URI (shown once) for an authenticator app. */
export const startEnrollment = async (
  store: EventStore,
  user: { id: string; email: string; mfaEnabled: boolean },
  metadata: EventMetadata,
): Promise<{ otpauthUri: string; secret: string }> => {
  if (user.mfaEnabled) throw new ConflictError("two-factor authentication is already on");
  const secret = new OTPAuth.Secret({ size: 20 }).base32;
  await runMfaCommand(store, { type: "StartEnrollment", userId: user.id, secret }, metadata);
  return { otpauthUri: totp(secret, user.email).toString(), secret };
};

/** Confirms enrolment with a first code; returns ten recovery codes (shown once). */
export const confirmEnrollment = async (
  store: EventStore,
  recoveryCodeKey: Uint8Array,
  userId: string,
  /** The session the code came through: it has now presented a second factor. */
  sessionId: string,
  code: string,
  now: Date,
  metadata: EventMetadata,
): Promise<string[]> => {
  const row = await mfaRow(store, userId);
  if (!row) throw new NotFoundError("no two-factor enrolment in progress");
  if (row.enabled) throw new ConflictError("two-factor authentication is already on");
  const verified = /^\d{6}$/.test(code.trim())
    ? check(row, recoveryCodeKey, code, now, userId)
    : null;
  if (!verified) throw new UnauthorizedError("invalid code");
  const codes = Array.from({ length: 10 }, () => {
    const raw = randomBytes(8).toString("hex").toUpperCase().slice(0, 10);
    return `${raw.slice(0, 5)}-${raw.slice(5)}`;
  });
  await runMfaCommand(store, {
    type: "ConfirmEnrollment",
    userId,
    verified,
    recoveryCodeDigests: codes.map((c) => digest(recoveryCodeKey, c)),
  }, metadata);
  await runSessionCommand(store, sessionId, { type: "VerifySecondFactor" }, metadata);
  return codes;
};

/** Turns two-factor authentication off; needs a current code or a recovery code. */
export const disableMfa = async (
  store: EventStore,
  recoveryCodeKey: Uint8Array,
  userId: string,
  code: string,
  now: Date,
  metadata: EventMetadata,
): Promise<void> => {
  const row = await mfaRow(store, userId);
  if (!row?.enabled) throw new NotFoundError("two-factor authentication is not on");
  const verified = check(row, recoveryCodeKey, code, now, userId);
  if (!verified) throw new UnauthorizedError("invalid code");
  await runMfaCommand(store, { type: "Disable", userId, verified }, metadata);
};

/** For login: the event that records an accepted second factor, or null. */
export const secondFactorEvent = async (
  store: EventStore,
  recoveryCodeKey: Uint8Array,
  userId: string,
  code: string,
  now: Date,
): Promise<NewEventOf<typeof MfaVerified> | null> => {
  const row = await mfaRow(store, userId);
  return row?.enabled ? check(row, recoveryCodeKey, code, now, userId) : null;
};

/** An authenticator's current code (for tests and tooling that hold the secret). */
export const currentCode = (secret: string, at: Date): string =>
  totp(secret, "x").generate({ timestamp: at.getTime() });
