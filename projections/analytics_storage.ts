import { known, suppressedView } from "../src/analytics/cells.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";
import { CATEGORIES } from "./analytics_uploads.ts";

/**
 * Bytes stored by category and kind, now (soft-deleted files left out), for
 * analysts (`analytics.storage_by_category`). The working table keeps one
 * row per file; the view only sums.
 */
export const analyticsStorage: Projection = {
  name: "analytics_storage",
  version: 1,
  mode: "async",
  tables: ["analytics_storage_files"],
  setup: `create table analytics_storage_files (
    media_id    uuid primary key,
    patient_id  uuid not null,
    category    text not null,
    kind        text not null,
    size        bigint not null,
    deleted     boolean not null default false
  );`,
  handlers: {
    MediaUploaded: async (db, e) => {
      const d = e.data;
      await db.query(sql`insert into analytics_storage_files (media_id, patient_id, category,
          kind, size)
        values (${d.mediaId}::uuid, ${d.patientId}::uuid, ${known(d.category, CATEGORIES)},
          ${known(d.kind, ["photo", "document"])}, ${Number(d.size ?? 0)})
        on conflict (media_id) do nothing`);
    },
    MediaDeleted: async (db, e) => {
      await db.query(sql`update analytics_storage_files set deleted = true
        where media_id = ${e.data.mediaId}::uuid`);
    },
    MediaRestored: async (db, e) => {
      await db.query(sql`update analytics_storage_files set deleted = false
        where media_id = ${e.data.mediaId}::uuid`);
    },
  },
  views: [suppressedView({
    name: "storage_by_category",
    cells: `select category, kind, count(*)::int as "count", sum(size)::bigint as bytes,
      count(distinct patient_id)::int as patients
      from public.analytics_storage_files where not deleted group by category, kind`,
    keys: ["category", "kind"],
    group: [],
    measures: ["bytes"],
  })],
};
