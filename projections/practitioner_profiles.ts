import type { PractitionerProfileFields } from "../events/practitioner.ts";
import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Practitioner profiles, inline (the API reads its own writes). The bio is
 * the practitioner's personal data, sealed in the log under the user's key:
 * erasing the user (`SubjectKeyDestroyed` of `user-<id>`) nulls it here, and a
 * rebuild over the erased events reads it as null too. The professional
 * fields stay.
 */
export const practitionerProfiles: Projection = {
  name: "practitioner_profiles",
  version: 1,
  mode: "inline",
  tables: ["practitioner_profiles"],
  setup: `create table practitioner_profiles (
    user_id              uuid primary key,
    license_number       text not null,
    specialization       text,
    years_of_experience  integer,
    qualifications       jsonb not null,
    bio                  text,
    version              integer not null,
    created_at           timestamptz not null,
    updated_at           timestamptz not null
  );`,
  handlers: {
    PractitionerProfileSet: async (db, e) => {
      const d = e.data as PractitionerProfileFields & { userId: string };
      const at = e.recordedAt;
      await db.query(sql`insert into practitioner_profiles (user_id, license_number,
          specialization, years_of_experience, qualifications, bio, version, created_at,
          updated_at)
        values (${d.userId}::uuid, ${d.licenseNumber}, ${d.specialization},
          ${d.yearsOfExperience}::integer, ${d.qualifications}::jsonb, ${d.bio ?? null},
          ${e.streamVersion}, ${at}::timestamptz, ${at}::timestamptz)`);
    },
    PractitionerProfileUpdated: async (db, e) => {
      const c = e.data as Partial<PractitionerProfileFields> & { userId: string };
      await db.query(sql`update practitioner_profiles set
          license_number = coalesce(${c.licenseNumber ?? null}, license_number),
          specialization = case when ${"specialization" in c}
            then ${c.specialization ?? null} else specialization end,
          years_of_experience = case when ${"yearsOfExperience" in c}
            then ${c.yearsOfExperience ?? null}::integer else years_of_experience end,
          qualifications = coalesce(${c.qualifications ?? null}::jsonb, qualifications),
          bio = case when ${"bio" in c} then ${c.bio ?? null} else bio end,
          version = ${e.streamVersion}, updated_at = ${e.recordedAt}::timestamptz
        where user_id = ${c.userId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "user");
      if (!id) return;
      await db.query(sql`update practitioner_profiles set bio = null where user_id = ${id}::uuid`);
    },
  },
};
