import type { Logger } from "pino";
import type { Db } from "./db.ts";
import { sql } from "./sql.ts";
import { LOCK_MIGRATE } from "./locks.ts";
import {
  applyGrants,
  assertNoAppRoutines,
  grantAnalyticsAccess,
  grantSchemaAccess,
  OWNER_ROLE,
  prepareRoles,
  reassignObjects,
  type RolePlan,
} from "./roles.ts";

/**
 * Versioned schema migrations, run by `deno task migrate` and at start-up.
 * Identical SQL on PostgreSQL and PGlite. Never edit an applied migration:
 * add a new one.
 */
export const migrations: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: "event log",
    sql: `
create table events (
  global_position bigint generated always as identity primary key,
  stream_id       text not null,
  stream_version  integer not null check (stream_version > 0),
  event_id        uuid not null unique,
  type            text not null,
  schema_version  integer not null check (schema_version > 0),
  data            jsonb not null,
  metadata        jsonb not null,
  recorded_at     timestamptz not null,
  -- assigned by the database; followers read below the oldest in-flight one
  transaction_id  xid8 not null default pg_current_xact_id(),
  prev_hash       text,
  hash            text not null,
  unique (stream_id, stream_version)
);
-- followers page through the log in (transaction id, position) order
create index events_transaction_order on events (transaction_id, global_position);

-- The log is the audit trail: the database itself refuses to change it.
create function events_append_only() returns trigger language plpgsql as $$
begin
  raise exception 'events is append-only: % is not allowed', tg_op
    using errcode = 'insufficient_privilege';
end $$;
create trigger events_no_update before update on events
  for each row execute function events_append_only();
create trigger events_no_delete before delete on events
  for each row execute function events_append_only();
create trigger events_no_truncate before truncate on events
  for each statement execute function events_append_only();

-- Per-subject data keys, wrapped by the master key; a null key is shredded.
create table subject_keys (
  subject_id   text primary key,
  wrapped_key  text,
  created_at   timestamptz not null default now(),
  destroyed_at timestamptz
);

create table projection_state (
  name        text primary key,
  version     integer not null,
  mode        text not null check (mode in ('inline', 'async')),
  position    bigint not null default 0,
  updated_at  timestamptz not null default now(),
  last_error  text
);
`,
  },
  {
    version: 2,
    name: "installation id",
    sql: `
-- Which installation this database is. Blob directories carry it in a marker
-- file, so one database never uses (or garbage-collects) another's files. A
-- random id, not the system identifier, which changes on dump and restore.
-- One row, enforced by the key.
create table installation (
  singleton           boolean primary key default true check (singleton),
  id                  uuid not null default gen_random_uuid(),
  created_at          timestamptz not null default now(),
  -- set once, when this installation first claims a blob directory
  blob_dir_claimed_at timestamptz
);
insert into installation default values;
`,
  },
  {
    version: 3,
    name: "session activity",
    // Last API request per session, for the idle timeout. Deliberately not
    // an event (one per request would swamp the log) and not a projection
    // table (a rebuild must not forget it).
    sql: `
create table session_activity (
  session_id  uuid primary key,
  last_seen   timestamptz not null
);
`,
  },
  {
    version: 4,
    name: "projection tables",
    // The tables each projection's current version built: a new version is
    // built beside them and drops them when it is switched in, even those it
    // no longer has.
    sql: `
alter table projection_state add column tables text[];
`,
  },
  {
    version: 5,
    name: "audit query indexes",
    // GET /v1/audit/events pages by global position under each filter: an
    // index per filter, ending in the position, lets the keyset page walk
    // the index instead of sorting every match. A patient's events are those
    // naming them in the payload (patientId, the patientIds of list reads),
    // the patient-<id> stream (the primary key's unique index on
    // (stream_id, stream_version) finds it) and the denials of their record.
    // Migration 12 makes the patient, patientIds, actor and grant indexes
    // partial (where the field is not null): a query need not repeat that.
    sql: `
create index events_audit_patient on events ((data->>'patientId'), global_position);
create index events_audit_patient_ids on events using gin ((data->'patientIds') jsonb_path_ops);
create index events_audit_denied_resource on events ((data->>'resourceId'), global_position)
  where type = 'AccessDenied';
create index events_audit_actor on events ((metadata->>'actorId'), global_position);
-- not partial: a query would have to repeat the predicate for the planner to use it
create index events_audit_grant on events ((metadata->>'grantId'), global_position);
create index events_audit_type on events (type, global_position);
create index events_audit_time on events (recorded_at, global_position);
`,
  },
  {
    version: 6,
    name: "transparency log tree",
    // The RFC 9162 Merkle tree over the log in global order, kept for
    // serving proofs in O(log² n) lookups: every complete subtree's hash
    // (leaves are level 0 and carry their event's position). A cache only:
    // `deno task audit verify` recomputes from events and trusts none of it.
    sql: `
create table merkle_nodes (
  level           smallint not null check (level >= 0),
  idx             bigint not null check (idx >= 0),
  hash            bytea not null,
  -- level 0 only: the leaf's event
  global_position bigint,
  primary key (level, idx),
  check ((level = 0) = (global_position is not null))
);
create unique index merkle_leaf_position on merkle_nodes (global_position) where level = 0;
`,
  },
  {
    version: 7,
    name: "disclosures index",
    // The accounting of disclosures counts audit queries naming a patient in
    // their filters (AuditQueried.data.filters.patientId). Partial: only audit
    // queries are indexed, and the query repeats the literal predicate.
    sql: `
create index events_audit_filter_patient on events ((data->'filters'->>'patientId'), global_position)
  where type = 'AuditQueried';
`,
  },
  {
    version: 8,
    name: "subject keys are only shredded",
    // The runtime role may update subject_keys (src/store/roles.ts) only to
    // crypto-shred: a key, once made, is never replaced, restored or moved.
    sql: `
create function subject_keys_shred_only() returns trigger language plpgsql
set search_path = pg_catalog as $$
begin
  if new.wrapped_key is not null
    or new.subject_id is distinct from old.subject_id
    or new.created_at is distinct from old.created_at
    or (old.destroyed_at is not null and new.destroyed_at is distinct from old.destroyed_at)
  then
    raise exception 'subject_keys: a key can only be destroyed'
      using errcode = 'insufficient_privilege';
  end if;
  return new;
end $$;
create trigger subject_keys_shred_only before update on subject_keys
  for each row execute function subject_keys_shred_only();
`,
  },
  {
    version: 9,
    name: "the stored Merkle tree writes no WAL",
    // merkle_nodes is a cache of hashes recomputable from events (verify
    // trusts none of it). Logged, it added about a sixth to the WAL an
    // append writes, and appends wait on that WAL's flush. Unlogged, a crash
    // of the server empties it and the publisher builds it again from the
    // log (tests/bench/tlog_bench.ts prints both).
    sql: `alter table merkle_nodes set unlogged;`,
  },
  {
    version: 10,
    name: "one-statement append",
    // A group-commit batch in one statement (src/store/append.ts): called
    // alone it is its own transaction, so an append is one network round
    // trip. It takes the append lock, reads each stream's head, checks each
    // request's expected version (a conflicting request appends nothing, the
    // others still do), chains the hashes and inserts. One row per request:
    // ok, the stream's version (after the append, or the current one on a
    // conflict), the head hash it chained from, its events' hashes and
    // positions, and the transaction id. append_event does the same for a
    // batch of one event (a lone writer's append) with plain arguments and
    // statements, in about half the time.
    //
    // The hash is eventHash (src/store/hash_chain.ts) byte for byte: the
    // client sends every JSON text it covers already encoded (a stream's id
    // as a JSON string; per event its id, type, schema version and
    // recorded_at as JSON, comma-separated; data and metadata as
    // canonicalJson), so this function escapes nothing; it only adds the
    // previous hash (hex or empty) and the stream version (an integer).
    // p_expected: a version, or -1 for any. LOCK_APPEND = 72620002 (locks.ts).
    sql: `
create function append_events(
  p_streams text[], p_stream_json text[], p_expected integer[], p_counts integer[],
  p_metadata text[], p_event_ids uuid[], p_types text[], p_schema_versions integer[],
  p_heads text[], p_data text[], p_recorded_at timestamptz
) returns table (ok boolean, version integer, prev_hash text, hashes text[],
  positions bigint[], txid text)
language plpgsql as $$
#variable_conflict use_column
declare
  v_n integer := cardinality(p_streams);
  v_known text[];
  v_kver integer[];
  v_khash text[];
  v_ok boolean[];
  v_ver integer[];
  v_prev text[];
  v_first integer[];
  v_req integer[] := '{}';
  v_ev integer[] := '{}';
  v_sver integer[] := '{}';
  v_prevs text[] := '{}';
  v_hashes text[] := '{}';
  v_pos bigint[];
  v_txid text;
  v_e integer := 0;
  v_k integer;
  v_cur integer;
  v_h text;
  v_mode text;
  v_i integer;
  v_j integer;
begin
  if v_n is null or cardinality(p_expected) <> v_n or cardinality(p_counts) <> v_n
    or cardinality(p_stream_json) <> v_n or cardinality(p_metadata) <> v_n then
    raise exception 'append_events: one entry per request expected' using errcode = '22023';
  end if;
  perform pg_advisory_xact_lock(72620002);
  -- The queries below take array arguments: planned afresh at each call (custom
  -- plans) they cost several times their execution. Not a SET clause on the
  -- function: that costs a lone append more than it saves.
  v_mode := current_setting('plan_cache_mode');
  perform set_config('plan_cache_mode', 'force_generic_plan', true);
  -- each stream's head: one backward index probe per stream
  select array_agg(s.sid), array_agg(coalesce(h.stream_version, 0)), array_agg(h.hash)
    into v_known, v_kver, v_khash
    from (select distinct unnest(p_streams) as sid) s
    left join lateral (select e.stream_version, e.hash from events e
      where e.stream_id = s.sid order by e.stream_version desc limit 1) h on true;
  for v_i in 1 .. v_n loop
    v_k := array_position(v_known, p_streams[v_i]);
    v_cur := v_kver[v_k];
    if p_expected[v_i] >= 0 and p_expected[v_i] <> v_cur then
      v_ok[v_i] := false;
      v_ver[v_i] := v_cur;
    else
      v_ok[v_i] := true;
      v_prev[v_i] := v_khash[v_k];
      v_first[v_i] := cardinality(v_ev) + 1;
      v_h := v_khash[v_k];
      for v_j in v_e + 1 .. v_e + p_counts[v_i] loop
        v_cur := v_cur + 1;
        v_prevs := v_prevs || v_h;
        v_h := encode(sha256(convert_to('["' || coalesce(v_h, '') || '",' || p_stream_json[v_i]
          || ',' || v_cur || ',' || p_heads[v_j] || ',' || p_data[v_j] || ','
          || p_metadata[v_i] || ']', 'UTF8')), 'hex');
        v_req := v_req || v_i;
        v_ev := v_ev || v_j;
        v_sver := v_sver || v_cur;
        v_hashes := v_hashes || v_h;
      end loop;
      v_ver[v_i] := v_cur;
      v_kver[v_k] := v_cur;
      v_khash[v_k] := v_h;
    end if;
    v_e := v_e + p_counts[v_i];
  end loop;
  if v_e <> cardinality(p_event_ids) then
    raise exception 'append_events: event counts do not add up' using errcode = '22023';
  end if;
  if cardinality(v_ev) > 0 then
    -- identity values are assigned in insertion order, which follows the ordinality
    with ins as (
      insert into events (stream_id, stream_version, event_id, type, schema_version, data,
        metadata, recorded_at, prev_hash, hash)
      select p_streams[x.req], x.sver, p_event_ids[x.ev], p_types[x.ev],
        p_schema_versions[x.ev], p_data[x.ev]::jsonb, p_metadata[x.req]::jsonb,
        p_recorded_at, x.prev, x.hash
      from unnest(v_req, v_ev, v_sver, v_prevs, v_hashes) with ordinality
        as x(req, ev, sver, prev, hash, ord)
      order by x.ord
      returning global_position)
    select array_agg(global_position order by global_position) into v_pos from ins;
    v_txid := pg_current_xact_id()::text;
  end if;
  -- an inline projection's statements may follow in this transaction
  perform set_config('plan_cache_mode', v_mode, true);
  for v_i in 1 .. v_n loop
    ok := v_ok[v_i];
    version := v_ver[v_i];
    prev_hash := v_prev[v_i];
    if ok then
      v_j := v_first[v_i] + p_counts[v_i] - 1;
      hashes := v_hashes[v_first[v_i]:v_j];
      positions := v_pos[v_first[v_i]:v_j];
    else
      hashes := null;
      positions := null;
    end if;
    txid := v_txid;
    return next;
  end loop;
end $$;

create function append_event(
  p_stream text, p_stream_json text, p_expected integer, p_metadata text, p_event_id uuid,
  p_type text, p_schema_version integer, p_head text, p_data text, p_recorded_at timestamptz
) returns table (ok boolean, version integer, prev_hash text, hashes text[],
  positions bigint[], txid text)
language plpgsql as $$
#variable_conflict use_column
declare
  v_cur integer;
  v_prevh text;
  v_h text;
  v_p bigint;
begin
  perform pg_advisory_xact_lock(72620002);
  select e.stream_version, e.hash into v_cur, v_prevh from events e
    where e.stream_id = p_stream order by e.stream_version desc limit 1;
  v_cur := coalesce(v_cur, 0);
  if p_expected >= 0 and p_expected <> v_cur then
    ok := false;
    version := v_cur;
    return next;
    return;
  end if;
  v_cur := v_cur + 1;
  v_h := encode(sha256(convert_to('["' || coalesce(v_prevh, '') || '",' || p_stream_json
    || ',' || v_cur || ',' || p_head || ',' || p_data || ',' || p_metadata || ']', 'UTF8')),
    'hex');
  insert into events (stream_id, stream_version, event_id, type, schema_version, data,
      metadata, recorded_at, prev_hash, hash)
    values (p_stream, v_cur, p_event_id, p_type, p_schema_version, p_data::jsonb,
      p_metadata::jsonb, p_recorded_at, v_prevh, v_h)
    returning global_position into v_p;
  ok := true;
  version := v_cur;
  prev_hash := v_prevh;
  hashes := array[v_h];
  positions := array[v_p];
  txid := pg_current_xact_id()::text;
  return next;
end $$;
`,
  },
  {
    version: 11,
    name: "analytics schema",
    // The analysts' de-identified views (projections/analytics_*.ts make
    // them over their tables, in the transaction that switches a version
    // in); chartlog_analyst reads them and nothing else (src/store/roles.ts).
    sql: `create schema if not exists analytics;`,
  },
  {
    version: 12,
    name: "sparse audit indexes are partial; the usual append batch in one statement",
    // Migration 5's indexes on a payload or metadata field held an entry for
    // every event, also those without the field (most events carry no
    // grantId, many no patientId or patientIds, system events no actorId),
    // and an append paid for each. Partial now, over the events that have
    // the field: the audit queries need no change, as `x = $1` and
    // `x @> $1` (strict operators) imply `x is not null` for the planner
    // (tests/audit_index_test.ts checks each filter's plan). The planner
    // takes no statistics from a partial index's expression: without the
    // statistics objects below it would guess a patient's events at 0.5 % of
    // the log and walk the primary key for a page of them; a log that is not
    // empty is analyzed here so that they are filled at once (autovacuum
    // would wait for a tenth of it to be new). Rebuilding the indexes and
    // analyzing hold appends back while they run.
    //
    // append_events (migration 10, same signature, owner and grants) gains a
    // path for the usual group-commit batch, each request a stream of its own
    // and one event: every event then chains on its stream's stored head, so
    // one statement reads the heads, checks the versions, hashes (the same
    // text as before), inserts and returns the rows, without the per-event
    // PL/pgSQL statements. Any other batch (a stream twice, a request of
    // several events) takes migration 10's loop, unchanged.
    sql: `
drop index events_audit_patient;
create index events_audit_patient on events ((data->>'patientId'), global_position)
  where (data->>'patientId') is not null;
drop index events_audit_patient_ids;
create index events_audit_patient_ids on events using gin ((data->'patientIds') jsonb_path_ops)
  where (data->'patientIds') is not null;
drop index events_audit_actor;
create index events_audit_actor on events ((metadata->>'actorId'), global_position)
  where (metadata->>'actorId') is not null;
drop index events_audit_grant;
create index events_audit_grant on events ((metadata->>'grantId'), global_position)
  where (metadata->>'grantId') is not null;
create statistics events_stat_patient on (data->>'patientId') from events;
create statistics events_stat_patient_ids on (data->'patientIds') from events;
create statistics events_stat_actor on (metadata->>'actorId') from events;
create statistics events_stat_grant on (metadata->>'grantId') from events;
-- not an empty log: analyzed, an empty table is planned as one (no 10-page floor) until
-- autovacuum analyzes it again, and PGlite has no autovacuum
do $$ begin
  if exists (select from events) then analyze events; end if;
end $$;

create or replace function append_events(
  p_streams text[], p_stream_json text[], p_expected integer[], p_counts integer[],
  p_metadata text[], p_event_ids uuid[], p_types text[], p_schema_versions integer[],
  p_heads text[], p_data text[], p_recorded_at timestamptz
) returns table (ok boolean, version integer, prev_hash text, hashes text[],
  positions bigint[], txid text)
language plpgsql as $$
#variable_conflict use_column
declare
  v_n integer := cardinality(p_streams);
  v_known text[];
  v_kver integer[];
  v_khash text[];
  v_ok boolean[];
  v_ver integer[];
  v_prev text[];
  v_first integer[];
  v_req integer[] := '{}';
  v_ev integer[] := '{}';
  v_sver integer[] := '{}';
  v_prevs text[] := '{}';
  v_hashes text[] := '{}';
  v_pos bigint[];
  v_txid text;
  v_e integer := 0;
  v_k integer;
  v_cur integer;
  v_h text;
  v_mode text;
  v_i integer;
  v_j integer;
begin
  if v_n is null or cardinality(p_expected) <> v_n or cardinality(p_counts) <> v_n
    or cardinality(p_stream_json) <> v_n or cardinality(p_metadata) <> v_n then
    raise exception 'append_events: one entry per request expected' using errcode = '22023';
  end if;
  perform pg_advisory_xact_lock(72620002);
  -- The queries below take array arguments: planned afresh at each call (custom
  -- plans) they cost several times their execution. Not a SET clause on the
  -- function: that costs a lone append more than it saves.
  v_mode := current_setting('plan_cache_mode');
  perform set_config('plan_cache_mode', 'force_generic_plan', true);
  -- The usual batch: each request a stream of its own and one event. Its
  -- events chain on the heads alone, so one statement checks, hashes,
  -- inserts and answers.
  -- (the first test alone is a simple expression: a lone request of several events
  -- skips the second, a query)
  if 1 = all(p_counts) and cardinality(p_event_ids) = v_n then
  if v_n = (select count(distinct s) from unnest(p_streams) s) then
    return query
    with r as (
      select x.i::integer as i, x.sid, coalesce(t.stream_version, 0) as cur, t.hash as head,
        not coalesce(x.exp >= 0 and x.exp <> coalesce(t.stream_version, 0), false) as ok
      from unnest(p_streams, p_expected) with ordinality as x(sid, exp, i)
      left join lateral (select e.stream_version, e.hash from events e
        where e.stream_id = x.sid order by e.stream_version desc limit 1) t on true),
    ins as (
      insert into events (stream_id, stream_version, event_id, type, schema_version, data,
        metadata, recorded_at, prev_hash, hash)
      select r.sid, r.cur + 1, p_event_ids[r.i], p_types[r.i], p_schema_versions[r.i],
        p_data[r.i]::jsonb, p_metadata[r.i]::jsonb, p_recorded_at, r.head,
        encode(sha256(convert_to('["' || coalesce(r.head, '') || '",' || p_stream_json[r.i]
          || ',' || (r.cur + 1) || ',' || p_heads[r.i] || ',' || p_data[r.i] || ','
          || p_metadata[r.i] || ']', 'UTF8')), 'hex')
      from r where r.ok
      order by r.i
      returning events.global_position, events.stream_id, events.hash)
    select r.ok, case when r.ok then r.cur + 1 else r.cur end,
      case when r.ok then r.head end, case when r.ok then array[ins.hash] end,
      case when r.ok then array[ins.global_position] end,
      (select pg_current_xact_id()::text where exists (select from ins))
    from r left join ins on ins.stream_id = r.sid
    order by r.i;
    perform set_config('plan_cache_mode', v_mode, true);
    return;
  end if;
  end if;
  -- each stream's head: one backward index probe per stream
  select array_agg(s.sid), array_agg(coalesce(h.stream_version, 0)), array_agg(h.hash)
    into v_known, v_kver, v_khash
    from (select distinct unnest(p_streams) as sid) s
    left join lateral (select e.stream_version, e.hash from events e
      where e.stream_id = s.sid order by e.stream_version desc limit 1) h on true;
  for v_i in 1 .. v_n loop
    v_k := array_position(v_known, p_streams[v_i]);
    v_cur := v_kver[v_k];
    if p_expected[v_i] >= 0 and p_expected[v_i] <> v_cur then
      v_ok[v_i] := false;
      v_ver[v_i] := v_cur;
    else
      v_ok[v_i] := true;
      v_prev[v_i] := v_khash[v_k];
      v_first[v_i] := cardinality(v_ev) + 1;
      v_h := v_khash[v_k];
      for v_j in v_e + 1 .. v_e + p_counts[v_i] loop
        v_cur := v_cur + 1;
        v_prevs := v_prevs || v_h;
        v_h := encode(sha256(convert_to('["' || coalesce(v_h, '') || '",' || p_stream_json[v_i]
          || ',' || v_cur || ',' || p_heads[v_j] || ',' || p_data[v_j] || ','
          || p_metadata[v_i] || ']', 'UTF8')), 'hex');
        v_req := v_req || v_i;
        v_ev := v_ev || v_j;
        v_sver := v_sver || v_cur;
        v_hashes := v_hashes || v_h;
      end loop;
      v_ver[v_i] := v_cur;
      v_kver[v_k] := v_cur;
      v_khash[v_k] := v_h;
    end if;
    v_e := v_e + p_counts[v_i];
  end loop;
  if v_e <> cardinality(p_event_ids) then
    raise exception 'append_events: event counts do not add up' using errcode = '22023';
  end if;
  if cardinality(v_ev) > 0 then
    -- identity values are assigned in insertion order, which follows the ordinality
    with ins as (
      insert into events (stream_id, stream_version, event_id, type, schema_version, data,
        metadata, recorded_at, prev_hash, hash)
      select p_streams[x.req], x.sver, p_event_ids[x.ev], p_types[x.ev],
        p_schema_versions[x.ev], p_data[x.ev]::jsonb, p_metadata[x.req]::jsonb,
        p_recorded_at, x.prev, x.hash
      from unnest(v_req, v_ev, v_sver, v_prevs, v_hashes) with ordinality
        as x(req, ev, sver, prev, hash, ord)
      order by x.ord
      returning global_position)
    select array_agg(global_position order by global_position) into v_pos from ins;
    v_txid := pg_current_xact_id()::text;
  end if;
  -- an inline projection's statements may follow in this transaction
  perform set_config('plan_cache_mode', v_mode, true);
  for v_i in 1 .. v_n loop
    ok := v_ok[v_i];
    version := v_ver[v_i];
    prev_hash := v_prev[v_i];
    if ok then
      v_j := v_first[v_i] + p_counts[v_i] - 1;
      hashes := v_hashes[v_first[v_i]:v_j];
      positions := v_pos[v_first[v_i]:v_j];
    else
      hashes := null;
      positions := null;
    end if;
    txid := v_txid;
    return next;
  end loop;
end $$;
`,
  },
];

