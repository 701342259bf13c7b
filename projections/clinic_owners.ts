import { actorUserId } from "./actor.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Who owns which clinic, inline: the policy's `clinic_owner` relation and
 * the chart filter read it, and removing an owner must end their reads at
 * once (the row goes in the same transaction as the event).
 */
export const clinicOwners: Projection = {
  name: "clinic_owners",
  version: 1,
  mode: "inline",
  tables: ["clinic_owners"],
  setup: `create table clinic_owners (
    clinic_id  uuid not null,
    user_id    uuid not null,
    added_at   timestamptz not null,
    added_by   uuid,
    primary key (clinic_id, user_id)
  );
  create index clinic_owners_user on clinic_owners (user_id);`,
  handlers: {
    ClinicOwnerAdded: async (db, e) => {
      await db.query(sql`insert into clinic_owners (clinic_id, user_id, added_at, added_by)
        values (${e.data.clinicId}::uuid, ${e.data.userId}::uuid, ${e.recordedAt}::timestamptz,
          ${actorUserId(e.metadata)}::uuid)
        on conflict (clinic_id, user_id) do nothing`);
    },
    ClinicOwnerRemoved: async (db, e) => {
      await db.query(sql`delete from clinic_owners
        where clinic_id = ${e.data.clinicId}::uuid and user_id = ${e.data.userId}::uuid`);
    },
  },
};
