import assert from "node:assert/strict";
import { registerUser } from "../src/auth/accounts.ts";
import { erasePatient } from "../src/clinical/erasure.ts";
import { shredSubject } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { appendClinic, appendGrant } from "./support/grants.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const HOUR = 3_600_000;
const T0 = Date.parse("2026-12-01T08:00:00Z");
const at = (h: number) => new Date(T0 + h * HOUR).toISOString();
const PHI = ["Ada", "Quill", "AQ-1", "1970-02-03", "Collapsed at the bus stop", "Second opinion"];

interface Group {
  actor: { id: string | null; name: string | null; erased: boolean };
  role: string | null;
  clinic?: { id: string; name: string | null };
  purpose: string;
  grantId: string | null;
  first: string;
  last: string;
  count: number;
  what: string[];
}

/**
 * The scripted scenario, one step an hour on an injected clock: admin
 * registers P and puts `doc` on the care team; the patient shares a
 * one-time code that `named` redeems (a grant); `er` breaks the glass;
 * the patient makes `son` a proxy, who reads; the patient reads their own
 * record; a stranger is refused; an auditor queries P's trail.
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
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const ok = async (who: string, method: string, path: string, body?: unknown) => {
    const res = await call(who, method, path, body);
    const text = await res.text();
    assert.ok(res.status < 300, `${who} ${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  const hour = (h: number) => (clock.now = T0 + h * HOUR);
  for (
    const [who, role] of [
      ["admin", "admin"],
      ["doc", "practitioner"],
      ["named", "practitioner"],
      ["er", "practitioner"],
      ["member", "practitioner"],
      ["stranger", "practitioner"],
      ["auditor", "auditor"],
    ] as const
  ) await user(who, role);

  hour(1);
  const p = (await ok("admin", "POST", "/v1/patients", {
    mrn: "AQ-1",
    firstName: "Ada",
    lastName: "Quill",
    dateOfBirth: "1970-02-03",
    gender: "F",
  })).id as string;
  await ok("admin", "POST", `/v1/patients/${p}/care-team`, { practitionerId: ids.doc });
  const patient = await registerUser(
    t.runtime.store,
    {
      email: "ada@mail.test",
      name: "Ada Quill",
      role: "patient",
      password: PASSWORD,
      patientId: p,
    },
    { actorId: "test-setup" },
    t.runtime.passwordParams,
  );
  ids.patient = patient.id;
  tokens.patient = (await login(t.app, "ada@mail.test")).body.accessToken;
  const son = await ok("admin", "POST", "/v1/users", {
    email: "son@mail.test",
    name: "Rex Family",
    role: "patient",
    password: PASSWORD,
  });
  ids.son = son.id;
  tokens.son = (await login(t.app, "son@mail.test")).body.accessToken;

  hour(2); // the care-team practitioner reads twice
  await ok("doc", "GET", `/v1/patients/${p}`);
  hour(3);
  await ok("doc", "GET", `/v1/patients/${p}`);

  hour(4); // the patient shares a one-time code; the named practitioner redeems and reads
  const shared = await ok("patient", "POST", "/v1/me/access-codes", {
    patientId: p,
    practitionerId: ids.named,
    purpose: "Second opinion on the knee",
    durationHours: 24,
  });
  const redeemed = await ok("named", "POST", "/v1/access-codes/redeem", {
    patientId: p,
    code: shared.code,
  });
  const grantId = (redeemed.grant?.id ?? redeemed.id ?? redeemed.grantId) as string;
  assert.ok(grantId);
  await ok("named", "GET", `/v1/patients/${p}`);

  hour(5); // break-glass, then a read through it
  const bg = await ok("er", "POST", `/v1/patients/${p}/break-glass`, {
    reason: "Collapsed at the bus stop",
  });
  await ok("er", "GET", `/v1/patients/${p}`);

  hour(5.5); // a grant to a clinic: one of its members reads through it
  const clinicId = await appendClinic(t.runtime.store, [ids.member!]);
  const clinicGrant = await appendGrant(t.runtime.store, {
    patientId: p,
    granteeKind: "clinic",
    granteeId: clinicId,
    practitionerId: ids.member!,
    hours: 24,
    now: new Date(clock.now),
  });
  await ok("member", "GET", `/v1/patients/${p}`);

  hour(6); // a family proxy reads; the patient reads their own record (not a disclosure)
  const proxy = await ok("patient", "POST", `/v1/patients/${p}/proxies`, {
    userId: ids.son,
    level: "read_only",
  });
  await ok("son", "GET", `/v1/patients/${p}`);
  await ok("patient", "GET", `/v1/patients/${p}`);
  assert.equal((await call("stranger", "GET", `/v1/patients/${p}`)).status, 403);

  hour(7); // an auditor queries the record's trail
  await ok("auditor", "GET", `/v1/audit/events?patientId=${p}&limit=1`);
  hour(8);
  return {
    t,
    clock,
    ids,
    p,
    grantId,
    bgGrant: bg.grantId as string,
    clinicId,
    clinicGrant,
    proxyId: proxy.proxyId as string,
    call,
    ok,
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
  Deno.test(`disclosures [${driver}]: groups and purposes after the scripted scenario; 164.528; csv; paging; refusals; audited`, async () => {
    const s = await scenario(driver);
    try {
      const report = async (query = "") =>
        (await s.ok("auditor", "GET", `/v1/audit/patients/${s.p}/disclosures${query}`)) as {
          items: Group[];
          nextCursor: string | null;
        };
      const r = await report();
      assert.equal(r.nextCursor, null);
      const key = (g: Group) => `${g.actor.id}|${g.role}|${g.purpose}|${g.grantId}`;
      const byActor = (id: string) => r.items.filter((g) => g.actor.id === id);

      // the patient's own reads and shares, and the stranger's refusal, are no disclosures
      assert.deepEqual(byActor(s.ids.patient!), []);
      assert.deepEqual(byActor(s.ids.stranger!), []);

      const [admin] = byActor(s.ids.admin!);
      assert.equal(admin?.purpose, "operations");
      assert.deepEqual(admin?.what, ["care team", "care team change", "registration"]);
      assert.equal(admin?.count, 3);
      assert.equal(admin?.actor.name, "Test admin");

      assert.deepEqual(byActor(s.ids.doc!), [{
        actor: { id: s.ids.doc, name: "Test practitioner", erased: false },
        role: "practitioner",
        purpose: "treatment",
        grantId: null,
        first: at(2),
        last: at(3),
        count: 2,
        what: ["demographics"],
      }]);
      const named = byActor(s.ids.named!);
      assert.equal(named.length, 1);
      assert.equal(named[0]!.purpose, "patient_authorized");
      assert.equal(named[0]!.grantId, s.grantId);
      assert.equal(named[0]!.count, 1);
      assert.equal(named[0]!.first, at(4));

      const er = byActor(s.ids.er!);
      assert.equal(er.length, 1);
      assert.equal(er[0]!.purpose, "emergency");
      assert.equal(er[0]!.grantId, s.bgGrant);
      assert.equal(er[0]!.count, 2);
      assert.deepEqual(er[0]!.what, ["break-glass access", "demographics"]);

      assert.deepEqual(byActor(s.ids.member!), [{
        actor: { id: s.ids.member, name: "Test practitioner", erased: false },
        role: "practitioner",
        clinic: { id: s.clinicId, name: "Riverside Clinic" },
        purpose: "patient_authorized",
        grantId: s.clinicGrant,
        first: at(5.5),
        last: at(5.5),
        count: 1,
        what: ["demographics"],
      }]);

      const son = byActor(s.ids.son!);
      assert.equal(son.length, 1);
      assert.equal(son[0]!.purpose, "patient_authorized");
      assert.equal(son[0]!.grantId, s.proxyId);
      assert.equal(son[0]!.role, "patient");

      const auditor = byActor(s.ids.auditor!);
      assert.equal(auditor.length, 1);
      assert.equal(auditor[0]!.purpose, "audit");
      assert.deepEqual(auditor[0]!.what, ["audit trail query"]);
      assert.equal(auditor[0]!.first, at(7));

      // ordered by first use; nothing but these seven
      assert.deepEqual(
        r.items.map((g) => g.actor.id),
        ["admin", "doc", "named", "er", "member", "son", "auditor"].map((w) => s.ids[w]),
      );
      // no PHI anywhere in the report
      for (const phi of PHI) assert.ok(!JSON.stringify(r).includes(phi), phi);

      // the request itself was audited, naming the patient; and it shows up next time
      const [ev] = await s.t.runtime.db.query<{ data: { query: string; filters: unknown } }>(
        sql`select data from events where stream_id = ${`access-${s.ids.auditor}`}
          and type = 'AuditQueried' order by global_position desc limit 1`,
      );
      assert.deepEqual(ev?.data, {
        query: "disclosures",
        filters: { patientId: s.p },
        returned: 7,
      });
      const again = await report();
      const auditorAgain = again.items.find((g) => g.actor.id === s.ids.auditor)!;
      assert.deepEqual(auditorAgain.what, ["audit trail query", "disclosure report"]);
      assert.equal(auditorAgain.count, 2);

      // 164.528: treatment and operations left out
      const acc = await report("?excludeTreatment=true");
      assert.deepEqual(
        acc.items.map((g) => g.purpose),
        ["patient_authorized", "emergency", "patient_authorized", "patient_authorized", "audit"],
      );

      // a time window
      const window = await report(`?from=${at(4)}&to=${at(5)}`);
      assert.deepEqual(window.items.map(key), [key(named[0]!)]);
      // six years back by default: a window that ended before the scenario holds nothing
      assert.deepEqual((await report(`?to=${at(0)}`)).items, []);

      // pages of two, following the sealed cursor: the same groups in the same order
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: { items: Group[]; nextCursor: string | null } = await report(
          `?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
        );
        assert.ok(page.items.length <= 2);
        seen.push(...page.items.map(key));
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      assert.equal(pages, 4);
      assert.deepEqual(seen, r.items.map(key));

      // csv: a header and one row per group, every group at once
      const csv = await s.call(
        "auditor",
        "GET",
        `/v1/audit/patients/${s.p}/disclosures?format=csv`,
      );
      assert.equal(csv.status, 200);
      assert.match(csv.headers.get("content-type") ?? "", /^text\/csv/);
      const lines = (await csv.text()).trimEnd().split("\r\n");
      assert.equal(
        lines[0],
        "actorId,actorName,role,clinicId,clinicName,purpose,grantId,first,last,count,what",
      );
      assert.equal(lines.length, 8);
      assert.ok(
        lines.includes(
          `${s.ids.er},Test practitioner,practitioner,,,emergency,${s.bgGrant},${at(5)},${
            at(5)
          },2,break-glass access; demographics`,
        ),
        lines.join("\n"),
      );

      // hostile input: 4xx problems
      const problem = async (who: string, path: string, status: number, type?: string) => {
        const res = await s.call(who, "GET", path);
        const body = await res.json();
        assert.equal(res.status, status, `${path}: ${JSON.stringify(body)}`);
        assert.match(res.headers.get("content-type") ?? "", /application\/problem\+json/);
        if (type) assert.equal(body.type, type);
      };
      const base = `/v1/audit/patients/${s.p}/disclosures`;
      for (const c of ["garbage", "A".repeat(999), r.nextCursor ?? "x"]) {
        await problem("auditor", `${base}?cursor=${c}`, 422, "/problems/invalid-cursor");
      }
      const foreign = (await s.ok("auditor", "GET", `/v1/audit/events?limit=1`)).nextCursor;
      await problem("auditor", `${base}?cursor=${foreign}`, 422, "/problems/invalid-cursor");
      await problem("auditor", `${base}?limit=0`, 422, "/problems/validation");
      await problem("auditor", `${base}?format=xml`, 422, "/problems/validation");
      await problem("auditor", `${base}?from=${at(5)}&to=${at(4)}`, 422, "/problems/validation");
      await problem("auditor", `/v1/audit/patients/not-a-uuid/disclosures`, 422);
      await problem(
        "auditor",
        `/v1/audit/patients/${crypto.randomUUID()}/disclosures`,
        404,
        "/problems/not-found",
      );

      // practitioners and patients are refused, and the refusal is an event
      for (const who of ["doc", "patient"]) {
        await problem(who, base, 403, "/problems/forbidden");
        const [d] = await s.t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from events where type = 'AccessDenied'
            and data->>'actorId' = ${s.ids[who]!} and data->>'action' = 'audit.disclosures'`,
        );
        assert.equal(d?.n, 1, who);
      }
      // admins may ask too
      assert.equal((await s.call("admin", "GET", base)).status, 200);
    } finally {
      await s.close();
    }
  });
}

Deno.test("disclosures [pglite]: an erased patient's report still answers; no audit event, no report", async () => {
  const s = await scenario("pglite");
  try {
    await erasePatient(s.t.runtime, s.p, "patient request", {
      actorId: s.ids.admin,
      actorRole: "admin",
    });
    // the family proxy's own account is erased too: it reads as erased, and nothing fails
    await shredSubject(s.t.runtime.store, `user-${s.ids.son}`, "account closed", {
      actorId: s.ids.admin,
      actorRole: "admin",
    });
    const r = await s.ok("auditor", "GET", `/v1/audit/patients/${s.p}/disclosures`);
    assert.ok(r.items.length >= 7);
    assert.ok(r.items.some((g: Group) => g.purpose === "emergency"));
    const son = r.items.find((g: Group) => g.actor.id === s.ids.son) as Group;
    assert.deepEqual(son.actor, { id: s.ids.son, name: null, erased: true });
    assert.equal(son.purpose, "patient_authorized");
    const csv =
      await (await s.call("auditor", "GET", `/v1/audit/patients/${s.p}/disclosures?format=csv`))
        .text();
    assert.ok(csv.includes(`${s.ids.son},[erased],patient,`), csv);
    // the patient's own accounts stay excluded after the erasure (the tombstone keeps the link)
    assert.ok(!r.items.some((g: Group) => g.actor.id === s.ids.patient));
    for (const phi of PHI) assert.ok(!JSON.stringify(r).includes(phi), phi);

    // fail-closed: when the log refuses the audit event, no report (503)
    await s.t.runtime.db.exec(`create function no_access() returns trigger language plpgsql as $$
      begin if new.stream_id like 'access-%' then raise exception 'audit store down'; end if;
      return new; end $$;
      create trigger no_access before insert on events for each row execute function no_access();`);
    for (const q of ["", "?format=csv"]) {
      const res = await s.call("auditor", "GET", `/v1/audit/patients/${s.p}/disclosures${q}`);
      assert.equal(res.status, 503);
      assert.equal((await res.json()).type, "/problems/unavailable");
    }
  } finally {
    await s.close();
  }
});
