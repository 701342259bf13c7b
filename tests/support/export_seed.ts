import type { Db } from "../../src/store/db.ts";

/**
 * Fills the log fast for export tests and benchmarks: `n` audited reads in
 * one `insert … select … from generate_series` (the append-only trigger
 * allows inserts), 1000 events a stream, a tenth of them searches returning
 * three patients. The hashes are placeholders: these logs do not verify.
 * The table is analyzed afterwards, as autovacuum would soon do on a live
 * log: planned on an empty table's statistics, each page of an export with
 * a time filter read the rest of the log (a bitmap scan of every later
 * position, then a sort), 0.9 s a page at a million events.
 */
export const seedReads = async (db: Db, n: number, actorId: string): Promise<void> => {
  await db.exec(`
    insert into events (stream_id, stream_version, event_id, type, schema_version, data,
      metadata, recorded_at, prev_hash, hash)
    select 'access-seed-' || (g / 1000), (g % 1000) + 1, gen_random_uuid(),
      case when g % 10 = 0 then 'PatientsSearched' else 'PatientViewed' end, 1,
      case when g % 10 = 0 then jsonb_build_object(
          'patientIds', jsonb_build_array(
            '00000000-0000-4000-8000-' || lpad((g % 1000)::text, 12, '0'),
            '00000000-0000-4000-8000-' || lpad(((g + 1) % 1000)::text, 12, '0'),
            '00000000-0000-4000-8000-' || lpad(((g + 2) % 1000)::text, 12, '0')),
          'total', 3)
        else jsonb_build_object(
          'patientId', '00000000-0000-4000-8000-' || lpad((g % 1000)::text, 12, '0'),
          'asOf', null) end,
      jsonb_build_object('actorId', '${actorId}', 'actorRole', 'practitioner',
        'ip', '10.0.' || (g % 250) || '.7', 'userAgent', 'seed-client/1.0',
        'requestId', md5(g::text)),
      timestamptz '2026-01-01T00:00:00Z' + g * interval '1 millisecond',
      null, md5('h' || g)
    from generate_series(0, ${Math.max(0, Math.floor(n)) - 1}) g`);
  await db.exec(`analyze events`);
};
