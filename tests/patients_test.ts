import assert from "node:assert/strict";
import { registerPatient } from "../src/clinical/patients.ts";
import {
  decide as decideTeam,
  fold as foldTeam,
  members as teamMembers,
} from "../src/domain/care_team.ts";
import { ConflictError } from "../src/errors.ts";
import { PhiCodec } from "../src/store/phi_codec.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createUser, login } from "./support/users.ts";

type App = Awaited<ReturnType<typeof openTestApp>>;

const clock = () => {
  let t = Date.parse("2026-11-24T12:00:00Z");
  return { now: () => new Date(t), advance: (ms: number) => (t += ms) };
};

const ada = {
  mrn: "MRN-0001",
  firstName: "Ada",
  lastName: "Lovelace",
  dateOfBirth: "1990-12-10",
  gender: "F",
  phone: "+15551230001",
  email: "ada@example.org",
  address: { line1: "1 Analytical Way", city: "Springfield", state: "IL", zip: "62701" },
};

/** An app with users of every role logged in (rate limit lifted: one test address). */
const setup = async (env: Record<string, string> = {}) => {
  const c = clock();
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000", ...env }, { now: c.now });
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  for (
    const role of [
      "admin",
      "clinical_ops",
      "practitioner",
      "reception",
      "auditor",
      "analyst",
    ] as const
  ) {
    const u = await createUser(t.runtime, role);
    ids[role] = u.id;
    tokens[role] = (await login(t.app, u.email)).body.accessToken;
  }
  const call = (
    role: string,
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) =>
    t.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[role]!),
        "user-agent": `tests/${role}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
        ...headers,
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    }, { remoteAddr: { hostname: "10.9.8.7", port: 4242, transport: "tcp" } });
  return { c, t, tokens, ids, call };
};

const accessEvents = async (t: App, type: string) =>
  await t.runtime.db.query<{ data: Record<string, unknown>; m: Record<string, string> }>(
    sql`select data, metadata as m from events where type = ${type} order by global_position`,
  );

Deno.test("patients: validation names every bad field; unknown fields and future births are 422", async () => {
  const { t, call } = await setup();
  try {
    const bad = await call("admin", "POST", "/v1/patients", {
      ...ada,
      phone: "555",
      email: "nope",
      gender: "Z",
      address: { ...ada.address, zip: "1" },
    });
    assert.equal(bad.status, 422);
    const paths = (await bad.json()).errors.map((e: { path: string }) => e.path).sort();
    assert.deepEqual(paths, ["address.zip", "email", "gender", "phone"]);
    assert.equal((await call("admin", "POST", "/v1/patients", { ...ada, ssn: "1" })).status, 422);
    const future = await call("admin", "POST", "/v1/patients", {
      ...ada,
      dateOfBirth: "2027-01-01",
    });
    assert.equal(future.status, 422);
    assert.equal((await future.json()).errors[0].path, "dateOfBirth");
    assert.equal(
      (await call("admin", "POST", "/v1/patients", { ...ada, dateOfBirth: "1870-01-01" })).status,
      422,
    );
    // nothing half-written: no events at all for the refused commands
    const [n] = await t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where stream_id like 'patient-%' or stream_id like 'mrn-%'`,
    );
    assert.equal(n!.n, 0);
  } finally {
    await t.close();
  }
});

