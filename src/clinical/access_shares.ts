import type { EventMetadata } from "../../events/metadata.ts";
import { codeDigest, digestsEqual, generateCode } from "../auth/access_codes.ts";
import type { Actor } from "../auth/policy.ts";
import { accessShareDecider, redeemOutcome } from "../domain/access_share.ts";
import {
  failedRedeemOutcome,
  fold as foldRedeemer,
  isBlocked,
  redeemerDecider,
} from "../domain/access_redeemer.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { CodeRejectedError, NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { type CodeDeps, type GrantView, grantView, requireCodePatient } from "./access_requests.ts";

export const accessShareStream = (id: string) => `access-share-${id}`;
export const redeemerStream = (patientId: string, practitionerId: string) =>
  `access-redeem-${patientId}-${practitionerId}`;

/**
 * How long after its expiry a share still answers for its code (410, or 409
 * once used) instead of reading as a wrong code. Older shares are not
 * compared at all, which bounds the work of a redeem.
 */
const RECENT_MS = 24 * 3_600_000;

export interface SharedCodeView {
  id: string;
  patientId: string;
  practitionerId: string | null;
  clinicId: string | null;
  durationHours: number;
  expiresAt: string;
  /** Shown this once: only its digest is kept. */
  code: string;
}

/** The share's grantee must exist: an active practitioner, or an active clinic (404 otherwise). */
const requireGrantee = async (
  store: EventStore,
  grantee: { practitionerId: string | null; clinicId: string | null },
): Promise<void> => {
  if (grantee.practitionerId) {
    const [u] = await store.db.query<{ role: string }>(
      sql`select role from users where id = ${grantee.practitionerId}::uuid and active`,
    );
    if (u?.role !== "practitioner") throw new NotFoundError("no such active practitioner");
  }
  if (grantee.clinicId) {
    const [c] = await store.db.query<{ active: boolean }>(
      sql`select active from clinics where id = ${grantee.clinicId}::uuid`,
    );
    if (!c?.active) throw new NotFoundError("no such active clinic");
  }
};

/** Digests of the patient's shares still pending: a new code must differ from each. */
const pendingDigests = async (store: EventStore, patientId: string, now: Date) =>
  (await store.db.query<{ d: string }>(
    sql`select code_digest as d from access_shares
      where patient_id = ${patientId}::uuid and status = 'pending'
        and expires_at > ${now}::timestamptz`,
  )).map((r) => r.d);

/**
 * The patient (or a full proxy; the router asked the policy) shares a code
 * first, for one practitioner or one clinic. The code is in the answer once
 * and nowhere else: `AccessCodeShared` keeps its digest. A code equal to
 * another pending share of the same patient is drawn again, so a redeem
 * can never match two.
 */
export const shareCode = async (
  deps: CodeDeps,
  input: {
    patientId: string;
    practitionerId: string | null;
    clinicId: string | null;
    purpose: string;
    durationHours: number;
  },
  now: Date,
  metadata: EventMetadata,
): Promise<SharedCodeView> => {
  await requireCodePatient(deps.store, input.patientId);
  await requireGrantee(deps.store, input);
  const taken = await pendingDigests(deps.store, input.patientId, now);
  const binding = { kind: "share" as const, patientId: input.patientId };
  let code = generateCode();
  let digest = codeDigest(deps.accessCodeKey, binding, code);
  while (taken.some((d) => digestsEqual(d, digest))) {
    code = generateCode();
    digest = codeDigest(deps.accessCodeKey, binding, code);
  }
  const shareId = crypto.randomUUID();
  const r = await handleCommand(deps.store, accessShareDecider, accessShareStream(shareId), {
    type: "ShareCode",
    shareId,
    ...input,
    codeDigest: digest,
    now,
  }, { metadata, unseal: false });
  const s = r.state;
  if (s.status === "none") throw new Error("unreachable: a share was just appended");
  return {
    id: shareId,
    patientId: s.patientId,
    practitionerId: s.practitionerId,
    clinicId: s.clinicId,
    durationHours: s.durationHours,
    expiresAt: timestamp(s.expiresAt),
    code,
  };
};