export const latestMigration = migrations[migrations.length - 1]!.version;

/** A migration that {@link migrate} applied. */
export interface AppliedMigration {
  version: number;
  name: string;
}

export interface MigrateOptions {
  /** `CHARTLOG_APP_DB_PASSWORD`: chartlog_app's password, set when the roles are managed. */
  appPassword?: string | null;
  /** `CHARTLOG_ANALYST_DB_PASSWORD`: chartlog_analyst's password, likewise. */
  analystPassword?: string | null;
  /** Where database role set-up says what it did or skipped. */
  log?: Pick<Logger, "info" | "warn">;
}

/**
 * Applies pending migrations in one transaction; safe to run concurrently.
 * Returns the ones this call applied (none when the schema was up to date).
 *
 * On PostgreSQL it also manages the database roles (src/store/roles.ts):
 * a superuser or CREATEROLE connection creates them when missing; a
 * connection that may act as `chartlog_owner` runs the migrations as it (so
 * the log's tables are the owner's) and then gives `chartlog_app` exactly
 * `APP_GRANTS`, in the same transaction.
 */
export const migrate = async (db: Db, opts: MigrateOptions = {}): Promise<AppliedMigration[]> => {
  const plan: RolePlan | null = db.kind === "postgres" ? await prepareRoles(db, opts) : null;
  return await db.transaction(async (tx) => {
    await tx.query(sql`select pg_advisory_xact_lock(${LOCK_MIGRATE})`);
    if (plan?.roles && plan.superuser) await reassignObjects(tx, opts.log);
    if (plan?.grantSchema) await grantSchemaAccess(tx);
    if (plan?.setRole) await tx.exec(`set local role ${OWNER_ROLE}`);
    // not "$user" first: chartlog_app may create a schema of any name, chartlog_owner too
    if (plan?.roles) await tx.exec(`set local search_path = public`);
    // chartlog_app only reads it: its CREATE on public is for projection tables
    if (!plan?.isApp) {
      await tx.exec(`create table if not exists schema_migrations (
        version integer primary key, name text not null,
        applied_at timestamptz not null default now())`);
    }
    const done = new Set(
      (await currentMigration(tx) === 0
        ? []
        : await tx.query<{ version: number }>(sql`select version from schema_migrations`))
        .map((r) => Number(r.version)),
    );
    const applied: AppliedMigration[] = [];
    const pending = migrations.filter((m) => !done.has(m.version));
    if (plan?.isApp && pending.length > 0) {
      // it could create the new tables, and would own them
      throw new Error(
        `migrations ${
          pending.map((m) => m.version).join(", ")
        } are pending and chartlog_app may not apply them: run \`deno task migrate\` with CHARTLOG_OWNER_DATABASE_URL`,
      );
    }
    if (plan?.roles && pending.length > 0) await assertNoAppRoutines(tx);
    for (const m of pending) {
      await tx.exec(m.sql);
      await tx.query(
        sql`insert into schema_migrations (version, name) values (${m.version}, ${m.name})`,
      );
      applied.push({ version: m.version, name: m.name });
    }
    if (plan?.grant) {
      await applyGrants(tx, opts.log);
      await grantAnalyticsAccess(tx, opts.log);
    }
    if (plan?.setRole) await tx.exec(`reset role`);
    return applied;
  });
};

/** The highest applied migration, or 0 on an empty database. */
export const currentMigration = async (db: Db): Promise<number> => {
  const [t] = await db.query<{ present: boolean }>(
    sql`select to_regclass('schema_migrations') is not null as present`,
  );
  if (!t?.present) return 0;
  const rows = await db.query<{ v: number | null }>(
    sql`select max(version) as v from schema_migrations`,
  );
  return Number(rows[0]?.v ?? 0);
};
