import assert from "node:assert/strict";
import { problemFor } from "../src/http/problem.ts";
import { sql } from "../src/store/sql.ts";
import { useBreakGlass } from "../src/clinical/break_glass.ts";
import { openTestApp } from "./support/app.ts";
import { appendGrant } from "./support/grants.ts";
import { bearer, createUser, login } from "./support/users.ts";

/**
 * Hostile input (issue 10 items 24, 25, 27): NUL characters, forged or
 * broken cursors, and 422s that must name every bad field. None is a 5xx.
 */

const ada = {
  mrn: "MRN-0001",
  firstName: "Ada",
  lastName: "Lovelace",
  dateOfBirth: "1990-12-10",
  gender: "F",
  email: "ada@example.org",
};

/** An app with an admin and a reception user logged in, one patient and one encounter. */
const setup = async () => {
  let t = Date.parse("2026-11-24T12:00:00Z");
  const app = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000" }, {
    now: () => new Date(t++),
  });
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  for (const role of ["admin", "reception", "practitioner"] as const) {
    ids[role] = (await createUser(app.runtime, role)).id;
    tokens[role] = (await login(app.app, `${role}@clinic.test`)).body.accessToken;
  }
  const call = (
    method: string,
    path: string,
    body?: unknown,
    role = "admin",
    headers: Record<string, string> = {},
  ) =>
    app.app.request(path, {
      method,
      headers: {
        ...(tokens[role] ? bearer(tokens[role]) : {}),
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
        ...headers,
      },
      ...(body !== undefined
        ? { body: typeof body === "string" ? body : JSON.stringify(body) }
        : {}),
    });
  const patient = await (await call("POST", "/v1/patients", ada)).json();
  const encounter = await (await call("POST", `/v1/patients/${patient.id}/encounters`, {
    practitionerId: ids.practitioner,
    startsAt: "2026-12-01T09:00:00Z",
    reason: "check-up",
  })).json();
  assert.ok(patient.id && encounter.id);
  return { t: app, call, tokens, ids, patient, encounter };
};

/** A problem response: its status, problem+json, its type; returns the body. */
const expectProblem = async (res: Response, status: number, type: string) => {
  const body = await res.json();
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal(body.type, type);
  return body as { errors?: { path: string; message: string }[] };
};

const paths = (body: { errors?: { path: string }[] }) =>
  (body.errors ?? []).map((e) => e.path).sort();

const eventCount = async (t: Awaited<ReturnType<typeof openTestApp>>) =>
  (await t.runtime.db.query<{ n: number }>(sql`select count(*)::int as n from events`))[0]!.n;

