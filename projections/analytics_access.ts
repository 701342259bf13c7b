import { ROLES } from "../events/user.ts";
import { countEvent, known, patientsOf, suppressedView, utcDay } from "../src/analytics/cells.ts";
import type { Projection } from "../src/store/types.ts";

/** A user's reads and refused uploads go to `access-<their id>` (not `access-request-…`). */
const ACCESS_STREAM = /^access-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** An event type names the action: letters only, as the catalogue spells them. */
const ACTION = /^[A-Z][A-Za-z]{0,80}$/;

/**
 * Access events (the reads every user's `access-<id>` stream records) per
 * day (UTC) by the actor's role and the action, for analysts
 * (`analytics.access_daily`). Counts events: an erasure leaves them.
 */
export const analyticsAccess: Projection = {
  name: "analytics_access",
  version: 1,
  mode: "async",
  tables: ["analytics_access_cells"],
  setup: `create table analytics_access_cells (
    day         date not null,
    role        text not null,
    action      text not null,
    patient_id  uuid not null,
    n           integer not null,
    primary key (day, role, action, patient_id)
  );`,
  handlers: {},
  anyEvent: async (db, e) => {
    if (!ACCESS_STREAM.test(e.streamId)) return;
    await countEvent(db, "analytics_access_cells", {
      day: utcDay(e.recordedAt),
      role: known(e.metadata.actorRole, ROLES),
      action: ACTION.test(e.type) ? e.type : "other",
    }, patientsOf(e.data));
  },
  views: [suppressedView({
    name: "access_daily",
    cells: `select day, role, action, sum(n)::int as "count",
      (count(*) filter (where patient_id <> '00000000-0000-0000-0000-000000000000'))::int
        as patients
      from public.analytics_access_cells group by day, role, action`,
    keys: ["day", "role", "action"],
    group: ["day"],
    measures: [],
  })],
};
