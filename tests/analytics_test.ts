/**
 * Analytics (issue 16): after a scenario played through the API, the
 * analysts' views in schema `analytics` hold no identifying value of any
 * patient, suppress small cells and their complement, survive a rebuild of
 * every analytics projection unchanged, drop an erased patient from the
 * patient-level view but not from event counts, and are served as JSON and
 * CSV to analysts only. On PostgreSQL the `chartlog_analyst` role reads the
 * views and nothing else.
 */
import assert from "node:assert/strict";
import { Image } from "imagescript";
import { catalog } from "../events/index.ts";
import { analyticsGrants } from "../projections/analytics_grants.ts";
import { analyticsProjections } from "../projections/index.ts";
import { ANALYTICS_VIEWS } from "../src/analytics/catalog.ts";
import type { Db } from "../src/store/db.ts";
import { pgCode } from "../src/store/db.ts";
import { migrate } from "../src/store/migrations.ts";
import { openPostgres } from "../src/store/postgres_driver.ts";
import { projectionStatus, rebuildProjection } from "../src/store/projection_engine.ts";
import { ANALYST_ROLE } from "../src/store/roles.ts";
import { ident, sql } from "../src/store/sql.ts";
import type { Runtime } from "../src/runtime.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, type DriverKind, drivers, eachDriver } from "./support/harness.ts";
import { type GivenEvent, givenEventsThenRows } from "./support/projection.ts";
import { form } from "./support/media.ts";
import { bearer, createUser, login } from "./support/users.ts";

/** The age band of a birth date today (UTC), as the view computes it. */
const bandOf = (dob: string): string => {
  const now = new Date();
  const [y, m, d] = dob.split("-").map(Number) as [number, number, number];
  let age = now.getUTCFullYear() - y;
  if (now.getUTCMonth() + 1 < m || (now.getUTCMonth() + 1 === m && now.getUTCDate() < d)) age--;
  return age >= 90 ? "90+" : `${Math.floor(age / 5) * 5}-${Math.floor(age / 5) * 5 + 4}`;
};

/**
 * The patients: in Oregon, 6 born 1979 (one band), 5 born 1957 (another) and
 * 4 born 1941 (a third: a group of 4, suppressed, and the 5 with it as its
 * complement); in Washington, one aged over 90 (suppressed alone).
 */
const COHORTS = [
  { n: 6, state: "OR", dob: "1979-03-1" },
  { n: 5, state: "OR", dob: "1957-05-2" },
  { n: 4, state: "OR", dob: "1941-08-1" },
  { n: 1, state: "WA", dob: "1930-01-1" },
] as const;

const photo = async () => {
  const img = new Image(24, 16);
  img.fill(Image.rgbaToColor(120, 80, 200, 255));
  return await img.encodeJPEG(80);
};

