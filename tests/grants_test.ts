import assert from "node:assert/strict";
import { registerUser } from "../src/auth/accounts.ts";
import { GrantSweeper, sweepExpiredGrants } from "../src/clinical/grant_sweeper.ts";
import { type BreakGlassCommand, breakGlassDecider } from "../src/domain/break_glass.ts";
import { foldEvents } from "../src/domain/decider.ts";
import { grantDecider } from "../src/domain/grant.ts";
import { ConflictError, NotFoundError, ValidationError } from "../src/errors.ts";
import { createLogger } from "../src/logger.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import {
  appendClinic,
  appendGrant,
  appendProxy,
  deactivateClinic,
  leaveClinic,
} from "./support/grants.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const HOUR = 3_600_000;
const REASON = "Unresponsive in the ER, allergy history needed now";

Deno.test("grant decider: revoke once, 409 once ended (by the clock too), expire only when due", () => {
  const grantId = crypto.randomUUID();
  const patientId = crypto.randomUUID();
  const d = grantDecider(grantId);
  const granted = {
    type: "AccessGranted",
    data: {
      grantId,
      patientId,
      granteeKind: "practitioner",
      granteeId: crypto.randomUUID(),
      source: "request",
      sourceId: crypto.randomUUID(),
      purpose: "x",
      expiresAt: "2026-12-01T10:00:00.000Z",
    },
  } as const;
  const before = new Date("2026-12-01T09:00:00Z");
  const after = new Date("2026-12-01T10:00:00Z");
  // another grant's events in the stream do not count
  const other = { ...granted, data: { ...granted.data, grantId: crypto.randomUUID() } };
  assert.throws(
    () => d.decide({ type: "RevokeGrant", grantId, now: before }, d.initialState()),
    NotFoundError,
  );
  assert.equal(foldEvents(d, [other]).status, "none");
  const active = foldEvents(d, [granted]);
  assert.deepEqual(d.decide({ type: "RevokeGrant", grantId, now: before }, active), [
    { type: "AccessGrantRevoked", data: { grantId, patientId } },
  ]);
  assert.throws(
    () => d.decide({ type: "RevokeGrant", grantId, now: after }, active),
    ConflictError,
  );
  assert.deepEqual(d.decide({ type: "ExpireGrant", grantId, now: before }, active), []);
  assert.deepEqual(d.decide({ type: "ExpireGrant", grantId, now: after }, active), [
    { type: "AccessGrantExpired", data: { grantId, patientId } },
  ]);
  const revoked = foldEvents(d, [granted, {
    type: "AccessGrantRevoked",
    data: { grantId, patientId },
  }]);
  assert.throws(
    () => d.decide({ type: "RevokeGrant", grantId, now: before }, revoked),
    ConflictError,
  );
  assert.deepEqual(d.decide({ type: "ExpireGrant", grantId, now: after }, revoked), []);
});

Deno.test("break-glass decider: a reason of 20+ characters, a one-hour grant in the same events, one review", () => {
  const use = (reason: string): BreakGlassCommand => ({
    type: "UseBreakGlass",
    breakGlassId: crypto.randomUUID(),
    grantId: crypto.randomUUID(),
    patientId: crypto.randomUUID(),
    practitionerId: crypto.randomUUID(),
    reason,
    now: new Date("2026-12-01T09:00:00Z"),
  });
  const d = breakGlassDecider;
  assert.throws(() => d.decide(use("   too short, sorry   "), d.initialState()), ValidationError);
  const events = d.decide(use(`  ${REASON}  `), d.initialState());
  assert.deepEqual(events.map((e) => e.type), ["BreakGlassUsed", "AccessGranted"]);
  assert.equal((events[0]!.data as { reason: string }).reason, REASON);
  assert.equal((events[1]!.data as { expiresAt: string }).expiresAt, "2026-12-01T10:00:00.000Z");
  const used = foldEvents(d, events);
  const review = {
    type: "ReviewBreakGlass",
    breakGlassId: crypto.randomUUID(),
    outcome: "appropriate",
    note: "ok",
  } as const;
  assert.throws(() => d.decide(review, d.initialState()), NotFoundError);
  const reviewed = foldEvents(d, [...events, ...d.decide(review, used)]);
  assert.throws(() => d.decide(review, reviewed), ConflictError);
});

