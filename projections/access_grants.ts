import { actorUserId } from "./actor.ts";
import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Grants of access to a patient's record, inline: the policy's `active_grant`
 * relation reads it on every request, and a revocation must take effect at
 * once. Status is `active` until revoked or swept as expired; an active row
 * whose `expires_at` has passed grants nothing (the policy compares with its
 * clock), the sweeper only records the end. The purpose stays sealed in the
 * log (`stream_id` is where the grant and its end live); erasing the patient
 * drops their rows.
 */
export const accessGrants: Projection = {
  name: "access_grants",
  version: 1,
  mode: "inline",
  tables: ["access_grants"],
  setup: `create table access_grants (
    id            uuid primary key,
    patient_id    uuid not null,
    grantee_kind  text not null,
    grantee_id    uuid not null,
    source        text not null,
    source_id     uuid not null,
    stream_id     text not null,
    granted_by    uuid,
    granted_at    timestamptz not null,
    expires_at    timestamptz not null,
    status        text not null,
    ended_at      timestamptz,
    ended_by      uuid
  );
  create index access_grants_grantee on access_grants (grantee_id, patient_id)
    where status = 'active';
  create index access_grants_patient on access_grants (patient_id, granted_at);
  create index access_grants_expiry on access_grants (expires_at) where status = 'active';`,
  handlers: {
    AccessGranted: async (db, e) => {
      const d = e.data;
      const at = e.recordedAt;
      await db.query(sql`insert into access_grants (id, patient_id, grantee_kind, grantee_id,
          source, source_id, stream_id, granted_by, granted_at, expires_at, status)
        values (${d.grantId}::uuid, ${d.patientId}::uuid, ${d.granteeKind}, ${d.granteeId}::uuid,
          ${d.source}, ${d.sourceId}::uuid, ${e.streamId}, ${actorUserId(e.metadata)}::uuid,
          ${at}::timestamptz, ${d.expiresAt}::text::timestamptz, 'active')`);
    },
    AccessGrantRevoked: async (db, e) => {
      await db.query(sql`update access_grants set status = 'revoked',
          ended_at = ${e.recordedAt}::timestamptz, ended_by = ${actorUserId(e.metadata)}::uuid
        where id = ${e.data.grantId}::uuid and status = 'active'`);
    },
    AccessGrantExpired: async (db, e) => {
      await db.query(sql`update access_grants set status = 'expired',
          ended_at = expires_at
        where id = ${e.data.grantId}::uuid and status = 'active'`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`delete from access_grants where patient_id = ${id}::uuid`);
    },
  },
};
