import assert from "node:assert/strict";
import { registerUser } from "../src/auth/accounts.ts";
import { codeDigest, digestsEqual, generateCode } from "../src/auth/access_codes.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createCheapUser, createUser, login, PASSWORD } from "./support/users.ts";

type TestApp = Awaited<ReturnType<typeof openTestApp>>;

/** A clock the tests move by hand. */
const clock = () => {
  let t = Date.parse("2026-11-24T12:00:00Z");
  return { now: () => new Date(t), advance: (ms: number) => (t += ms) };
};
const MINUTE = 60_000;

/** Tokens that outlive the clock's moves (20 minutes at most), and no login rate limit. */
const ENV = {
  CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
  CHARTLOG_ACCESS_TOKEN_TTL_S: "3600",
  CHARTLOG_SESSION_IDLE_TIMEOUT_S: "7200",
};

/** The app on each available driver (PGlite in memory, a fresh PostgreSQL database), with a clock. */
const eachApp = async (
  t: Deno.TestContext,
  fn: (a: TestApp, c: ReturnType<typeof clock>) => Promise<void>,
) => {
  for (const kind of await drivers()) {
    await t.step(kind, async () => {
      const db = kind === "postgres" ? await createTestDatabase({ app: true }) : null;
      const c = clock();
      const a = await openTestApp({ ...ENV, ...(db ? { DATABASE_URL: db.url } : {}) }, {
        now: c.now,
      });
      try {
        await fn(a, c);
      } finally {
        await a.close();
        await db?.drop();
      }
    });
  }
};

/**
 * Users and two patients: `admin`, practitioners `doc` and `doc2`, and the
 * patient user `pat` of the first record (relation self).
 */
const world = async (a: TestApp) => {
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  const add = async (name: string, role: "admin" | "practitioner", email: string) => {
    const u = await createUser(a.runtime, role, email);
    ids[name] = u.id;
    tokens[name] = (await login(a.app, u.email)).body.accessToken;
  };
  await add("admin", "admin", "admin@clinic.test");
  await add("doc", "practitioner", "doc@clinic.test");
  await add("doc2", "practitioner", "doc2@clinic.test");
  const call = async (who: string, method: string, path: string, body?: unknown) =>
    await a.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[who]!),
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined
        ? { body: typeof body === "string" ? body : JSON.stringify(body) }
        : {}),
    });
  const patient = async (mrn: string) =>
    (await (await call("admin", "POST", "/v1/patients", {
      mrn,
      firstName: "Ada",
      lastName: "Code",
      dateOfBirth: "1970-05-05",
      gender: "F",
    })).json()).id as string;
  const p1 = await patient("AC-1");
  const p2 = await patient("AC-2");
  const pat = await registerUser(
    a.runtime.store,
    {
      email: "pat@clinic.test",
      name: "Pat",
      role: "patient",
      password: PASSWORD,
      patientId: p1,
    },
    { actorId: "test-setup" },
    a.runtime.passwordParams,
  );
  ids.pat = pat.id;
  tokens.pat = (await login(a.app, "pat@clinic.test")).body.accessToken;
  const addToken = async (name: string, id: string, email: string) => {
    ids[name] = id;
    tokens[name] = (await login(a.app, email)).body.accessToken;
  };
  return { tokens, ids, call, p1, p2, addToken };
};

type World = Awaited<ReturnType<typeof world>>;

/** The code of a request, unsealed from its `AccessRequested` event (the outbox delivers it). */
const requestCode = async (a: TestApp, requestId: string): Promise<string> => {
  const [e] = await a.runtime.store.readStream(`access-request-${requestId}`);
  assert.equal(e?.type, "AccessRequested");
  return (e!.data as { code: string }).code;
};

const ask = async (w: World, who: string, patientId: string, body: unknown = { purpose: "p" }) => {
  const res = await w.call(who, "POST", `/v1/patients/${patientId}/access-requests`, body);
  assert.equal(res.status, 201, await res.clone().text());
  return await res.json() as { id: string; expiresAt: string; status: string };
};

const verify = (w: World, who: string, requestId: string, code: string) =>
  w.call(who, "POST", `/v1/access-requests/${requestId}/verify`, { code });