Deno.test("bad input: a NUL in a path id is a 404, in a query or body value a 422 naming the field", async () => {
  const { t, call, patient, encounter, tokens } = await setup();
  try {
    const before = await eventCount(t);
    // path ids of every resource, and a denial on one (reception may not read history)
    for (
      const [path, role] of [
        ["/v1/patients/%00", "admin"],
        [`/v1/patients/${patient.id}%00`, "admin"],
        [`/v1/patients/${patient.id}%00/history`, "reception"],
        ["/v1/patients/%00/history", "reception"],
        [`/v1/encounters/${encounter.id}%00`, "admin"],
        [`/v1/patients/${patient.id}%00/encounters`, "admin"],
        ["/v1/media/%00", "admin"],
        [`/v1/patients/${patient.id}/media%00`, "admin"],
        ["/v1/users/%00", "admin"],
        [`/v1/users/${crypto.randomUUID()}%00`, "reception"],
      ]
    ) {
      await expectProblem(await call("GET", path!, undefined, role), 404, "/problems/not-found");
    }
    await expectProblem(
      await call("PATCH", `/v1/patients/${patient.id}%00`, { firstName: "A" }),
      404,
      "/problems/not-found",
    );
    await expectProblem(
      await call("PATCH", "/v1/users/%00", { active: false }),
      404,
      "/problems/not-found",
    );

    // search, filters and cursor of the patient list; the users list
    for (const q of ["search", "city", "gender", "state", "cursor", "ordering"]) {
      const body = await expectProblem(
        await call("GET", `/v1/patients?${q}=Lo%00ve`),
        422,
        "/problems/validation",
      );
      assert.deepEqual(paths(body), [q]);
    }
    const both = await expectProblem(
      await call("GET", "/v1/patients?search=%00&city=x%00"),
      422,
      "/problems/validation",
    );
    assert.deepEqual(paths(both), ["city", "search"]);
    for (const q of ["cursor=%00", "role=admin%00"]) {
      await expectProblem(await call("GET", `/v1/users?${q}`), 422, "/problems/validation");
    }
    await expectProblem(
      await call("GET", `/v1/patients/${patient.id}/media?cursor=a%00b`),
      422,
      "/problems/validation",
    );

    // JSON bodies: names and emails of patients, users, a login
    const nul = "Lo\u0000velace";
    const cases: [string, string, unknown, string][] = [
      ["POST", "/v1/patients", { ...ada, mrn: "MRN-2", lastName: nul }, "lastName"],
      ["POST", "/v1/patients", { ...ada, mrn: "MRN-3", email: "a\u0000@example.org" }, "email"],
      ["POST", "/v1/patients", {
        ...ada,
        mrn: "MRN-4",
        address: { line1: "1\u0000", city: "X", state: "IL", zip: "62701" },
      }, "address.line1"],
      ["PATCH", `/v1/patients/${patient.id}`, { firstName: nul }, "firstName"],
      ["PATCH", `/v1/patients/${patient.id}`, { email: "x\u0000@example.org" }, "email"],
      ["POST", "/v1/users", {
        email: "n\u0000@clinic.test",
        name: "N",
        role: "reception",
        password: "twelve chars min",
      }, "email"],
      ["POST", "/v1/users", {
        email: "n@clinic.test",
        name: nul,
        role: "reception",
        password: "twelve chars min",
      }, "name"],
      ["POST", "/v1/auth/login", { email: "admin@clinic.test\u0000", password: "x" }, "email"],
      ["POST", "/v1/patients", { ...ada, ["nick\u0000name"]: "x" }, "nick\\u0000name"],
      ["POST", `/v1/patients/${patient.id}/encounters`, {
        practitionerId: crypto.randomUUID(),
        startsAt: "2026-12-01T09:00:00Z",
        reason: ["ok", "b\u0000d"],
      }, "reason.1"],
    ];
    for (const [method, path, body, field] of cases) {
      const res = await expectProblem(await call(method, path, body), 422, "/problems/validation");
      assert.deepEqual(paths(res), [field], `${method} ${path}`);
      assert.ok(!JSON.stringify(res).includes("velace"), "the value is not echoed");
    }
    // multipart upload fields: the guard does not read uploads, the pipeline refuses them
    for (const field of ["notes", "description"]) {
      const f = new FormData();
      f.set("category", "documents");
      f.set(field, "a\u0000b");
      f.set("file", new Blob(["hello\n"]), "a.txt");
      const up = await t.app.request(`/v1/patients/${patient.id}/documents`, {
        method: "POST",
        headers: bearer(tokens.admin!),
        body: f,
      });
      const body = await expectProblem(up, 422, "/problems/validation");
      assert.deepEqual(paths(body), [field]);
    }
    // a literal backslash-u0000 (escaped backslash) is just text, not a NUL
    const literal = await call("POST", "/v1/patients", {
      ...ada,
      mrn: "MRN-5",
      lastName: "a\\u0000",
    });
    assert.equal(literal.status, 201);

    // nothing refused reached the log: only the one registration above
    assert.equal(await eventCount(t), before + 2); // PatientRegistered + its MRN reservation
    assert.ok(!t.logs.lines.some((l) => l.msg === "unhandled error" || Number(l.status) >= 500));
  } finally {
    await t.close();
  }
});

