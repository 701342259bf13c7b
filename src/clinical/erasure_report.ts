import type { BlobStore } from "../media/blob_store.ts";
import type { Db } from "../store/db.ts";
import { ident, type Query, sql } from "../store/sql.ts";

/** What erasure did to one read-model table: its rows about the erased ids, before and after. */
export interface TableErasure {
  table: string;
  /** Rows naming the patient or their accounts (any uuid column) before the erasure. */
  rowsBefore: number;
  /** Of those, still there afterwards (tombstones: ids kept, PHI cleared). */
  rowsAfter: number;
  /** Rows gone: `rowsBefore - rowsAfter`. */
  rowsDeleted: number;
  /** Rows left whose content the erasure changed (PHI columns nulled, sessions ended, …). */
  rowsRewritten: number;
}

/** A table's rows about the ids, each as a digest of its text (so before and after compare). */
type Footprint = Map<string, string[]>;

/** The uuid columns of a table as the search path resolves it (none when it does not exist). */
const uuidColumns = async (db: Db, table: string): Promise<string[]> =>
  (await db.query<{ name: string }>(sql`select attname::text as name from pg_attribute
    where attrelid = to_regclass(${table}) and atttypid = 'uuid'::regtype
      and attnum > 0 and not attisdropped order by attnum`)).map((r) => r.name);

/**
 * The rows of each table that name one of `ids` in any uuid column (the
 * patient's id, their accounts' ids), as digests of the rows' text. Read
 * models key what they hold of a patient by such columns (`patient_id`,
 * `user_id`, the row's own `id`), most of them indexed; a table without
 * uuid columns (the stream summary: ids inside text, and no PHI) is skipped.
 */
export const readModelFootprint = async (
  db: Db,
  tables: readonly string[],
  ids: readonly string[],
): Promise<Footprint> => {
  const out: Footprint = new Map();
  for (const table of tables) {
    const cols = await uuidColumns(db, table);
    if (cols.length === 0) continue;
    const match = cols.map((c) => sql`${ident(c)} = any(${ids}::uuid[])`)
      .reduce((a, b) => sql`${a} or ${b}`);
    const rows = await db.query<{ h: string }>(
      sql`select md5(t::text) as h from ${ident(table)} t where ${match}`,
    );
    out.set(table, rows.map((r) => r.h));
  }
  return out;
};

/** Per table, what changed between two footprints (tables untouched either time are left out). */
export const compareFootprints = (before: Footprint, after: Footprint): TableErasure[] => {
  const out: TableErasure[] = [];
  for (const [table, was] of before) {
    const now = after.get(table) ?? [];
    if (was.length === 0 && now.length === 0) continue;
    const left = new Map<string, number>();
    for (const h of was) left.set(h, (left.get(h) ?? 0) + 1);
    let unchanged = 0;
    for (const h of now) {
      const n = left.get(h) ?? 0;
      if (n > 0) {
        unchanged++;
        left.set(h, n - 1);
      }
    }
    out.push({
      table,
      rowsBefore: was.length,
      rowsAfter: now.length,
      rowsDeleted: Math.max(0, was.length - now.length),
      rowsRewritten: now.length - unchanged,
    });
  }
  return out;
};

/**
 * How many events hold fields sealed under each subject: those fields are
 * unreadable once the subject's key is gone. A patient's sealed events all
 * name the patient (`patientId`, indexed); an account's name it as
 * `userId`, which no index covers, so with accounts this scans the log
 * (erasure is rare, and an admin's act).
 */
export const sealedEventCounts = async (
  db: Db,
  patientId: string,
  userIds: readonly string[],
): Promise<Map<string, number>> => {
  const subjects = [`patient-${patientId}`, ...userIds.map((u) => `user-${u}`)];
  const candidates: Query = userIds.length === 0
    ? sql`e.data->>'patientId' = ${patientId}`
    : sql`(e.data->>'patientId' = ${patientId} or e.data->>'userId' = any(${userIds}::text[]))`;
  const rows = await db.query<{ subject: string; n: number }>(sql`select s.subject,
      count(*)::int as n
    from events e cross join lateral (
      -- a field sealed alone holds {"$sealed": {s, c}}; fields sealed together
      -- leave one top-level "$sealed": {v, s, f, c} (see phi_codec.ts)
      select distinct x.subject from jsonb_each(e.data) f
      cross join lateral (select case when f.key = '$sealed' then f.value->>'s'
        else f.value->'$sealed'->>'s' end as subject) x
      where jsonb_typeof(f.value) = 'object' and x.subject = any(${subjects}::text[])
    ) s
    where ${candidates}
    group by s.subject`);
  const out = new Map(subjects.map((s) => [s, 0]));
  for (const r of rows) out.set(r.subject, Number(r.n));
  return out;
};

/** The patient's media files: how many records, and their distinct blobs (originals, thumbnails). */
export const patientBlobs = async (
  db: Db,
  patientId: string,
): Promise<{ items: number; addresses: string[] }> => {
  const rows = await db.query<{ blob: string; thumb_blob: string | null }>(
    sql`select blob, thumb_blob from media where patient_id = ${patientId}::uuid`,
  );
  const addresses = new Set<string>();
  for (const r of rows) {
    addresses.add(r.blob);
    if (r.thumb_blob) addresses.add(r.thumb_blob);
  }
  return { items: rows.length, addresses: [...addresses].sort() };
};

/**
 * Removes the blobs at these addresses; a blob already gone counts as
 * removed (idempotent: a re-run after a crash finishes the job). Returns
 * how many are no longer on disk.
 */
export const removeBlobs = async (
  blobs: BlobStore,
  addresses: readonly string[],
): Promise<number> => {
  let gone = 0;
  for (const a of addresses) {
    await blobs.remove(a);
    gone++;
  }
  return gone;
};