const share = async (w: World, who: string, body: Record<string, unknown>) => {
  const res = await w.call(who, "POST", "/v1/me/access-codes", {
    purpose: "second opinion",
    durationHours: 24,
    ...body,
  });
  assert.equal(res.status, 201, await res.clone().text());
  return await res.json() as { id: string; code: string; expiresAt: string };
};

const redeem = (w: World, who: string, patientId: string, code: string) =>
  w.call(who, "POST", "/v1/access-codes/redeem", { patientId, code });

const problemType = async (res: Response) => {
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  return (await res.json()).type as string;
};

/** A code that is not `code` (for wrong attempts). */
const wrong = (code: string) => String((Number(code) + 1) % 1_000_000).padStart(6, "0");

const types = async (a: TestApp, streamId: string) =>
  (await a.runtime.store.readStream(streamId, { unseal: false })).map((e) => e.type);

/** No code anywhere in the events table, the code read models, or the logs. */
const assertNowhere = async (a: TestApp, codes: readonly string[]) => {
  for (const code of codes) {
    const like = `%${code}%`;
    const [n] = await a.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events
        where data::text like ${like} or metadata::text like ${like}`,
    );
    assert.equal(n!.n, 0, "a code in the events table");
    const [m] = await a.runtime.db.query<{ n: number }>(
      sql`select (select count(*) from access_requests r where r::text like ${like})
        + (select count(*) from access_shares s where s::text like ${like}) as n`,
    );
    assert.equal(Number(m!.n), 0, "a code in a read model");
    assert.ok(!a.logs.text().includes(code), "a code in the logs");
  }
};

Deno.test("access codes: primitives: 6 digits, keyed digest bound to patient and request", () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const c = generateCode();
    assert.match(c, /^\d{6}$/);
    seen.add(c);
  }
  assert.ok(seen.size > 1900, "codes repeat far too often");
  const [p, q, r1, r2] = Array.from({ length: 4 }, () => crypto.randomUUID());
  const d = codeDigest(key, { kind: "request", requestId: r1!, patientId: p! }, "123456");
  assert.match(d, /^[0-9a-f]{64}$/);
  assert.ok(
    digestsEqual(d, codeDigest(key, { kind: "request", requestId: r1!, patientId: p! }, "123456")),
  );
  for (
    const other of [
      codeDigest(key, { kind: "request", requestId: r2!, patientId: p! }, "123456"),
      codeDigest(key, { kind: "request", requestId: r1!, patientId: q! }, "123456"),
      codeDigest(key, { kind: "request", requestId: r1!, patientId: p! }, "123457"),
      codeDigest(key, { kind: "share", patientId: p! }, "123456"),
      codeDigest(crypto.getRandomValues(new Uint8Array(32)), {
        kind: "request",
        requestId: r1!,
        patientId: p!,
      }, "123456"),
    ]
  ) assert.ok(!digestsEqual(d, other));
  assert.ok(!digestsEqual(d, "zz"));
  assert.ok(!digestsEqual(d, d.slice(0, 62)));
});

Deno.test("access codes: ask → verify → the grant works; used, not the asker's, unknown", async (t) => {
  await eachApp(t, async (a) => {
    const w = await world(a);
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 403);
    const req = await ask(w, "doc", w.p1, { purpose: "referral follow-up", durationHours: 2 });
    assert.deepEqual(Object.keys(req).sort(), [
      "clinicId",
      "durationHours",
      "expiresAt",
      "id",
      "patientId",
      "status",
    ]);
    assert.equal(req.status, "pending");
    assert.equal(req.expiresAt, "2026-11-24T12:10:00.000Z");
    const code = await requestCode(a, req.id);
    assert.match(code, /^\d{6}$/);
    // the code is sealed in the log (under the patient's key), never plain
    const [raw] = await a.runtime.db.query<{ code: unknown; digest: string }>(
      sql`select data->'code' as code, data->>'codeDigest' as digest from events
        where type = 'AccessRequested'`,
    );
    assert.equal(typeof raw!.code, "object");
    assert.match(raw!.digest, /^[0-9a-f]{64}$/);

    const list = await (await w.call("doc", "GET", "/v1/me/access-requests")).json();
    assert.equal(list.total, 1);
    assert.equal(list.items[0].id, req.id);
    assert.equal(list.items[0].failedAttempts, 0);
    assert.ok(!("purpose" in list.items[0]));
    assert.equal((await (await w.call("doc2", "GET", "/v1/me/access-requests")).json()).total, 0);

    // another practitioner may not even see it; an unknown id is 404 too
    assert.equal((await verify(w, "doc2", req.id, code)).status, 404);
    assert.equal((await verify(w, "doc", crypto.randomUUID(), code)).status, 404);

    const bad = await verify(w, "doc", req.id, wrong(code));
    assert.equal(bad.status, 422);
    assert.equal(await problemType(bad), "/problems/invalid-code");

    const ok = await verify(w, "doc", req.id, code);
    assert.equal(ok.status, 201);
    const grant = await ok.json();
    assert.equal(grant.patientId, w.p1);
    assert.equal(grant.granteeKind, "practitioner");
    assert.equal(grant.granteeId, w.ids.doc);
    assert.equal(grant.source, "request");
    assert.equal(grant.sourceId, req.id);
    assert.equal(grant.purpose, "referral follow-up");
    assert.equal(grant.expiresAt, "2026-11-24T14:00:00.000Z");

    // the grant works: the practitioner reads the record; the other one still may not
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 200);
    assert.equal((await w.call("doc2", "GET", `/v1/patients/${w.p1}`)).status, 403);
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p2}`)).status, 403);

    // reused: 409, and recorded
    const again = await verify(w, "doc", req.id, code);
    assert.equal(again.status, 409);
    assert.equal(await problemType(again), "/problems/code-used");
    assert.deepEqual(await types(a, `access-request-${req.id}`), [
      "AccessRequested",
      "AccessCodeFailed",
      "AccessCodeVerified",
      "AccessGranted",
      "AccessCodeFailed",
    ]);
    assert.equal((await (await w.call("doc", "GET", "/v1/me/access-requests")).json()).total, 0);
    const [row] = await a.runtime.db.query<{ status: string; failed_attempts: number }>(
      sql`select status, failed_attempts from access_requests where id = ${req.id}::uuid`,
    );
    assert.deepEqual({ ...row }, { status: "verified", failed_attempts: 2 });
    const [g] = await a.runtime.db.query<{ stream_id: string; source: string }>(
      sql`select stream_id, source from access_grants`,
    );
    assert.deepEqual({ ...g }, { stream_id: `access-request-${req.id}`, source: "request" });
    await assertNowhere(a, [code]);
  });
});

