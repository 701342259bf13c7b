import { z } from "zod";
import type { ClinicDetails } from "../../events/clinic.ts";
import type { EventStore } from "../store/event_store.ts";
import { type Query, sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { readTogether } from "../store/snapshot.ts";

/** A clinic as the directory shows it (the `clinics` read model). */
export interface ClinicEntry extends ClinicDetails {
  id: string;
  active: boolean;
  createdAt: string;
  updatedAt: string;
  version: number;
}

interface Row {
  id: string;
  name: string;
  name_lower: string;
  license_number: string;
  address: ClinicDetails["address"];
  phone: string | null;
  email: string | null;
  operating_hours: ClinicDetails["operatingHours"];
  services: string[];
  active: boolean;
  version: number;
  created_at: Date | string;
  updated_at: Date | string;
}

const COLUMNS = sql`id::text as id, name, name_lower, license_number, address, phone, email,
  operating_hours, services, active, version, created_at, updated_at`;

const entry = (r: Row): ClinicEntry => ({
  id: r.id,
  name: r.name,
  licenseNumber: r.license_number,
  address: r.address,
  phone: r.phone,
  email: r.email,
  operatingHours: r.operating_hours,
  services: r.services,
  active: r.active,
  createdAt: timestamp(r.created_at),
  updatedAt: timestamp(r.updated_at),
  version: Number(r.version),
});

/** One clinic from the directory (inline, so it reads the caller's own writes), or null. */
export const getClinic = async (store: EventStore, id: string): Promise<ClinicEntry | null> => {
  const [r] = await store.db.query<Row>(sql`select ${COLUMNS} from clinics where id = ${id}::uuid`);
  return r ? entry(r) : null;
};

export interface ClinicQuery {
  /** Case-insensitive substring of the name (a prefix is one). */
  q?: string;
  active?: boolean;
  limit: number;
  cursor?: string;
}

/** A clinics cursor: the last row's lower-cased name and id (the list's order). */
const Position = z.object({ k: z.string().max(400), id: z.uuid() });

const likeSubstring = (s: string) => `%${s.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/** The directory, by name then id, one keyset page at a time, with the total. */
export const listClinics = async (
  store: EventStore,
  q: ClinicQuery,
): Promise<{ items: ClinicEntry[]; nextCursor: string | null; total: number }> => {
  const filters: Query[] = [];
  if (q.q) filters.push(sql`and name_lower like ${likeSubstring(q.q.trim())}`);
  if (q.active !== undefined) filters.push(sql`and active = ${q.active}`);
  const where = filters.reduce((acc, f) => sql`${acc} ${f}`, sql`where true`);
  let after = sql``;
  if (q.cursor) {
    const c = await store.codec.cursors.decode("clinics", Position, q.cursor);
    after = sql`and (name_lower, id) > (${c.k}, ${c.id}::uuid)`;
  }
  const [rows, [count]] = await readTogether<Row, { n: number }>(
    store.db,
    sql`select ${COLUMNS} from clinics ${where} ${after}
    order by name_lower, clinics.id limit ${q.limit + 1}`,
    sql`select count(*)::int as n from clinics ${where}`,
  );
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  return {
    items: page.map(entry),
    nextCursor: rows.length > q.limit && last
      ? await store.codec.cursors.encode("clinics", { k: last.name_lower, id: last.id })
      : null,
    total: Number(count?.n ?? 0),
  };
};
