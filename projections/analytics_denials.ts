import { ACTIONS } from "../src/auth/policy.ts";
import { known, suppressedView, utcDay } from "../src/analytics/cells.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Denials (`AccessDenied`) per day (UTC) by action, for analysts
 * (`analytics.denials_daily`). The resource refused may be a patient or
 * anything else; every distinct resource counts as a person for
 * suppression (the cautious reading). Counts events: an erasure leaves them.
 */
export const analyticsDenials: Projection = {
  name: "analytics_denials",
  version: 1,
  mode: "async",
  tables: ["analytics_denial_cells"],
  setup: `create table analytics_denial_cells (
    day          date not null,
    action       text not null,
    resource_id  text not null,
    n            integer not null,
    primary key (day, action, resource_id)
  );`,
  handlers: {
    AccessDenied: async (db, e) => {
      const resource = typeof e.data.resourceId === "string" ? e.data.resourceId.slice(0, 200) : "";
      const key = { day: utcDay(e.recordedAt), action: known(e.data.action, ACTIONS) };
      // resource ids are not all uuids: this table keys them as text
      await db.query(sql`insert into analytics_denial_cells (day, action, resource_id, n)
        values (${key.day}::date, ${key.action}, ${resource}, 1)
        on conflict (day, action, resource_id) do update set n = analytics_denial_cells.n + 1`);
    },
  },
  views: [suppressedView({
    name: "denials_daily",
    cells: `select day, action, sum(n)::int as "count",
      (count(*) filter (where resource_id <> ''))::int as patients
      from public.analytics_denial_cells group by day, action`,
    keys: ["day", "action"],
    group: ["day"],
    measures: [],
  })],
};