/** Waits (bounded) until every analytics projection has folded the whole log. */
const caughtUp = async (runtime: Runtime) => {
  for (let i = 0; i < 2400; i++) {
    const st = await projectionStatus(runtime.store, analyticsProjections);
    if (st.every((s) => s.lag === 0)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the analytics projections did not catch up in 2 minutes");
};

/** Every row of every view and table in schema `analytics`, as text, by relation. */
const dumpAnalytics = async (db: Db): Promise<Record<string, string[]>> => {
  const rels = await db.query<{ t: string }>(sql`select table_name as t
    from information_schema.tables where table_schema = 'analytics' order by 1`);
  const out: Record<string, string[]> = {};
  for (const { t } of rels) {
    const rows = await db.query<{ r: string }>(
      sql`select x::text as r from ${ident(`analytics.${t}`)} x`,
    );
    out[t] = rows.map((r) => r.r).sort();
  }
  return out;
};

const scenario = async (driver: DriverKind) => {
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  const t = await openTestApp({
    CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
    ...(pg ? { DATABASE_URL: pg.url } : {}),
  }, { workers: true });
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  for (
    const [who, role] of [
      ["admin", "admin"],
      ["doc", "practitioner"],
      ["analyst", "analyst"],
      ["desk", "reception"],
    ] as const
  ) {
    const u = await createUser(t.runtime, role, `${who}@clinic.test`);
    ids[who] = u.id;
    tokens[who] = (await login(t.app, u.email)).body.accessToken;
  }
  const call = (who: string, method: string, path: string, body?: FormData | object) =>
    t.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[who]!),
        ...(body !== undefined && !(body instanceof FormData)
          ? { "content-type": "application/json" }
          : {}),
      },
      ...(body === undefined
        ? {}
        : { body: body instanceof FormData ? body : JSON.stringify(body) }),
    });
  const ok = async (res: Response, status = 200) => {
    const text = await res.text();
    assert.equal(res.status, status, text);
    return text ? JSON.parse(text) : null;
  };

  // what identifies anyone: every value a hit in the analytics schema would leak
  const secrets: string[] = [
    ...Object.values(ids),
    ...Object.keys(ids).map((w) => `${w}@clinic.test`),
  ];
  const patients: { id: string; cohort: number }[] = [];
  let k = 0;
  for (const [ci, c] of COHORTS.entries()) {
    for (let i = 0; i < c.n; i++, k++) {
      const p = {
        mrn: `MRN-ANX-${7100 + k}`,
        firstName: `Quillon${k}x`,
        lastName: `Marbury${k}z`,
        dateOfBirth: `${c.dob}${i}`,
        gender: "F",
        phone: `+1555017${String(k).padStart(4, "0")}`,
        email: `q${k}.marbury@analytics.test`,
        address: {
          line1: `${k} Tamarack Way`,
          line2: null,
          city: `Ostrava${k}ville`,
          state: c.state,
          zip: `97${String(100 + k)}`,
        },
      };
      const created = await ok(await call("admin", "POST", "/v1/patients", p), 201);
      patients.push({ id: created.id, cohort: ci });
      secrets.push(
        created.id,
        p.mrn,
        p.firstName,
        p.lastName,
        p.dateOfBirth,
        p.phone,
        p.email,
        p.address.line1,
        p.address.city,
      );
    }
  }
  const jpeg = await photo();
  // 6 photos "before" (6 patients, 5 of these encounters in progress), 5 "after" (5), and
  // 1 "progress" (1 patient: suppressed, with "after" as its complement): 12 encounters of
  // the first 11 patients
  const uploads: [number, string, boolean][] = [
    ...[0, 1, 2, 3, 4, 5].map((i) => [i, "before", i < 5] as [number, string, boolean]),
    ...[6, 7, 8, 9, 10].map((i) => [i, "after", false] as [number, string, boolean]),
    [0, "progress", false],
  ];
  for (const [n, [i, category, started]] of uploads.entries()) {
    const p = patients[i]!.id;
    const reason = `visit about the Zanzibar mole ${n}`;
    const enc = await ok(
      await call("admin", "POST", `/v1/patients/${p}/encounters`, {
        practitionerId: ids.doc,
        startsAt: "2026-11-18T09:00:00Z",
        reason,
      }),
      201,
    );
    const notes = `left shoulder, Kettering freckle ${n}`;
    const fileName = `shoulder-${n}-quillon.jpg`;
    const m = await ok(
      await call(
        "doc",
        "POST",
        `/v1/encounters/${enc.id}/media`,
        form(jpeg, fileName, { category, notes }),
      ),
      201,
    );
    if (started) {
      await ok(await call("doc", "PATCH", `/v1/encounters/${enc.id}`, { status: "in_progress" }));
    }
    secrets.push(enc.id, m.id, reason, notes, fileName);
  }
  // chart: prescriptions for 5 patients, lab tests (two abnormal) for 6
  for (let i = 0; i < 6; i++) {
    const p = patients[i]!.id;
    if (i < 5) {
      const rx = await ok(
        await call("doc", "POST", `/v1/patients/${p}/chart/prescriptions`, {
          medication: `Velmorazine ${i}`,
          dosage: "1 tablet",
          frequency: "daily",
          route: "oral",
          startDate: "2026-11-01",
        }),
        201,
      );
      secrets.push(rx.id, `Velmorazine ${i}`);
    }
    const lab = await ok(
      await call("doc", "POST", `/v1/patients/${p}/chart/lab-tests`, {
        testName: `Glimmer panel ${i}`,
        status: "completed",
        results: [{ name: "Hb", value: 11 + i, unit: "g/dl", abnormal: i < 2 }],
      }),
      201,
    );
    secrets.push(lab.id, `Glimmer panel ${i}`);
  }
  // grants: break-glass into 5 records, one revoked
  for (let i = 11; i < 16; i++) {
    const reason = `unconscious in the Pemberton ward ${i}`;
    const bg = await ok(
      await call("doc", "POST", `/v1/patients/${patients[i]!.id}/break-glass`, { reason }),
      201,
    );
    secrets.push(bg.id, bg.grantId, reason);
    if (i === 11) await ok(await call("admin", "DELETE", `/v1/grants/${bg.grantId}`), 204);
  }
  // reads, and a denial
  for (const p of patients.slice(0, 7)) {
    await ok(await call("admin", "GET", `/v1/patients/${p.id}`));
  }
  assert.equal((await call("desk", "GET", "/v1/analytics/uploads-daily")).status, 403);

  const analytics = async (name: string, query = "") =>
    await ok(await call("analyst", "GET", `/v1/analytics/${name}${query}`));
  return {
    t,
    pg,
    ids,
    patients,
    secrets,
    call,
    ok,
    analytics,
    close: async () => {
      await t.close();
      await pg?.drop();
    },
  };
};

