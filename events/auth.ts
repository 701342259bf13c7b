import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Authentication acts. Each is part of the audit trail (HIPAA: unique user
 * ids, automatic logoff, audit of authentication events). They never carry a
 * password, token or code: only ids, enums and sealed token digests.
 */
const sessionId = z.uuid();
const userId = z.uuid();

/** Authentication methods a session can record (RFC 8176 names). */
export const AMR = ["pwd", "otp"] as const;

export const LOGIN_FAILURE_REASONS = [
  "unknown_email",
  "bad_password",
  "locked",
  "inactive",
  "pending_approval",
  "mfa_required",
  "bad_mfa_code",
  /** `POST /v1/me/password` with a wrong current password: counts towards the lock too. */
  "wrong_current_password",
] as const;

/**
 * A session began: the user logged in. Stream `session-<id>`. `amr` says how
 * (RFC 8176): `pwd`, plus `otp` when a second factor was presented; a session
 * keeps it for life, so enrolling elsewhere does not upgrade it.
 */
export const UserLoggedIn = defineEvent({
  type: "UserLoggedIn",
  version: 2,
  schema: z.strictObject({
    sessionId,
    userId,
    refreshTokenDigest: z.string(),
    amr: z.array(z.enum(AMR)).min(1),
  }),
  // a digest of a secret is still sealed: it must not be searchable in the log
  phi: { subject: (d) => `user-${d.userId}`, fields: ["refreshTokenDigest"] },
  // v1 did not say; assume password only, the restricted reading
  upcasters: { 1: (d) => ({ ...d, amr: ["pwd"] }) },
});

/**
 * The session's user confirmed TOTP enrolment with a code from within it:
 * this session has now presented a second factor too. Stream `session-<id>`.
 */
export const SessionSecondFactorVerified = defineEvent({
  type: "SessionSecondFactorVerified",
  version: 1,
  schema: z.strictObject({ sessionId, userId }),
});

/** A failed credential check. Stream `auth-<userId>`, or `login-<uuid>` for an unknown email. */
export const LoginFailed = defineEvent({
  type: "LoginFailed",
  version: 1,
  schema: z.strictObject({ userId: userId.nullable(), reason: z.enum(LOGIN_FAILURE_REASONS) }),
});

/** Too many failures: the account refuses logins until `until`. Stream `user-<id>`. */
export const AccountLocked = defineEvent({
  type: "AccountLocked",
  version: 1,
  schema: z.strictObject({ userId, until: z.iso.datetime(), failures: z.number().int() }),
});

/**
 * Password (and second factor) accepted: the failures in a row end here.
 * Stream `auth-<userId>`, appended at the version the attempt was decided on;
 * the session itself begins in `session-<sessionId>`.
 */
export const LoginSucceeded = defineEvent({
  type: "LoginSucceeded",
  version: 1,
  schema: z.strictObject({ userId, sessionId }),
});

/** An operator lifted a lock (or cleared the failures). Stream `auth-<userId>`. */
export const AccountUnlocked = defineEvent({
  type: "AccountUnlocked",
  version: 1,
  schema: z.strictObject({ userId, operatorId: userId, reason: z.string().min(1).max(1000) }),
  // an operator's words about a person: sealed like other personal data of the user
  phi: { subject: (d) => `user-${d.userId}`, fields: ["reason"] },
});

/**
 * A sign-up for an email that already has an account: nothing is created and
 * the caller gets the same answer as a new sign-up. Stream `signup-<uuid>`.
 */
export const SignupRefused = defineEvent({
  type: "SignupRefused",
  version: 1,
  schema: z.strictObject({ userId, reason: z.enum(["email_taken"]) }),
});

/** The refresh token was rotated. Stream `session-<id>`. */
export const SessionRefreshed = defineEvent({
  type: "SessionRefreshed",
  version: 1,
  schema: z.strictObject({ sessionId, userId, refreshTokenDigest: z.string() }),
  phi: { subject: (d) => `user-${d.userId}`, fields: ["refreshTokenDigest"] },
});

/** An already-rotated refresh token was presented: the session is revoked. */
export const RefreshReuseDetected = defineEvent({
  type: "RefreshReuseDetected",
  version: 1,
  schema: z.strictObject({ sessionId, userId }),
});

export const SESSION_END_REASONS = [
  "logout",
  "logout_all",
  "refresh_reuse",
  "idle_timeout",
  "user_deactivated",
] as const;

/** A session ended. Stream `session-<id>`. */
export const SessionEnded = defineEvent({
  type: "SessionEnded",
  version: 1,
  schema: z.strictObject({ sessionId, userId, reason: z.enum(SESSION_END_REASONS) }),
});

/** The policy refused an actor an action. Stream `actor-<id>`. No PHI: ids only. */
export const AccessDenied = defineEvent({
  type: "AccessDenied",
  version: 1,
  schema: z.strictObject({
    actorId: z.string(),
    action: z.string(),
    resourceId: z.string().nullable(),
  }),
});

const userKey = { subject: (d: { userId: string }) => `user-${d.userId}` };

/** TOTP enrolment began; the secret is sealed. Stream `auth-<userId>`. */
export const MfaEnrollmentStarted = defineEvent({
  type: "MfaEnrollmentStarted",
  version: 1,
  schema: z.strictObject({ userId, secret: z.string() }),
  phi: { ...userKey, fields: ["secret"] },
});

/** A first valid code confirmed the enrolment; recovery-code digests are sealed. */
export const MfaEnabled = defineEvent({
  type: "MfaEnabled",
  version: 1,
  schema: z.strictObject({ userId, recoveryCodeDigests: z.array(z.string()).length(10) }),
  phi: { ...userKey, fields: ["recoveryCodeDigests"] },
});

export const MfaDisabled = defineEvent({
  type: "MfaDisabled",
  version: 1,
  schema: z.strictObject({ userId }),
});

/**
 * A second factor was accepted: a TOTP time step (never accepted twice) or a
 * recovery code (single use; its sealed digest says which).
 */
export const MfaVerified = defineEvent({
  type: "MfaVerified",
  version: 1,
  schema: z.strictObject({
    userId,
    method: z.enum(["totp", "recovery_code"]),
    step: z.number().int().nullable(),
    recoveryCodeDigest: z.string().nullable(),
  }),
  phi: { ...userKey, fields: ["recoveryCodeDigest"] },
});

/** An operator removed the account's second factor (a lost device). Stream `auth-<userId>`. */
export const MfaReset = defineEvent({
  type: "MfaReset",
  version: 1,
  schema: z.strictObject({ userId, operatorId: userId, reason: z.string().min(1).max(1000) }),
  phi: { ...userKey, fields: ["reason"] },
});

export const authEvents = [
  MfaEnrollmentStarted,
  MfaEnabled,
  MfaDisabled,
  MfaVerified,
  MfaReset,
  UserLoggedIn,
  SessionSecondFactorVerified,
  LoginFailed,
  LoginSucceeded,
  AccountLocked,
  AccountUnlocked,
  SignupRefused,
  SessionRefreshed,
  RefreshReuseDetected,
  SessionEnded,
  AccessDenied,
];