Deno.test("patients: two concurrent registrations with one MRN: one 201, one 409", async () => {
  const { t, call } = await setup();
  try {
    const [a, b] = await Promise.all([
      call("admin", "POST", "/v1/patients", ada),
      call("clinical_ops", "POST", "/v1/patients", { ...ada, firstName: "Augusta" }),
    ]);
    assert.deepEqual([a.status, b.status].sort(), [201, 409]);
    const [n] = await t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from patients`,
    );
    assert.equal(n!.n, 1);
    // the MRN never appears in a stream id or in plaintext in the log
    const [dump] = await t.runtime.db.query<{ d: string }>(
      sql`select string_agg(stream_id || ' ' || data::text, ' ') as d from events`,
    );
    for (
      const phi of [
        "MRN-0001",
        "Lovelace",
        "1990-12-10",
        "+15551230001",
        "ada@example.org",
        "Analytical",
      ]
    ) {
      assert.ok(!dump!.d.includes(phi), phi);
    }
  } finally {
    await t.close();
  }
});

Deno.test("patients: If-Match, PUT and PATCH, soft delete and restore", async () => {
  const { t, call } = await setup();
  try {
    const created = await call("admin", "POST", "/v1/patients", ada);
    const p = await created.json();
    assert.equal(created.headers.get("etag"), '"1"');
    assert.equal(p.fullName, "Ada Lovelace");
    assert.equal(p.age, 35);
    const path = `/v1/patients/${p.id}`;
    // the 201 is built from the appended events, not read back: it is the record as read
    const read = await call("admin", "GET", path);
    assert.deepEqual(await read.json(), p);
    assert.equal(read.headers.get("etag"), '"1"');

    assert.equal(
      (await call("admin", "PATCH", path, { lastName: "Byron" }, { "if-match": '"9"' })).status,
      412,
    );
    const patched = await call("reception", "PATCH", path, { lastName: "Byron" }, {
      "if-match": '"1"',
    });
    assert.equal(patched.status, 200);
    assert.equal(patched.headers.get("etag"), '"2"');
    assert.equal((await patched.json()).email, "ada@example.org"); // untouched fields stay
    assert.equal((await call("admin", "PATCH", path, { nickname: "A" })).status, 422);
    assert.equal((await call("admin", "PATCH", path, { mrn: "OTHER" })).status, 422);
    const put = await call("admin", "PUT", path, { ...ada, lastName: "King", phone: null });
    assert.equal(put.status, 200);
    const after = await put.json();
    assert.deepEqual([after.lastName, after.phone], ["King", null]);

    // soft delete: a reason is required; hidden from everyone but admins; restorable
    assert.equal((await call("admin", "DELETE", path)).status, 422);
    assert.equal((await call("reception", "DELETE", path, { reason: "dup" })).status, 403);
    assert.equal(
      (await call("clinical_ops", "DELETE", `${path}?reason=duplicate%20record`)).status,
      204,
    );
    assert.equal((await call("clinical_ops", "GET", path)).status, 404);
    const asAdmin = await call("admin", "GET", path);
    assert.equal(asAdmin.status, 200);
    assert.equal((await asAdmin.json()).deleted, true);
    const list = async (
      role: string,
      q = "",
    ) => (await (await call(role, "GET", `/v1/patients${q}`)).json());
    assert.equal((await list("clinical_ops")).total, 0);
    assert.equal((await list("admin", "?include_deleted=true")).total, 1);
    assert.equal(
      (await call("clinical_ops", "GET", "/v1/patients?include_deleted=true")).status,
      403,
    );
    assert.equal((await call("clinical_ops", "POST", `${path}/restore`)).status, 403);
    const viewed = () => t.runtime.db.query(sql`select 1 from events where type = 'PatientViewed'`);
    const viewsBefore = (await viewed()).length;
    const restored = await call("admin", "POST", `${path}/restore`);
    assert.equal(restored.status, 200);
    assert.equal((await restored.json()).deleted, false);
    assert.equal((await viewed()).length, viewsBefore + 1, "the record in the answer is a read");
    assert.equal((await call("clinical_ops", "GET", path)).status, 200);
    assert.equal((await list("clinical_ops")).total, 1);
    const [reason] = await t.runtime.db.query<{ r: unknown }>(
      sql`select data->'reason' as r from events where type = 'PatientDeleted'`,
    );
    assert.ok(JSON.stringify(reason!.r).includes("$sealed")); // the reason may hold PHI
  } finally {
    await t.close();
  }
});

Deno.test("patients: each role's view, care teams and patient users", async () => {
  const { t, call, ids } = await setup();
  try {
    const p = await (await call("admin", "POST", "/v1/patients", ada)).json();
    const other = await (await call("admin", "POST", "/v1/patients", {
      ...ada,
      mrn: "MRN-0002",
      firstName: "Bob",
    })).json();
    const path = `/v1/patients/${p.id}`;
    const status = async (role: string, method = "GET", q = path) =>
      (await call(role, method, q)).status;
    assert.equal(await status("reception"), 200);
    assert.equal(await status("clinical_ops"), 200);
    assert.equal(await status("analyst"), 403);
    assert.equal(await status("auditor"), 403);
    assert.equal(await status("practitioner"), 403);
    assert.equal((await (await call("practitioner", "GET", "/v1/patients")).json()).total, 0);

    assert.equal(
      (await call("reception", "POST", `${path}/care-team`, { practitionerId: ids.practitioner }))
        .status,
      403,
    );
    assert.equal(
      (await call("clinical_ops", "POST", `${path}/care-team`, { practitionerId: ids.reception }))
        .status,
      404,
    );
    assert.equal(
      (await call("clinical_ops", "POST", `${path}/care-team`, {
        practitionerId: ids.practitioner,
      })).status,
      201,
    );
    assert.equal(await status("practitioner"), 200);
    assert.equal(await status("practitioner", "GET", `/v1/patients/${other.id}`), 403);
    const mine = await (await call("practitioner", "GET", "/v1/patients")).json();
    assert.deepEqual(mine.items.map((x: { id: string }) => x.id), [p.id]);
    assert.equal(
      (await call("practitioner", "PATCH", path, { phone: "+15559990000" })).status,
      200,
    );
    assert.equal((await call("practitioner", "DELETE", `${path}?reason=x`)).status, 403);
    assert.equal(
      (await call("admin", "DELETE", `${path}/care-team/${ids.practitioner}`)).status,
      204,
    );
    assert.equal(await status("practitioner"), 403);

    // a patient user sees their own record only, read-only
    const patientUser = await (await call("admin", "POST", "/v1/users", {
      email: "ada.patient@example.org",
      name: "Ada",
      role: "patient",
      password: "patients have passwords too",
      patientId: p.id,
    })).json();
    assert.equal(patientUser.patientId, p.id);
    const token =
      (await login(t.app, "ada.patient@example.org", "patients have passwords too")).body
        .accessToken;
    const asPatient = (q: string, method = "GET") =>
      t.app.request(q, { method, headers: bearer(token) });
    assert.equal((await asPatient(path)).status, 200);
    assert.equal((await asPatient(`/v1/patients/${other.id}`)).status, 403);
    assert.equal((await asPatient("/v1/patients")).status, 403);
    const denied = await accessEvents(t, "AccessDenied");
    assert.ok(denied.length >= 8);
  } finally {
    await t.close();
  }
});

Deno.test("patients: search, filters, ordering and keyset pages over 300 patients", async () => {
  const { t, call } = await setup();
  try {
    const first = ["Ann", "Bea", "Cal", "Dan", "Eve", "Fay"];
    const last = ["Smith", "Smyth", "Jones", "Johnson", "Brown"];
    const cities = [["Springfield", "IL"], ["Portland", "OR"], ["Portland", "ME"]];
    const now = t.runtime.sessions.now();
    const all: {
      id: string;
      firstName: string;
      lastName: string;
      dateOfBirth: string;
      gender: string;
      city: string;
      state: string;
      mrn: string;
    }[] = [];
    for (let i = 0; i < 300; i++) {
      const [city, state] = cities[i % 3]!;
      const p = await registerPatient(
        t.runtime.store,
        t.runtime.indexKey,
        {
          mrn: `M${String(i).padStart(4, "0")}`,
          firstName: first[i % 6]!,
          lastName: last[(i * 7) % 5]!,
          dateOfBirth: `19${String(40 + (i % 60)).padStart(2, "0")}-0${1 + (i % 9)}-1${i % 10}`,
          gender: (["M", "F", "O", "U"] as const)[i % 4]!,
          address: { line1: "x", city: city!, state: state!, zip: "12345" },
        },
        { actorId: "seed" },
        now,
      );
      all.push({
        id: p.id,
        firstName: p.firstName,
        lastName: p.lastName,
        dateOfBirth: p.dateOfBirth,
        gender: p.gender,
        city: city!,
        state: state!,
        mrn: p.mrn,
      });
    }
    const fetchAll = async (q: string) => {
      const out: string[] = [];
      let cursor: string | null = null;
      let total = -1;
      do {
        const url: string = `/v1/patients?limit=37&${q}${
          cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""
        }`;
        const res = await call("clinical_ops", "GET", url);
        assert.equal(res.status, 200);
        const page = await res.json();
        total = page.total;
        out.push(...page.items.map((x: { id: string }) => x.id));
        cursor = page.nextCursor;
      } while (cursor);
      assert.equal(out.length, total);
      return out;
    };
    const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    const expect = (rows: typeof all, key: (p: (typeof all)[0]) => string, desc = false) =>
      [...rows].sort((a, b) => {
        const ka = key(a), kb = key(b);
        const c = ka < kb ? -1 : ka > kb ? 1 : byId(a, b);
        return desc ? -c : c;
      }).map((p) => p.id);

    assert.deepEqual(
      await fetchAll("ordering=last_name"),
      expect(all, (p) => p.lastName.toLowerCase()),
    );
    assert.deepEqual(
      await fetchAll("ordering=-date_of_birth"),
      expect(all, (p) => p.dateOfBirth, true),
    );
    assert.deepEqual(
      await fetchAll("ordering=first_name&gender=F"),
      expect(all.filter((p) => p.gender === "F"), (p) => p.firstName.toLowerCase()),
    );
    assert.deepEqual(
      await fetchAll("ordering=-last_name&city=portland&state=or"),
      expect(
        all.filter((p) => p.city === "Portland" && p.state === "OR"),
        (p) => p.lastName.toLowerCase(),
        true,
      ),
    );
    // case-insensitive prefix on first name, last name or MRN
    assert.deepEqual(
      await fetchAll("search=sm&ordering=last_name"),
      expect(
        all.filter((p) => /^sm/i.test(p.lastName) || /^sm/i.test(p.firstName)),
        (p) => p.lastName.toLowerCase(),
      ),
    );
    assert.deepEqual(
      await fetchAll("search=m012&ordering=last_name"),
      expect(all.filter((p) => p.mrn.startsWith("M012")), (p) => p.lastName.toLowerCase()),
    );
    assert.deepEqual(await fetchAll("search=%25"), []); // LIKE wildcards are literal
    assert.equal((await call("clinical_ops", "GET", "/v1/patients?limit=101")).status, 422);
    assert.equal((await call("clinical_ops", "GET", "/v1/patients?ordering=ssn")).status, 422);
    assert.equal((await call("clinical_ops", "GET", "/v1/patients?cursor=bogus")).status, 422);
    // each page read was audited with the ids it returned, never the query
    const searched = await accessEvents(t, "PatientsSearched");
    assert.ok(searched.length > 10);
    assert.ok(!JSON.stringify(searched).includes("portland"));
  } finally {
    await t.close();
  }
});

Deno.test("patients: as-of reads fold the record as it stood then", async () => {
  const { c, t, call, tokens } = await setup();
  // hours pass below: access tokens expire, so log in again after each jump
  const relogin = async () => {
    for (const role of ["admin", "clinical_ops"]) {
      tokens[role] = (await login(t.app, `${role}@clinic.test`)).body.accessToken;
    }
  };
  try {
    const p = await (await call("admin", "POST", "/v1/patients", ada)).json();
    const path = `/v1/patients/${p.id}`;
    const t0 = c.now().toISOString();
    c.advance(3600_000);
    await relogin();
    await call("admin", "PATCH", path, { lastName: "Byron" });
    const t1 = c.now().toISOString();
    c.advance(3600_000);
    await relogin();
    await call("admin", "PATCH", path, { lastName: "King" });
    const asOf = async (iso: string) => {
      const res = await call("admin", "GET", `${path}?asOf=${iso}`);
      const body = await res.json();
      assert.equal(res.status, 200, JSON.stringify(body));
      return body;
    };
    assert.equal((await asOf(t0)).lastName, "Lovelace");
    assert.equal((await asOf(t1)).lastName, "Byron");
    assert.equal((await asOf(c.now().toISOString())).lastName, "King");
    assert.equal((await call("admin", "GET", `${path}?asOf=2000-01-01T00:00:00Z`)).status, 404);
    const viewed = await accessEvents(t, "PatientViewed");
    assert.deepEqual(viewed.slice(-3).map((v) => v.data.asOf), [t0, t1, c.now().toISOString()]);
  } finally {
    await t.close();
  }
});

Deno.test("patients: asOf needs patient.read too; auditors read no current PHI through it", async () => {
  const { c, t, call, ids } = await setup();
  try {
    const p = await (await call("admin", "POST", "/v1/patients", ada)).json();
    const path = `/v1/patients/${p.id}`;
    const before = (await accessEvents(t, "AccessDenied")).length;
    // the exploit: plain GET is 403, so asOf=<now> must be too
    for (const role of ["auditor", "clinical_ops", "reception", "analyst"]) {
      const res = await call(role, "GET", `${path}?asOf=${c.now().toISOString()}`);
      assert.equal(res.status, 403, role);
      const body = await res.json();
      assert.equal(body.type, "/problems/forbidden");
      assert.ok(!JSON.stringify(body).includes("Lovelace"));
    }
    // and the auditor loses the clinical history (their own audited surface comes apart)
    assert.equal((await call("auditor", "GET", `${path}/history`)).status, 403);
    const denied = (await accessEvents(t, "AccessDenied")).slice(before);
    assert.equal(denied.length, 5);
    assert.deepEqual(denied.map((d) => [d.data.actorId, d.data.action]), [
      [ids.auditor, "patient.read"],
      [ids.clinical_ops, "patient.read_as_of"],
      [ids.reception, "patient.read_as_of"],
      [ids.analyst, "patient.read"],
      [ids.auditor, "patient.history"],
    ]);
    assert.equal((await accessEvents(t, "PatientViewed")).length, 0);
    assert.equal((await call("admin", "GET", `${path}?asOf=${c.now().toISOString()}`)).status, 200);
  } finally {
    await t.close();
  }
});

Deno.test("patients: every kind of read leaves exactly one access event with actor, IP and user agent", async () => {
  const { t, call, ids } = await setup();
  try {
    const p = await (await call("admin", "POST", "/v1/patients", ada)).json();
    const kinds: [string, string, string][] = [
      ["PatientViewed", "clinical_ops", `/v1/patients/${p.id}`],
      ["PatientsSearched", "reception", "/v1/patients?search=ada"],
      ["PatientHistoryViewed", "clinical_ops", `/v1/patients/${p.id}/history`],
      ["CareTeamViewed", "reception", `/v1/patients/${p.id}/care-team`],
    ];
    for (const [type, role, path] of kinds) {
      const before = (await accessEvents(t, type)).length;
      const res = await call(role, "GET", path);
      assert.equal(res.status, 200, `${role} ${path}`);
      const after = await accessEvents(t, type);
      assert.equal(after.length, before + 1, type);
      const e = after.at(-1)!;
      assert.equal(e.m.actorId, ids[role]);
      assert.equal(e.m.actorRole, role);
      assert.equal(e.m.ip, "10.9.8.7");
      assert.equal(e.m.userAgent, `tests/${role}`);
      assert.ok(e.m.requestId);
      if (type !== "PatientsSearched") assert.equal(e.data.patientId, p.id);
      else assert.deepEqual(e.data.patientIds, [p.id]);
    }
    // PUT and PATCH answer with the whole record: each is one PatientViewed as well
    for (
      const [method, body] of [["PUT", { ...ada, phone: "+15551230002" }], ["PATCH", {
        lastName: "Byron",
      }]] as const
    ) {
      const before = (await accessEvents(t, "PatientViewed")).length;
      const res = await call("reception", method, `/v1/patients/${p.id}`, body);
      assert.equal(res.status, 200, method);
      const after = await accessEvents(t, "PatientViewed");
      assert.equal(after.length, before + 1, method);
      assert.deepEqual(after.at(-1)!.data, { patientId: p.id, asOf: null });
      assert.equal(after.at(-1)!.m.actorId, ids.reception);
    }
    // history shows who did what and from where, unsealed for a role allowed to see it
    for (const role of ["admin", "clinical_ops"]) {
      const history = await (await call(role, "GET", `/v1/patients/${p.id}/history`)).json();
      assert.equal(history.items[0].type, "PatientRegistered");
      assert.equal(history.items[0].data.lastName, "Lovelace");
      const [registered, , patched] = history.items;
      assert.equal(registered.actorId, ids.admin);
      assert.equal(registered.actorName, "Test admin");
      assert.equal(registered.actorRole, "admin");
      assert.equal(registered.ip, "10.9.8.7");
      assert.equal(registered.userAgent, "tests/admin");
      assert.match(registered.requestId, /^[0-9a-f-]{36}$/);
      assert.deepEqual(
        [patched.type, patched.actorName, patched.userAgent, patched.ip],
        ["PatientUpdated", "Test reception", "tests/reception", "10.9.8.7"],
      );
      // the request id is the one the write answered with
      const [w] = await t.runtime.db.query<{ r: string }>(sql`select metadata->>'requestId' as r
        from events where stream_id = ${`patient-${p.id}`} and stream_version = 3`);
      assert.equal(patched.requestId, w!.r);
    }
    // logs carry no PHI
    const logs = t.logs.text();
    for (const phi of ["Lovelace", "MRN-0001", "1990-12-10", "ada@example.org", "+15551230001"]) {
      assert.ok(!logs.includes(phi), phi);
    }
  } finally {
    await t.close();
  }
});

Deno.test("patients: a read whose audit event cannot be written fails closed (503)", async (ctx) => {
  // on both drivers: the access event is appended while the record is unsealed
  for (const kind of await drivers()) {
    await ctx.step(kind, async () => {
      const pg = kind === "postgres" ? await createTestDatabase({ app: true }) : null;
      const { t, call } = await setup(pg ? { DATABASE_URL: pg.url } : {});
      try {
        const p = await (await call("admin", "POST", "/v1/patients", ada)).json();
        // the database refuses access events (a real failure, not a stub)
        await t.runtime.db.exec(`create function no_access() returns trigger language plpgsql as $$
      begin if new.stream_id like 'access-%' then raise exception 'audit store down'; end if;
      return new; end $$;
      create trigger no_access before insert on events for each row execute function no_access();`);
        const res = await call("clinical_ops", "GET", `/v1/patients/${p.id}`);
        assert.equal(res.status, 503);
        const body = await res.json();
        assert.equal(body.type, "/problems/unavailable");
        assert.ok(!JSON.stringify(body).includes("Lovelace"));
        assert.equal((await call("clinical_ops", "GET", "/v1/patients")).status, 503);
      } finally {
        await t.close();
        await pg?.drop();
      }
    });
  }
});

Deno.test("patients: a read is audited only when it answers the record (404s append nothing)", async (ctx) => {
  // on both drivers: the read takes its row state and stream in one query
  for (const kind of await drivers()) {
    await ctx.step(kind, async () => {
      const pg = kind === "postgres" ? await createTestDatabase({ app: true }) : null;
      const { t, call } = await setup(pg ? { DATABASE_URL: pg.url } : {});
      try {
        const viewed = async () =>
          (await t.runtime.db.query(sql`select 1 from events where type = 'PatientViewed'`)).length;
        const p = await (await call("admin", "POST", "/v1/patients", ada)).json();
        const path = `/v1/patients/${p.id}`;

        const before = await viewed();
        assert.equal(
          (await call("clinical_ops", "GET", `/v1/patients/${crypto.randomUUID()}`)).status,
          404,
        );
        assert.equal(await viewed(), before, "an unknown id is no read");

        const ok = await call("clinical_ops", "GET", path);
        assert.equal(ok.status, 200);
        const body = await ok.json();
        assert.equal(body.lastName, ada.lastName);
        assert.equal(body.phone, ada.phone);
        assert.equal(ok.headers.get("etag"), '"1"');
        assert.equal(await viewed(), before + 1);

        assert.equal(
          (await call("clinical_ops", "DELETE", `${path}?reason=duplicate`)).status,
          204,
        );
        assert.equal((await call("clinical_ops", "GET", path)).status, 404);
        assert.equal(
          await viewed(),
          before + 1,
          "a deleted record hidden from the actor is no read",
        );
        const seen = await call("admin", "GET", path);
        assert.equal(seen.status, 200);
        assert.equal((await seen.json()).deleted, true);
        assert.equal(await viewed(), before + 2, "who may see deleted records reads them, audited");
      } finally {
        await t.close();
        await pg?.drop();
      }
    });
  }
});

Deno.test("patients: the care team is readable; first add 201, duplicate 200, both with the team; 20 concurrent adds append once", async () => {
  const { t, call, ids } = await setup();
  try {
    const p = await (await call("admin", "POST", "/v1/patients", ada)).json();
    const team = `/v1/patients/${p.id}/care-team`;
    const second = await createUser(t.runtime, "practitioner", "second.doc@clinic.test");
    const empty = await call("reception", "GET", team);
    assert.equal(empty.status, 200);
    assert.deepEqual(await empty.json(), { items: [] });
    assert.equal((await call("analyst", "GET", team)).status, 403);
    assert.equal((await call("practitioner", "GET", team)).status, 403); // no relation yet

    const first = await call("clinical_ops", "POST", team, { practitionerId: ids.practitioner });
    assert.equal(first.status, 201);
    const body = await first.json();
    assert.equal(body.items.length, 1);
    assert.equal(body.items[0].practitionerId, ids.practitioner);
    assert.equal(body.items[0].name, "Test practitioner");
    assert.ok(!Number.isNaN(Date.parse(body.items[0].addedAt)));
    const again = await call("clinical_ops", "POST", team, { practitionerId: ids.practitioner });
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), body);
    // a member reads the team (they may read the patient now)
    assert.equal((await call("practitioner", "GET", team)).status, 200);

    // 20 concurrent adds of one practitioner: one 201, nineteen 200, one event
    const statuses = await Promise.all(
      Array.from({ length: 20 }, () => call("admin", "POST", team, { practitionerId: second.id })),
    ).then((rs) => Promise.all(rs.map(async (r) => (await r.json(), r.status))));
    assert.deepEqual(
      [statuses.filter((x) => x === 201).length, statuses.filter((x) => x === 200).length],
      [1, 19],
    );
    const added = await t.runtime.db.query<{ n: number }>(sql`select count(*)::int as n from events
      where type = 'CareTeamMemberAdded' and data->>'practitionerId' = ${second.id}`);
    assert.equal(added[0]!.n, 1);
    const now = await (await call("reception", "GET", team)).json();
    assert.deepEqual(now.items.map((m: { practitionerId: string }) => m.practitionerId), [
      ids.practitioner,
      second.id,
    ]);
    // every answer that shows the team is audited (GETs and adds), naming the members shown
    const viewed = await accessEvents(t, "CareTeamViewed");
    assert.equal(viewed.length, 1 + 2 + 1 + 20 + 1);
    assert.deepEqual(viewed.at(-1)!.data, {
      patientId: p.id,
      practitionerIds: [ids.practitioner, second.id],
    });
    assert.equal(
      (await call("admin", "DELETE", `${team}/${ids.practitioner}`)).status,
      204,
    );
    assert.equal((await call("practitioner", "GET", team)).status, 403);
    assert.equal(
      (await call("admin", "GET", `/v1/patients/${crypto.randomUUID()}/care-team`)).status,
      404,
    );
  } finally {
    await t.close();
  }
});

Deno.test("care team decider: add once, remove a member only; the fold keeps join order and time", () => {
  const [P, A, B] = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
  const at = (iso: string) => new Date(iso);
  const given = [
    {
      type: "CareTeamMemberAdded",
      data: { patientId: P, practitionerId: B },
      recordedAt: at("2026-01-01T00:00:00Z"),
    },
    {
      type: "CareTeamMemberAdded",
      data: { patientId: P, practitionerId: A },
      recordedAt: at("2026-01-02T00:00:00Z"),
    },
  ];
  const team = foldTeam(given);
  assert.deepEqual([...teamMembers(given)], [
    [B, "2026-01-01T00:00:00.000Z"],
    [A, "2026-01-02T00:00:00.000Z"],
  ]);
  assert.deepEqual(decideTeam({ type: "AddMember", patientId: P, practitionerId: A }, team), []);
  assert.deepEqual(decideTeam({ type: "RemoveMember", patientId: P, practitionerId: A }, team), [
    { type: "CareTeamMemberRemoved", data: { patientId: P, practitionerId: A } },
  ]);
  const gone = foldTeam([...given, {
    type: "CareTeamMemberRemoved",
    data: { patientId: P, practitionerId: B },
    recordedAt: at("2026-01-03T00:00:00Z"),
  }]);
  assert.deepEqual([...gone], [A]);
  assert.deepEqual(decideTeam({ type: "RemoveMember", patientId: P, practitionerId: B }, gone), []);
  assert.deepEqual(decideTeam({ type: "AddMember", patientId: P, practitionerId: B }, gone), [
    { type: "CareTeamMemberAdded", data: { patientId: P, practitionerId: B } },
  ]);
});

Deno.test("patients: 20 concurrent registrations with one MRN: one is written whole, no key left behind", async (ctx) => {
  // on both drivers: the claim, the registration and the data key go in one transaction
  for (const kind of await drivers()) {
    await ctx.step(kind, async () => {
      const pg = kind === "postgres" ? await createTestDatabase({ app: true }) : null;
      const { t } = await setup(pg ? { DATABASE_URL: pg.url } : {});
      try {
        const { store, indexKey } = t.runtime;
        const now = t.runtime.sessions.now();
        const settled = await Promise.allSettled(
          Array.from({ length: 20 }, (_, i) =>
            registerPatient(
              store,
              indexKey,
              { ...ada, gender: "F", firstName: `Ada${i}` },
              { actorId: "seed" },
              now,
            )),
        );
        const won = settled.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
        assert.equal(won.length, 1);
        for (const s of settled) {
          if (s.status === "rejected") assert.ok(s.reason instanceof ConflictError, s.reason);
        }
        const [n] = await t.runtime.db.query<{ p: number; e: number; k: number; c: number }>(
          sql`select (select count(*)::int from patients) as p,
            (select count(*)::int from events where stream_id like 'patient-%') as e,
            (select count(*)::int from subject_keys where subject_id like 'patient-%') as k,
            (select count(*)::int from events where type = 'MrnReserved') as c`,
        );
        assert.deepEqual(n, { p: 1, e: 1, k: 1, c: 1 });
        // the winner's record opens with the stored key (a codec that caches nothing)
        const [e] = await t.runtime.db.query<{ data: Record<string, unknown> }>(
          sql`select data from events where stream_id = ${`patient-${won[0]!.id}`}`,
        );
        const cold = new PhiCodec(t.runtime.db, t.config.masterKey!);
        const opened = await cold.unsealPayload(e!.data);
        assert.equal(opened.data.firstName, won[0]!.firstName);
        assert.deepEqual(opened.erasedFields, []);
        // the next registration of another MRN is not held up by the lost ones
        const other = await registerPatient(
          store,
          indexKey,
          { ...ada, gender: "F", mrn: "MRN-0002" },
          { actorId: "seed" },
          now,
        );
        assert.equal(other.version, 1);
      } finally {
        await t.close();
        await pg?.drop();
      }
    });
  }
});