Deno.test("bad input: text PostgreSQL cannot store is a 422 even past the guard", () => {
  for (const code of ["22P05", "22021"]) {
    const p = problemFor(Object.assign(new Error("unsupported Unicode escape sequence"), { code }));
    assert.equal(p.slug, "validation");
    assert.ok(!p.detail?.includes("Unicode"), "the driver's message is not passed on");
  }
});

Deno.test("bad input: a forged, broken or foreign cursor is a 422 invalid-cursor on every list", async () => {
  const { t, call, patient, tokens } = await setup();
  try {
    for (let i = 0; i < 3; i++) {
      await call("POST", "/v1/patients", { ...ada, mrn: `MRN-1${i}`, lastName: `Byron${i}` });
      await call("POST", "/v1/users", {
        email: `u${i}@clinic.test`,
        name: "U",
        role: "reception",
        password: "twelve chars min",
      });
      const f = new FormData();
      f.set("category", "documents");
      f.set("file", new Blob([`note ${i}\n`]), `n${i}.txt`);
      const up = await t.app.request(`/v1/patients/${patient.id}/documents`, {
        method: "POST",
        headers: bearer(tokens.admin!),
        body: f,
      });
      assert.equal(up.status, 201, await up.text());
      const store = t.runtime.store;
      const someone = crypto.randomUUID();
      await appendGrant(store, {
        patientId: patient.id,
        granteeId: someone,
        hours: 1,
        now: new Date(),
      });
      await useBreakGlass(
        store,
        {
          patientId: patient.id,
          practitionerId: someone,
          reason: "an emergency of some kind, at night",
        },
        new Date(),
        {},
      );
    }
    const lists = {
      patients: "/v1/patients?limit=1",
      users: "/v1/users?limit=1",
      media: `/v1/patients/${patient.id}/media?limit=1`,
      grants: `/v1/patients/${patient.id}/grants?limit=1`,
      breakGlass: "/v1/audit/break-glass?limit=1",
    };
    const cursors: Record<string, string> = {};
    for (const [name, url] of Object.entries(lists)) {
      const page = await (await call("GET", url)).json();
      assert.ok(page.nextCursor, name);
      cursors[name] = page.nextCursor;
      // the control: our own cursor works
      const next = await call("GET", `${url}&cursor=${encodeURIComponent(page.nextCursor)}`);
      assert.equal(next.status, 200, name);
      assert.notEqual((await next.json()).items[0].id, page.items[0].id);
    }
    // a cursor carries no readable position (a last name is PHI, and URLs get logged)
    const p = await (await call("GET", "/v1/patients?limit=1")).json();
    assert.ok(!atob(p.nextCursor.replace(/-/g, "+").replace(/_/g, "/")).includes("byron"));

    const b64 = (s: string) => btoa(s).replace(/=+$/, "");
    const flip = (c: string, at: number) =>
      c.slice(0, at) + (c[at] === "A" ? "B" : "A") + c.slice(at + 1);
    for (const [name, url] of Object.entries(lists)) {
      const own = cursors[name]!;
      const bad = [
        "garbage!",
        "%%%",
        "a",
        own.slice(0, own.length - 5), // truncated
        own.slice(0, 10),
        flip(own, 3), // inside the IV
        flip(own, 20), // inside the ciphertext
        flip(own, own.length - 2), // inside the tag
        b64("not json"),
        b64(JSON.stringify({ k: "lovelace", id: patient.id })), // the old, unsigned formats
        b64(JSON.stringify(["2026-11-24T12:00:00.000000Z", patient.id])),
        b64("admin@clinic.test"),
        b64("a\u0000b"), // a NUL in the old formats' keys reached SQL
        b64(JSON.stringify({ k: "\u0000", id: patient.id })),
        b64(JSON.stringify({ k: 1, id: [] })),
        b64(JSON.stringify(null)),
        "x".repeat(400),
        ...Object.entries(cursors).filter(([n]) => n !== name).map(([, c]) => c), // another list's
      ];
      for (const c of bad) {
        const res = await call("GET", `${url}&cursor=${encodeURIComponent(c)}`);
        const body = await expectProblem(res, 422, "/problems/invalid-cursor");
        assert.deepEqual(paths(body), ["cursor"], `${name}: ${c}`);
      }
    }
    // a patients cursor is bound to its ordering
    const byDob = await (await call("GET", "/v1/patients?limit=1&ordering=date_of_birth")).json();
    await expectProblem(
      await call("GET", `/v1/patients?limit=1&cursor=${encodeURIComponent(byDob.nextCursor)}`),
      422,
      "/problems/invalid-cursor",
    );
    assert.equal(
      (await call(
        "GET",
        `/v1/patients?limit=1&ordering=date_of_birth&cursor=${
          encodeURIComponent(byDob.nextCursor)
        }`,
      )).status,
      200,
    );
    // a cursor of another installation (another master key) is refused too
    const other = await openTestApp();
    try {
      await createUser(other.runtime, "admin", "a1@clinic.test");
      await createUser(other.runtime, "admin", "a2@clinic.test");
      const tok = (await login(other.app, "a1@clinic.test")).body.accessToken;
      const page = await (await other.app.request("/v1/users?limit=1", { headers: bearer(tok) }))
        .json();
      await expectProblem(
        await call("GET", `/v1/users?limit=1&cursor=${encodeURIComponent(page.nextCursor)}`),
        422,
        "/problems/invalid-cursor",
      );
    } finally {
      await other.close();
    }
    assert.ok(!t.logs.lines.some((l) => l.msg === "unhandled error" || Number(l.status) >= 500));
  } finally {
    await t.close();
  }
});

