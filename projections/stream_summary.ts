import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";

/**
 * One row per stream: its category, version, event count and when it was
 * first and last written. Carries ids, types and times only (no PHI), so
 * auditors and analysts can query it freely. Async: follows the log.
 */
export const streamSummary: Projection = {
  name: "stream_summary",
  version: 1,
  mode: "async",
  tables: ["stream_summary"],
  setup: `create table stream_summary (
    stream_id          text primary key,
    category           text not null,
    version            integer not null,
    event_count        integer not null,
    first_recorded_at  timestamptz not null,
    last_recorded_at   timestamptz not null,
    last_event_type    text not null,
    last_position      bigint not null
  );
  create index stream_summary_category on stream_summary (category);`,
  handlers: {},
  anyEvent: async (db, e) => {
    const category = e.streamId.split("-")[0]!;
    await db.query(sql`insert into stream_summary (stream_id, category, version, event_count,
          first_recorded_at, last_recorded_at, last_event_type, last_position)
        values (${e.streamId}, ${category}, ${e.streamVersion}, 1,
          ${e.recordedAt}::timestamptz,
          ${e.recordedAt}::timestamptz, ${e.type}, ${e.globalPosition})
        on conflict (stream_id) do update set
          version = excluded.version,
          event_count = stream_summary.event_count + 1,
          last_recorded_at = excluded.last_recorded_at,
          last_event_type = excluded.last_event_type,
          last_position = excluded.last_position`);
  },
};
