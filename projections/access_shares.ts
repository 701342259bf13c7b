import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Codes patients shared first, inline: a redeem finds the share of a
 * patient by the code's keyed digest (compared in constant time, never
 * looked up by it) the moment it was shared. The code itself is nowhere:
 * only its HMAC digest, whose key is derived from the master key. `status`:
 * pending, redeemed, expired (recorded when presented late or swept); a
 * pending row past `expires_at` is expired too. Erasing the patient drops
 * their rows.
 */
export const accessShares: Projection = {
  name: "access_shares",
  version: 1,
  mode: "inline",
  tables: ["access_shares"],
  setup: `create table access_shares (
    id               uuid primary key,
    patient_id       uuid not null,
    practitioner_id  uuid,
    clinic_id        uuid,
    code_digest      text not null,
    status           text not null,
    created_at       timestamptz not null,
    expires_at       timestamptz not null,
    redeemed_by      uuid,
    grant_id         uuid
  );
  create index access_shares_patient on access_shares (patient_id, expires_at);`,
  handlers: {
    AccessCodeShared: async (db, e) => {
      const d = e.data;
      await db.query(sql`insert into access_shares (id, patient_id, practitioner_id, clinic_id,
          code_digest, status, created_at, expires_at)
        values (${d.shareId}::uuid, ${d.patientId}::uuid, ${d.practitionerId ?? null}::uuid,
          ${d.clinicId ?? null}::uuid, ${d.codeDigest}, 'pending', ${e.recordedAt}::timestamptz,
          ${d.expiresAt}::text::timestamptz)`);
    },
    AccessCodeRedeemed: async (db, e) => {
      await db.query(sql`update access_shares set status = 'redeemed',
          redeemed_by = ${e.data.practitionerId}::uuid, grant_id = ${e.data.grantId}::uuid
        where id = ${e.data.shareId}::uuid`);
    },
    AccessCodeExpired: async (db, e) => {
      if (!e.data.shareId) return;
      await db.query(sql`update access_shares set status = 'expired'
        where id = ${e.data.shareId}::uuid and status = 'pending'`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`delete from access_shares where patient_id = ${id}::uuid`);
    },
  },
};