Deno.test("bad input: one 422 lists every bad field, a future birth date and unknown keys by name", async () => {
  const { t, call, patient } = await setup();
  try {
    const before = await eventCount(t);
    const res = await call("POST", "/v1/patients", {
      ...ada,
      mrn: "MRN-9",
      email: "not-an-email",
      dateOfBirth: "2027-01-01",
      nickname: "Ada",
    });
    const body = await expectProblem(res, 422, "/problems/validation");
    assert.deepEqual(paths(body), ["dateOfBirth", "email", "nickname"]);
    assert.match(body.errors!.find((e) => e.path === "dateOfBirth")!.message, /future/);

    // the same on an edit, with an unknown key inside a nested object
    const patch = await call("PATCH", `/v1/patients/${patient.id}`, {
      phone: "555",
      dateOfBirth: "2099-02-03",
      address: { line1: "1 Way", city: "X", state: "IL", zip: "62701", floor: 3 },
    });
    assert.deepEqual(paths(await expectProblem(patch, 422, "/problems/validation")), [
      "address.floor",
      "dateOfBirth",
      "phone",
    ]);
    // a date over 150 years back joins too; a malformed date is reported once, by the schema
    const old = await call("POST", "/v1/patients", { ...ada, dateOfBirth: "1850-01-01", x: 1 });
    assert.deepEqual(paths(await expectProblem(old, 422, "/problems/validation")), [
      "dateOfBirth",
      "x",
    ]);
    const malformed = await call("POST", "/v1/patients", { ...ada, dateOfBirth: "2099-13-45" });
    assert.deepEqual(paths(await expectProblem(malformed, 422, "/problems/validation")), [
      "dateOfBirth",
    ]);
    // alone, a future date is still refused (by the decider, with the same clock)
    const alone = await call("POST", "/v1/patients", {
      ...ada,
      mrn: "MRN-8",
      dateOfBirth: "2027-01-01",
    });
    assert.deepEqual(paths(await expectProblem(alone, 422, "/problems/validation")), [
      "dateOfBirth",
    ]);
    // unknown keys elsewhere are named too
    const user = await call("POST", "/v1/users", {
      email: "nope",
      name: "N",
      role: "reception",
      password: "twelve chars min",
      extra: 1,
    });
    assert.deepEqual(paths(await expectProblem(user, 422, "/problems/validation")), [
      "email",
      "extra",
    ]);
    assert.equal(await eventCount(t), before);
  } finally {
    await t.close();
  }
});
