import { z } from "zod";
import type { EventMetadata } from "../../events/metadata.ts";
import { codeDigest, generateCode } from "../auth/access_codes.ts";
import type { Actor } from "../auth/policy.ts";
import {
  accessRequestDecider,
  type NewAccessRequestEvent,
  verifyOutcome,
} from "../domain/access_request.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { CodeRejectedError, GoneError, NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { readTogether } from "../store/snapshot.ts";

export const accessRequestStream = (id: string) => `access-request-${id}`;

/** What the store and the keys of a runtime a code command needs. */
export interface CodeDeps {
  store: EventStore;
  accessCodeKey: Uint8Array;
}

export interface AccessRequestView {
  id: string;
  patientId: string;
  clinicId: string | null;
  /** A new request is pending: what became of it is the verify answer's to say. */
  status: "pending";
  expiresAt: string;
  durationHours: number;
}

/** A grant as verify and redeem answer it. */
export interface GrantView {
  id: string;
  patientId: string;
  granteeKind: "practitioner" | "clinic";
  granteeId: string;
  source: "request" | "share" | "break_glass";
  sourceId: string;
  purpose: string;
  status: "active";
  expiresAt: string;
}

/** The grant an appended `AccessGranted` describes. */
export const grantView = (events: readonly { type: string; data: unknown }[]): GrantView => {
  const g = events.find((e) => e.type === "AccessGranted")!.data as
    & Omit<
      GrantView,
      "id" | "status"
    >
    & { grantId: string };
  const { grantId, ...rest } = g;
  return { id: grantId, ...rest, status: "active" };
};

/**
 * The patient a code is about must exist and be live: 404 for an unknown or
 * soft-deleted one (nobody asking for access may see deleted records), 410
 * for an erased one (as everywhere: an erased id must not read as unknown).
 * No relation is needed: asking is how a practitioner without one gets one.
 */
export const requireCodePatient = async (store: EventStore, patientId: string): Promise<void> => {
  const [p] = await store.db.query<{ deleted: boolean; erased: boolean }>(
    sql`select deleted, erased_at is not null as erased from patients where id = ${patientId}::uuid`,
  );
  if (!p) throw new NotFoundError("no such patient");
  if (p.erased) throw new GoneError("the patient was erased");
  if (p.deleted) throw new NotFoundError("no such patient");
};

/** How a practitioner stands to a clinic: no such clinic, or whether they may act for it. */
export const clinicStanding = async (
  store: EventStore,
  clinicId: string,
  userId: string,
): Promise<"none" | "member" | "not_member"> => {
  const [r] = await store.db.query<{ member: boolean }>(
    sql`select c.active and coalesce(m.active, false) as member
      from clinics c left join clinic_practitioners m
        on m.clinic_id = c.id and m.user_id = ${userId}::uuid
      where c.id = ${clinicId}::uuid`,
  );
  return !r ? "none" : r.member ? "member" : "not_member";
};

/**
 * A practitioner asks for access: a fresh code, sealed under the patient's
 * key in `AccessRequested` (the outbox delivers it), its digest beside it.
 * The answer never holds the code. The router has checked the clinic.
 */
export const requestAccess = async (
  deps: CodeDeps,
  actor: Actor,
  input: { patientId: string; purpose: string; durationHours: number; clinicId: string | null },
  now: Date,
  metadata: EventMetadata,
): Promise<AccessRequestView> => {
  await requireCodePatient(deps.store, input.patientId);
  const requestId = crypto.randomUUID();
  const code = generateCode();
  const digest = codeDigest(deps.accessCodeKey, {
    kind: "request",
    requestId,
    patientId: input.patientId,
  }, code);
  const r = await handleCommand(deps.store, accessRequestDecider, accessRequestStream(requestId), {
    type: "RequestAccess",
    requestId,
    patientId: input.patientId,
    practitionerId: actor.userId,
    clinicId: input.clinicId,
    purpose: input.purpose,
    durationHours: input.durationHours,
    code,
    codeDigest: digest,
    now,
  }, { metadata });
  const s = r.state;
  if (s.status === "none") throw new Error("unreachable: a request was just appended");
  return {
    id: requestId,
    patientId: s.patientId,
    clinicId: s.clinicId,
    status: "pending",
    expiresAt: timestamp(s.expiresAt),
    durationHours: s.durationHours,
  };
};