Deno.test("access codes: a code of another patient, an expired code, unknown and deleted patients", async () => {
  const c = clock();
  const a = await openTestApp(ENV, { now: c.now });
  try {
    const w = await world(a);
    const r1 = await ask(w, "doc", w.p1);
    const r2 = await ask(w, "doc", w.p2);
    const c1 = await requestCode(a, r1.id);
    const c2 = await requestCode(a, r2.id);
    if (c1 !== c2) {
      const res = await verify(w, "doc", r1.id, c2);
      assert.equal(res.status, 422, "the other patient's code");
      assert.equal(await problemType(res), "/problems/invalid-code");
    }
    // ten minutes later the code is dead: 410 and AccessCodeExpired, then 410 again
    c.advance(10 * MINUTE);
    const late = await verify(w, "doc", r1.id, c1);
    assert.equal(late.status, 410);
    assert.equal(await problemType(late), "/problems/code-expired");
    assert.equal((await verify(w, "doc", r1.id, c1)).status, 410);
    const evs = await types(a, `access-request-${r1.id}`);
    assert.deepEqual(evs.slice(-3), ["AccessCodeFailed", "AccessCodeExpired", "AccessCodeFailed"]);
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 403);
    // no longer pending: the list shows neither (r2 is past its 10 minutes too)
    assert.equal((await (await w.call("doc", "GET", "/v1/me/access-requests")).json()).total, 0);

    // unknown patient 404; a soft-deleted one 404 as well
    const unknown = await w.call(
      "doc",
      "POST",
      `/v1/patients/${crypto.randomUUID()}/access-requests`,
      {
        purpose: "x",
      },
    );
    assert.equal(unknown.status, 404);
    const del = await w.call("admin", "DELETE", `/v1/patients/${w.p2}`, { reason: "duplicate" });
    assert.equal(del.status, 204, await del.clone().text());
    assert.equal(
      (await w.call("doc", "POST", `/v1/patients/${w.p2}/access-requests`, { purpose: "x" }))
        .status,
      404,
    );
    // erased: 410, as everywhere (an erased id must not read as unknown); its rows are gone
    const erased = await w.call("admin", "POST", `/v1/patients/${w.p2}/erasure`, {
      reason: "asked",
    });
    assert.ok(erased.status < 300, await erased.clone().text());
    const gone = await w.call("doc", "POST", `/v1/patients/${w.p2}/access-requests`, {
      purpose: "x",
    });
    assert.equal(gone.status, 410);
    assert.equal(await problemType(gone), "/problems/erased");
    const [left] = await a.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from access_requests where patient_id = ${w.p2}::uuid`,
    );
    assert.equal(left!.n, 0);
    await assertNowhere(a, [c1, c2]);
  } finally {
    await a.close();
  }
});

Deno.test("access codes: five wrong codes kill a request, even for the right code after", async () => {
  const a = await openTestApp(ENV, { now: clock().now });
  try {
    const w = await world(a);
    const req = await ask(w, "doc", w.p1);
    const code = await requestCode(a, req.id);
    for (let i = 1; i <= 5; i++) {
      const res = await verify(w, "doc", req.id, wrong(code));
      assert.equal(res.status, 422, `wrong code ${i}`);
      await res.body?.cancel();
    }
    const dead = await verify(w, "doc", req.id, code);
    assert.equal(dead.status, 409);
    assert.equal(await problemType(dead), "/problems/code-locked");
    assert.deepEqual(await types(a, `access-request-${req.id}`), [
      "AccessRequested",
      ...Array(5).fill("AccessCodeFailed"),
      "AccessCodeLocked",
      "AccessCodeFailed",
    ]);
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 403);
    const [row] = await a.runtime.db.query<{ status: string }>(
      sql`select status from access_requests where id = ${req.id}::uuid`,
    );
    assert.equal(row!.status, "locked");
  } finally {
    await a.close();
  }
});

Deno.test("access codes: 20 parallel wrong codes kill the request, each attempt one event", async (t) => {
  await eachApp(t, async (a) => {
    const w = await world(a);
    const req = await ask(w, "doc", w.p1);
    const code = await requestCode(a, req.id);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => verify(w, "doc", req.id, wrong(code))),
    );
    const statuses = answers.map((r) => r.status).sort();
    for (const r of answers) await r.body?.cancel();
    assert.deepEqual(statuses, [...Array(15).fill(409), ...Array(5).fill(422)]);
    const evs = await a.runtime.store.readStream(`access-request-${req.id}`, { unseal: false });
    assert.equal(evs.filter((e) => e.type === "AccessCodeFailed").length, 20);
    assert.equal(evs.filter((e) => e.type === "AccessCodeLocked").length, 1);
    assert.equal(evs.length, 22);
    // attempts 1..20, the lock right after the fifth
    assert.deepEqual(
      evs.filter((e) => e.type === "AccessCodeFailed").map((e) => e.data.attempt),
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    assert.equal(evs[6]!.type, "AccessCodeLocked");
    const dead = await verify(w, "doc", req.id, code);
    assert.equal(dead.status, 409, "the right code too");
    await dead.body?.cancel();
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 403);
  });
});

Deno.test("access codes: 20 parallel right verifies make one grant", async (t) => {
  await eachApp(t, async (a) => {
    const w = await world(a);
    const req = await ask(w, "doc", w.p1);
    const code = await requestCode(a, req.id);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => verify(w, "doc", req.id, code)),
    );
    const statuses = answers.map((r) => r.status).sort();
    for (const r of answers) await r.body?.cancel();
    assert.deepEqual(statuses, [201, ...Array(19).fill(409)]);
    const evs = await types(a, `access-request-${req.id}`);
    assert.equal(evs.filter((e) => e === "AccessGranted").length, 1);
    assert.equal(evs.filter((e) => e === "AccessCodeFailed").length, 19);
    const [n] = await a.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from access_grants`,
    );
    assert.equal(n!.n, 1);
  });
});

