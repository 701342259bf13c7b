import type { Db } from "../store/db.ts";
import { ident, type Query, sql } from "../store/sql.ts";
import type { ProjectionView } from "../store/types.ts";

/**
 * Building blocks of the analytics projections (projections/analytics_*.ts).
 *
 * Each counts into a working table in `public` (a projection table, never
 * readable by `chartlog_analyst`) with one row per cell and patient, so
 * distinct patients can be counted without any id reaching schema
 * `analytics`; the analysts' view over it aggregates and suppresses.
 */

/** Cells of fewer distinct patients than this are suppressed (and 0 patients: no person). */
export const MIN_PATIENTS = 5;

/** The row of events tied to no patient (a list that returned none, a denial of no record). */
export const NO_PATIENT = "00000000-0000-0000-0000-000000000000";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The day (UTC) of an instant, `YYYY-MM-DD`. */
export const utcDay = (at: Date): string => at.toISOString().slice(0, 10);

/** The Monday (UTC) starting the ISO week of an instant, `YYYY-MM-DD`. */
export const isoWeekStart = (at: Date): string => {
  const d = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate()));
  d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  return utcDay(d);
};

/** The SQL of an ISO week label (`2026-W49`) from a column holding its Monday. */
export const isoWeekLabel = (column: string): string => `to_char(${column}, 'IYYY-"W"IW')`;

/** A value of an enumerated dimension, or `other`: free text must never become a cell. */
export const known = (value: unknown, allowed: readonly string[]): string =>
  typeof value === "string" && allowed.includes(value) ? value : "other";

/** The patients an event names (`patientId`, `patientIds`), ids only, once each. */
export const patientsOf = (data: Record<string, unknown>): string[] => {
  const ids = [data.patientId, ...(Array.isArray(data.patientIds) ? data.patientIds : [])];
  return [...new Set(ids.filter((v): v is string => typeof v === "string" && UUID.test(v)))];
};

const list = (names: readonly string[]): Query =>
  names.reduce<Query>((acc, n, i) => i === 0 ? sql`${ident(n)}` : sql`${acc}, ${ident(n)}`, sql``);

/**
 * Counts one event into a cells table (`key` columns, `patient_id`, `n`), in
 * one statement: the event adds 1 to the row of its first patient and 0 to
 * the others' (so each is a distinct patient of the cell and the cell's sum
 * is the number of events); an event of no patient counts in the
 * {@link NO_PATIENT} row. `add` adds to further numeric columns of the
 * first row (bytes).
 */
export const countEvent = async (
  db: Db,
  table: string,
  key: Readonly<Record<string, string>>,
  patients: readonly string[],
  add: Readonly<Record<string, number>> = {},
): Promise<void> => {
  const ids = patients.length > 0 ? patients : [NO_PATIENT];
  const keys = Object.keys(key);
  const extra = Object.keys(add);
  const cols = [...keys, "patient_id", "n", ...extra];
  const conflict = [...keys, "patient_id"];
  const updates = ["n", ...extra].reduce<Query>(
    (acc, c, i) => {
      const one = sql`${ident(c)} = ${ident(table)}.${ident(c)} + excluded.${ident(c)}`;
      return i === 0 ? one : sql`${acc}, ${one}`;
    },
    sql``,
  );
  // VALUES, not a SELECT: there the target columns give each parameter its type
  const rows = ids.map((id, i) => {
    const vals = [
      ...keys.map((k) => key[k]),
      id,
      i === 0 ? 1 : 0,
      ...extra.map((c) => i === 0 ? add[c] : 0),
    ];
    return sql`(${
      vals.reduce<Query>((acc, v, j) => j === 0 ? sql`${v}` : sql`${acc}, ${v}`, sql``)
    })`;
  }).reduce<Query>((acc, r, i) => i === 0 ? r : sql`${acc}, ${r}`, sql``);
  await db.query(sql`insert into ${ident(table)} (${list(cols)}) values ${rows}
    on conflict (${list(conflict)}) do update set ${updates}`);
};

/** How an analysts' view suppresses its small cells (see {@link suppressedView}). */
export interface CellsSpec {
  /** The view's name in schema `analytics`. */
  name: string;
  /**
   * A `select` with one row per cell: its `keys`, a `count`, the distinct
   * `patients` behind it and the further `measures`.
   */
  cells: string;
  /** Columns naming a cell, output as they are (the time bucket first). */
  keys: readonly string[];
  /** The cells whose sum a reader could know (e.g. a day's total): complementary suppression stays inside one. */
  group: readonly string[];
  /** Further numeric columns, hidden with the count. */
  measures: readonly string[];
}

/**
 * An analysts' view with small-cell suppression (HIPAA Safe Harbor counts):
 *
 * 1. a cell whose events concern 1 to 4 distinct patients is suppressed:
 *    `count`, `patients` and every measure read null and `suppressed` true;
 * 2. complementary suppression: when exactly one cell of a group (the cells
 *    of one day or week, or of the whole view) is suppressed, the group's
 *    smallest other cell (by count, then by its keys) is suppressed too, so
 *    the hidden one cannot be had by subtracting the rest from the group's
 *    total. Two or more suppressed cells in a group hide each other.
 *
 * Cells of no patient (0: e.g. a list that returned nobody) are not small:
 * they count no person.
 */
export const suppressedView = (s: CellsSpec): ProjectionView => {
  const keys = s.keys.map((k) => `c.${k}`).join(", ");
  const group = s.group.length > 0 ? `partition by ${s.group.map((g) => `c.${g}`).join(", ")}` : "";
  const hidden = ["count", "patients", ...s.measures]
    .map((m) => `case when suppressed then null else "${m}" end as "${m}"`).join(",\n    ");
  return {
    name: s.name,
    select: `select ${s.keys.join(", ")},
    ${hidden},
    suppressed
  from (
    select r.*, (r.small or (r.smalls = 1 and not r.small and r.rank_open = 1)) as suppressed
    from (
      select c.*,
        count(*) filter (where c.small) over (${group}) as smalls,
        row_number() over (${group ? `${group}, c.small` : "partition by c.small"}
          order by c."count", ${keys}) as rank_open
      from (
        select b.*, (b.patients between 1 and ${MIN_PATIENTS - 1}) as small
        from (${s.cells}) b
      ) c
    ) r
  ) s`,
  };
};
