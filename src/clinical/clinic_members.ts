import { z } from "zod";
import type { EmploymentType } from "../../events/clinic.ts";
import type { EventStore } from "../store/event_store.ts";
import { type Query, sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { readTogether } from "../store/snapshot.ts";

/** A practitioner's membership of a clinic, as the API shows it. */
export interface MembershipView {
  clinicId: string;
  userId: string;
  employmentType: EmploymentType;
  active: boolean;
  joinedAt: string;
  /** Who added them (the actor of `ClinicPractitionerAdded`). */
  joinedBy: string | null;
  updatedAt: string;
}

interface Row {
  clinic_id: string;
  user_id: string;
  employment_type: EmploymentType;
  active: boolean;
  joined_at: Date | string;
  joined_by: string | null;
  updated_at: Date | string;
  cursor_at: string;
}

const COLUMNS = sql`clinic_id::text as clinic_id, user_id::text as user_id, employment_type,
  active, joined_at, joined_by::text as joined_by, updated_at,
  to_char(joined_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_at`;

const view = (r: Row): MembershipView => ({
  clinicId: r.clinic_id,
  userId: r.user_id,
  employmentType: r.employment_type,
  active: r.active,
  joinedAt: timestamp(r.joined_at),
  joinedBy: r.joined_by,
  updatedAt: timestamp(r.updated_at),
});

/** One membership (inline read model: the caller's own writes are in it), or null. */
export const getMembership = async (
  store: EventStore,
  clinicId: string,
  userId: string,
): Promise<MembershipView | null> => {
  const [r] = await store.db.query<Row>(sql`select ${COLUMNS} from clinic_practitioners
    where clinic_id = ${clinicId}::uuid and user_id = ${userId}::uuid`);
  return r ? view(r) : null;
};

/** A members cursor: the last row's join time (full precision) and user id. */
const Position = z.tuple([z.string().max(40), z.uuid()]);

/** A clinic's members in the order they joined, keyset pages, with the total. */
export const listMembers = async (
  store: EventStore,
  clinicId: string,
  q: { active?: boolean; limit: number; cursor?: string },
): Promise<{ items: MembershipView[]; nextCursor: string | null; total: number }> => {
  const filters: Query[] = [sql`where clinic_id = ${clinicId}::uuid`];
  if (q.active !== undefined) filters.push(sql`and active = ${q.active}`);
  const where = filters.reduce((acc, f) => sql`${acc} ${f}`);
  let after = sql``;
  if (q.cursor) {
    const [at, id] = await store.codec.cursors.decode("clinic_practitioners", Position, q.cursor);
    after = sql`and (joined_at, user_id) > (${at}::timestamptz, ${id}::uuid)`;
  }
  const [rows, [count]] = await readTogether<Row, { n: number }>(
    store.db,
    sql`select ${COLUMNS} from clinic_practitioners
    ${where} ${after} order by joined_at, clinic_practitioners.user_id limit ${q.limit + 1}`,
    sql`select count(*)::int as n from clinic_practitioners ${where}`,
  );
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  return {
    items: page.map(view),
    nextCursor: rows.length > q.limit && last
      ? await store.codec.cursors.encode("clinic_practitioners", [last.cursor_at, last.user_id])
      : null,
    total: Number(count?.n ?? 0),
  };
};
