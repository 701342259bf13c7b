import assert from "node:assert/strict";
import { countExport } from "../src/audit/export.ts";
import { queryAuditEvents } from "../src/clinical/audit_trail.ts";
import { sealedEventCounts } from "../src/clinical/erasure_report.ts";
import { breakGlassGrants, countTimeline, timeline } from "../src/clinical/replay.ts";
import type { Db } from "../src/store/db.ts";
import type { EventStore } from "../src/store/event_store.ts";
import type { Query } from "../src/store/sql.ts";
import { eachDriver } from "./support/harness.ts";

/**
 * The audit queries find their events through the indexes of migrations 5,
 * 7 and 12 (partial since 12: `where (field) is not null`, which the
 * queries' `field = $1` and `field @> $1` imply without saying so). Over a
 * seeded log of ten thousand events, each query the audit surface runs
 * is planned as a prepared statement (the plan the plan cache keeps, and
 * the generic plan, where the parameters are unknown) and must name the
 * indexes its filter needs.
 * Both drivers: PGlite runs the same migrations and planner.
 */

const PATIENTS = 4000;

/** A log shaped like the app's: most events name an actor, some a patient, a few a grant. */
const seed = async (db: Db) => {
  await db.exec(`insert into events (stream_id, stream_version, event_id, type, schema_version,
      data, metadata, recorded_at, hash)
    select case when g % 7 = 0 then 'patient-p' || (g % ${PATIENTS}) else 's-' || (g % 500) end,
      g, gen_random_uuid(), t.type, 1,
      case t.type
        when 'AccessDenied' then jsonb_build_object('resourceId', 'p' || (g % ${PATIENTS}))
        when 'AuditQueried' then jsonb_build_object('filters',
          jsonb_build_object('patientId', 'p' || (g % ${PATIENTS})))
        when 'PatientsListed' then jsonb_build_object('patientIds',
          jsonb_build_array('p' || (g % ${PATIENTS}), 'p' || ((g + 1) % ${PATIENTS})))
        when 'CounterIncremented' then '{"by": 1}'::jsonb
        else jsonb_build_object('patientId', 'p' || (g % ${PATIENTS}))
      end,
      case when g % 10 = 0 then '{}'::jsonb
        else jsonb_build_object('actorId', 'u' || (g % 300))
          || case when g % 31 = 0 then jsonb_build_object('grantId', 'g' || (g % 150))
            else '{}'::jsonb end
      end,
      now() - (10000 - g) * interval '1 minute', md5(g::text)
    from generate_series(1, 10000) g
    cross join lateral (select case
      when g % 50 = 0 then 'AccessDenied' when g % 97 = 0 then 'AuditQueried'
      when g % 89 = 0 then 'BreakGlassUsed' when g % 83 = 0 then 'AuditExported'
      when g % 20 = 0 then 'PatientsListed' when g % 3 = 0 then 'CounterIncremented'
      else 'PatientViewed' end as type) t;
    analyze events`);
};

/** The store with its database's queries recorded. */
/**
 * The statements a Db runs, recorded: plain queries, batches, and those of
 * its transactions and reserved sessions (a list reads its page and total in
 * one batch, see src/store/snapshot.ts).
 */
const recordDb = <D extends Db>(db: D, seen: Query[]): D =>
  new Proxy(db, {
    get(target, key) {
      if (key === "query") {
        return (q: Query) => {
          seen.push(q);
          return target.query(q);
        };
      }
      if (key === "batch") {
        return (qs: readonly Query[]) => {
          seen.push(...qs);
          return target.batch(qs);
        };
      }
      if (key === "transaction") {
        return <T>(fn: (tx: Db) => Promise<T>) =>
          target.transaction((tx) => fn(recordDb(tx, seen)));
      }
      if (key === "reserve") return async () => recordDb(await target.reserve(), seen);
      const v = Reflect.get(target, key);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });

const recording = (store: EventStore, seen: Query[]): EventStore => {
  const db = recordDb(store.db, seen);
  return new Proxy(store, {
    get: (target, key) => key === "db" ? db : Reflect.get(target, key),
  });
};

/** A value as an SQL literal, for EXECUTE's arguments (typed by the prepared statement). */
const literal = (v: unknown): string => {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  const quote = (s: string) => `'${s.replaceAll("'", "''")}'`;
  if (v instanceof Date) return quote(v.toISOString());
  if (Array.isArray(v)) {
    return quote(`{${v.map((x) => `"${String(x).replace(/["\\]/g, "\\$&")}"`).join(",")}}`);
  }
  return quote(String(v));
};