type Item = Record<string, string | number | boolean | null>;

for (const driver of await drivers()) {
  Deno.test(`analytics [${driver}]: de-identified, suppressed, rebuildable, erasure-aware`, async () => {
    const s = await scenario(driver);
    try {
      const { t } = s;
      await caughtUp(t.runtime);
      const db = t.runtime.store.db;

      // 1. nothing identifying anywhere in the schema: views only, and no value of anyone
      const dump = await dumpAnalytics(db);
      assert.deepEqual(
        Object.keys(dump).sort(),
        ANALYTICS_VIEWS.map((v) => v.view).sort(),
        "schema analytics holds exactly the views",
      );
      const [{ n: bases }] = await db.query<{ n: number }>(sql`select count(*)::int as n
        from information_schema.tables where table_schema = 'analytics'
          and table_type = 'BASE TABLE'`) as [{ n: number }];
      assert.equal(bases, 0, "no table in schema analytics");
      const text = Object.values(dump).flat().join("\n").toLowerCase();
      assert.ok(text.length > 0);
      for (const v of s.secrets) {
        assert.ok(!text.includes(v.toLowerCase()), `an identifying value is in analytics: ${v}`);
      }

      // 2. patients by state and age: the 4 are suppressed, and the 5 as their complement
      const pba = await s.analytics("patients-by-state-age");
      const cell = (items: Item[], state: string, band: string) =>
        items.find((i) => i.state === state && i.ageBand === band);
      const six = cell(pba.items, "OR", bandOf("1979-03-10"));
      const five = cell(pba.items, "OR", bandOf("1957-05-20"));
      const four = cell(pba.items, "OR", bandOf("1941-08-10"));
      const old = cell(pba.items, "WA", "90+");
      assert.deepEqual(six, {
        state: "OR",
        ageBand: bandOf("1979-03-10"),
        count: 6,
        patients: 6,
        suppressed: false,
      });
      assert.equal(four?.count, null);
      assert.equal(four?.suppressed, true);
      assert.deepEqual([five?.count, five?.suppressed], [null, true], "the complement");
      assert.deepEqual([old?.count, old?.suppressed], [null, true], "alone over 90");
      assert.equal(pba.suppressedCells, 3);

      // uploads: "progress" (1 patient) and its complement "after" (5) hidden, "before" shown
      const up = (await s.analytics("uploads-daily")).items as Item[];
      const byCat = Object.fromEntries(up.map((i) => [i.category, i]));
      assert.equal(byCat.before?.count, 6);
      assert.equal(byCat.before?.patients, 6);
      assert.ok(Number(byCat.before?.bytes) > 0);
      assert.deepEqual([byCat.progress?.count, byCat.progress?.suppressed], [null, true]);
      assert.deepEqual([byCat.after?.count, byCat.after?.bytes, byCat.after?.suppressed], [
        null,
        null,
        true,
      ]);
      // encounters: 5 in progress and 7 planned in one week
      const enc = (await s.analytics("encounters-weekly")).items as Item[];
      assert.deepEqual(
        enc.map((i) => [i.week, i.weekStart, i.status, i.count]).sort(),
        [["2026-W47", "2026-11-16", "in_progress", 5], ["2026-W47", "2026-11-16", "planned", 7]],
      );
      // grants: 5 opened and 5 break-glass uses; the one revocation hidden with a complement
      const grants = (await s.analytics("grants-weekly")).items as Item[];
      const ev = Object.fromEntries(grants.map((i) => [i.event, i]));
      assert.deepEqual([ev.revoked?.count, ev.revoked?.suppressed], [null, true]);
      assert.equal(grants.filter((i) => i.suppressed).length, 2);
      assert.ok(grants.some((i) => i.count === 5 && !i.suppressed));
      // chart: 5 prescriptions; 6 completed lab tests, 2 abnormal
      const chart = (await s.analytics("chart-weekly")).items as Item[];
      const rx = chart.find((i) => i.kind === "prescriptions");
      const labs = chart.find((i) => i.kind === "lab-tests" && i.status === "completed");
      assert.equal(rx?.count, 5);
      assert.deepEqual([labs?.count, labs?.abnormal, labs?.abnormalRate], [6, 2, 0.333]);
      // access: the admin's 7 patient reads are one cell of 7 patients
      const access = (await s.analytics("access-daily")).items as Item[];
      assert.ok(
        access.some((i) => i.role === "admin" && i.action === "PatientViewed" && i.count === 7),
        JSON.stringify(access),
      );
      // the reception's refusal counts (a refusal of no record: nobody to hide)
      const denials = (await s.analytics("denials-daily")).items as Item[];
      assert.ok(denials.some((i) => i.action === "analytics.read" && Number(i.count) >= 1));
      // storage: 12 photos
      const storage = (await s.analytics("storage-by-category")).items as Item[];
      assert.equal(storage.find((i) => i.category === "before")?.count, 6);

      // 3. from/to filter by day and week
      const none = await s.analytics("uploads-daily", "?from=2000-01-01&to=2000-01-31");
      assert.deepEqual(none, { items: [], suppressedCells: 0 });
      const w = await s.analytics("encounters-weekly", "?from=2026-11-18&to=2026-11-18");
      assert.equal(w.items.length, 2, "a from inside the week takes the week");

      // 4. every analytics projection rebuilt reproduces its view
      for (const p of analyticsProjections) {
        const before = await dumpAnalytics(db);
        await rebuildProjection(t.runtime.store, p);
        assert.deepEqual(await dumpAnalytics(db), before, `rebuild of ${p.name}`);
      }

      // 5. erasure: one of the six leaves the patient-level view, the event counts stay
      const uploadsBefore = await s.analytics("uploads-daily");
      const grantsBefore = await s.analytics("grants-weekly");
      const encountersBefore = await s.analytics("encounters-weekly");
      await s.ok(
        await s.call("admin", "POST", `/v1/admin/patients/${s.patients[0]!.id}/erase`, {
          reason: "request under the right to erasure",
        }),
      );
      await caughtUp(t.runtime);
      // the six are five now: with the 1957 band's five, the smaller by its band's label
      // (45-49) is the complement of the four, and the 1957 band shows
      const after = (await s.analytics("patients-by-state-age")).items as Item[];
      assert.deepEqual(
        [
          cell(after, "OR", bandOf("1979-03-10"))?.count,
          cell(after, "OR", bandOf("1979-03-10"))?.suppressed,
        ],
        [null, true],
      );
      assert.equal(cell(after, "OR", bandOf("1957-05-20"))?.count, 5);
      const [{ n: left }] = await db.query<{ n: number }>(
        sql`select count(*)::int as n from analytics_patient_facts`,
      ) as [{ n: number }];
      assert.equal(left, 15);
      assert.deepEqual(await s.analytics("uploads-daily"), uploadsBefore);
      assert.deepEqual(await s.analytics("grants-weekly"), grantsBefore);
      assert.deepEqual(await s.analytics("encounters-weekly"), encountersBefore);
      // and a rebuild after the erasure agrees, for every projection
      for (const p of analyticsProjections) {
        const before = await dumpAnalytics(db);
        await rebuildProjection(t.runtime.store, p);
        assert.deepEqual(await dumpAnalytics(db), before, `rebuild of ${p.name} after erasure`);
      }

      // 6. CSV
      const csv = await s.call("analyst", "GET", "/v1/analytics/patients-by-state-age?format=csv");
      assert.equal(csv.status, 200);
      assert.match(csv.headers.get("content-type") ?? "", /^text\/csv/);
      const lines = (await csv.text()).trimEnd().split("\r\n");
      assert.equal(lines[0], "state,ageBand,count,patients,suppressed");
      assert.ok(lines.includes(`OR,${bandOf("1941-08-10")},,,true`), lines.join("\n"));
      assert.ok(lines.includes("WA,90+,,,true"));

      // 7. who and what: analysts only; bad parameters are 400s, an unknown view a 404
      for (const who of ["admin", "doc", "desk"]) {
        assert.equal((await s.call(who, "GET", "/v1/analytics/chart-weekly")).status, 403, who);
      }
      for (
        const q of [
          "?from=2026-13-01",
          "?to=yesterday",
          "?format=xml",
          "?from=2026-12-02&to=2026-12-01",
          "?from=2026-02-30",
        ]
      ) {
        const res = await s.call("analyst", "GET", `/v1/analytics/uploads-daily${q}`);
        assert.equal(res.status, 400, q);
        const body = await res.json();
        assert.equal(body.type, "/problems/malformed-request");
        assert.ok(body.errors.length > 0);
      }
      assert.equal((await s.call("analyst", "GET", "/v1/analytics/nothing-here")).status, 404);
    } finally {
      await s.close();
    }
  });
}

