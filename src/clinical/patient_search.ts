import { z } from "zod";
import type { EventStore } from "../store/event_store.ts";
import { ident, type Query, sql } from "../store/sql.ts";
import { readTogether } from "../store/snapshot.ts";

export const ORDERINGS = [
  "last_name",
  "-last_name",
  "first_name",
  "-first_name",
  "date_of_birth",
  "-date_of_birth",
  "created_at",
  "-created_at",
] as const;
export type Ordering = (typeof ORDERINGS)[number];

export interface PatientQuery {
  search?: string;
  gender?: string;
  city?: string;
  state?: string;
  ordering: Ordering;
  limit: number;
  cursor?: string;
  includeDeleted: boolean;
  /**
   * The policy's `listFilter` for the actor: required, so no list can forget
   * it; null only where the policy says the actor reads every patient.
   */
  scope: Query | null;
}

export interface PatientSummary {
  id: string;
  mrn: string;
  firstName: string;
  lastName: string;
  dateOfBirth: string;
  gender: string;
  city: string | null;
  state: string | null;
  deleted: boolean;
}

interface Row {
  id: string;
  mrn: string;
  first_name: string;
  last_name: string;
  date_of_birth: string;
  gender: string;
  city: string | null;
  state: string | null;
  deleted: boolean;
  sort_key: string;
}

/** A patients cursor: the last row's sort key and id. */
const Position = z.object({ k: z.string().max(400), id: z.uuid() });

const likePrefix = (s: string) => s.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`) + "%";

/**
 * Patients matching the filters, in the requested order, one keyset page at
 * a time (the cursor is the last row's sort key and id), with the total.
 */
export const searchPatients = async (
  store: EventStore,
  q: PatientQuery,
): Promise<{ items: PatientSummary[]; nextCursor: string | null; total: number }> => {
  const desc = q.ordering.startsWith("-");
  const column = q.ordering.replace(/^-/, "");
  // a text sort key that orders like the column (ISO dates and timestamps do)
  const key = column === "created_at"
    ? sql`to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')`
    : column === "date_of_birth"
    ? sql`to_char(date_of_birth, 'YYYY-MM-DD')`
    : sql`lower(${ident(column)})`;
  // an erased patient is a tombstone: in no list, not even with the deleted ones
  const filters: Query[] = [sql`and erased_at is null`];
  if (!q.includeDeleted) filters.push(sql`and not deleted`);
  if (q.gender) filters.push(sql`and gender = ${q.gender}`);
  if (q.city) filters.push(sql`and lower(city) = ${q.city.toLowerCase()}`);
  if (q.state) filters.push(sql`and state = ${q.state.toUpperCase()}`);
  if (q.scope) filters.push(sql`and ${q.scope}`);
  if (q.search) {
    const p = likePrefix(q.search.trim());
    filters.push(sql`and (lower(first_name) like ${p} or lower(last_name) like ${p}
      or lower(mrn) like ${p} or email like ${p})`);
  }
  const where = filters.reduce((acc, f) => sql`${acc} ${f}`, sql`where true`);
  let after = sql``;
  if (q.cursor) {
    // bound to the ordering: a name position must not be compared with dates
    const c = await store.codec.cursors.decode(`patients:${q.ordering}`, Position, q.cursor);
    after = desc
      ? sql`and (${key}, id) < (${c.k}, ${c.id}::uuid)`
      : sql`and (${key}, id) > (${c.k}, ${c.id}::uuid)`;
  }
  // patients.id (uuid), as the cursor compares it: a bare `id` is the ::text output column
  const order = desc
    ? sql`order by sort_key desc, patients.id desc`
    : sql`order by sort_key, patients.id`;
  const [rows, [count]] = await readTogether<Row, { n: number }>(
    store.db,
    sql`select id::text as id, mrn, first_name, last_name,
      to_char(date_of_birth, 'YYYY-MM-DD') as date_of_birth, gender, city, state, deleted,
      ${key} as sort_key
    from patients ${where} ${after} ${order} limit ${q.limit + 1}`,
    sql`select count(*)::int as n from patients ${where}`,
  );
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  return {
    items: page.map((r) => ({
      id: r.id,
      mrn: r.mrn,
      firstName: r.first_name,
      lastName: r.last_name,
      dateOfBirth: r.date_of_birth,
      gender: r.gender,
      city: r.city,
      state: r.state,
      deleted: r.deleted,
    })),
    nextCursor: rows.length > q.limit && last
      ? await store.codec.cursors.encode(`patients:${q.ordering}`, {
        k: last.sort_key,
        id: last.id,
      })
      : null,
    total: Number(count?.n ?? 0),
  };
};
