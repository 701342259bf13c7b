import { isoWeekLabel, isoWeekStart, known, suppressedView } from "../src/analytics/cells.ts";
import { LAB_STATUSES } from "../src/domain/chart.ts";
import { erasedId } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection, ProjectionHandler } from "../src/store/types.ts";

const KINDS = ["prescriptions", "lab-tests"];

const abnormalOf = (results: unknown): boolean | null =>
  Array.isArray(results)
    ? results.some((r) => (r as Record<string, unknown> | null)?.abnormal === true)
    : null;

/** A lab test's new version (status move or amendment): its sealed changes, if still readable. */
const changed: ProjectionHandler = async (db, e) => {
  const c = e.data.changes as Record<string, unknown> | null;
  if (e.data.kind !== "lab-tests" || !c || e.erasedFields.length > 0) return;
  const status = "status" in c ? known(c.status, LAB_STATUSES) : null;
  const results = "results" in c;
  await db.query(sql`update analytics_chart_facts set
      status = coalesce(${status}, status),
      abnormal = case when ${results} then ${abnormalOf(c.results)} else abnormal end
    where entry_id = ${e.data.entryId}::uuid`);
};

/**
 * Chart activity per ISO week of recording, for analysts
 * (`analytics.chart_weekly`): prescriptions, lab tests by current status,
 * and how many of those carry an abnormal result. A lab test's status and
 * results are sealed content: once the patient is erased they read as
 * unknown (live: the erasure resets them; rebuilt: the replay cannot read
 * them), while the entries still count.
 */
export const analyticsChart: Projection = {
  name: "analytics_chart",
  version: 1,
  mode: "async",
  tables: ["analytics_chart_facts"],
  setup: `create table analytics_chart_facts (
    entry_id          uuid primary key,
    patient_id        uuid not null,
    week_start        date not null,
    kind              text not null,
    status            text not null,
    abnormal          boolean,
    entered_in_error  boolean not null default false
  );`,
  handlers: {
    ChartEntryRecorded: async (db, e) => {
      const d = e.data;
      if (!KINDS.includes(d.kind as string)) return;
      const content = d.content as Record<string, unknown> | null;
      const lab = d.kind === "lab-tests";
      const status = !lab ? "recorded" : content ? known(content.status, LAB_STATUSES) : "unknown";
      await db.query(sql`insert into analytics_chart_facts (entry_id, patient_id, week_start,
          kind, status, abnormal)
        values (${d.entryId}::uuid, ${d.patientId}::uuid,
          ${isoWeekStart(e.recordedAt)}::date, ${d.kind}, ${status},
          ${lab && content ? abnormalOf(content.results) : null})
        on conflict (entry_id) do nothing`);
    },
    ChartEntryAmended: changed,
    LabTestStatusChanged: changed,
    ChartEntryEnteredInError: async (db, e) => {
      await db.query(sql`update analytics_chart_facts set entered_in_error = true
        where entry_id = ${e.data.entryId}::uuid`);
    },
    SubjectKeyDestroyed: async (db, e) => {
      const id = erasedId(e.data.subjectId, "patient");
      if (!id) return;
      await db.query(sql`update analytics_chart_facts set status = 'unknown', abnormal = null
        where patient_id = ${id}::uuid and kind = 'lab-tests'`);
    },
  },
  views: [suppressedView({
    name: "chart_weekly",
    cells: `select week_start, ${isoWeekLabel("week_start")} as week, kind, status,
      count(*)::int as "count",
      case when kind = 'lab-tests' then (count(*) filter (where abnormal))::int end as abnormal,
      case when kind = 'lab-tests'
        then round((count(*) filter (where abnormal))::numeric / count(*), 3)::float8
      end as abnormal_rate,
      count(distinct patient_id)::int as patients
      from public.analytics_chart_facts where not entered_in_error
      group by week_start, kind, status`,
    keys: ["week_start", "week", "kind", "status"],
    group: ["week_start"],
    measures: ["abnormal", "abnormal_rate"],
  })],
};