Deno.test({
  name: "analytics [postgres]: chartlog_analyst reads the analytics views and nothing else",
  ignore: !(await drivers()).includes("postgres"),
  fn: async () => {
    const tdb = await createTestDatabase({ app: true });
    const u = new URL(tdb.url);
    u.username = ANALYST_ROLE;
    u.password = "";
    const analyst = openPostgres(u.toString(), { max: 1 });
    try {
      for (const table of ["events", "patients", "subject_keys", "analytics_patient_facts"]) {
        let err: unknown = null;
        try {
          await analyst.query(sql`select * from ${ident(`public.${table}`)} limit 1`);
        } catch (e) {
          err = e;
        }
        assert.equal(pgCode(err), "42501", `${table}: ${(err as Error | null)?.message}`);
      }
      for (const v of ANALYTICS_VIEWS) {
        const rows = await analyst.query(sql`select * from ${ident(`analytics.${v.view}`)}`);
        assert.ok(Array.isArray(rows), v.view);
      }
      let err: unknown = null;
      try {
        await analyst.query(sql`create view analytics.mine as select 1`);
      } catch (e) {
        err = e;
      }
      assert.equal(pgCode(err), "42501", "the analyst may not create in analytics");
    } finally {
      await analyst.close();
      await tdb.drop();
    }
  },
});

