import assert from "node:assert/strict";
import { ROLES } from "../events/user.ts";
import { patientViews } from "../projections/patient_views.ts";
import { createLogger } from "../src/logger.ts";
import { sql } from "../src/store/sql.ts";
import { projectionStatus, ProjectionWorker } from "../src/store/projection_engine.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const TODAY = "2026-06-15";
const NOW = new Date(`${TODAY}T12:00:00Z`);

/** Folds the async patient_views read model up to the head of the log, then stops. */
const catchUpViews = async (t: Awaited<ReturnType<typeof openTestApp>>) => {
  const w = new ProjectionWorker(t.runtime.store, patientViews, createLogger("silent"), {
    pollMs: 10,
  }).start();
  try {
    for (let i = 0; i < 2000; i++) {
      const [s] = await projectionStatus(t.runtime.store, [patientViews]);
      if (s!.lag === 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.fail("patient_views did not catch up");
  } finally {
    await w.stop();
  }
};

Deno.test("dashboard: each practitioner sees exactly their own working set, audited", async (ctx) => {
  for (const driver of await drivers()) {
    await ctx.step(driver, async () => {
      const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
      const t = await openTestApp({
        CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
        ...(pg ? { DATABASE_URL: pg.url } : {}),
      }, { now: () => NOW });
      try {
        const tokens: Record<string, string> = {};
        const ids: Record<string, string> = {};
        for (const role of ROLES) {
          const u = await createUser(t.runtime, role);
          ids[role] = u.id;
          tokens[role] = (await login(t.app, u.email)).body.accessToken;
        }
        const b = await createUser(t.runtime, "practitioner", "b@clinic.test");
        ids.b = b.id;
        tokens.b = (await login(t.app, b.email)).body.accessToken;
        const A = ids.practitioner!;
        const B = ids.b!;
        const call = async (who: string, method: string, path: string, body?: unknown) =>
          await t.app.request(path, {
            method,
            headers: {
              ...bearer(tokens[who]!),
              ...(body && !(body instanceof FormData)
                ? { "content-type": "application/json" }
                : {}),
            },
            ...(body ? { body: body instanceof FormData ? body : JSON.stringify(body) } : {}),
          });
        const ok = async (who: string, method: string, path: string, body?: unknown, st = 200) => {
          const r = await call(who, method, path, body);
          assert.equal(r.status, st, `${method} ${path}: ${await r.clone().text()}`);
          return r.status === 204 ? null : await r.json();
        };

        const p: Record<string, { id: string; mrn: string; firstName: string; lastName: string }> =
          {};
        for (
          const [k, first] of Object.entries({
            p1: "Ann",
            p2: "Ben",
            p3: "Cid",
            p4: "Dee",
            p5: "Eve",
            p6: "Fay",
            p7: "Gus",
          })
        ) {
          const r = await ok("admin", "POST", "/v1/patients", {
            mrn: `DASH-${k}`,
            firstName: first,
            lastName: "Dash",
            dateOfBirth: "1980-02-03",
            gender: "F",
          }, 201);
          p[k] = { id: r.id, mrn: r.mrn, firstName: first, lastName: "Dash" };
        }
        const ref = (k: string) => p[k]!;
        const plan = async (k: string, who: string, startsAt: string) =>
          (await ok("admin", "POST", `/v1/patients/${ref(k).id}/encounters`, {
            practitionerId: who,
            startsAt,
            reason: "check",
          }, 201)).id as string;
        // A: p1 today (and a cancelled one today), p2 tomorrow, p3 yesterday (finished);
        // B: p4 today; p7 care team of A only (related, nothing scheduled)
        const e1 = await plan("p1", A, `${TODAY}T15:00:00.000Z`);
        const eCancelled = await plan("p1", A, `${TODAY}T16:00:00.000Z`);
        await ok("admin", "PATCH", `/v1/encounters/${eCancelled}`, { status: "cancelled" });
        const e2 = await plan("p2", A, "2026-06-16T09:00:00.000Z");
        const e3 = await plan("p3", A, "2026-06-14T09:00:00.000Z");
        await ok("admin", "PATCH", `/v1/encounters/${e3}`, { status: "in_progress" });
        await ok("admin", "PATCH", `/v1/encounters/${e3}`, { status: "finished" });
        const e4 = await plan("p4", B, `${TODAY}T10:00:00.000Z`);
        await ok("admin", "POST", `/v1/patients/${ref("p7").id}/care-team`, {
          practitionerId: A,
        }, 201);

        // uploads to A's encounters (one deleted) and to B's
        const upload = async (who: string, k: string, encounterId: string) => {
          const f = new FormData();
          f.set("category", "patient_records");
          f.set("encounterId", encounterId);
          f.set("file", new Blob(["a note\n"]), "note.txt");
          return (await ok(who, "POST", `/v1/patients/${ref(k).id}/documents`, f, 201))
            .id as string;
        };
        const m1 = await upload("practitioner", "p1", e1);
        const m3 = await upload("practitioner", "p3", e3);
        const gone = await upload("practitioner", "p1", e1);
        await ok("admin", "DELETE", `/v1/media/${gone}?reason=duplicate`, undefined, 204);
        const m4 = await upload("b", "p4", e4);

        // lab tests: A's abnormal unacknowledged one, an acknowledged one, a normal one
        const lab = (k: string, who: string, abnormal: boolean) =>
          ok(who, "POST", `/v1/patients/${ref(k).id}/chart/lab-tests`, {
            testName: abnormal ? "potassium" : "sodium",
            status: "completed",
            results: [
              { name: "K", value: abnormal ? 6.1 : 4.2, unit: "mmol/L", abnormal },
              { name: "Na", value: 140, unit: "mmol/L", abnormal: false },
            ],
          }, 201);
        const l1 = await lab("p1", "practitioner", true);
        const l2 = await lab("p2", "practitioner", true);
        await ok(
          "practitioner",
          "POST",
          `/v1/patients/${ref("p2").id}/chart/lab-tests/${l2.id}/acknowledge`,
        );
        await lab("p3", "practitioner", false);
        const l4 = await lab("p4", "b", true);

        // vaccinations: p2's dose is due in 16 days; p3's old dose is superseded by a later one
        // due next year; p7's is overdue
        const vax = (k: string, at: string, due: string) =>
          ok("practitioner", "POST", `/v1/patients/${ref(k).id}/chart/vaccinations`, {
            vaccineName: "Tetanus",
            vaccineType: "toxoid",
            administeredAt: at,
            nextDueDate: due,
          }, 201);
        const v2 = await vax("p2", "2026-01-01T10:00:00Z", "2026-07-01");
        await vax("p3", "2025-01-01T10:00:00Z", "2026-06-01");
        await vax("p3", "2026-06-01T10:00:00Z", "2027-06-01");
        const v7 = await vax("p7", "2025-05-01T10:00:00Z", "2026-05-01");

        // access: A asks for p6 (pending); grants to A for p5 ending in 5 hours, and one for
        // p6 ending in 72 hours (usable, not about to expire)
        const req = await ok(
          "practitioner",
          "POST",
          `/v1/patients/${ref("p6").id}/access-requests`,
          {
            purpose: "second opinion",
            durationHours: 24,
          },
          201,
        );
        // the patients share codes (their own accounts), A redeems them: grants over the API
        const grantFrom = async (k: string, hours: number) => {
          const email = `${k}@home.test`;
          await ok("admin", "POST", "/v1/users", {
            email,
            name: `Patient ${k}`,
            role: "patient",
            password: PASSWORD,
            patientId: ref(k).id,
          }, 201);
          tokens[k] = (await login(t.app, email)).body.accessToken;
          const shared = await ok(k, "POST", "/v1/me/access-codes", {
            patientId: ref(k).id,
            practitionerId: A,
            purpose: "covering the holidays",
            durationHours: hours,
          }, 201);
          const grant = await ok("practitioner", "POST", "/v1/access-codes/redeem", {
            patientId: ref(k).id,
            code: shared.code,
          }, 201);
          return grant.id as string;
        };
        const g5 = await grantFrom("p5", 5);
        await grantFrom("p6", 72);

        // reads: A opens p1, p2, then p1 again; B opens p4; A cannot open p4
        for (const k of ["p1", "p2", "p1"]) {
          await ok("practitioner", "GET", `/v1/patients/${ref(k).id}`);
        }
        await ok("b", "GET", `/v1/patients/${ref("p4").id}`);
        assert.equal(
          (await call("practitioner", "GET", `/v1/patients/${ref("p4").id}`)).status,
          403,
        );
        await catchUpViews(t);

        const before = await t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from events where stream_id = ${`access-${A}`}`,
        );
        const dash = await ok("practitioner", "GET", "/v1/dashboard");
        const at = (h: string) => `${h}.000Z`;
        const pref = (k: string) => ({
          id: ref(k).id,
          mrn: ref(k).mrn,
          firstName: ref(k).firstName,
          lastName: ref(k).lastName,
        });
        // p1 (encounter), p2 (encounter), p3 (finished yesterday), p5 (grant), p6 (grant), p7
        assert.equal(dash.patientCount, 6);
        assert.deepEqual(
          dash.recentlyViewed.items.map((
            i: { patient: unknown; views: number },
          ) => [i.patient, i.views]),
          [
            [pref("p1"), 2],
            [pref("p2"), 1],
          ],
        );
        assert.equal(dash.recentlyViewed.total, 2);
        assert.deepEqual(dash.encountersToday, {
          items: [{
            id: e1,
            patient: pref("p1"),
            startsAt: at(`${TODAY}T15:00:00`),
            status: "planned",
          }],
          total: 1,
        });
        assert.deepEqual(dash.upcomingEncounters, {
          items: [{
            id: e2,
            patient: pref("p2"),
            startsAt: at("2026-06-16T09:00:00"),
            status: "planned",
          }],
          total: 1,
        });
        assert.deepEqual(
          dash.recentUploads.items.map((
            u: { id: string; patient: unknown; encounterId: string },
          ) => [u.id, u.patient, u.encounterId]).sort(),
          [[m1, pref("p1"), e1], [m3, pref("p3"), e3]].sort(),
        );
        assert.equal(dash.recentUploads.total, 2);
        assert.deepEqual(
          dash.pendingAccessRequests.items.map((
            r: { id: string; patientId: string },
          ) => [r.id, r.patientId]),
          [
            [req.id, ref("p6").id],
          ],
        );
        assert.deepEqual(dash.expiringGrants, {
          items: [{
            id: g5,
            patient: pref("p5"),
            grantee: { kind: "practitioner", id: A },
            source: "share",
            expiresAt: new Date(NOW.getTime() + 5 * 3_600_000).toISOString(),
          }],
          total: 1,
        });
        assert.equal(dash.abnormalResults.total, 1);
        assert.deepEqual(
          dash.abnormalResults.items.map((l: Record<string, unknown>) => ({
            ...l,
            updatedAt: undefined,
          })),
          [{
            id: l1.id,
            patient: pref("p1"),
            encounterId: null,
            testName: "potassium",
            abnormal: [{ name: "K", value: 6.1, unit: "mmol/L", abnormal: true }],
            updatedAt: undefined,
          }],
        );
        assert.deepEqual(dash.vaccinationsDue, {
          items: [
            {
              id: v7.id,
              patient: pref("p7"),
              vaccineName: "Tetanus",
              administeredAt: "2025-05-01T10:00:00Z",
              nextDueDate: "2026-05-01",
              overdue: true,
            },
            {
              id: v2.id,
              patient: pref("p2"),
              vaccineName: "Tetanus",
              administeredAt: "2026-01-01T10:00:00Z",
              nextDueDate: "2026-07-01",
              overdue: false,
            },
          ],
          total: 2,
        });
        // nothing of B's patient anywhere in A's answer
        assert.ok(!JSON.stringify(dash).includes(ref("p4").id));
        assert.ok(!JSON.stringify(dash).includes(m4) && !JSON.stringify(dash).includes(l4.id));

        // the answer was audited: one append of the single routes' access events
        const events = await t.runtime.db.query<{ type: string; data: Record<string, unknown> }>(
          sql`select type, data from events where stream_id = ${`access-${A}`}
            order by stream_version offset ${before[0]!.n}`,
        );
        const norm = (e: { type: string; data: Record<string, unknown> }) =>
          JSON.stringify([
            e.type,
            Object.fromEntries(
              Object.entries(e.data).sort(([a], [b]) => a < b ? -1 : 1).map((
                [k, v],
              ) => [k, Array.isArray(v) ? [...v].sort() : v]),
            ),
          ]);
        assert.deepEqual(
          events.map(norm).sort(),
          [
            {
              type: "PatientsSearched",
              data: { patientIds: ["p1", "p2", "p3", "p5", "p7"].map((k) => ref(k).id), total: 5 },
            },
            { type: "EncountersListed", data: { patientId: ref("p1").id, encounterIds: [e1] } },
            { type: "EncountersListed", data: { patientId: ref("p2").id, encounterIds: [e2] } },
            {
              type: "MediaListed",
              data: { patientId: ref("p1").id, encounterId: e1, mediaIds: [m1] },
            },
            {
              type: "MediaListed",
              data: { patientId: ref("p3").id, encounterId: e3, mediaIds: [m3] },
            },
            {
              type: "ChartEntriesListed",
              data: {
                patientId: ref("p1").id,
                kind: "lab-tests",
                encounterId: null,
                entryIds: [l1.id],
              },
            },
            {
              type: "ChartEntriesListed",
              data: {
                patientId: ref("p2").id,
                kind: "vaccinations",
                encounterId: null,
                entryIds: [v2.id],
              },
            },
            {
              type: "ChartEntriesListed",
              data: {
                patientId: ref("p7").id,
                kind: "vaccinations",
                encounterId: null,
                entryIds: [v7.id],
              },
            },
            { type: "GrantsViewed", data: { patientIds: [ref("p5").id], grantIds: [g5] } },
          ].map(norm).sort(),
        );

        // B: only p4
        const dashB = await ok("b", "GET", "/v1/dashboard");
        assert.equal(dashB.patientCount, 1);
        assert.deepEqual(
          dashB.recentlyViewed.items.map((i: { patient: { id: string } }) => i.patient.id),
          [ref("p4").id],
        );
        assert.deepEqual(dashB.encountersToday.items.map((e: { id: string }) => e.id), [e4]);
        assert.deepEqual(dashB.upcomingEncounters, { items: [], total: 0 });
        assert.deepEqual(dashB.recentUploads.items.map((m: { id: string }) => m.id), [m4]);
        assert.deepEqual(dashB.abnormalResults.items.map((l: { id: string }) => l.id), [l4.id]);
        assert.deepEqual(dashB.vaccinationsDue, { items: [], total: 0 });
        assert.deepEqual(dashB.pendingAccessRequests, { items: [], total: 0 });
        assert.deepEqual(dashB.expiringGrants, { items: [], total: 0 });
        for (const k of ["p1", "p2", "p3", "p5", "p6", "p7"]) {
          assert.ok(!JSON.stringify(dashB).includes(ref(k).id), k);
        }

        // a removed relation ends at once: A off p7's care team
        await ok("admin", "DELETE", `/v1/patients/${ref("p7").id}/care-team/${A}`, undefined, 204);
        const after = await ok("practitioner", "GET", "/v1/dashboard");
        assert.equal(after.patientCount, 5);
        assert.ok(!JSON.stringify(after).includes(ref("p7").id));

        // everyone else: 403 and an AccessDenied
        for (const role of ROLES.filter((r) => r !== "practitioner")) {
          const r = await call(role, "GET", "/v1/dashboard");
          assert.equal(r.status, 403, role);
          assert.equal((await r.json()).type, "/problems/forbidden");
        }
        const denied = await t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from events where type = 'AccessDenied'
            and data->>'action' = 'dashboard.read'`,
        );
        assert.equal(denied[0]!.n, ROLES.length - 1);
        assert.equal((await t.app.request("/v1/dashboard")).status, 401);

        // fail-closed: when the log refuses the access events, no dashboard (503)
        await t.runtime.db.exec(`create function no_access() returns trigger language plpgsql as $$
          begin if new.stream_id like 'access-%' then raise exception 'audit store down'; end if;
          return new; end $$;
          create trigger no_access before insert on events for each row
            execute function no_access();`);
        const refused = await call("practitioner", "GET", "/v1/dashboard");
        assert.equal(refused.status, 503);
        const body = await refused.text();
        assert.equal(JSON.parse(body).type, "/problems/unavailable");
        assert.ok(!body.includes(ref("p1").id) && !body.includes("Ann"));
      } finally {
        await t.close();
        await pg?.drop();
      }
    });
  }
});