const REFUSALS = {
  invalid: "the code is not valid",
  locked: "too many wrong codes: the request is dead; ask for a new one",
  used: "the request was already verified",
  expired: "the code has expired; ask for a new one",
} as const;

/**
 * The requesting practitioner presents the code (anyone else: 404). One
 * decision over the request's stream, retried on a concurrent attempt, so
 * the count of wrong codes is exact and one right code makes one grant.
 * Every attempt appends (see src/domain/access_request.ts); a refused one
 * is thrown after its event is written.
 */
export const verifyAccessRequest = async (
  deps: CodeDeps,
  actor: Actor,
  requestId: string,
  code: string,
  now: Date,
  metadata: EventMetadata,
): Promise<GrantView> => {
  const [r] = await deps.store.db.query<{ patient_id: string; practitioner_id: string }>(
    sql`select patient_id::text as patient_id, practitioner_id::text as practitioner_id
      from access_requests where id = ${requestId}::uuid`,
  );
  if (!r || r.practitioner_id !== actor.userId) throw new NotFoundError("no such access request");
  await requireCodePatient(deps.store, r.patient_id);
  const candidateDigest = codeDigest(deps.accessCodeKey, {
    kind: "request",
    requestId,
    patientId: r.patient_id,
  }, code);
  const res = await handleCommand(
    deps.store,
    accessRequestDecider,
    accessRequestStream(requestId),
    {
      type: "VerifyCode",
      practitionerId: actor.userId,
      candidateDigest,
      grantId: crypto.randomUUID(),
      now,
    },
    { metadata, retry: true },
  );
  const outcome = verifyOutcome(res.state, res.events);
  if (outcome !== "granted") throw new CodeRejectedError(outcome, REFUSALS[outcome]);
  return grantView(res.events as NewAccessRequestEvent[]);
};

/** A page cursor of the pending requests: the last row's creation time and id. */
const Position = z.tuple([z.iso.datetime(), z.uuid()]);

export interface PendingRequestItem {
  id: string;
  patientId: string;
  clinicId: string | null;
  status: "pending";
  failedAttempts: number;
  createdAt: string;
  expiresAt: string;
}

/** The practitioner's requests still waiting for their code, newest first. */
export const listPendingRequests = async (
  store: EventStore,
  practitionerId: string,
  now: Date,
  q: { limit: number; cursor?: string },
): Promise<{ items: PendingRequestItem[]; nextCursor: string | null; total: number }> => {
  const after = q.cursor
    ? await store.codec.cursors.decode("access-requests", Position, q.cursor)
    : null;
  const where = sql`where practitioner_id = ${practitionerId}::uuid and status = 'pending'
      and expires_at > ${now}::timestamptz`;
  const [rows, [count]] = await readTogether<{
    id: string;
    patient_id: string;
    clinic_id: string | null;
    failed_attempts: number;
    created_at: Date | string;
    expires_at: Date | string;
    cursor_at: string;
  }, { n: number }>(
    store.db,
    sql`select id::text as id, patient_id::text as patient_id, clinic_id::text as clinic_id,
      failed_attempts, created_at, expires_at,
      to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_at
    from access_requests ${where}
      ${
      after
        ? sql`and (created_at, id) < (${after[0]}::text::timestamptz, ${after[1]}::uuid)`
        : sql``
    }
    order by created_at desc, id desc
    limit ${q.limit + 1}`,
    sql`select count(*)::int as n from access_requests ${where}`,
  );
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  return {
    items: page.map((r) => ({
      id: r.id,
      patientId: r.patient_id,
      clinicId: r.clinic_id,
      status: "pending" as const,
      failedAttempts: Number(r.failed_attempts),
      createdAt: timestamp(r.created_at),
      expiresAt: timestamp(r.expires_at),
    })),
    nextCursor: rows.length > q.limit && last
      ? await store.codec.cursors.encode("access-requests", [last.cursor_at, last.id])
      : null,
    total: Number(count?.n ?? 0),
  };
};