/** Grant events of `n` distinct patients (one event each). */
const grantEvents = (type: string, n: number): GivenEvent[] =>
  Array.from({ length: n }, () => {
    const patientId = crypto.randomUUID(), grantId = crypto.randomUUID();
    const id = crypto.randomUUID();
    const data: Record<string, Record<string, unknown>> = {
      AccessGrantRevoked: { grantId, patientId },
      AccessGrantExpired: { grantId, patientId },
      AccessGranted: {
        grantId,
        patientId,
        granteeKind: "practitioner",
        granteeId: id,
        source: "share",
        sourceId: id,
        purpose: "follow-up",
        expiresAt: "2026-12-01T10:00:00Z",
      },
      BreakGlassUsed: {
        breakGlassId: id,
        grantId,
        patientId,
        practitionerId: id,
        reason: "emergency",
        expiresAt: "2026-12-01T10:00:00Z",
      },
    };
    return { stream: `test-${id}`, type, data: data[type]! };
  });

eachDriver(
  "analytics: a lone small cell takes the next smallest with it, two hide each other",
  async (h) => {
    const cells = (given: GivenEvent[]) =>
      givenEventsThenRows<{ event: string; count: number | null; suppressed: boolean }>(
        h,
        analyticsGrants,
        given,
        sql`select event, "count", suppressed from analytics.grants_weekly order by event`,
      );
    // one week (all recorded now): revoked 2 patients (small), expired 6, opened 7
    assert.deepEqual(
      await cells([
        ...grantEvents("AccessGrantRevoked", 2),
        ...grantEvents("AccessGrantExpired", 6),
        ...grantEvents("AccessGranted", 7),
      ]),
      [
        { event: "expired", count: null, suppressed: true },
        { event: "opened", count: 7, suppressed: false },
        { event: "revoked", count: null, suppressed: true },
      ],
    );
    // break-glass of 3 patients: two small cells hide each other, the rest shows
    assert.deepEqual(await cells(grantEvents("BreakGlassUsed", 3)), [
      { event: "break_glass", count: null, suppressed: true },
      { event: "expired", count: 6, suppressed: false },
      { event: "opened", count: 7, suppressed: false },
      { event: "revoked", count: null, suppressed: true },
    ]);
    // 3 more revocations: break-glass (3) is the lone small cell, revoked (5) the smallest other
    assert.deepEqual(await cells(grantEvents("AccessGrantRevoked", 3)), [
      { event: "break_glass", count: null, suppressed: true },
      { event: "expired", count: 6, suppressed: false },
      { event: "opened", count: 7, suppressed: false },
      { event: "revoked", count: null, suppressed: true },
    ]);
    // 5 patients are not a small cell: 2 more break-glass uses and everything shows
    assert.deepEqual(await cells(grantEvents("BreakGlassUsed", 2)), [
      { event: "break_glass", count: 5, suppressed: false },
      { event: "expired", count: 6, suppressed: false },
      { event: "opened", count: 7, suppressed: false },
      { event: "revoked", count: 5, suppressed: false },
    ]);
  },
  { catalog },
);