/** A clinic with `doc` as an active member, straight through the store. */
const clinicWith = async (
  a: TestApp,
  actorId: string,
  memberId: string | null,
  active = true,
) => {
  const clinicId = crypto.randomUUID();
  await a.runtime.store.append(`clinic-${clinicId}`, "no_stream", [
    {
      type: "ClinicRegistered",
      data: {
        clinicId,
        name: "Northside",
        licenseNumber: `LIC-${clinicId.slice(0, 8)}`,
        address: null,
        phone: null,
        email: null,
        operatingHours: {},
        services: [],
      },
    },
    ...(memberId
      ? [{
        type: "ClinicPractitionerAdded",
        data: { clinicId, userId: memberId, employmentType: "part_time" },
      }]
      : []),
    ...(active ? [] : [{ type: "ClinicDeactivated", data: { clinicId } }]),
  ], { actorId }); // a user id: the membership read model keeps who added them
  return clinicId;
};

Deno.test("access codes: asking for a clinic: members only, the grant goes to the clinic", async () => {
  const a = await openTestApp(ENV, { now: clock().now });
  try {
    const w = await world(a);
    const clinic = await clinicWith(a, w.ids.admin!, w.ids.doc!);
    const closed = await clinicWith(a, w.ids.admin!, w.ids.doc!, false);
    const path = `/v1/patients/${w.p1}/access-requests`;
    const notMember = await w.call("doc2", "POST", path, { purpose: "x", clinicId: clinic });
    assert.equal(notMember.status, 403);
    assert.equal(await problemType(notMember), "/problems/forbidden");
    assert.equal(
      (await w.call("doc", "POST", path, { purpose: "x", clinicId: closed })).status,
      403,
      "an inactive clinic",
    );
    assert.equal(
      (await w.call("doc", "POST", path, { purpose: "x", clinicId: crypto.randomUUID() })).status,
      404,
    );
    const denied = await a.runtime.db.query<{ action: string }>(
      sql`select data->>'action' as action from events where type = 'AccessDenied'`,
    );
    assert.deepEqual(denied.map((d) => d.action), ["access.request", "access.request"]);

    const req = await ask(w, "doc", w.p1, { purpose: "clinic referral", clinicId: clinic });
    const res = await verify(w, "doc", req.id, await requestCode(a, req.id));
    assert.equal(res.status, 201);
    const grant = await res.json();
    assert.equal(grant.granteeKind, "clinic");
    assert.equal(grant.granteeId, clinic);
    assert.equal(grant.expiresAt, "2026-11-25T12:00:00.000Z", "24 hours by default");
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 200);
  } finally {
    await a.close();
  }
});