/**
 * The shares of this patient the practitioner could redeem (named, or named
 * clinic where they are an active member of an active clinic), recent
 * enough to answer, pending ones first. The caller compares digests.
 */
const candidateShares = (store: EventStore, patientId: string, userId: string, now: Date) =>
  store.db.query<{ id: string; code_digest: string }>(
    sql`select s.id::text as id, s.code_digest from access_shares s
      where s.patient_id = ${patientId}::uuid
        and s.expires_at > ${new Date(now.getTime() - RECENT_MS)}::timestamptz
        and (s.practitioner_id = ${userId}::uuid or s.clinic_id in (
          select m.clinic_id from clinic_practitioners m join clinics c on c.id = m.clinic_id
          where m.user_id = ${userId}::uuid and m.active and c.active))
      order by (s.status = 'pending') desc, s.created_at desc`,
  );

const REFUSALS = {
  invalid: "the code is not valid",
  locked: "too many wrong codes: redeeming for this patient is blocked for a while",
  used: "the code was already used",
  expired: "the code has expired; ask the patient for a new one",
} as const;

/** Records a failed redeem on the redeemer's stream and throws its answer. */
const failRedeem = async (
  store: EventStore,
  patientId: string,
  practitionerId: string,
  now: Date,
  metadata: EventMetadata,
): Promise<never> => {
  const r = await handleCommand(store, redeemerDecider, redeemerStream(patientId, practitionerId), {
    type: "FailRedeem",
    patientId,
    practitionerId,
    now,
  }, { metadata, unseal: false, retry: true });
  const outcome = failedRedeemOutcome(r.state, r.events, now);
  throw new CodeRejectedError(outcome, REFUSALS[outcome]);
};

/**
 * A practitioner redeems a shared code for a patient.
 *
 * 1. A practitioner blocked for this patient is refused (409) before the
 *    code is looked at, and the attempt recorded on their redeem stream.
 * 2. The code's digest is compared, in constant time, with each candidate
 *    share; none matching is a wrong code on the redeem stream (422; the
 *    fifth within 15 minutes blocks for 15 minutes).
 * 3. The matching share is redeemed at its stream's version: of concurrent
 *    redeems one wins; the others, decided again, find it used (409).
 *
 * A right code presented in the instant a concurrent wrong one blocks the
 * practitioner may still win: the block and the share are different
 * streams, and the block guards against guessing, which that is not.
 */
export const redeemCode = async (
  deps: CodeDeps,
  actor: Actor,
  input: { patientId: string; code: string },
  now: Date,
  metadata: EventMetadata,
): Promise<GrantView> => {
  const { store } = deps;
  const { patientId } = input;
  await requireCodePatient(store, patientId);
  const redeemer = foldRedeemer(
    await store.readStream(redeemerStream(patientId, actor.userId), { unseal: false }),
  );
  if (isBlocked(redeemer, now)) {
    return await failRedeem(store, patientId, actor.userId, now, metadata);
  }
  const digest = codeDigest(deps.accessCodeKey, { kind: "share", patientId }, input.code);
  let match: string | null = null;
  // every candidate is compared, so the time taken does not tell which one matched
  for (const s of await candidateShares(store, patientId, actor.userId, now)) {
    if (digestsEqual(s.code_digest, digest) && match === null) match = s.id;
  }
  if (match === null) return await failRedeem(store, patientId, actor.userId, now, metadata);
  const res = await handleCommand(store, accessShareDecider, accessShareStream(match), {
    type: "RedeemCode",
    practitionerId: actor.userId,
    grantId: crypto.randomUUID(),
    now,
  }, { metadata, retry: true });
  const outcome = redeemOutcome(res.state, res.events);
  if (outcome !== "granted") throw new CodeRejectedError(outcome, REFUSALS[outcome]);
  return grantView(res.events);
};
