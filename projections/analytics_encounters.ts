import { ENCOUNTER_STATUSES } from "../events/encounter.ts";
import { isoWeekLabel, isoWeekStart, known, suppressedView } from "../src/analytics/cells.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * Encounters by their current status per ISO week of their start, for
 * analysts (`analytics.encounters_weekly`). One working row per encounter
 * (start and status travel in clear: an erasure leaves them).
 */
export const analyticsEncounters: Projection = {
  name: "analytics_encounters",
  version: 1,
  mode: "async",
  tables: ["analytics_encounter_facts"],
  setup: `create table analytics_encounter_facts (
    encounter_id  uuid primary key,
    patient_id    uuid not null,
    week_start    date not null,
    status        text not null
  );`,
  handlers: {
    EncounterPlanned: async (db, e) => {
      const d = e.data;
      await db.query(sql`insert into analytics_encounter_facts (encounter_id, patient_id,
          week_start, status)
        values (${d.encounterId}::uuid, ${d.patientId}::uuid,
          ${isoWeekStart(new Date(d.startsAt as string))}::date, 'planned')
        on conflict (encounter_id) do nothing`);
    },
    EncounterStatusChanged: async (db, e) => {
      await db.query(sql`update analytics_encounter_facts
        set status = ${known(e.data.to, ENCOUNTER_STATUSES)}
        where encounter_id = ${e.data.encounterId}::uuid`);
    },
  },
  views: [suppressedView({
    name: "encounters_weekly",
    cells: `select week_start, ${isoWeekLabel("week_start")} as week, status,
      count(*)::int as "count", count(distinct patient_id)::int as patients
      from public.analytics_encounter_facts group by week_start, status`,
    keys: ["week_start", "week", "status"],
    group: ["week_start"],
    measures: [],
  })],
};