Deno.test("access codes: share → redeem end to end; used; not named; proxies", async (t) => {
  await eachApp(t, async (a) => {
    const w = await world(a);
    const s = await share(w, "pat", { patientId: w.p1, practitionerId: w.ids.doc });
    assert.match(s.code, /^\d{6}$/);
    assert.equal(s.expiresAt, "2026-11-24T12:10:00.000Z");
    const [row] = await a.runtime.db.query<{ code_digest: string; status: string }>(
      sql`select code_digest, status from access_shares where id = ${s.id}::uuid`,
    );
    assert.equal(row!.status, "pending");
    assert.ok(
      digestsEqual(
        row!.code_digest,
        codeDigest(a.runtime.accessCodeKey, { kind: "share", patientId: w.p1 }, s.code),
      ),
    );

    // the code names doc: for doc2 it is a wrong code
    const other = await redeem(w, "doc2", w.p1, s.code);
    assert.equal(other.status, 422);
    assert.equal(await problemType(other), "/problems/invalid-code");
    // for another patient, too
    assert.equal((await redeem(w, "doc", w.p2, s.code)).status, 422);

    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 403);
    const ok = await redeem(w, "doc", w.p1, s.code);
    assert.equal(ok.status, 201);
    const grant = await ok.json();
    assert.equal(grant.source, "share");
    assert.equal(grant.sourceId, s.id);
    assert.equal(grant.granteeKind, "practitioner");
    assert.equal(grant.granteeId, w.ids.doc);
    assert.equal(grant.purpose, "second opinion");
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 200);

    const used = await redeem(w, "doc", w.p1, s.code);
    assert.equal(used.status, 409);
    assert.equal(await problemType(used), "/problems/code-used");
    assert.deepEqual(await types(a, `access-share-${s.id}`), [
      "AccessCodeShared",
      "AccessCodeRedeemed",
      "AccessGranted",
      "AccessCodeFailed",
    ]);

    // a clinic share: any active member redeems it, and the grant goes to the clinic
    const clinic = await clinicWith(a, w.ids.admin!, w.ids.doc2!);
    const cs = await share(w, "pat", { patientId: w.p1, clinicId: clinic });
    const cg = await redeem(w, "doc2", w.p1, cs.code);
    assert.equal(cg.status, 201);
    assert.equal((await cg.json()).granteeId, clinic);

    // family: a full proxy shares, a read-only one may not; nor may another patient's user
    for (const [email, level] of [["full@fam.test", "full"], ["ro@fam.test", "read_only"]]) {
      // a family member: a patient-role user without a record of their own (straight
      // through the store: the account service of this branch still asks for one)
      const u = await createCheapUser(a.runtime, "patient", email!);
      await a.runtime.store.append(`proxies-${w.p1}`, "any", [{
        type: "ProxyAdded",
        data: { proxyId: crypto.randomUUID(), patientId: w.p1, userId: u.id, level },
      }], { actorId: w.ids.pat });
      await w.addToken(level!, u.id, email!);
    }
    const byProxy = await share(w, "full", { patientId: w.p1, practitionerId: w.ids.doc2 });
    const readOnly = await w.call("read_only", "POST", "/v1/me/access-codes", {
      patientId: w.p1,
      practitionerId: w.ids.doc2,
      purpose: "x",
    });
    assert.equal(readOnly.status, 403);
    assert.equal(await problemType(readOnly), "/problems/forbidden");
    const notTheirs = await w.call("pat", "POST", "/v1/me/access-codes", {
      patientId: w.p2,
      practitionerId: w.ids.doc2,
      purpose: "x",
    });
    assert.equal(notTheirs.status, 403);
    const [refusal] = await a.runtime.db.query<{ r: string }>(
      sql`select data->>'resourceId' as r from events where type = 'AccessDenied'
        and data->>'actorId' = ${w.ids.pat} order by global_position desc limit 1`,
    );
    assert.equal(refusal!.r, w.p2, "the refusal names the patient of the body");
    assert.equal(
      (await w.call("doc", "POST", "/v1/me/access-codes", {
        patientId: w.p1,
        practitionerId: w.ids.doc2,
        purpose: "x",
      })).status,
      403,
      "a practitioner shares nothing",
    );
    const pg = await redeem(w, "doc2", w.p1, byProxy.code);
    assert.equal(pg.status, 201);
    await pg.body?.cancel();

    // unknown grantees and patients are 404
    for (
      const body of [
        { patientId: w.p1, practitionerId: crypto.randomUUID() },
        { patientId: w.p1, practitionerId: w.ids.admin },
        { patientId: w.p1, clinicId: crypto.randomUUID() },
      ]
    ) {
      const res = await w.call("pat", "POST", "/v1/me/access-codes", { purpose: "x", ...body });
      assert.equal(res.status, 404, JSON.stringify(body));
      await res.body?.cancel();
    }
    assert.equal((await redeem(w, "doc", crypto.randomUUID(), "123456")).status, 404);
    await assertNowhere(a, [s.code, cs.code, byProxy.code]);
  });
});

