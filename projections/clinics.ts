import type { ClinicDetails } from "../events/clinic.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * The clinic directory, inline: search by name (lower-cased for a
 * case-insensitive prefix or substring match), filter by active, keyset
 * pagination by (name_lower, id). Every field of the clinic is kept (no PHI).
 * Membership and owner events share the clinic's stream: they move `version` (the
 * ETag a PATCH's If-Match is checked against) but not `updated_at`.
 */
export const clinics: Projection = {
  name: "clinics",
  // 2: memberships move the clinic's version (its stream's, the ETag); 3: owners do too
  version: 3,
  mode: "inline",
  tables: ["clinics"],
  setup: `create table clinics (
    id               uuid primary key,
    name             text not null,
    name_lower       text not null,
    license_number   text not null,
    address          jsonb,
    phone            text,
    email            text,
    operating_hours  jsonb not null,
    services         jsonb not null,
    active           boolean not null,
    version          integer not null,
    created_at       timestamptz not null,
    updated_at       timestamptz not null
  );
  create index clinics_name on clinics (name_lower, id);`,
  handlers: {
    ClinicRegistered: async (db, e) => {
      const d = e.data as ClinicDetails & { clinicId: string };
      const at = e.recordedAt;
      await db.query(sql`insert into clinics (id, name, name_lower, license_number, address, phone,
          email, operating_hours, services, active, version, created_at, updated_at)
        values (${d.clinicId}::uuid, ${d.name}, ${d.name.toLowerCase()}, ${d.licenseNumber},
          ${d.address}::jsonb, ${d.phone}, ${d.email},
          ${d.operatingHours}::jsonb, ${d.services}::jsonb, true,
          ${e.streamVersion}, ${at}::timestamptz, ${at}::timestamptz)`);
    },
    ClinicUpdated: async (db, e) => {
      const c = e.data.changes as Partial<ClinicDetails>;
      const json = <T>(v: T | undefined): T | null => v ?? null;
      await db.query(sql`update clinics set
          name = coalesce(${c.name ?? null}, name),
          name_lower = coalesce(${c.name?.toLowerCase() ?? null}, name_lower),
          license_number = coalesce(${c.licenseNumber ?? null}, license_number),
          address = case when ${"address" in c} then ${json(c.address)}::jsonb else address end,
          phone = case when ${"phone" in c} then ${c.phone ?? null} else phone end,
          email = case when ${"email" in c} then ${c.email ?? null} else email end,
          operating_hours = coalesce(${json(c.operatingHours)}::jsonb, operating_hours),
          services = coalesce(${json(c.services)}::jsonb, services),
          version = ${e.streamVersion}, updated_at = ${e.recordedAt}::timestamptz
        where id = ${e.data.clinicId}::uuid`);
    },
    ClinicDeactivated: async (db, e) => {
      await db.query(sql`update clinics set active = false, version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz where id = ${e.data.clinicId}::uuid`);
    },
    ClinicReactivated: async (db, e) => {
      await db.query(sql`update clinics set active = true, version = ${e.streamVersion},
        updated_at = ${e.recordedAt}::timestamptz where id = ${e.data.clinicId}::uuid`);
    },
    ClinicPractitionerAdded: async (db, e) => {
      await db.query(sql`update clinics set version = ${e.streamVersion}
        where id = ${e.data.clinicId}::uuid`);
    },
    ClinicPractitionerUpdated: async (db, e) => {
      await db.query(sql`update clinics set version = ${e.streamVersion}
        where id = ${e.data.clinicId}::uuid`);
    },
    ClinicOwnerAdded: async (db, e) => {
      await db.query(sql`update clinics set version = ${e.streamVersion}
        where id = ${e.data.clinicId}::uuid`);
    },
    ClinicOwnerRemoved: async (db, e) => {
      await db.query(sql`update clinics set version = ${e.streamVersion}
        where id = ${e.data.clinicId}::uuid`);
    },
  },
};
