import assert from "node:assert/strict";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createUser, login } from "./support/users.ts";

const HOUR = 3_600_000;
const REASON = "Unresponsive in the ER, allergy history needed now";
const T0 = Date.parse("2026-12-01T08:00:00Z");

interface Item {
  position: number;
  time: string;
  type: string;
  streamId: string;
  actor: { id: string; role: string | null; name: string | null } | null;
  subjects: Record<string, string | string[]>;
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  grantId: string | null;
  onBehalfOf: string | null;
  reason: string | null;
  outcome: "ok" | "denied";
}

/**
 * The scripted scenario, one step an hour on an injected clock: admin
 * registers two patients, a care-team practitioner reads P, another opens
 * P through break-glass and reads it, a third is refused, admin renames P.
 */
const scenario = async (driver: string) => {
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  const clock = { now: T0 };
  const t = await openTestApp({
    CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
    CHARTLOG_ACCESS_TOKEN_TTL_S: "43200",
    CHARTLOG_SESSION_IDLE_TIMEOUT_S: "86400",
    ...(pg ? { DATABASE_URL: pg.url } : {}),
  }, { now: () => new Date(clock.now) });
  const ids: Record<string, string> = {};
  const tokens: Record<string, string> = {};
  const user = async (who: string, role: Parameters<typeof createUser>[1]) => {
    const u = await createUser(t.runtime, role, `${who}@clinic.test`);
    ids[who] = u.id;
    tokens[who] = (await login(t.app, u.email)).body.accessToken;
  };
  const call = (who: string, method: string, path: string, body?: unknown) =>
    t.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[who]!),
        "user-agent": `ua-${who}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const json = async (who: string, method: string, path: string, body?: unknown) => {
    const res = await call(who, method, path, body);
    const text = await res.text();
    return { status: res.status, ctype: res.headers.get("content-type"), body: JSON.parse(text) };
  };
  const tick = () => (clock.now += HOUR);
  for (
    const [who, role] of [
      ["admin", "admin"],
      ["doc", "practitioner"],
      ["er", "practitioner"],
      ["stranger", "practitioner"],
      ["auditor", "auditor"],
    ] as const
  ) await user(who, role);
  const register = async (mrn: string) => {
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
  tick();
  const p = await register("AQ-1");
  const q = await register("AQ-2");
  tick();
  assert.equal(
    (await call("admin", "POST", `/v1/patients/${p}/care-team`, { practitionerId: ids.doc }))
      .status,
    201,
  );
  tick();
  assert.equal((await call("doc", "GET", `/v1/patients/${p}`)).status, 200);
  tick();
  const bg = await json("er", "POST", `/v1/patients/${p}/break-glass`, { reason: REASON });
  assert.equal(bg.status, 201);
  assert.equal((await call("er", "GET", `/v1/patients/${p}`)).status, 200);
  tick();
  assert.equal((await call("stranger", "GET", `/v1/patients/${p}`)).status, 403);
  tick();
  const renamed = await call("admin", "PATCH", `/v1/patients/${p}`, { lastName: "Byron" });
  assert.equal(renamed.status, 200);
  tick();
  /** Every page of a query, following nextCursor. */
  const all = async (who: string, path: string) => {
    const items: Item[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const sep = path.includes("?") ? "&" : "?";
      const url: string = cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path;
      const r = await json(who, "GET", url);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      items.push(...r.body.items);
      cursor = r.body.nextCursor;
      pages++;
    } while (cursor);
    return { items, pages };
  };
  return {
    t,
    clock,
    ids,
    p,
    q,
    bg: bg.body as { id: string; grantId: string },
    call,
    json,
    all,
    close: async () => {
      try {
        await t.close();
      } finally {
        await pg?.drop();
      }
    },
  };
};

type Scenario = Awaited<ReturnType<typeof scenario>>;

const types = (items: Item[]) => items.map((i) => i.type);

for (const driver of await drivers()) {
  Deno.test(`audit events [${driver}]: each filter alone and combined, type repeated, time window, grant, items without PHI`, async () => {
    const s: Scenario = await scenario(driver);
    try {
      const q = async (query: string) => {
        const r = await s.json("auditor", "GET", `/v1/audit/events?limit=500&${query}`);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.equal(r.body.total, r.body.items.length);
        return r.body.items as Item[];
      };

      // patientId: the record's stream, the reads, the break-glass, the denial; not Q's
      const ofP = await q(`patientId=${s.p}`);
      for (
        const type of [
          "PatientRegistered",
          "MrnReserved",
          "CareTeamMemberAdded",
          "CareTeamViewed",
          "PatientViewed",
          "BreakGlassUsed",
          "AccessGranted",
          "AccessDenied",
          "PatientUpdated",
        ]
      ) assert.ok(types(ofP).includes(type), type);
      assert.ok(ofP.every((i) => JSON.stringify(i).includes(s.p)));
      assert.ok(!JSON.stringify(ofP).includes(s.q));
      const positions = ofP.map((i) => i.position);
      assert.deepEqual(positions, [...positions].sort((a, b) => a - b));
      // no PHI: no name, MRN, reason or purpose anywhere
      for (const phi of ["Ada", "Quill", "Byron", "AQ-1", REASON]) {
        assert.ok(!JSON.stringify(ofP).includes(phi), phi);
      }
      const denial = ofP.find((i) => i.type === "AccessDenied")!;
      assert.equal(denial.outcome, "denied");
      assert.equal(denial.actor?.id, s.ids.stranger);
      assert.equal(denial.actor?.role, "practitioner");
      assert.equal(denial.actor?.name, "Test practitioner");
      assert.equal(denial.userAgent, "ua-stranger");
      assert.ok(denial.requestId);
      assert.ok(ofP.filter((i) => i.type !== "AccessDenied").every((i) => i.outcome === "ok"));
      const registered = ofP.find((i) => i.type === "PatientRegistered")!;
      assert.deepEqual(registered.subjects, { patientId: s.p });
      assert.equal(registered.streamId, `patient-${s.p}`);
      assert.equal(registered.time, new Date(T0 + HOUR).toISOString());
      assert.equal(registered.actor?.role, "admin");

      // actorId: only what that user did
      const byDoc = await q(`actorId=${s.ids.doc}`);
      assert.ok(byDoc.length > 0);
      assert.ok(byDoc.every((i) => i.actor?.id === s.ids.doc));
      assert.ok(types(byDoc).includes("PatientViewed"));

      // type, repeated: any of them
      const views = await q(`patientId=${s.p}&type=PatientViewed`);
      // the care-team read, the break-glass read, and the admin's PATCH (which answers the record)
      assert.deepEqual(types(views), ["PatientViewed", "PatientViewed", "PatientViewed"]);
      assert.deepEqual(views.map((i) => i.actor?.id), [s.ids.doc, s.ids.er, s.ids.admin]);
      assert.deepEqual(views.map((i) => i.grantId), [null, s.bg.grantId, null]);
      const both = await q(`patientId=${s.p}&type=PatientViewed&type=AccessDenied`);
      assert.deepEqual(types(both), [
        "PatientViewed",
        "PatientViewed",
        "AccessDenied",
        "PatientViewed",
      ]);
      assert.deepEqual(await q(`type=AccessDenied&type=AccessDenied&patientId=${s.q}`), []);

      // time window: from inclusive, to exclusive, by the injected clock
      const at = (h: number) => new Date(T0 + h * HOUR).toISOString();
      const hour3 = await q(`patientId=${s.p}&from=${at(3)}&to=${at(4)}`);
      assert.deepEqual(types(hour3), ["PatientViewed"]);
      assert.equal(hour3[0]!.actor?.id, s.ids.doc);
      const after5 = await q(`patientId=${s.p}&from=${encodeURIComponent(at(5))}`);
      assert.deepEqual(types(after5), ["AccessDenied", "PatientUpdated", "PatientViewed"]);
      const before2 = await q(`patientId=${s.p}&to=${at(2)}`);
      assert.ok(before2.every((i) => i.time < at(2)));
      assert.ok(types(before2).includes("PatientRegistered"));

      // grantId: what the break-glass grant was used for
      const viaGrant = await q(`grantId=${s.bg.grantId}`);
      assert.ok(types(viaGrant).includes("BreakGlassUsed"));
      assert.ok(types(viaGrant).includes("PatientViewed"));
      assert.ok(viaGrant.every((i) => i.grantId === s.bg.grantId));
      assert.ok(viaGrant.every((i) => i.actor?.id === s.ids.er));

      // streamId
      const stream = await q(`streamId=patient-${s.p}`);
      assert.ok(stream.every((i) => i.streamId === `patient-${s.p}`));
      assert.deepEqual(types(stream), [
        "PatientRegistered",
        "PatientUpdated",
      ]);

      // combined: every filter must hold
      const combined = await q(
        `patientId=${s.p}&actorId=${s.ids.er}&type=PatientViewed&grantId=${s.bg.grantId}` +
          `&from=${at(4)}&to=${at(5)}&streamId=access-${s.ids.er}`,
      );
      assert.equal(combined.length, 1);
      assert.equal(combined[0]!.grantId, s.bg.grantId);
      assert.deepEqual(combined[0]!.subjects, { patientId: s.p });
      assert.deepEqual(
        await q(`patientId=${s.p}&actorId=${s.ids.doc}&grantId=${s.bg.grantId}`),
        [],
      );

      // admins too; practitioners and everyone else: 403 (and a denial event)
      assert.equal((await s.call("admin", "GET", "/v1/audit/events")).status, 200);
      const refused = await s.json("doc", "GET", "/v1/audit/events");
      assert.equal(refused.status, 403);
      assert.equal(refused.ctype, "application/problem+json");

      // every use is audited: AuditQueried with the filters as given, on the auditor's stream
      const audits = await s.t.runtime.db.query<{ data: Record<string, unknown> }>(
        sql`select data from events where stream_id = ${`access-${s.ids.auditor}`}
          and type = 'AuditQueried' order by global_position`,
      );
      assert.equal(audits.length, 12); // one per query above
      assert.deepEqual(audits[0]!.data, {
        query: "events",
        filters: { patientId: s.p },
        returned: ofP.length,
      });
      const last = audits.at(-1)!.data as { filters: Record<string, unknown> };
      assert.deepEqual(last.filters, {
        patientId: s.p,
        actorId: s.ids.doc,
        grantId: s.bg.grantId,
      });
      const multi = audits.find((a) =>
        JSON.stringify((a.data.filters as { types?: string[] }).types) ===
          JSON.stringify(["PatientViewed", "AccessDenied"])
      );
      assert.ok(multi);
      // and the audit queries are themselves found by actor and type
      const own = await q(`actorId=${s.ids.auditor}&type=AuditQueried`);
      assert.equal(own.length, audits.length);
      assert.equal(own[0]!.streamId, `access-${s.ids.auditor}`);
    } finally {
      await s.close();
    }
  });

  Deno.test(`audit events [${driver}]: pages by position without duplicates or gaps; hostile cursors and fields are 4xx problems`, async () => {
    const s: Scenario = await scenario(driver);
    try {
      // the log before this test's own audit events (each page appends one, at the clock's now)
      const before = `to=${new Date(s.clock.now).toISOString()}`;
      const whole = await s.json("auditor", "GET", `/v1/audit/events?limit=500&${before}`);
      const expected = (whole.body.items as Item[]).map((i) => i.position);
      assert.ok(expected.length > 20);
      for (const limit of [1, 3, 7]) {
        const { items, pages } = await s.all(
          "auditor",
          `/v1/audit/events?limit=${limit}&${before}`,
        );
        const got = items.map((i) => i.position);
        assert.deepEqual(got, expected, `limit ${limit}`);
        assert.equal(new Set(items.map((i) => i.position)).size, items.length);
        assert.ok(pages >= Math.ceil(expected.length / limit));
      }
      // the same with a filter: the patient's events over pages of 2
      const one = await s.json("auditor", "GET", `/v1/audit/events?limit=500&patientId=${s.p}`);
      const paged = await s.all("auditor", `/v1/audit/events?limit=2&patientId=${s.p}`);
      assert.deepEqual(
        paged.items.map((i) => i.position),
        (one.body.items as Item[]).map((i) => i.position),
      );

      const problem = async (url: string, status: number, type: string) => {
        const r = await s.json("auditor", "GET", url);
        assert.equal(r.status, status, `${url}: ${JSON.stringify(r.body)}`);
        assert.equal(r.ctype, "application/problem+json", url);
        assert.equal(r.body.type, type, url);
        return r.body as { errors?: { path: string }[] };
      };
      // garbage, forged, cut, edited, foreign cursors
      const page = await s.json("auditor", "GET", "/v1/audit/events?limit=1");
      const good = page.body.nextCursor as string;
      const foreign =
        (await s.json("auditor", "GET", `/v1/audit/actors/${s.ids.doc}/activity?limit=1`))
          .body.nextCursor as string;
      const edited = good.slice(0, 20) + (good[20] === "A" ? "B" : "A") + good.slice(21);
      const forged = btoa(JSON.stringify([0])).replace(/=+$/, "");
      for (
        const cursor of [
          "garbage",
          "!!!",
          forged,
          good.slice(0, -4),
          edited,
          foreign,
          "A".repeat(999),
        ]
      ) {
        await problem(
          `/v1/audit/events?cursor=${encodeURIComponent(cursor)}`,
          422,
          "/problems/invalid-cursor",
        );
      }
      await problem(`/v1/audit/events?cursor=${"A".repeat(1001)}`, 422, "/problems/validation");
      // bad ids, times, types and limits: one 422 naming every field
      const bad = await problem(
        "/v1/audit/events?patientId=nope&actorId=1&grantId=x&from=yesterday&to=2026-13-01" +
          "&type=NoSuchEvent&limit=501",
        422,
        "/problems/validation",
      );
      assert.deepEqual(
        [...new Set(bad.errors!.map((e) => e.path.split(".")[0]))].sort(),
        ["actorId", "from", "grantId", "limit", "patientId", "to", "type"],
      );
      const reversed = await problem(
        "/v1/audit/events?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
        422,
        "/problems/validation",
      );
      assert.deepEqual(reversed.errors!.map((e) => e.path), ["to"]);
      for (const bad of ["limit=0", "limit=abc", "type=PatientViewed&type=Bogus"]) {
        await problem(`/v1/audit/events?${bad}`, 422, "/problems/validation");
      }
      // NUL bytes: in a query value a 422 naming it, in the path a 404
      for (const field of ["streamId", "patientId", "type", "cursor"]) {
        const body = await problem(`/v1/audit/events?${field}=a%00b`, 422, "/problems/validation");
        assert.deepEqual(body.errors!.map((e) => e.path), [field]);
      }
      assert.equal((await s.call("auditor", "GET", "/v1/audit/streams/patient-%00")).status, 404);
      assert.equal(
        (await s.call("auditor", "GET", `/v1/audit/actors/${s.ids.doc}%00/activity`)).status,
        404,
      );
      // an unknown stream id filter is simply empty
      const none = await s.json("auditor", "GET", "/v1/audit/events?streamId=no-such-stream");
      assert.deepEqual([none.status, none.body.items, none.body.total], [200, [], 0]);
    } finally {
      await s.close();
    }
  });

  Deno.test(`audit activity and streams [${driver}]: one user's acts; a record as it stood, audited; 404s`, async () => {
    const s: Scenario = await scenario(driver);
    try {
      const doc = await s.all("auditor", `/v1/audit/actors/${s.ids.doc}/activity?limit=1`);
      assert.ok(doc.items.length > 0);
      assert.ok(doc.items.every((i) => i.actor?.id === s.ids.doc));
      const direct = await s.json("auditor", "GET", `/v1/audit/events?actorId=${s.ids.doc}`);
      assert.deepEqual(
        doc.items.map((i) => i.position),
        (direct.body.items as Item[]).map((i) => i.position),
      );
      const erViews = await s.json(
        "admin",
        "GET",
        `/v1/audit/actors/${s.ids.er}/activity?type=PatientViewed`,
      );
      assert.equal(erViews.status, 200);
      assert.deepEqual(types(erViews.body.items), ["PatientViewed"]);
      assert.equal(erViews.body.items[0].grantId, s.bg.grantId);
      assert.equal(
        (await s.call("auditor", "GET", `/v1/audit/actors/${crypto.randomUUID()}/activity`))
          .status,
        404,
      );
      assert.equal((await s.call("auditor", "GET", "/v1/audit/actors/nope/activity")).status, 422);
      assert.equal(
        (await s.call("doc", "GET", `/v1/audit/actors/${s.ids.doc}/activity`)).status,
        403,
      );

      // the record as it stood before the rename, and now
      const at = (h: number) => new Date(T0 + h * HOUR).toISOString();
      const past = await s.json("auditor", "GET", `/v1/audit/streams/patient-${s.p}?asOf=${at(4)}`);
      assert.equal(past.status, 200, JSON.stringify(past.body));
      assert.equal(past.body.state.lastName, "Quill");
      assert.equal(past.body.state.id, s.p);
      assert.equal(past.body.erased, false);
      assert.deepEqual(types(past.body.items), ["PatientRegistered"]);
      const now = await s.json("auditor", "GET", `/v1/audit/streams/patient-${s.p}`);
      assert.equal(now.body.state.lastName, "Byron");
      assert.equal(now.body.asOf, new Date(s.clock.now).toISOString());
      assert.deepEqual(types(now.body.items), [
        "PatientRegistered",
        "PatientUpdated",
      ]);
      const before = await s.json(
        "auditor",
        "GET",
        `/v1/audit/streams/patient-${s.p}?asOf=${at(0)}`,
      );
      assert.deepEqual([before.status, before.body.state, before.body.items], [200, null, []]);
      // a stream that is not a patient's: its events only
      const bgStream = await s.json("auditor", "GET", `/v1/audit/streams/break-glass-${s.bg.id}`);
      assert.equal(bgStream.status, 200);
      assert.equal(bgStream.body.state, null);
      assert.deepEqual(types(bgStream.body.items), ["BreakGlassUsed", "AccessGranted"]);
      assert.ok(!JSON.stringify(bgStream.body).includes(REASON));
      // paged like the other lists
      const paged = await s.all("auditor", `/v1/audit/streams/patient-${s.p}?limit=1`);
      assert.deepEqual(types(paged.items), types(now.body.items));
      // the PHI read is audited and names the patient
      const viewed = await s.json(
        "auditor",
        "GET",
        `/v1/audit/events?actorId=${s.ids.auditor}&type=AuditStreamViewed&patientId=${s.p}`,
      );
      assert.ok(viewed.body.items.length >= 3);
      const [row] = await s.t.runtime.db.query<{ data: Record<string, unknown> }>(
        sql`select data from events where type = 'AuditStreamViewed' order by global_position
          limit 1`,
      );
      assert.deepEqual(row!.data, {
        streamId: `patient-${s.p}`,
        asOf: at(4),
        patientId: s.p,
        returned: 1,
      });
      // an erased record: its events stay, its state is gone
      const erase = await s.call("admin", "POST", `/v1/patients/${s.q}/erasure`, {
        reason: "asked",
      });
      assert.equal(erase.status, 200);
      const erased = await s.json("auditor", "GET", `/v1/audit/streams/patient-${s.q}`);
      assert.equal(erased.status, 200, JSON.stringify(erased.body));
      assert.deepEqual([erased.body.state, erased.body.erased], [null, true]);
      assert.ok(types(erased.body.items).includes("PatientRegistered"));
      const ofQ = await s.json("auditor", "GET", `/v1/audit/events?patientId=${s.q}`);
      assert.ok(types(ofQ.body.items).includes("PatientRegistered"));
      assert.ok(!JSON.stringify(ofQ.body).includes("AQ-2"));

      // 20 concurrent queries: each answered, each audited
      const head = (await s.json("auditor", "GET", `/v1/audit/events?type=AuditQueried&limit=1`))
        .body.total as number;
      const many = await Promise.all(
        Array.from(
          { length: 20 },
          () => s.call("auditor", "GET", `/v1/audit/events?patientId=${s.p}`),
        ),
      );
      assert.deepEqual(many.map((r) => r.status), Array(20).fill(200));
      await Promise.all(many.map((r) => r.body?.cancel()));
      const after = await s.json("auditor", "GET", `/v1/audit/events?type=AuditQueried&limit=1`);
      assert.equal(after.body.total, head + 21);

      // unknown stream 404, bad asOf 422, practitioners 403
      assert.equal(
        (await s.call("auditor", "GET", `/v1/audit/streams/patient-${crypto.randomUUID()}`))
          .status,
        404,
      );
      const badAsOf = await s.json("auditor", "GET", `/v1/audit/streams/patient-${s.p}?asOf=x`);
      assert.equal(badAsOf.status, 422);
      assert.deepEqual(badAsOf.body.errors.map((e: { path: string }) => e.path), ["asOf"]);
      assert.equal((await s.call("doc", "GET", `/v1/audit/streams/patient-${s.p}`)).status, 403);
    } finally {
      await s.close();
    }
  });
}
