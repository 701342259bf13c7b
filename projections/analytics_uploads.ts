import { DOCUMENT_CATEGORIES, PHOTO_CATEGORIES } from "../src/media/categories.ts";
import { countEvent, known, suppressedView, utcDay } from "../src/analytics/cells.ts";
import type { Projection } from "../src/store/types.ts";

export const CATEGORIES = [...new Set([...PHOTO_CATEGORIES, ...DOCUMENT_CATEGORIES])];

/**
 * Uploads per day (UTC) by category and kind, for analysts
 * (`analytics.uploads_daily`). Counts events: an erasure leaves them.
 */
export const analyticsUploads: Projection = {
  name: "analytics_uploads",
  version: 1,
  mode: "async",
  tables: ["analytics_upload_cells"],
  setup: `create table analytics_upload_cells (
    day         date not null,
    category    text not null,
    kind        text not null,
    patient_id  uuid not null,
    n           integer not null,
    bytes       bigint not null,
    primary key (day, category, kind, patient_id)
  );`,
  handlers: {
    MediaUploaded: async (db, e) => {
      const d = e.data;
      await countEvent(
        db,
        "analytics_upload_cells",
        {
          day: utcDay(e.recordedAt),
          category: known(d.category, CATEGORIES),
          kind: known(d.kind, ["photo", "document"]),
        },
        [d.patientId as string],
        { bytes: Number(d.size ?? 0) },
      );
    },
  },
  views: [suppressedView({
    name: "uploads_daily",
    cells: `select day, category, kind, sum(n)::int as "count", sum(bytes)::bigint as bytes,
      (count(*) filter (where patient_id <> '00000000-0000-0000-0000-000000000000'))::int
        as patients
      from public.analytics_upload_cells group by day, category, kind`,
    keys: ["day", "category", "kind"],
    group: ["day"],
    measures: ["bytes"],
  })],
};
