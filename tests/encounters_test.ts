import assert from "node:assert/strict";
import { decide, fold } from "../src/domain/encounter.ts";
import { ConflictError, ValidationError } from "../src/errors.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { bearer, createUser, login } from "./support/users.ts";

const E = "7d1c7a0e-0b8e-4c53-9a8e-2d6c1f0a9b01";
const P = "3a0f6c2e-5b1d-4e7f-8a9b-0c1d2e3f4a5b";
const planned = [{
  type: "EncounterPlanned",
  data: {
    encounterId: E,
    patientId: P,
    practitionerId: P,
    startsAt: "2026-12-01T09:00:00Z",
    reason: "r",
  },
}];
const at = (...to: string[]) =>
  fold([
    ...planned,
    ...to.map((t, i) => ({
      type: "EncounterStatusChanged",
      data: { to: t, from: i ? to[i - 1] : "planned" },
    })),
  ]);

Deno.test("encounter decider: the allowed transitions and no others", () => {
  const ok: [string[], string][] = [
    [[], "in_progress"],
    [[], "cancelled"],
    [["in_progress"], "finished"],
    [["in_progress"], "cancelled"],
  ];
  for (const [path, to] of ok) {
    assert.equal(
      decide({ type: "ChangeStatus", to: to as never }, at(...path)).length,
      1,
      `${path} → ${to}`,
    );
  }
  const bad: [string[], string][] = [
    [[], "finished"],
    [["in_progress"], "planned"],
    [["in_progress", "finished"], "cancelled"],
    [["in_progress", "finished"], "in_progress"],
    [["cancelled"], "planned"],
    [["cancelled"], "in_progress"],
  ];
  for (const [path, to] of bad) {
    assert.throws(
      () => decide({ type: "ChangeStatus", to: to as never }, at(...path)),
      ConflictError,
      `${path} → ${to}`,
    );
  }
  assert.deepEqual(decide({ type: "ChangeStatus", to: "planned" }, at()), []);
  assert.throws(
    () =>
      decide({
        type: "PlanEncounter",
        encounterId: E,
        patientId: P,
        practitionerId: P,
        startsAt: "x",
        reason: " ",
      }, fold([])),
    ValidationError,
  );
});