/** An app on the driver with a movable clock and logged-in users. */
const setup = async (driver: string, start = Date.parse("2026-12-01T08:00:00Z")) => {
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  const clock = { now: start };
  const t = await openTestApp({
    CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
    // the clock moves by hours: tokens and sessions must outlive that
    CHARTLOG_ACCESS_TOKEN_TTL_S: "43200",
    CHARTLOG_SESSION_IDLE_TIMEOUT_S: "86400",
    ...(pg ? { DATABASE_URL: pg.url } : {}),
  }, { now: () => new Date(clock.now) });
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  const user = async (who: string, role: Parameters<typeof createUser>[1], patientId?: string) => {
    const u = patientId
      ? await registerUser(
        t.runtime.store,
        {
          email: `${who}@clinic.test`,
          name: `Test ${who}`,
          role,
          password: PASSWORD,
          patientId,
        },
        { actorId: "test-setup" },
        t.runtime.passwordParams,
      )
      : await createUser(t.runtime, role, `${who}@clinic.test`);
    ids[who] = u.id;
    tokens[who] = (await login(t.app, u.email)).body.accessToken;
    return u.id;
  };
  const call = async (who: string, method: string, path: string, body?: unknown) =>
    await t.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[who]!),
        ...(body !== undefined && !(body instanceof FormData)
          ? { "content-type": "application/json" }
          : {}),
      },
      ...(body === undefined ? {} : {
        body: body instanceof FormData
          ? body
          : typeof body === "string"
          ? body
          : JSON.stringify(body),
      }),
    });
  const json = async (who: string, method: string, path: string, body?: unknown) => {
    const res = await call(who, method, path, body);
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  const patient = async (mrn: string) => {
    const r = await json("admin", "POST", "/v1/patients", {
      mrn,
      firstName: "Ada",
      lastName: "Quill",
      dateOfBirth: "1970-02-03",
      gender: "F",
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body.id as string;
  };
  /** The events of a stream category as stored (metadata in the clear, data as written). */
  const events = (where: ReturnType<typeof sql>) =>
    t.runtime.db.query<{ type: string; stream_id: string; metadata: Record<string, string> }>(
      sql`select type, stream_id, metadata from events where ${where} order by global_position`,
    );
  await user("admin", "admin");
  return {
    t,
    clock,
    ids,
    tokens,
    user,
    call,
    json,
    patient,
    events,
    close: async () => {
      try {
        await t.close();
      } finally {
        await pg?.drop();
      }
    },
  };
};

for (const driver of await drivers()) {
  Deno.test(`break-glass [${driver}]: a short reason is refused, access opens for one hour, events carry the grant id, one review, no reason in logs`, async () => {
    const s = await setup(driver);
    try {
      await s.user("doc", "practitioner");
      await s.user("named", "practitioner");
      await s.user("auditor", "auditor");
      await s.user("ops", "clinical_ops");
      const p = await s.patient("BG-1");
      const enc = await s.json("admin", "POST", `/v1/patients/${p}/encounters`, {
        practitionerId: s.ids.named,
        startsAt: "2026-12-02T09:00:00Z",
        reason: "check-up",
      });
      assert.equal(enc.status, 201);
      const doc = new FormData();
      doc.set("category", "patient_records");
      doc.set("file", new Blob(["a note\n"]), "note.txt");
      const m = await s.json("admin", "POST", `/v1/patients/${p}/documents`, doc);
      assert.equal(m.status, 201);

      // no relation: refused
      assert.equal((await s.call("doc", "GET", `/v1/patients/${p}`)).status, 403);

      // bad input: 422 naming every field, no event
      const before = (await s.events(sql`true`)).length;
      for (
        const [body, fields] of [
          [{ reason: "   too short, sorry    " }, ["reason"]],
          [{}, ["reason"]],
          [{ reason: "x".repeat(1001) }, ["reason"]],
          [{ reason: 42, extra: true }, ["reason", "extra"]],
          [{ reason: `${REASON}\u0000` }, ["reason"]],
        ] as const
      ) {
        const r = await s.json("doc", "POST", `/v1/patients/${p}/break-glass`, body);
        assert.equal(r.status, 422, JSON.stringify(body));
        assert.equal(r.body.type, "/problems/validation");
        assert.deepEqual(
          r.body.errors.map((e: { path: string }) => e.path).sort(),
          [...fields].sort(),
          JSON.stringify(r.body),
        );
      }
      assert.equal((await s.json("doc", "POST", `/v1/patients/${p}/break-glass`, "{")).status, 400);
      assert.equal((await s.events(sql`true`)).length, before);
      // unknown patient 404; other roles 403; an id that is no UUID 422
      const unknown = await s.json(
        "doc",
        "POST",
        `/v1/patients/${crypto.randomUUID()}/break-glass`,
        {
          reason: REASON,
        },
      );
      assert.equal(unknown.status, 404);
      assert.equal(
        (await s.call("ops", "POST", `/v1/patients/${p}/break-glass`, { reason: REASON })).status,
        403,
      );
      assert.equal(
        (await s.call("doc", "POST", `/v1/patients/nope/break-glass`, { reason: REASON })).status,
        422,
      );

      // break the glass
      const bg = await s.json("doc", "POST", `/v1/patients/${p}/break-glass`, {
        reason: `  ${REASON} `,
      });
      assert.equal(bg.status, 201, JSON.stringify(bg.body));
      assert.deepEqual(Object.keys(bg.body).sort(), ["expiresAt", "grantId", "id"]);
      assert.equal(bg.body.expiresAt, new Date(s.clock.now + HOUR).toISOString());
      const opened = await s.events(sql`stream_id = ${`break-glass-${bg.body.id}`}`);
      assert.deepEqual(opened.map((e) => e.type), ["BreakGlassUsed", "AccessGranted"]);
      assert.ok(opened.every((e) => e.metadata.grantId === bg.body.grantId));

      // the record, its encounters and its media, and an upload, all through the grant
      assert.equal((await s.call("doc", "GET", `/v1/patients/${p}`)).status, 200);
      assert.equal((await s.call("doc", "GET", `/v1/patients/${p}/encounters`)).status, 200);
      assert.equal((await s.call("doc", "GET", `/v1/encounters/${enc.body.id}`)).status, 200);
      assert.equal((await s.call("doc", "GET", `/v1/patients/${p}/media`)).status, 200);
      assert.equal((await s.call("doc", "GET", `/v1/media/${m.body.id}`)).status, 200);
      const up = new FormData();
      up.set("category", "patient_records");
      up.set("file", new Blob(["emergency note\n"]), "er.txt");
      const uploaded = await s.json("doc", "POST", `/v1/patients/${p}/documents`, up);
      assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
      // the patients list shows it too (the same rule as reads)
      const list = await s.json("doc", "GET", "/v1/patients");
      assert.deepEqual(list.body.items.map((x: { id: string }) => x.id), [p]);
      // every event the practitioner wrote about this patient names the grant
      const reads = await s.events(sql`metadata->>'actorId' = ${s.ids.doc}
        and type in ('PatientViewed', 'EncountersListed', 'EncounterViewed', 'MediaListed',
          'MediaViewed', 'MediaUploaded')`);
      assert.deepEqual(
        [...new Set(reads.map((e) => e.type))].sort(),
        ["EncountersListed", "MediaListed", "MediaUploaded", "MediaViewed", "PatientViewed"]
          .concat(reads.some((e) => e.type === "EncounterViewed") ? ["EncounterViewed"] : [])
          .sort(),
      );
      for (const e of reads) assert.equal(e.metadata.grantId, bg.body.grantId, e.type);
      // ...and a refusal does not
      const denied = await s.events(
        sql`type = 'AccessDenied' and metadata->>'actorId' = ${s.ids.doc}`,
      );
      assert.ok(denied.length > 0);
      for (const e of denied) assert.equal(e.metadata.grantId, undefined);

      // the practitioner's own grants: whose record, why, until when
      const mine = await s.json("doc", "GET", "/v1/me/grants");
      assert.equal(mine.status, 200);
      assert.equal(mine.body.total, 1);
      assert.equal(mine.body.items[0].purpose, REASON);
      assert.equal(mine.body.items[0].patientId, p);
      assert.equal(mine.body.items[0].source, "break_glass");
      assert.equal(mine.body.items[0].expiresAt, bg.body.expiresAt);

      // the reason is sealed: not in the clear in the log, nor in any log line
      const [clear] = await s.t.runtime.db.query<{ n: number }>(
        sql`select count(*)::int as n from events where data::text like ${"%allergy history%"}`,
      );
      assert.equal(clear!.n, 0);

      // the audit list: unsealed reason, review state; the read is audited
      const pending = await s.json("auditor", "GET", "/v1/audit/break-glass?reviewed=false");
      assert.equal(pending.status, 200);
      assert.equal(pending.body.total, 1);
      const item = pending.body.items[0];
      assert.equal(item.id, bg.body.id);
      assert.equal(item.patientId, p);
      assert.equal(item.practitioner.id, s.ids.doc);
      assert.equal(item.reason, REASON);
      assert.equal(item.review, null);
      const viewed = await s.events(sql`type = 'BreakGlassViewed'`);
      assert.equal(viewed.length, 1);
      assert.equal(viewed[0]!.stream_id, `access-${s.ids.auditor}`);
      assert.equal((await s.call("doc", "GET", "/v1/audit/break-glass")).status, 403);
      assert.equal(
        (await s.call("auditor", "GET", "/v1/audit/break-glass?reviewed=maybe")).status,
        422,
      );

      // review: bad input names both fields; once, concurrently too; then 409
      const bad = await s.json("auditor", "POST", `/v1/audit/break-glass/${bg.body.id}/review`, {
        outcome: "fine",
        note: "  ",
      });
      assert.equal(bad.status, 422);
      assert.deepEqual(bad.body.errors.map((e: { path: string }) => e.path).sort(), [
        "note",
        "outcome",
      ]);
      assert.equal(
        (await s.call("auditor", "POST", `/v1/audit/break-glass/${crypto.randomUUID()}/review`, {
          outcome: "appropriate",
          note: "n/a",
        })).status,
        404,
      );
      const NOTE = "Confirmed with the ER charge nurse";
      const reviews = await Promise.all(
        Array.from(
          { length: 20 },
          () =>
            s.call("auditor", "POST", `/v1/audit/break-glass/${bg.body.id}/review`, {
              outcome: "appropriate",
              note: NOTE,
            }).then(async (r) => (await r.body?.cancel(), r.status)),
        ),
      );
      assert.equal(reviews.filter((x) => x === 204).length, 1, String(reviews));
      assert.equal(reviews.filter((x) => x === 409).length, 19, String(reviews));
      const done = await s.json("admin", "GET", "/v1/audit/break-glass?reviewed=true");
      assert.equal(done.body.total, 1);
      assert.equal(done.body.items[0].review.outcome, "appropriate");
      assert.equal(done.body.items[0].review.note, NOTE);
      assert.equal(done.body.items[0].review.reviewedBy, s.ids.auditor);
      assert.equal(
        (await s.json("admin", "GET", "/v1/audit/break-glass?reviewed=false")).body.total,
        0,
      );
      // the table holds no reason nor note
      const [row] = await s.t.runtime.db.query(sql`select * from break_glass`);
      assert.ok(!JSON.stringify(row).includes("allergy") && !JSON.stringify(row).includes("nurse"));

      // an hour later access has ended, before any sweep
      s.clock.now += HOUR;
      assert.equal((await s.call("doc", "GET", `/v1/patients/${p}`)).status, 403);
      assert.equal((await s.call("doc", "GET", `/v1/patients/${p}/media`)).status, 403);
      assert.equal((await s.json("doc", "GET", "/v1/me/grants")).body.total, 0);
      const grants = await s.json("admin", "GET", `/v1/patients/${p}/grants`);
      assert.equal(grants.body.items[0].status, "expired");
      assert.equal(grants.body.items[0].endedAt, bg.body.expiresAt);
      // the sweep records the end once
      assert.equal(await sweepExpiredGrants(s.t.runtime.store, new Date(s.clock.now)), 1);
      assert.equal(await sweepExpiredGrants(s.t.runtime.store, new Date(s.clock.now)), 0);
      const ends = await s.events(sql`type = 'AccessGrantExpired'`);
      assert.deepEqual(ends.map((e) => e.stream_id), [`break-glass-${bg.body.id}`]);

      // erased patients: 410, and their break-glass rows go
      const erased = await s.patient("BG-2");
      const bg2 = await s.json("doc", "POST", `/v1/patients/${erased}/break-glass`, {
        reason: REASON,
      });
      assert.equal(bg2.status, 201);
      const er = await s.call("admin", "POST", `/v1/patients/${erased}/erasure`, {
        reason: "request",
      });
      assert.equal(er.status, 200, await er.clone().text());
      assert.equal(
        (await s.call("doc", "POST", `/v1/patients/${erased}/break-glass`, { reason: REASON }))
          .status,
        410,
      );
      const left = await s.t.runtime.db.query(
        sql`select 1 from break_glass where patient_id = ${erased}::uuid`,
      );
      assert.equal(left.length, 0);

      assert.ok(!s.t.logs.text().includes("allergy history"), "the reason is in a log line");
      assert.ok(!s.t.logs.text().includes("charge nurse"), "the note is in a log line");
    } finally {
      await s.close();
    }
  });

  Deno.test(`grants [${driver}]: revoked at once (20 concurrent revokes, one event), by the patient or a full proxy only; expiry by the clock; clinic grants end with membership`, async () => {
    const s = await setup(driver);
    try {
      const store = s.t.runtime.store;
      const now = () => new Date(s.clock.now);
      const p = await s.patient("GR-1");
      const q = await s.patient("GR-2");
      await s.user("self", "patient", p);
      await s.user("stranger", "patient", q);
      await s.user("full", "patient");
      await s.user("readonly", "patient");
      await s.user("doc", "practitioner");
      await s.user("teamdoc", "practitioner");
      await s.user("memberA", "practitioner");
      await s.user("memberB", "practitioner");
      const fullProxy = await appendProxy(store, p, s.ids.full!, "full");
      await appendProxy(store, p, s.ids.readonly!, "read_only");

      // a direct grant: in use, listed, revoked at once by one of 20 concurrent revokes
      const g1 = await appendGrant(store, {
        patientId: p,
        granteeId: s.ids.doc!,
        hours: 24,
        now: now(),
      });
      assert.equal((await s.call("doc", "GET", `/v1/patients/${p}`)).status, 200);
      const listed = await s.json("self", "GET", `/v1/patients/${p}/grants`);
      assert.equal(listed.status, 200);
      assert.equal(listed.body.total, 1);
      assert.equal(listed.body.items[0].id, g1);
      assert.equal(listed.body.items[0].status, "active");
      assert.equal(listed.body.items[0].purpose, "follow-up of the knee surgery");
      assert.deepEqual(listed.body.items[0].grantee, {
        kind: "practitioner",
        id: s.ids.doc,
        name: "Test practitioner",
      });
      assert.equal((await s.events(sql`type = 'GrantsViewed'`)).length, 1);
      // who may list: the patient, a full proxy, admins; not a read-only proxy, another patient
      // or the practitioner
      assert.equal((await s.call("full", "GET", `/v1/patients/${p}/grants`)).status, 200);
      assert.equal(
        (await s.call("admin", "GET", `/v1/patients/${p}/grants?status=active`)).status,
        200,
      );
      for (const who of ["readonly", "stranger", "doc"]) {
        assert.equal((await s.call(who, "GET", `/v1/patients/${p}/grants`)).status, 403, who);
      }
      assert.equal(
        (await s.call("admin", "GET", `/v1/patients/${crypto.randomUUID()}/grants`)).status,
        404,
      );
      const badQuery = await s.json("self", "GET", `/v1/patients/${p}/grants?status=gone&limit=0`);
      assert.equal(badQuery.status, 422);
      assert.deepEqual(badQuery.body.errors.map((e: { path: string }) => e.path).sort(), [
        "limit",
        "status",
      ]);
      // who may revoke: not the read-only proxy, another patient, nor the practitioner
      for (const who of ["readonly", "stranger", "doc"]) {
        assert.equal((await s.call(who, "DELETE", `/v1/grants/${g1}`)).status, 403, who);
      }
      const revokes = await Promise.all(
        Array.from(
          { length: 20 },
          () =>
            s.call("self", "DELETE", `/v1/grants/${g1}`).then(async (
              r,
            ) => (await r.body?.cancel(), r.status)),
        ),
      );
      assert.equal(revokes.filter((x) => x === 204).length, 1, String(revokes));
      assert.equal(revokes.filter((x) => x === 409).length, 19, String(revokes));
      assert.equal((await s.events(sql`type = 'AccessGrantRevoked'`)).length, 1);
      assert.equal((await s.call("doc", "GET", `/v1/patients/${p}`)).status, 403);
      assert.equal(
        (await s.json("self", "GET", `/v1/patients/${p}/grants`)).body.items[0].status,
        "revoked",
      );
      assert.equal(
        (await s.call("admin", "DELETE", `/v1/grants/${crypto.randomUUID()}`)).status,
        404,
      );
      assert.equal((await s.call("admin", "DELETE", `/v1/grants/not-a-uuid`)).status, 422);

      // a full proxy revokes: the event names the proxy relation and the patient
      const g2 = await appendGrant(store, {
        patientId: p,
        granteeId: s.ids.doc!,
        hours: 24,
        now: now(),
      });
      assert.equal((await s.call("full", "DELETE", `/v1/grants/${g2}`)).status, 204);
      const [byProxy] = await s.events(
        sql`type = 'AccessGrantRevoked' and data->>'grantId' = ${g2}`,
      );
      assert.equal(byProxy!.metadata.grantId, fullProxy);
      assert.equal(byProxy!.metadata.onBehalfOf, p);
      // an admin revokes too
      const g3 = await appendGrant(store, {
        patientId: p,
        granteeId: s.ids.doc!,
        hours: 24,
        now: now(),
      });
      assert.equal((await s.call("admin", "DELETE", `/v1/grants/${g3}`)).status, 204);

      // a care-team member needs no grant: their events carry none
      await s.json("admin", "POST", `/v1/patients/${p}/care-team`, {
        practitionerId: s.ids.teamdoc,
      });
      await appendGrant(store, { patientId: p, granteeId: s.ids.teamdoc!, hours: 24, now: now() });
      assert.equal((await s.call("teamdoc", "GET", `/v1/patients/${p}`)).status, 200);
      const [teamRead] = await s.events(
        sql`type = 'PatientViewed' and metadata->>'actorId' = ${s.ids.teamdoc}`,
      );
      assert.equal(teamRead!.metadata.grantId, undefined);

      // a clinic grant: every active member of an active clinic, until they leave
      const clinic = await appendClinic(store, [s.ids.memberA!, s.ids.memberB!]);
      const gc = await appendGrant(store, {
        patientId: p,
        granteeKind: "clinic",
        granteeId: clinic,
        practitionerId: s.ids.memberA,
        hours: 24,
        now: now(),
      });
      for (const who of ["memberA", "memberB"]) {
        assert.equal((await s.call(who, "GET", `/v1/patients/${p}`)).status, 200, who);
      }
      const [viaClinic] = await s.events(
        sql`type = 'PatientViewed' and metadata->>'actorId' = ${s.ids.memberA}`,
      );
      assert.equal(viaClinic!.metadata.grantId, gc);
      const theirs = await s.json("memberB", "GET", "/v1/me/grants");
      assert.deepEqual(theirs.body.items.map((g: { id: string }) => g.id), [gc]);
      assert.deepEqual(theirs.body.items[0].grantee, {
        kind: "clinic",
        id: clinic,
        name: "Riverside Clinic",
      });
      assert.deepEqual(theirs.body.items[0].patient, { firstName: "Ada", lastName: "Quill" });
      await leaveClinic(store, clinic, s.ids.memberA!);
      assert.equal((await s.call("memberA", "GET", `/v1/patients/${p}`)).status, 403);
      assert.equal((await s.json("memberA", "GET", "/v1/me/grants")).body.total, 0);
      assert.equal((await s.call("memberB", "GET", `/v1/patients/${p}`)).status, 200);
      await deactivateClinic(store, clinic);
      assert.equal((await s.call("memberB", "GET", `/v1/patients/${p}`)).status, 403);
      // grant.list_own is a practitioner's
      assert.equal((await s.call("self", "GET", "/v1/me/grants")).status, 403);

      // expiry by the clock: refused the moment it passes, then 409 to revoke
      const g4 = await appendGrant(store, {
        patientId: q,
        granteeId: s.ids.doc!,
        hours: 2,
        now: now(),
      });
      assert.equal((await s.call("doc", "GET", `/v1/patients/${q}`)).status, 200);
      s.clock.now += 2 * HOUR - 1;
      assert.equal((await s.call("doc", "GET", `/v1/patients/${q}`)).status, 200);
      s.clock.now += 1;
      assert.equal((await s.call("doc", "GET", `/v1/patients/${q}`)).status, 403);
      assert.equal((await s.call("stranger", "DELETE", `/v1/grants/${g4}`)).status, 409);
      const page = await s.json("stranger", "GET", `/v1/patients/${q}/grants?status=expired`);
      assert.deepEqual(page.body.items.map((g: { id: string }) => g.id), [g4]);
      // paging: one per page, then the cursor, over p's five grants
      const first = await s.json("self", "GET", `/v1/patients/${p}/grants?limit=2`);
      assert.equal(first.body.total, 5);
      assert.equal(first.body.items.length, 2);
      const second = await s.json(
        "self",
        "GET",
        `/v1/patients/${p}/grants?limit=2&cursor=${encodeURIComponent(first.body.nextCursor)}`,
      );
      assert.equal(second.body.items.length, 2);
      assert.ok(
        !second.body.items.some((g: { id: string }) =>
          first.body.items.some((f: { id: string }) => f.id === g.id)
        ),
      );
      assert.equal(
        (await s.call("self", "GET", `/v1/patients/${p}/grants?cursor=forged`)).status,
        422,
      );
    } finally {
      await s.close();
    }
  });

  Deno.test(`grant sweeper [${driver}]: one AccessGrantExpired per grant, with sweeps run twice and concurrently, and one worker active`, async () => {
    const s = await setup(driver);
    try {
      const store = s.t.runtime.store;
      const now = () => new Date(s.clock.now);
      await s.user("doc", "practitioner");
      const p = await s.patient("SW-1");
      const due = await Promise.all(
        Array.from(
          { length: 6 },
          () => appendGrant(store, { patientId: p, granteeId: s.ids.doc!, hours: 1, now: now() }),
        ),
      );
      const later = await appendGrant(store, {
        patientId: p,
        granteeId: s.ids.doc!,
        hours: 5,
        now: now(),
      });
      const revoked = await appendGrant(store, {
        patientId: p,
        granteeId: s.ids.doc!,
        hours: 1,
        now: now(),
      });
      assert.equal((await s.call("admin", "DELETE", `/v1/grants/${revoked}`)).status, 204);
      assert.equal(await sweepExpiredGrants(store, now()), 0, "nothing is due yet");
      s.clock.now += HOUR;
      // two sweeps at once, with small pages: each grant ends once
      const counts = await Promise.all([
        sweepExpiredGrants(store, now(), { batch: 2 }),
        sweepExpiredGrants(store, now(), { batch: 2 }),
      ]);
      assert.equal(counts[0]! + counts[1]!, due.length, String(counts));
      assert.equal(await sweepExpiredGrants(store, now()), 0);
      const ends = await store.db.query<{ grant: string }>(
        sql`select data->>'grantId' as grant from events where type = 'AccessGrantExpired'`,
      );
      assert.deepEqual(ends.map((e) => e.grant).sort(), [...due].sort());
      const rows = await store.db.query<{ id: string; status: string }>(
        sql`select id::text as id, status from access_grants`,
      );
      const status = Object.fromEntries(rows.map((r) => [r.id, r.status]));
      assert.equal(status[later], "active");
      assert.equal(status[revoked], "revoked");
      for (const g of due) assert.equal(status[g], "expired");

      // two background sweepers: one takes the lock, the grants due end once
      s.clock.now += 4 * HOUR;
      const lines: string[] = [];
      const log = createLogger("info", { write: (l: string) => void lines.push(l) });
      const sweepers = [0, 1].map(() =>
        new GrantSweeper(store, log, { now, intervalMs: 20, lockRetryMs: 20 }).start()
      );
      try {
        for (let i = 0; i < 200; i++) {
          const [n] = await store.db.query<{ n: number }>(
            sql`select count(*)::int as n from events where type = 'AccessGrantExpired'`,
          );
          if (n!.n === due.length + 1) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        await new Promise((r) => setTimeout(r, 100));
      } finally {
        await Promise.all(sweepers.map((w) => w.stop()));
      }
      const [total] = await store.db.query<{ n: number }>(
        sql`select count(*)::int as n from events where type = 'AccessGrantExpired'`,
      );
      assert.equal(total!.n, due.length + 1);
      const active = lines.filter((l) => l.includes("grant sweeper active"));
      assert.equal(active.length, 1, lines.join(""));
    } finally {
      await s.close();
    }
  });

  if (driver === "postgres") {
    Deno.test(`grant sweeper [${driver}]: survives losing its connection and its lock, then sweeps again`, async () => {
      const s = await setup(driver);
      const lines: string[] = [];
      const log = createLogger("info", { write: (l: string) => void lines.push(l) });
      const store = s.t.runtime.store;
      const now = () => new Date(s.clock.now);
      const sweeper = new GrantSweeper(store, log, {
        now,
        intervalMs: 20,
        lockRetryMs: 20,
        retryMs: 20,
        maxRetryMs: 100,
      });
      const waitFor = async (ok: () => boolean | Promise<boolean>, what: string) => {
        for (let i = 0; i < 250; i++) {
          if (await ok()) return;
          await new Promise((r) => setTimeout(r, 20));
        }
        assert.fail(`timed out waiting for ${what}: ${lines.join("")}`);
      };
      const count = (msg: string) => lines.filter((l) => JSON.parse(l).msg === msg).length;
      try {
        await s.user("doc", "practitioner");
        const p = await s.patient("SW-2");
        sweeper.start();
        await waitFor(() => count("grant sweeper active") === 1, "the lock");
        // the backend holding the sweeper's advisory lock goes away
        const [gone] = await store.db.query<{ ok: boolean }>(
          sql`select pg_terminate_backend(l.pid) as ok
          from pg_locks l where l.locktype = 'advisory' and l.objid::int = hashtext(${"chartlog.sweeper:grants"})
            and l.database = (select oid from pg_database where datname = current_database())`,
        );
        assert.equal(gone?.ok, true);
        await waitFor(() => count("grant sweeper active") === 2, "the lock again");
        assert.ok(
          count("grant sweeper cannot reach the database") + count("grant sweeper failed") >= 1,
          lines.join(""),
        );
        const g = await appendGrant(store, {
          patientId: p,
          granteeId: s.ids.doc!,
          hours: 1,
          now: now(),
        });
        s.clock.now += HOUR;
        await waitFor(
          async () =>
            (await store.db.query(sql`select 1 from access_grants where id = ${g}::uuid
            and status = 'expired'`)).length === 1,
          "the sweep",
        );
      } finally {
        await sweeper.stop();
        await s.close();
      }
    });
  }
}
