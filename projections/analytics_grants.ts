import { countEvent, isoWeekLabel, isoWeekStart, suppressedView } from "../src/analytics/cells.ts";
import type { Projection, ProjectionHandler } from "../src/store/types.ts";

const count = (event: string): ProjectionHandler => async (db, e) => {
  await countEvent(db, "analytics_grant_cells", {
    week_start: isoWeekStart(e.recordedAt),
    event,
  }, [e.data.patientId as string]);
};

/**
 * Grants opened, expired and revoked, and break-glass uses, per ISO week,
 * for analysts (`analytics.grants_weekly`). Counts events: an erasure
 * leaves them.
 */
export const analyticsGrants: Projection = {
  name: "analytics_grants",
  version: 1,
  mode: "async",
  tables: ["analytics_grant_cells"],
  setup: `create table analytics_grant_cells (
    week_start  date not null,
    event       text not null,
    patient_id  uuid not null,
    n           integer not null,
    primary key (week_start, event, patient_id)
  );`,
  handlers: {
    AccessGranted: count("opened"),
    AccessGrantExpired: count("expired"),
    AccessGrantRevoked: count("revoked"),
    BreakGlassUsed: count("break_glass"),
  },
  views: [suppressedView({
    name: "grants_weekly",
    cells: `select week_start, ${isoWeekLabel("week_start")} as week, event, sum(n)::int as "count",
      count(*)::int as patients
      from public.analytics_grant_cells group by week_start, event`,
    keys: ["week_start", "week", "event"],
    group: ["week_start"],
    measures: [],
  })],
};
