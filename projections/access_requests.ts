import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Practitioners' access requests, inline (`GET /v1/me/access-requests` and
 * the verify route's owner check read it right after the request). Neither
 * the purpose nor the code is here: both stay sealed in the log, and the
 * code's digest only in the request's stream. `status` is pending until the
 * request is verified, locked (5 wrong codes) or recorded as expired; a
 * pending row past `expires_at` is expired too (lists compare with the
 * clock). Erasing the patient drops their rows.
 */
export const accessRequests: Projection = {
  name: "access_requests",
  version: 1,
  mode: "inline",
  tables: ["access_requests"],
  setup: `create table access_requests (
    id               uuid primary key,
    patient_id       uuid not null,
    practitioner_id  uuid not null,
    clinic_id        uuid,
    status           text not null,
    failed_attempts  integer not null,
    created_at       timestamptz not null,
    expires_at       timestamptz not null
  );
  create index access_requests_practitioner on access_requests (practitioner_id, created_at, id)
    where status = 'pending';
  create index access_requests_patient on access_requests (patient_id);`,
  handlers: {
    AccessRequested: async (db, e) => {
      const d = e.data;
      await db.query(sql`insert into access_requests (id, patient_id, practitioner_id, clinic_id,
          status, failed_attempts, created_at, expires_at)
        values (${d.requestId}::uuid, ${d.patientId}::uuid, ${d.practitionerId}::uuid,
          ${d.clinicId ?? null}::uuid, 'pending', 0, ${e.recordedAt}::timestamptz,
          ${d.expiresAt}::text::timestamptz)`);
    },
    AccessCodeFailed: async (db, e) => {
      if (!e.data.requestId) return; // a failed redeem: no request
      await db.query(sql`update access_requests set failed_attempts = ${e.data.attempt}::int
        where id = ${e.data.requestId}::uuid`);
    },
    AccessCodeLocked: async (db, e) => {
      if (!e.data.requestId) return;
      await db.query(sql`update access_requests set status = 'locked'
        where id = ${e.data.requestId}::uuid and status = 'pending'`);
    },
    AccessCodeExpired: async (db, e) => {
      if (!e.data.requestId) return;
      await db.query(sql`update access_requests set status = 'expired'
        where id = ${e.data.requestId}::uuid and status = 'pending'`);
    },
    AccessCodeVerified: async (db, e) => {
      await db.query(sql`update access_requests set status = 'verified'
        where id = ${e.data.requestId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`delete from access_requests where patient_id = ${id}::uuid`);
    },
  },
};
