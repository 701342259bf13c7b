import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Delegated access to a patient's record: one-time codes, grants and
 * break-glass. Purposes, reasons, review notes and codes are the patient's
 * PHI, sealed with the patient's key (`patient-<patientId>`); a code is
 * otherwise kept only as a keyed digest (HMAC, hex).
 *
 * Streams, each holding the grant it leads to (so that the step that creates
 * a grant and the grant are one atomic append):
 * - `access-request-<requestId>`: AccessRequested, AccessCodeFailed…,
 *   AccessCodeLocked | AccessCodeExpired | AccessCodeVerified + AccessGranted,
 *   then AccessGrantRevoked | AccessGrantExpired;
 * - `access-share-<shareId>`: AccessCodeShared, AccessCodeExpired |
 *   AccessCodeRedeemed + AccessGranted, then the grant's end (and an
 *   AccessCodeFailed for each attempt on it once used or expired);
 * - `access-redeem-<patientId>-<practitionerId>`: that practitioner's wrong
 *   redeem attempts for that patient (AccessCodeFailed, AccessCodeLocked);
 * - `break-glass-<breakGlassId>`: BreakGlassUsed + AccessGranted, the
 *   grant's end, BreakGlassReviewed.
 */
const patientId = z.uuid();
const sealed = (d: { patientId: string }) => `patient-${d.patientId}`;
const at = z.iso.datetime({ offset: true });
const digest = z.string().regex(/^[0-9a-f]{64}$/);
const code = z.string().regex(/^\d{6}$/);

export const GRANTEE_KINDS = ["practitioner", "clinic"] as const;
export const GRANT_SOURCES = ["request", "share", "break_glass"] as const;

/** A practitioner asks for access; the code goes to the patient (outbox). */
export const AccessRequested = defineEvent({
  type: "AccessRequested",
  version: 1,
  schema: z.strictObject({
    requestId: z.uuid(),
    patientId,
    practitionerId: z.uuid(),
    clinicId: z.uuid().nullable(),
    purpose: z.string(),
    durationHours: z.number().int().min(1).max(72),
    codeDigest: digest,
    code,
    expiresAt: at,
  }),
  phi: { subject: sealed, fields: ["purpose", "code"] },
});

/** The patient (or a full proxy) shares a code first; it is shown to them once. */
export const AccessCodeShared = defineEvent({
  type: "AccessCodeShared",
  version: 1,
  schema: z.strictObject({
    shareId: z.uuid(),
    patientId,
    practitionerId: z.uuid().nullable(),
    clinicId: z.uuid().nullable(),
    purpose: z.string(),
    durationHours: z.number().int().min(1).max(72),
    codeDigest: digest,
    expiresAt: at,
  }),
  phi: { subject: sealed, fields: ["purpose"] },
});

/** The right code for a live request: followed by AccessGranted in the same append. */
export const AccessCodeVerified = defineEvent({
  type: "AccessCodeVerified",
  version: 1,
  schema: z.strictObject({ requestId: z.uuid(), patientId, grantId: z.uuid() }),
});

/** A shared code redeemed: followed by AccessGranted in the same append. */
export const AccessCodeRedeemed = defineEvent({
  type: "AccessCodeRedeemed",
  version: 1,
  schema: z.strictObject({
    shareId: z.uuid(),
    patientId,
    practitionerId: z.uuid(),
    grantId: z.uuid(),
  }),
});

/**
 * A failed attempt: a wrong code, or any code once the request is dead or
 * used, the share used or expired, the redeemer blocked (the code is then
 * not even compared). `attempt` counts the failed attempts of this stream
 * (request, share or redeemer); what counts towards a lock is the deciders'
 * business (src/domain/access_request.ts, access_redeemer.ts).
 */
export const AccessCodeFailed = defineEvent({
  type: "AccessCodeFailed",
  version: 1,
  schema: z.strictObject({
    patientId,
    practitionerId: z.uuid(),
    requestId: z.uuid().nullable(),
    attempt: z.number().int().min(1),
  }),
});