Deno.test("access codes: an expired shared code is 410", async () => {
  const c = clock();
  const a = await openTestApp(ENV, { now: c.now });
  try {
    const w = await world(a);
    const s = await share(w, "pat", { patientId: w.p1, practitionerId: w.ids.doc });
    c.advance(10 * MINUTE);
    const late = await redeem(w, "doc", w.p1, s.code);
    assert.equal(late.status, 410);
    assert.equal(await problemType(late), "/problems/code-expired");
    assert.equal((await redeem(w, "doc", w.p1, s.code)).status, 410);
    assert.deepEqual(await types(a, `access-share-${s.id}`), [
      "AccessCodeShared",
      "AccessCodeFailed",
      "AccessCodeExpired",
      "AccessCodeFailed",
    ]);
    assert.equal((await w.call("doc", "GET", `/v1/patients/${w.p1}`)).status, 403);
  } finally {
    await a.close();
  }
});

Deno.test("access codes: 20 parallel wrong redeems block that practitioner for 15 minutes, nobody else", async (t) => {
  await eachApp(t, async (a, c) => {
    const w = await world(a);
    const s = await share(w, "pat", { patientId: w.p1, practitionerId: w.ids.doc });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => redeem(w, "doc", w.p1, wrong(s.code))),
    );
    const statuses = answers.map((r) => r.status).sort();
    for (const r of answers) await r.body?.cancel();
    assert.deepEqual(statuses, [...Array(15).fill(409), ...Array(5).fill(422)]);
    const stream = `access-redeem-${w.p1}-${w.ids.doc}`;
    const evs = await a.runtime.store.readStream(stream, { unseal: false });
    assert.equal(evs.filter((e) => e.type === "AccessCodeFailed").length, 20);
    const locks = evs.filter((e) => e.type === "AccessCodeLocked");
    assert.equal(locks.length, 1);
    assert.equal(locks[0]!.data.until, "2026-11-24T12:15:00.000Z");

    // blocked: the right code too, and it is recorded
    const blocked = await redeem(w, "doc", w.p1, s.code);
    assert.equal(blocked.status, 409);
    assert.equal(await problemType(blocked), "/problems/code-locked");
    assert.equal((await types(a, stream)).length, 22);
    assert.deepEqual(await types(a, `access-share-${s.id}`), ["AccessCodeShared"]);

    // nobody else is blocked: doc2 redeems a code shared with them
    const s2 = await share(w, "pat", { patientId: w.p1, practitionerId: w.ids.doc2 });
    const other = await redeem(w, "doc2", w.p1, s2.code);
    assert.equal(other.status, 201);
    await other.body?.cancel();
    // nor is doc for another patient
    const patient2 = await registerUser(
      a.runtime.store,
      {
        email: "pat2@clinic.test",
        name: "Pat 2",
        role: "patient",
        password: PASSWORD,
        patientId: w.p2,
      },
      { actorId: "test-setup" },
      a.runtime.passwordParams,
    );
    await w.addToken("pat2", patient2.id, "pat2@clinic.test");
    const s3 = await share(w, "pat2", { patientId: w.p2, practitionerId: w.ids.doc });
    const elsewhere = await redeem(w, "doc", w.p2, s3.code);
    assert.equal(elsewhere.status, 201);
    await elsewhere.body?.cancel();

    // 15 minutes on, the block is over: a fresh code works
    c.advance(15 * MINUTE);
    const s4 = await share(w, "pat", { patientId: w.p1, practitionerId: w.ids.doc });
    const after = await redeem(w, "doc", w.p1, s4.code);
    assert.equal(after.status, 201, await after.clone().text());
    await assertNowhere(a, [s.code, s2.code, s3.code, s4.code]);
  });
});

