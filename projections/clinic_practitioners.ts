import { actorUserId } from "./actor.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Who works at which clinic, inline: a clinic grant is usable by its active
 * members, and leaving must end that use at once. One row per (clinic,
 * practitioner), kept when they leave (`active = false`) so the list still
 * shows who joined when.
 */
export const clinicPractitioners: Projection = {
  name: "clinic_practitioners",
  version: 1,
  mode: "inline",
  tables: ["clinic_practitioners"],
  setup: `create table clinic_practitioners (
    clinic_id        uuid not null,
    user_id          uuid not null,
    employment_type  text not null,
    active           boolean not null,
    joined_at        timestamptz not null,
    joined_by        uuid,
    updated_at       timestamptz not null,
    primary key (clinic_id, user_id)
  );
  create index clinic_practitioners_user on clinic_practitioners (user_id) where active;`,
  handlers: {
    ClinicPractitionerAdded: async (db, e) => {
      const d = e.data;
      const at = e.recordedAt;
      await db.query(sql`insert into clinic_practitioners (clinic_id, user_id, employment_type,
          active, joined_at, joined_by, updated_at)
        values (${d.clinicId}::uuid, ${d.userId}::uuid, ${d.employmentType}, true,
          ${at}::timestamptz, ${actorUserId(e.metadata)}::uuid, ${at}::timestamptz)`);
    },
    ClinicPractitionerUpdated: async (db, e) => {
      const c = e.data.changes as { active?: boolean; employmentType?: string };
      await db.query(sql`update clinic_practitioners set
          active = coalesce(${c.active ?? null}::boolean, active),
          employment_type = coalesce(${c.employmentType ?? null}, employment_type),
          updated_at = ${e.recordedAt}::timestamptz
        where clinic_id = ${e.data.clinicId}::uuid and user_id = ${e.data.userId}::uuid`);
    },
  },
};