/**
 * Too many wrong codes: a request is dead for good (`requestId`); a redeemer
 * is blocked for that patient until `until`.
 */
export const AccessCodeLocked = defineEvent({
  type: "AccessCodeLocked",
  version: 1,
  schema: z.strictObject({
    patientId,
    practitionerId: z.uuid(),
    requestId: z.uuid().nullable(),
    until: at.nullable(),
  }),
});

/** A code was presented (or swept) after its 10 minutes. */
export const AccessCodeExpired = defineEvent({
  type: "AccessCodeExpired",
  version: 1,
  schema: z.strictObject({
    patientId,
    requestId: z.uuid().nullable(),
    shareId: z.uuid().nullable(),
  }),
});

/**
 * Access to the patient's record for a practitioner, or for every active
 * member practitioner of a clinic, until `expiresAt`.
 */
export const AccessGranted = defineEvent({
  type: "AccessGranted",
  version: 1,
  schema: z.strictObject({
    grantId: z.uuid(),
    patientId,
    granteeKind: z.enum(GRANTEE_KINDS),
    granteeId: z.uuid(),
    source: z.enum(GRANT_SOURCES),
    sourceId: z.uuid(),
    purpose: z.string(),
    expiresAt: at,
  }),
  phi: { subject: sealed, fields: ["purpose"] },
});

export const AccessGrantRevoked = defineEvent({
  type: "AccessGrantRevoked",
  version: 1,
  schema: z.strictObject({ grantId: z.uuid(), patientId }),
});

/** Appended by the sweeper once a grant's time is up, so the trail shows every end. */
export const AccessGrantExpired = defineEvent({
  type: "AccessGrantExpired",
  version: 1,
  schema: z.strictObject({ grantId: z.uuid(), patientId }),
});

/** Emergency access: a one-hour grant (AccessGranted in the same append), reviewed later. */
export const BreakGlassUsed = defineEvent({
  type: "BreakGlassUsed",
  version: 1,
  schema: z.strictObject({
    breakGlassId: z.uuid(),
    grantId: z.uuid(),
    patientId,
    practitionerId: z.uuid(),
    reason: z.string(),
    expiresAt: at,
  }),
  phi: { subject: sealed, fields: ["reason"] },
});

export const BREAK_GLASS_OUTCOMES = ["appropriate", "inappropriate"] as const;

export const BreakGlassReviewed = defineEvent({
  type: "BreakGlassReviewed",
  version: 1,
  schema: z.strictObject({
    breakGlassId: z.uuid(),
    patientId,
    outcome: z.enum(BREAK_GLASS_OUTCOMES),
    note: z.string(),
  }),
  phi: { subject: sealed, fields: ["note"] },
});

/**
 * Reads of grants with their purposes (PHI): the grants and whose records
 * they are. Stream `access-<actorId>`, as every read.
 */
export const GrantsViewed = defineEvent({
  type: "GrantsViewed",
  version: 1,
  schema: z.strictObject({ patientIds: z.array(z.uuid()), grantIds: z.array(z.uuid()) }),
});

/** An auditor's read of break-glass uses with their reasons (PHI). Stream `access-<actorId>`. */
export const BreakGlassViewed = defineEvent({
  type: "BreakGlassViewed",
  version: 1,
  schema: z.strictObject({
    patientIds: z.array(z.uuid()),
    breakGlassIds: z.array(z.uuid()),
  }),
});

export const accessEvents = [
  GrantsViewed,
  BreakGlassViewed,
  AccessRequested,
  AccessCodeShared,
  AccessCodeVerified,
  AccessCodeRedeemed,
  AccessCodeFailed,
  AccessCodeLocked,
  AccessCodeExpired,
  AccessGranted,
  AccessGrantRevoked,
  AccessGrantExpired,
  BreakGlassUsed,
  BreakGlassReviewed,
];