Deno.test("access codes: wrong redeems count within 15 minutes only", async () => {
  const c = clock();
  const a = await openTestApp(ENV, { now: c.now });
  try {
    const w = await world(a);
    for (let i = 0; i < 4; i++) {
      assert.equal((await redeem(w, "doc", w.p1, "000000")).status, 422);
    }
    c.advance(16 * MINUTE); // the four are outside the window now
    for (let i = 0; i < 4; i++) {
      assert.equal((await redeem(w, "doc", w.p1, "000000")).status, 422);
    }
    const s = await share(w, "pat", { patientId: w.p1, practitionerId: w.ids.doc });
    assert.equal((await redeem(w, "doc", w.p1, s.code)).status, 201, "not blocked");
    assert.equal((await redeem(w, "doc", w.p1, "000000")).status, 422, "the fifth in the window");
    assert.equal((await redeem(w, "doc", w.p1, "000000")).status, 409, "blocked");
  } finally {
    await a.close();
  }
});

Deno.test("access codes: 20 parallel redeems of one code make one grant", async (t) => {
  await eachApp(t, async (a) => {
    const w = await world(a);
    const s = await share(w, "pat", { patientId: w.p1, practitionerId: w.ids.doc });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => redeem(w, "doc", w.p1, s.code)),
    );
    const statuses = answers.map((r) => r.status).sort();
    for (const r of answers) await r.body?.cancel();
    assert.deepEqual(statuses, [201, ...Array(19).fill(409)]);
    const evs = await types(a, `access-share-${s.id}`);
    assert.equal(evs.filter((e) => e === "AccessGranted").length, 1);
    assert.equal(evs.filter((e) => e === "AccessCodeFailed").length, 19);
  });
});