Deno.test("encounters: plan, read (audited), move through statuses; the practitioner gains a relation", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000" });
  try {
    const tokens: Record<string, string> = {};
    const ids: Record<string, string> = {};
    for (const role of ["admin", "practitioner", "reception"] as const) {
      const u = await createUser(t.runtime, role);
      ids[role] = u.id;
      tokens[role] = (await login(t.app, u.email)).body.accessToken;
    }
    const other = await createUser(t.runtime, "practitioner", "other.doc@clinic.test");
    tokens.other = (await login(t.app, other.email)).body.accessToken;
    const call = (
      who: string,
      method: string,
      path: string,
      body?: unknown,
      headers: Record<string, string> = {},
    ) =>
      t.app.request(path, {
        method,
        headers: {
          ...bearer(tokens[who]!),
          "user-agent": `tests/${who}`,
          ...(body ? { "content-type": "application/json" } : {}),
          ...headers,
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      }, { remoteAddr: { hostname: "10.0.0.5", port: 1, transport: "tcp" } });

    const patient = await (await call("admin", "POST", "/v1/patients", {
      mrn: "E-1",
      firstName: "Eve",
      lastName: "Encounter",
      dateOfBirth: "1970-05-05",
      gender: "F",
    })).json();
    const base = `/v1/patients/${patient.id}/encounters`;
    const plan = {
      practitionerId: ids.practitioner,
      startsAt: "2026-12-01T09:00:00Z",
      reason: "itchy rash on left forearm",
    };
    assert.equal((await call("admin", "POST", base, { ...plan, reason: "" })).status, 422);
    assert.equal(
      (await call("admin", "POST", base, { ...plan, practitionerId: ids.reception })).status,
      404,
    );
    assert.equal((await call("practitioner", "POST", base, plan)).status, 403); // no relation yet
    assert.equal((await call("reception", "POST", base, plan)).status, 403);
    const created = await call("admin", "POST", base, plan);
    assert.equal(created.status, 201);
    const enc = await created.json();
    assert.equal(enc.status, "planned");
    assert.equal(created.headers.get("location"), `/v1/encounters/${enc.id}`);

    // the encounter's practitioner now relates to the patient; another does not
    assert.equal((await call("practitioner", "GET", `/v1/patients/${patient.id}`)).status, 200);
    assert.equal((await call("other", "GET", `/v1/patients/${patient.id}`)).status, 403);
    assert.equal((await call("other", "GET", `/v1/encounters/${enc.id}`)).status, 403);
    assert.equal((await call("reception", "GET", `/v1/encounters/${enc.id}`)).status, 403);
    const read = await call("practitioner", "GET", `/v1/encounters/${enc.id}`);
    assert.equal(read.status, 200);
    assert.equal((await read.json()).reason, "itchy rash on left forearm");
    const list = await (await call("practitioner", "GET", base)).json();
    assert.deepEqual(list.items.map((e: { id: string }) => e.id), [enc.id]);

    const patch = (status: string, headers: Record<string, string> = {}) =>
      call("practitioner", "PATCH", `/v1/encounters/${enc.id}`, { status }, headers);
    assert.equal((await patch("finished")).status, 409);
    assert.equal((await patch("in_progress", { "if-match": '"7"' })).status, 412);
    const started = await patch("in_progress", { "if-match": '"1"' });
    assert.equal(started.status, 200);
    assert.equal(started.headers.get("etag"), '"2"');
    assert.equal((await patch("finished")).status, 200);
    const late = await patch("cancelled");
    assert.equal(late.status, 409);
    assert.match((await late.json()).detail, /cannot go from finished to cancelled/);

    // reads are audited; the reason is sealed in the log
    const viewed = await t.runtime.db.query<
      { m: Record<string, string>; d: Record<string, string> }
    >(
      sql`select metadata as m, data as d from events where type = 'EncounterViewed'`,
    );
    assert.equal(viewed.length, 1);
    assert.deepEqual([viewed[0]!.m.actorId, viewed[0]!.m.ip, viewed[0]!.m.userAgent], [
      ids.practitioner,
      "10.0.0.5",
      "tests/practitioner",
    ]);
    assert.equal(viewed[0]!.d.encounterId, enc.id);
    const [listed] = await t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where type = 'EncountersListed'`,
    );
    assert.equal(listed!.n, 1);
    const [dump] = await t.runtime.db.query<{ d: string }>(
      sql`select string_agg(data::text, ' ') as d from events`,
    );
    assert.ok(!dump!.d.includes("itchy"));
  } finally {
    await t.close();
  }
});

Deno.test("encounters: the relation rule — only careteam.manage names others; cancelled grants nothing; finished grants for a window; lists and reads agree", async () => {
  let now = Date.parse("2026-12-01T08:00:00Z");
  const DAY = 86_400_000;
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000" }, {
    now: () => new Date(now),
  });
  try {
    const ids: Record<string, string> = {};
    const emails: Record<string, string> = {};
    for (
      const [who, role] of [
        ["admin", "admin"],
        ["ops", "clinical_ops"],
        ["doc", "practitioner"],
        ["other", "practitioner"],
        ["third", "practitioner"],
      ] as const
    ) {
      const u = await createUser(t.runtime, role, `${who}@clinic.test`);
      ids[who] = u.id;
      emails[who] = u.email;
    }
    const tokens: Record<string, string> = {};
    // days pass below: tokens and sessions expire, so everyone logs in again
    const relogin = async () => {
      for (const who of Object.keys(ids)) {
        tokens[who] = (await login(t.app, emails[who]!)).body.accessToken;
      }
    };
    await relogin();
    const call = async (who: string, method: string, path: string, body?: unknown) => {
      const res = await t.app.request(path, {
        method,
        headers: {
          ...bearer(tokens[who]!),
          ...(body ? { "content-type": "application/json" } : {}),
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, body: await res.json().catch(() => null) };
    };
    const patients: string[] = [];
    for (const n of [1, 2, 3]) {
      const r = await call("admin", "POST", "/v1/patients", {
        mrn: `REL-${n}`,
        firstName: `P${n}`,
        lastName: "Related",
        dateOfBirth: "1970-05-05",
        gender: "U",
      });
      patients.push(r.body.id);
    }
    const [p1, p2, p3] = patients as [string, string, string];
    const plan = (who: string, patient: string, practitionerId: string) =>
      call(who, "POST", `/v1/patients/${patient}/encounters`, {
        practitionerId,
        startsAt: "2026-12-02T09:00:00Z",
        reason: "follow-up",
      });
    /** The patients a practitioner may read, and proof that the list says exactly the same. */
    const readable = async (who: string) => {
      const reads: string[] = [];
      for (const p of patients) {
        const s = (await call(who, "GET", `/v1/patients/${p}`)).status;
        assert.ok(s === 200 || s === 403, `${who} ${p}: ${s}`);
        if (s === 200) reads.push(p);
      }
      const list = (await call(who, "GET", "/v1/patients?limit=100")).body;
      assert.deepEqual(
        list.items.map((x: { id: string }) => x.id).sort(),
        [...reads].sort(),
        `${who}: the list shows what reads allow`,
      );
      assert.equal(list.total, reads.length, `${who}: total`);
      return reads.sort();
    };
    const events = async (type: string) =>
      (await t.runtime.db.query<{ n: number }>(
        sql`select count(*)::int as n from events where type = ${type}`,
      ))[0]!.n;

    // care team: doc relates to p1
    assert.equal(
      (await call("ops", "POST", `/v1/patients/${p1}/care-team`, {
        practitionerId: ids.doc,
      })).status,
      201,
    );
    assert.deepEqual(await readable("doc"), [p1]);

    // the exploit: a practitioner with a relation names another one → 403, nothing planned
    const denied = await events("AccessDenied");
    const planned = await events("EncounterPlanned");
    const exploit = await plan("doc", p1, ids.other!);
    assert.equal(exploit.status, 403);
    assert.equal(exploit.body.type, "/problems/forbidden");
    assert.match(exploit.body.detail, /careteam\.manage/);
    assert.equal(await events("AccessDenied"), denied + 1);
    assert.equal(await events("EncounterPlanned"), planned);
    assert.deepEqual(await readable("other"), []);
    // naming yourself needs only the relation; clinical_ops may name anyone
    assert.equal((await plan("doc", p1, ids.doc!)).status, 201);
    assert.equal((await plan("doc", p2, ids.doc!)).status, 403); // no relation to p2

    // a planned encounter relates its practitioner; cancelling it ends that at once
    const e2 = (await plan("ops", p2, ids.other!)).body;
    assert.deepEqual(await readable("other"), [p2]);
    assert.equal((await call("other", "GET", `/v1/encounters/${e2.id}`)).status, 200);
    assert.equal(
      (await call("ops", "PATCH", `/v1/encounters/${e2.id}`, { status: "cancelled" })).status,
      200,
    );
    assert.deepEqual(await readable("other"), []);
    assert.equal((await call("other", "GET", `/v1/encounters/${e2.id}`)).status, 403);
    assert.equal((await call("other", "GET", `/v1/patients/${p2}/encounters`)).status, 403);

    // in progress, then finished: related for CHARTLOG_ENCOUNTER_ACCESS_DAYS (30) after it finished
    const e3 = (await plan("admin", p3, ids.third!)).body;
    assert.equal(
      (await call("third", "PATCH", `/v1/encounters/${e3.id}`, { status: "in_progress" })).status,
      200,
    );
    assert.deepEqual(await readable("third"), [p3]);
    now += 3 * DAY; // a long visit: the window counts from when it finished
    await relogin();
    assert.equal(
      (await call("third", "PATCH", `/v1/encounters/${e3.id}`, { status: "finished" })).status,
      200,
    );
    now += 30 * DAY - 60_000;
    await relogin();
    assert.deepEqual(await readable("third"), [p3]);
    assert.equal((await call("third", "GET", `/v1/encounters/${e3.id}`)).status, 200);
    now += 120_000;
    await relogin();
    assert.deepEqual(await readable("third"), []);
    assert.equal((await call("third", "GET", `/v1/encounters/${e3.id}`)).status, 403);

    // several relations at once, then the care team goes: the encounter relation stays
    assert.deepEqual(await readable("doc"), [p1]);
    assert.equal(
      (await call("ops", "POST", `/v1/patients/${p3}/care-team`, { practitionerId: ids.doc }))
        .status,
      201,
    );
    assert.deepEqual(await readable("doc"), [p1, p3].sort());
    assert.equal(
      (await call("ops", "DELETE", `/v1/patients/${p3}/care-team/${ids.doc}`)).status,
      204,
    );
    assert.deepEqual(await readable("doc"), [p1]); // at once: no cache, no delay
    assert.equal(
      (await call("ops", "DELETE", `/v1/patients/${p1}/care-team/${ids.doc}`)).status,
      204,
    );
    assert.deepEqual(await readable("doc"), [p1]); // still the planned encounter doc named himself on
  } finally {
    await t.close();
  }
});

Deno.test("encounters: CHARTLOG_ENCOUNTER_ACCESS_DAYS=0 ends the relation when the encounter finishes", async () => {
  const t = await openTestApp({ CHARTLOG_ENCOUNTER_ACCESS_DAYS: "0" });
  try {
    assert.equal(t.config.encounterAccessDays, 0);
    const admin = await createUser(t.runtime, "admin");
    const doc = await createUser(t.runtime, "practitioner");
    const a = (await login(t.app, admin.email)).body.accessToken;
    const d = (await login(t.app, doc.email)).body.accessToken;
    const req = (tok: string, method: string, path: string, body?: unknown) =>
      t.app.request(path, {
        method,
        headers: { ...bearer(tok), ...(body ? { "content-type": "application/json" } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    const p = await (await req(a, "POST", "/v1/patients", {
      mrn: "Z-1",
      firstName: "Zed",
      lastName: "Zero",
      dateOfBirth: "1970-05-05",
      gender: "U",
    })).json();
    const e = await (await req(a, "POST", `/v1/patients/${p.id}/encounters`, {
      practitionerId: doc.id,
      startsAt: "2026-12-02T09:00:00Z",
      reason: "x",
    })).json();
    assert.equal((await req(d, "GET", `/v1/patients/${p.id}`)).status, 200);
    for (const status of ["in_progress", "finished"]) {
      assert.equal((await req(a, "PATCH", `/v1/encounters/${e.id}`, { status })).status, 200);
    }
    assert.equal((await req(d, "GET", `/v1/patients/${p.id}`)).status, 403);
    assert.equal((await (await req(d, "GET", "/v1/patients")).json()).total, 0);
  } finally {
    await t.close();
  }
});