/**
 * The index names in a query's plan as a prepared statement: its generic
 * plan (the parameters unknown, as a pooled connection's prepared statement
 * may end up running it), or a custom plan (their values known).
 */
const indexesOf = async (db: Db, q: Query, generic: boolean): Promise<Set<string>> => {
  const conn = await db.reserve();
  try {
    await conn.exec(
      `set plan_cache_mode = force_${generic ? "generic" : "custom"}_plan;
      prepare audit_q as ${q.text}`,
    );
    const args = q.values.length > 0 ? `(${q.values.map(literal).join(", ")})` : "";
    const [r] = await conn.query<Record<string, unknown>>({
      text: `explain (format json) execute audit_q${args}`,
      values: [],
    });
    const plan = Object.values(r!)[0]; // the column "QUERY PLAN"
    const names = new Set<string>();
    const walk = (x: unknown) => {
      if (Array.isArray(x)) x.forEach(walk);
      else if (x && typeof x === "object") {
        for (const [k, v] of Object.entries(x)) {
          if (k === "Index Name" && typeof v === "string") names.add(v);
          else walk(v);
        }
      }
    };
    walk(typeof plan === "string" ? JSON.parse(plan) : plan);
    return names;
  } finally {
    await conn.exec(`deallocate audit_q; reset plan_cache_mode`);
    await conn.release();
  }
};

const PATIENT = [
  "events_audit_patient",
  "events_audit_patient_ids",
  "events_audit_denied_resource",
  "events_stream_id_stream_version_key",
];
const NAMES_PATIENT = [...PATIENT, "events_audit_filter_patient"];

eachDriver("audit queries use the audit indexes", async (h) => {
  await seed(h.db);
  const p = "p7";
  const cases: [string, (s: EventStore) => Promise<unknown>, string[]][] = [
    [
      "audit events by patient",
      (s) => queryAuditEvents(s, "audit-events", { patientId: p }, { limit: 50 }),
      PATIENT,
    ],
    [
      "audit events by actor",
      (s) => queryAuditEvents(s, "audit-activity", { actorId: "u7" }, { limit: 50 }),
      ["events_audit_actor"],
    ],
    [
      "audit events by grant",
      (s) => queryAuditEvents(s, "audit-events", { grantId: "g7" }, { limit: 50 }),
      ["events_audit_grant"],
    ],
    ["export count by patient", (s) => countExport(s, { patientId: p }, 1_000_000), PATIENT],
    ["replay count", (s) => countTimeline(s, { patientId: p }), NAMES_PATIENT],
    [
      "replay page",
      async (s) => {
        for await (const _ of timeline(s, { patientId: p })) break;
      },
      NAMES_PATIENT,
    ],
    ["break-glass grants", (s) => breakGlassGrants(s, p), ["events_audit_patient"]],
    ["erasure report", (s) => sealedEventCounts(s.db, p, []), ["events_audit_patient"]],
  ];
  for (const [what, run, want] of cases) {
    const seen: Query[] = [];
    await run(recording(h.store, seen));
    const onLog = seen.filter((q) => /\bfrom events\b/.test(q.text));
    assert.ok(onLog.length > 0, `${what}: no query of the log`);
    for (const q of onLog) {
      // a page's limit is in the text (sql.ts int), not a parameter: given one,
      // a generic plan expects to stop early and walks the primary key instead
      assert.ok(!/limit \$\d+/.test(q.text), `${what}: its limit is a parameter`);
      for (const generic of [false, true]) {
        const used = await indexesOf(h.db, q, generic);
        for (const name of want) {
          assert.ok(
            used.has(name),
            `${what} (${generic ? "generic" : "custom"} plan): ${name} not in the plan (${
              [...used].join(", ")
            })`,
          );
        }
      }
    }
  }
});