Deno.test("access codes: bad input is a 422 naming every bad field; no event", async () => {
  const a = await openTestApp(ENV, { now: clock().now });
  try {
    const w = await world(a);
    const [before] = await a.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where type like 'Access%'`,
    );
    const fields = async (res: Response) => {
      assert.equal(res.status, 422, await res.clone().text());
      const body = await res.json();
      assert.ok(["/problems/validation", "/problems/invalid-cursor"].includes(body.type));
      return [...new Set((body.errors as { path: string }[]).map((e) => e.path))].sort();
    };
    const askPath = `/v1/patients/${w.p1}/access-requests`;
    const cases: [string, string, string, unknown, string[]][] = [
      ["doc", "POST", askPath, { purpose: "a\u0000b" }, ["purpose"]],
      ["doc", "POST", askPath, {}, ["purpose"]],
      ["doc", "POST", askPath, { purpose: "" }, ["purpose"]],
      ["doc", "POST", askPath, { purpose: "x".repeat(501) }, ["purpose"]],
      ["doc", "POST", askPath, { purpose: 7, durationHours: 0 }, ["durationHours", "purpose"]],
      ["doc", "POST", askPath, { purpose: "x", durationHours: 73 }, ["durationHours"]],
      ["doc", "POST", askPath, { purpose: "x", durationHours: "x" }, ["durationHours"]],
      ["doc", "POST", askPath, { purpose: "x", durationHours: 1.5 }, ["durationHours"]],
      ["doc", "POST", askPath, { purpose: "x", clinicId: "nope", extra: 1 }, [
        "clinicId",
        "extra",
      ]],
      ["doc", "POST", `/v1/access-requests/${crypto.randomUUID()}/verify`, { code: "12345" }, [
        "code",
      ]],
      ["doc", "POST", `/v1/access-requests/${crypto.randomUUID()}/verify`, { code: 123456 }, [
        "code",
      ]],
      ["doc", "POST", "/v1/access-requests/nope/verify", { code: "123456" }, ["id"]],
      ["doc", "POST", "/v1/access-codes/redeem", {}, ["code", "patientId"]],
      ["doc", "POST", "/v1/access-codes/redeem", { patientId: w.p1, code: "12a456" }, ["code"]],
      ["pat", "POST", "/v1/me/access-codes", {
        patientId: w.p1,
        practitionerId: w.ids.doc,
        clinicId: crypto.randomUUID(),
        purpose: "x",
      }, ["clinicId", "practitionerId"]],
      ["pat", "POST", "/v1/me/access-codes", { patientId: w.p1, purpose: "x" }, [
        "clinicId",
        "practitionerId",
      ]],
      ["pat", "POST", "/v1/me/access-codes", {}, [
        "clinicId",
        "patientId",
        "practitionerId",
        "purpose",
      ]],
      ["pat", "POST", "/v1/me/access-codes", {
        patientId: "x",
        practitionerId: w.ids.doc,
        purpose: "\u0000",
        durationHours: 0,
      }, ["purpose"]], // the NUL guard answers first, for the NUL field
      ["pat", "POST", "/v1/me/access-codes", {
        patientId: "x",
        practitionerId: w.ids.doc,
        purpose: "ok",
        durationHours: 0,
      }, ["durationHours", "patientId"]],
      ["doc", "GET", "/v1/me/access-requests?limit=0", undefined, ["limit"]],
      ["doc", "GET", "/v1/me/access-requests?cursor=abc", undefined, ["cursor"]],
    ];
    for (const [who, method, path, body, expected] of cases) {
      assert.deepEqual(
        await fields(await w.call(who, method, path, body)),
        expected,
        `${method} ${path} ${JSON.stringify(body)}`,
      );
    }
    const notJson = await w.call("doc", "POST", askPath, "{not json");
    assert.ok([400, 422].includes(notJson.status), String(notJson.status));
    await notJson.body?.cancel();
    const [after] = await a.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where type like 'Access%'`,
    );
    assert.equal(after!.n, before!.n, "a refused input appends nothing");
    // roles: only practitioners ask, verify, list and redeem; only patients share
    for (
      const [who, method, path, body] of [
        ["admin", "POST", askPath, { purpose: "x" }],
        ["pat", "POST", askPath, { purpose: "x" }],
        ["admin", "GET", "/v1/me/access-requests", undefined],
        ["pat", "POST", "/v1/access-codes/redeem", { patientId: w.p1, code: "123456" }],
        ["admin", "POST", "/v1/me/access-codes", {}],
      ] as const
    ) {
      const res = await w.call(who, method, path, body);
      assert.equal(res.status, 403, `${who} ${method} ${path}`);
      await res.body?.cancel();
    }
  } finally {
    await a.close();
  }
});