Deno.test({
  name: "analytics [postgres]: CHARTLOG_ANALYST_DB_PASSWORD sets the analyst role's password",
  ignore: !(await drivers()).includes("postgres"),
  fn: async () => {
    const tdb = await createTestDatabase();
    const admin = openPostgres(tdb.url, { max: 1 });
    try {
      await migrate(admin, { analystPassword: `pw-${crypto.randomUUID()}` });
      const [r] = await admin.query<{ set: boolean; login: boolean }>(sql`select
        rolpassword is not null as set, rolcanlogin as login
        from pg_authid where rolname = ${ANALYST_ROLE}`);
      assert.deepEqual(r, { set: true, login: true });
    } finally {
      await admin.close();
      await tdb.drop();
    }
  },
});

Deno.test({
  name: "analytics [postgres]: a view made before the roles is given to the app and the analyst",
  ignore: !(await drivers()).includes("postgres"),
  fn: async () => {
    const tdb = await createTestDatabase();
    const admin = openPostgres(tdb.url, { max: 1 });
    const u = new URL(tdb.url);
    u.username = ANALYST_ROLE;
    u.password = "";
    const analyst = openPostgres(u.toString(), { max: 1 });
    try {
      await migrate(admin);
      // as a build by a user without the roles left it: its own, granted to nobody
      await admin.exec(`create view analytics.old_view as select 1 as x`);
      await migrate(admin);
      const [r] = await admin.query<{ owner: string }>(sql`select
        pg_get_userbyid(relowner) as owner from pg_class where oid = 'analytics.old_view'::regclass`);
      assert.equal(r?.owner, "chartlog_app");
      assert.deepEqual(await analyst.query(sql`select x from analytics.old_view`), [{ x: 1 }]);
    } finally {
      await analyst.close();
      await admin.close();
      await tdb.drop();
    }
  },
});
