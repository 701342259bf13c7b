import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import { clinics } from "../projections/clinics.ts";
import {
  licenseStream,
  loadClinic,
  registerClinic,
  updateClinic,
} from "../src/clinical/clinics.ts";
import { clinicDecider } from "../src/domain/clinic.ts";
import {
  ConflictError,
  NotFoundError,
  PreconditionFailedError,
  ValidationError,
} from "../src/errors.ts";
import { sql } from "../src/store/sql.ts";
import { spec } from "./support/decider.ts";
import { countEvents, eachApp, fieldPaths, problem } from "./support/directory.ts";
import { createUser } from "./support/users.ts";
import { eachDriver, type Harness } from "./support/harness.ts";
import { givenEventsThenRows } from "./support/projection.ts";

/** Clinics (issue 12, first slice): the decider, the read model, the license claim. */
const C = "00000000-0000-4000-8000-0000000000c1";
const meta = { actorId: "00000000-0000-4000-8000-0000000000a1" };

const details = (licenseNumber = "LIC-1", name = "North Clinic") => ({
  name,
  licenseNumber,
  address: { line1: "1 Main St", line2: null, city: "Springfield", state: "IL", zip: "62701" },
  phone: "555-0100",
  email: "north@example.org",
  operatingHours: { mon: [{ open: "08:00", close: "12:00" }, { open: "13:00", close: "17:00" }] },
  services: ["vaccination", "x-ray"],
});

const registered = { type: "ClinicRegistered" as const, data: { clinicId: C, ...details() } };

Deno.test("clinic decider: register, update only what changed, deactivate, reactivate", () => {
  spec(clinicDecider).given([]).when({ type: "RegisterClinic", clinicId: C, details: details() })
    .then([registered]);
  spec(clinicDecider).given([registered])
    .when({ type: "RegisterClinic", clinicId: C, details: details() }).thenThrows(ConflictError);
  spec(clinicDecider).given([]).when({ type: "UpdateClinic", changes: { name: "X" } })
    .thenThrows(NotFoundError);
  spec(clinicDecider).given([registered])
    .when({ type: "UpdateClinic", changes: { name: "North Clinic", phone: "555-0199" } })
    .then([{ type: "ClinicUpdated", data: { clinicId: C, changes: { phone: "555-0199" } } }]);
  spec(clinicDecider).given([registered]).when({ type: "UpdateClinic", changes: {}, active: true })
    .then([]);
  spec(clinicDecider).given([registered]).when({ type: "UpdateClinic", changes: {}, active: false })
    .then([{ type: "ClinicDeactivated", data: { clinicId: C } }]);
  spec(clinicDecider).given([registered, { type: "ClinicDeactivated", data: { clinicId: C } }])
    .when({ type: "UpdateClinic", changes: {}, active: true })
    .then([{ type: "ClinicReactivated", data: { clinicId: C } }]);
});

eachDriver("read model clinics: registered, updated, deactivated, reactivated", async (h) => {
  const rows = (given: Parameters<typeof givenEventsThenRows>[2]) =>
    givenEventsThenRows(
      h,
      clinics,
      given,
      sql`select id::text, name, name_lower, license_number, phone, email, services,
        operating_hours, active, version from clinics order by id`,
    );
  const stream = `clinic-${C}`;
  const row = {
    id: C,
    name: "North Clinic",
    name_lower: "north clinic",
    license_number: "LIC-1",
    phone: "555-0100",
    email: "north@example.org",
    services: ["vaccination", "x-ray"],
    operating_hours: details().operatingHours,
    active: true,
    version: 1,
  };
  assert.deepEqual(await rows([{ stream, ...registered }]), [row]);
  assert.deepEqual(
    await rows([{
      stream,
      type: "ClinicUpdated",
      data: { clinicId: C, changes: { name: "South Clinic", phone: null, services: [] } },
    }]),
    [{
      ...row,
      name: "South Clinic",
      name_lower: "south clinic",
      phone: null,
      services: [],
      version: 2,
    }],
  );
  const off = await rows([{ stream, type: "ClinicDeactivated", data: { clinicId: C } }]);
  assert.equal(off[0]!.active, false);
  assert.equal(off[0]!.email, "north@example.org");
  const on = await rows([{ stream, type: "ClinicReactivated", data: { clinicId: C } }]);
  assert.deepEqual([on[0]!.active, on[0]!.version], [true, 4]);
}, { catalog });

const eventCount = async (h: Harness) =>
  (await h.db.query<{ n: number }>(sql`select count(*)::int as n from events`))[0]!.n;

eachDriver("clinics: 20 concurrent registrations with one license: one wins", async (h) => {
  const stores = await Promise.all(
    Array.from({ length: 4 }, () => h.openStore({ projections: [clinics] })),
  );
  const results = await Promise.allSettled(
    Array.from(
      { length: 20 },
      (_, i) => registerClinic(stores[i % 4]!, details(i % 2 ? " lic-9 " : "LIC-9"), meta),
    ),
  );
  const ok = results.filter((r) => r.status === "fulfilled");
  const failed = results.filter((r) => r.status === "rejected");
  assert.equal(ok.length, 1);
  for (const f of failed) assert.ok(f.reason instanceof ConflictError, String(f.reason));
  const [n] = await h.db.query<{ n: number }>(sql`select count(*)::int as n from clinics`);
  assert.equal(n!.n, 1);
  assert.equal((await h.store.readStream(licenseStream("lic-9"))).length, 1);
}, { catalog, projections: [clinics] });

eachDriver(
  "clinics: a changed license is claimed; the old one stays with its clinic",
  async (h) => {
    const a = await registerClinic(h.store, details("A-1", "Alpha"), meta);
    const b = await registerClinic(h.store, details("B-1", "Beta"), meta);
    await assert.rejects(
      updateClinic(h.store, b.id, { licenseNumber: "a-1" }, meta),
      ConflictError,
    );
    const a2 = await updateClinic(h.store, a.id, { licenseNumber: "A-2" }, meta, a.version);
    assert.deepEqual([a2.licenseNumber, a2.version], ["A-2", 2]);
    // the old license is kept by its clinic: another may not take it, the clinic may go back
    await assert.rejects(
      updateClinic(h.store, b.id, { licenseNumber: "A-1" }, meta),
      ConflictError,
    );
    const a3 = await updateClinic(h.store, a.id, { licenseNumber: "a-1 " }, meta);
    assert.equal(a3.licenseNumber, "a-1");
    // a stale If-Match is a 412 and claims nothing
    const before = await eventCount(h);
    await assert.rejects(
      updateClinic(h.store, a.id, { licenseNumber: "Z-9" }, meta, 1),
      PreconditionFailedError,
    );
    assert.equal(await eventCount(h), before);
    const off = await updateClinic(h.store, a.id, { active: false }, meta);
    assert.equal(off.active, false);
    assert.equal((await loadClinic(h.store, a.id))!.active, false);
  },
  { catalog, projections: [clinics] },
);

eachDriver("clinics: bad input is a ValidationError and appends nothing", async (h) => {
  const bad: unknown[] = [
    { ...details(), extra: 1 },
    { ...details(), name: 5 },
    { ...details(), name: "  " },
    { ...details(), operatingHours: { mon: [{ open: "25:00", close: "26:00" }] } },
    { ...details(), operatingHours: { mon: [{ open: "12:00", close: "08:00" }] } },
    { ...details(), operatingHours: { funday: [] } },
    { ...details(), services: ["x".repeat(81)] },
    { ...details(), email: "not-an-email" },
    null,
  ];
  for (const input of bad) {
    await assert.rejects(
      registerClinic(h.store, input, meta),
      ValidationError,
      JSON.stringify(input),
    );
  }
  const c = await registerClinic(h.store, details(), meta);
  const before = await eventCount(h);
  await assert.rejects(updateClinic(h.store, c.id, { active: "yes" }, meta), ValidationError);
  await assert.rejects(updateClinic(h.store, c.id, { bogus: 1 }, meta), ValidationError);
  await assert.rejects(
    updateClinic(h.store, crypto.randomUUID(), { name: "X" }, meta),
    NotFoundError,
  );
  assert.equal(await eventCount(h), before);
}, { catalog, projections: [clinics] });

// ---- over HTTP ----

eachApp("clinics over HTTP: register, read, search, page, patch with If-Match", async (t, api) => {
  const { call } = api;
  const res = await call("POST", "/v1/clinics", details("L-100", "North Clinic"), "clinical_ops");
  assert.equal(res.status, 201);
  const north = await res.json();
  assert.equal(res.headers.get("location"), `/v1/clinics/${north.id}`);
  assert.equal(res.headers.get("etag"), '"1"');
  assert.deepEqual(
    { ...north, id: undefined, createdAt: undefined, updatedAt: undefined },
    {
      ...details("L-100", "North Clinic"),
      id: undefined,
      active: true,
      createdAt: undefined,
      updatedAt: undefined,
    },
  );
  assert.match(north.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  // a duplicate license (trimmed, any case) is a 409 and appends nothing
  const before = await countEvents(t);
  const dup = await problem(
    await call("POST", "/v1/clinics", details(" l-100 ", "Other")),
    409,
    "/problems/conflict",
  );
  assert.equal(dup.detail, "a clinic with that license exists");
  assert.equal(await countEvents(t), before);

  for (const [i, name] of ["Alpha Care", "beta clinic", "Gamma Clinic", "delta care"].entries()) {
    assert.equal((await call("POST", "/v1/clinics", details(`L-${i}`, name))).status, 201);
  }
  // every signed-in role reads the directory
  for (const role of ["practitioner", "reception", "auditor", "analyst"]) {
    const r = await call("GET", `/v1/clinics/${north.id}`, undefined, role);
    assert.equal(r.status, 200, role);
    assert.equal(r.headers.get("etag"), '"1"');
    assert.equal((await r.json()).name, "North Clinic");
  }
  const list = async (query: string, as = "reception") => {
    const r = await call("GET", `/v1/clinics${query}`, undefined, as);
    assert.equal(r.status, 200, query);
    return await r.json() as {
      items: { id: string; name: string }[];
      nextCursor: string | null;
      total: number;
    };
  };
  const names = (p: { items: { name: string }[] }) => p.items.map((c) => c.name);
  assert.deepEqual(names(await list("")), [
    "Alpha Care",
    "beta clinic",
    "delta care",
    "Gamma Clinic",
    "North Clinic",
  ]);
  // q: a case-insensitive part of the name (a prefix is one); LIKE wildcards are literal
  assert.deepEqual(names(await list("?q=CLINIC")), ["beta clinic", "Gamma Clinic", "North Clinic"]);
  assert.deepEqual(names(await list("?q=al")), ["Alpha Care"]);
  assert.deepEqual((await list("?q=%25")).total, 0);
  assert.deepEqual((await list("?q=_")).total, 0);
  // keyset pages: every clinic once, in order, total on each page
  const seen: string[] = [];
  let cursor: string | null = null;
  do {
    const page: Awaited<ReturnType<typeof list>> = await list(
      `?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
    );
    assert.equal(page.total, 5);
    seen.push(...names(page));
    cursor = page.nextCursor;
  } while (cursor);
  assert.deepEqual(seen, names(await list("")));

  // PATCH: a stale If-Match is a 412 and appends nothing; the right one changes the clinic
  const stale = await countEvents(t);
  await problem(
    await call("PATCH", `/v1/clinics/${north.id}`, { phone: "555-0199" }, "admin", {
      "if-match": '"7"',
    }),
    412,
    "/problems/precondition-failed",
  );
  assert.equal(await countEvents(t), stale);
  const patched = await call("PATCH", `/v1/clinics/${north.id}`, { phone: "555-0199" }, "admin", {
    "if-match": '"1"',
  });
  assert.equal(patched.status, 200);
  assert.equal(patched.headers.get("etag"), '"2"');
  assert.equal((await patched.json()).phone, "555-0199");
  // deactivate: gone from active=true, present in active=false, and back
  const off = await call("PATCH", `/v1/clinics/${north.id}`, { active: false }, "clinical_ops", {
    "if-match": 'W/"2"',
  });
  assert.equal(off.status, 200);
  assert.deepEqual([(await off.json()).active, off.headers.get("etag")], [false, '"3"']);
  assert.deepEqual(names(await list("?active=false")), ["North Clinic"]);
  assert.equal((await list("?active=true")).total, 4);
  assert.equal((await list("?active=true&q=north")).total, 0);
  const on = await call("PATCH", `/v1/clinics/${north.id}`, { active: true });
  assert.equal((await on.json()).active, true);
  assert.equal((await list("?active=true")).total, 5);
  // another clinic may not take North's license
  await problem(
    await call("PATCH", `/v1/clinics/${(await list("?q=alpha")).items[0]!.id}`, {
      licenseNumber: "L-100",
    }),
    409,
    "/problems/conflict",
  );
  // unknown clinics
  await problem(
    await call("GET", `/v1/clinics/${crypto.randomUUID()}`),
    404,
    "/problems/not-found",
  );
  await problem(
    await call("PATCH", `/v1/clinics/${crypto.randomUUID()}`, { name: "X" }),
    404,
    "/problems/not-found",
  );
});

eachApp(
  "clinics over HTTP: only admins and clinical ops write; refusals are audited",
  async (t, api) => {
    const { call, ids } = api;
    const c = await (await call("POST", "/v1/clinics", details("W-1"))).json();
    for (const role of ["practitioner", "reception", "auditor", "analyst"]) {
      const before = await countEvents(t, "AccessDenied");
      await problem(
        await call("POST", "/v1/clinics", details(`W-${role}`), role),
        403,
        "/problems/forbidden",
      );
      await problem(
        await call("PATCH", `/v1/clinics/${c.id}`, { name: "Mine" }, role),
        403,
        "/problems/forbidden",
      );
      assert.equal(await countEvents(t, "AccessDenied"), before + 2);
      const [denied] = await t.runtime.db.query<{ data: Record<string, unknown> }>(
        sql`select data from events where type = 'AccessDenied' order by global_position desc limit 1`,
      );
      assert.deepEqual(denied!.data, {
        actorId: ids[role],
        action: "clinic.update",
        resourceId: c.id,
      });
    }
    await problem(
      await call("GET", "/v1/clinics", undefined, "nobody"),
      401,
      "/problems/unauthorized",
    );
    assert.equal((await (await call("GET", `/v1/clinics/${c.id}`)).json()).name, "North Clinic");
  },
);

eachApp(
  "clinics over HTTP: bad input is a 4xx problem naming the fields, never a 500",
  async (t, api) => {
    const { call } = api;
    const c = await (await call("POST", "/v1/clinics", details("B-1"))).json();
    const before = await countEvents(t);
    // every bad field at once, an unknown one by its name
    const bad = await problem(
      await call("POST", "/v1/clinics", {
        ...details("B-2"),
        name: 5,
        services: "x-ray",
        email: "nope",
        operatingHours: { mon: [{ open: "12:00", close: "08:00" }] },
        extra: true,
      }),
      422,
      "/problems/validation",
    );
    assert.deepEqual(fieldPaths(bad), [
      "email",
      "extra",
      "name",
      "operatingHours.mon.0",
      "services",
    ]);
    // NUL bytes: in a body value and a query a 422 naming the field, in the path a 404
    const nul = await problem(
      await call("POST", "/v1/clinics", { ...details("B-3"), name: "North\u0000" }),
      422,
      "/problems/validation",
    );
    assert.deepEqual(fieldPaths(nul), ["name"]);
    assert.deepEqual(
      fieldPaths(
        await problem(await call("GET", "/v1/clinics?q=a%00b"), 422, "/problems/validation"),
      ),
      ["q"],
    );
    await problem(await call("GET", `/v1/clinics/${c.id}%00`), 404, "/problems/not-found");
    // wrong types and shapes
    assert.deepEqual(
      fieldPaths(
        await problem(
          await call("PATCH", `/v1/clinics/${c.id}`, { active: "no", phone: 5 }),
          422,
          "/problems/validation",
        ),
      ),
      ["active", "phone"],
    );
    await problem(
      await call("PATCH", `/v1/clinics/${c.id}`, "[1,"),
      400,
      "/problems/malformed-request",
    );
    await problem(await call("PATCH", `/v1/clinics/${c.id}`, [1]), 422, "/problems/validation");
    await problem(
      await call("PATCH", `/v1/clinics/${c.id}`, { name: "X" }, "admin", { "if-match": "yes" }),
      412,
      "/problems/precondition-failed",
    );
    await problem(await call("GET", "/v1/clinics/not-a-uuid"), 422, "/problems/validation");
    assert.deepEqual(
      fieldPaths(
        await problem(
          await call("GET", "/v1/clinics?limit=0&active=maybe"),
          422,
          "/problems/validation",
        ),
      ),
      ["active", "limit"],
    );
    // cursors: garbage, edited, or another list's are refused
    await problem(await call("GET", "/v1/clinics?cursor=garbage"), 422, "/problems/invalid-cursor");
    const users = await (await call("GET", "/v1/users?limit=1")).json();
    assert.ok(users.nextCursor);
    await problem(
      await call("GET", `/v1/clinics?cursor=${users.nextCursor}`),
      422,
      "/problems/invalid-cursor",
    );
    assert.equal(await countEvents(t), before);
  },
);

// ---- memberships ----

Deno.test("clinic decider: memberships", () => {
  const P = "00000000-0000-4000-8000-0000000000d1";
  const add = (standing: "unknown" | "ineligible" | "eligible" = "eligible") => ({
    type: "AddPractitioner" as const,
    userId: P,
    employmentType: "full_time" as const,
    standing,
  });
  const added = {
    type: "ClinicPractitionerAdded" as const,
    data: { clinicId: C, userId: P, employmentType: "full_time" as const },
  };
  const update = (
    changes: Record<string, unknown>,
    standing: "unknown" | "ineligible" | "eligible" = "eligible",
  ) => ({
    type: "UpdatePractitioner" as const,
    userId: P,
    changes,
    standing,
  });
  const left = {
    type: "ClinicPractitionerUpdated" as const,
    data: { clinicId: C, userId: P, changes: { active: false } },
  };
  const off = { type: "ClinicDeactivated" as const, data: { clinicId: C } };
  spec(clinicDecider).given([registered]).when(add()).then([added]);
  spec(clinicDecider).given([]).when(add()).thenThrows(NotFoundError, /clinic/);
  spec(clinicDecider).given([registered]).when(add("unknown")).thenThrows(NotFoundError, /user/);
  spec(clinicDecider).given([registered]).when(add("ineligible")).thenThrows(ValidationError);
  spec(clinicDecider).given([registered, added]).when(add()).thenThrows(ConflictError, /member/);
  spec(clinicDecider).given([registered, added, left]).when(add()).thenThrows(ConflictError);
  spec(clinicDecider).given([registered, off]).when(add()).thenThrows(ConflictError, /inactive/);
  spec(clinicDecider).given([registered]).when(update({ active: false }))
    .thenThrows(NotFoundError, /member/);
  spec(clinicDecider).given([registered, added])
    .when(update({ active: true, employmentType: "visiting" }))
    .then([{
      type: "ClinicPractitionerUpdated",
      data: { clinicId: C, userId: P, changes: { employmentType: "visiting" } },
    }]);
  spec(clinicDecider).given([registered, added]).when(update({ active: false })).then([left]);
  spec(clinicDecider).given([registered, added, left]).when(update({ active: false })).then([]);
  // rejoining is joining: an active practitioner, an active clinic
  spec(clinicDecider).given([registered, added, left])
    .when(update({ active: true }, "ineligible")).thenThrows(ValidationError);
  spec(clinicDecider).given([registered, added, left, off]).when(update({ active: true }))
    .thenThrows(ConflictError, /inactive/);
  // leaving an inactive clinic is allowed
  spec(clinicDecider).given([registered, added, off]).when(update({ active: false }))
    .then([left]);
});

eachApp(
  "clinic memberships over HTTP: add, list, leave, rejoin; who joined when",
  async (t, api) => {
    const { call, ids } = api;
    const clinic = await (await call("POST", "/v1/clinics", details("M-1"))).json();
    const members = `/v1/clinics/${clinic.id}/practitioners`;
    const add = await call("POST", members, {
      userId: ids.practitioner,
      employmentType: "part_time",
    }, "clinical_ops");
    assert.equal(add.status, 201);
    assert.equal(add.headers.get("location"), `${members}/${ids.practitioner}`);
    const m = await add.json();
    assert.deepEqual({ ...m, joinedAt: undefined, updatedAt: undefined }, {
      clinicId: clinic.id,
      userId: ids.practitioner,
      employmentType: "part_time",
      active: true,
      joinedAt: undefined,
      joinedBy: ids.clinical_ops,
      updatedAt: undefined,
    });
    assert.match(m.joinedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    // the membership moves the clinic's version: its ETag is the stream's
    const read = await call("GET", `/v1/clinics/${clinic.id}`);
    assert.equal(read.headers.get("etag"), '"2"');
    await read.body?.cancel();
    const patched = await call(
      "PATCH",
      `/v1/clinics/${clinic.id}`,
      { phone: "555-0111" },
      "admin",
      {
        "if-match": '"2"',
      },
    );
    assert.equal(patched.status, 200);
    await patched.body?.cancel();
    // again: 409, nothing appended
    const before = await countEvents(t);
    await problem(
      await call("POST", members, { userId: ids.practitioner, employmentType: "visiting" }),
      409,
      "/problems/conflict",
    );
    // only existing, active practitioners; only known clinics
    await problem(
      await call("POST", members, { userId: ids.reception, employmentType: "visiting" }),
      422,
      "/problems/validation",
    );
    await problem(
      await call("POST", members, { userId: crypto.randomUUID(), employmentType: "visiting" }),
      404,
      "/problems/not-found",
    );
    const unknownClinic = `/v1/clinics/${crypto.randomUUID()}/practitioners`;
    await problem(
      await call("POST", unknownClinic, { userId: ids.practitioner2, employmentType: "visiting" }),
      404,
      "/problems/not-found",
    );
    await problem(await call("GET", unknownClinic), 404, "/problems/not-found");
    await problem(
      await call("PATCH", `${unknownClinic}/${ids.practitioner}`, { active: false }),
      404,
      "/problems/not-found",
    );
    await problem(
      await call("PATCH", `${members}/${ids.practitioner2}`, { active: false }),
      404,
      "/problems/not-found",
    );
    await problem(
      await call("GET", `${members}/${ids.practitioner2}`),
      404,
      "/problems/not-found",
    );
    assert.equal(await countEvents(t), before);
    // a deactivated practitioner cannot join
    const off = await call("PATCH", `/v1/users/${ids.practitioner2}`, { active: false });
    assert.equal(off.status, 200);
    await off.body?.cancel();
    await problem(
      await call("POST", members, { userId: ids.practitioner2, employmentType: "visiting" }),
      422,
      "/problems/validation",
    );
    const on = await call("PATCH", `/v1/users/${ids.practitioner2}`, { active: true });
    await on.body?.cancel();
    assert.equal(
      (await call("POST", members, { userId: ids.practitioner2, employmentType: "contractor" }))
        .status,
      201,
    );
    // any signed-in user reads the list, in the order they joined
    for (const role of ["practitioner", "reception", "auditor", "analyst"]) {
      const r = await call("GET", members, undefined, role);
      assert.equal(r.status, 200, role);
      const page = await r.json();
      assert.equal(page.total, 2);
      assert.deepEqual(page.items.map((i: { userId: string }) => i.userId), [
        ids.practitioner,
        ids.practitioner2,
      ]);
    }
    // leaving: kept in the list as inactive; rejoining; a new employment type
    const leave = await call("PATCH", `${members}/${ids.practitioner}`, { active: false });
    assert.equal(leave.status, 200);
    assert.equal((await leave.json()).active, false);
    const active = await (await call("GET", `${members}?active=true`)).json();
    assert.deepEqual(active.items.map((i: { userId: string }) => i.userId), [ids.practitioner2]);
    const former = await (await call("GET", `${members}?active=false`)).json();
    assert.deepEqual(former.items.map((i: { userId: string }) => i.userId), [ids.practitioner]);
    // an inactive clinic takes no new members and no rejoins; leaving is still allowed
    const closed = await call("PATCH", `/v1/clinics/${clinic.id}`, { active: false });
    await closed.body?.cancel();
    const newcomer = await createUser(t.runtime, "practitioner", "new@clinic.test");
    await problem(
      await call("POST", members, { userId: newcomer.id, employmentType: "visiting" }),
      409,
      "/problems/conflict",
    );
    await problem(
      await call("PATCH", `${members}/${ids.practitioner}`, { active: true }),
      409,
      "/problems/conflict",
    );
    const change = await call("PATCH", `${members}/${ids.practitioner2}`, {
      employmentType: "full_time",
    });
    assert.equal((await change.json()).employmentType, "full_time");
    const reopened = await call("PATCH", `/v1/clinics/${clinic.id}`, { active: true });
    await reopened.body?.cancel();
    const back = await call("PATCH", `${members}/${ids.practitioner}`, { active: true });
    const rejoined = await back.json();
    assert.deepEqual([back.status, rejoined.active, rejoined.joinedAt], [200, true, m.joinedAt]);
    const one = await call("GET", `${members}/${ids.practitioner}`, undefined, "analyst");
    assert.equal((await one.json()).employmentType, "part_time");
    // the events record who did what
    const evs = await t.runtime.db.query<{ type: string; actor: string }>(
      sql`select type, metadata->>'actorId' as actor from events
      where stream_id = ${`clinic-${clinic.id}`} and type like 'ClinicPractitioner%'
      order by stream_version`,
    );
    assert.deepEqual(evs.map((e) => e.type), [
      "ClinicPractitionerAdded",
      "ClinicPractitionerAdded",
      "ClinicPractitionerUpdated",
      "ClinicPractitionerUpdated",
      "ClinicPractitionerUpdated",
    ]);
    assert.equal(evs[0]!.actor, ids.clinical_ops);
  },
);

eachApp(
  "clinic memberships: 20 concurrent adds of one practitioner: one 201, one event",
  async (t, api) => {
    const { call, ids } = api;
    const clinic = await (await call("POST", "/v1/clinics", details("R-1"))).json();
    const members = `/v1/clinics/${clinic.id}/practitioners`;
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        call("POST", members, {
          userId: ids.practitioner,
          employmentType: i % 2 ? "visiting" : "full_time",
        }, i % 2 ? "admin" : "clinical_ops")),
    );
    const statuses = answers.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 201).length, 1, statuses.join(","));
    assert.equal(statuses.filter((s) => s === 409).length, 19, statuses.join(","));
    for (const r of answers.filter((r) => r.status === 409)) {
      assert.equal((await r.json()).type, "/problems/conflict");
    }
    assert.equal(await countEvents(t, "ClinicPractitionerAdded"), 1);
    // concurrent adds of different practitioners all succeed, each decided in turn
    const others = await Promise.all(
      Array.from({ length: 10 }, (_, i) => createUser(t.runtime, "practitioner", `m${i}@c.test`)),
    );
    // and clinic edits without If-Match beside them: the clinic's stream is shared, each is
    // decided again on the newer state
    const adds = await Promise.all([
      ...others.map((u) => call("POST", members, { userId: u.id, employmentType: "contractor" })),
      ...Array.from(
        { length: 5 },
        (_, i) => call("PATCH", `/v1/clinics/${clinic.id}`, { services: [`s${i}`] }),
      ),
    ]);
    assert.deepEqual(adds.map((r) => r.status), [...Array(10).fill(201), ...Array(5).fill(200)]);
    for (const r of adds) await r.body?.cancel();
    // keyset pages over the members: each once, in join order
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r: Response = await call(
        "GET",
        `${members}?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      );
      const page = await r.json();
      assert.equal(page.total, 11);
      seen.push(...page.items.map((i: { userId: string }) => i.userId));
      cursor = page.nextCursor;
    } while (cursor);
    assert.equal(new Set(seen).size, 11);
    assert.equal(seen[0], ids.practitioner);
  },
);

eachApp(
  "clinic memberships: only admins and clinical ops change them; bad input",
  async (t, api) => {
    const { call, ids } = api;
    const clinic = await (await call("POST", "/v1/clinics", details("X-1"))).json();
    const members = `/v1/clinics/${clinic.id}/practitioners`;
    await (await call("POST", members, { userId: ids.practitioner, employmentType: "visiting" }))
      .body?.cancel();
    const before = await countEvents(t);
    for (const role of ["practitioner", "reception", "auditor", "analyst"]) {
      await problem(
        await call(
          "POST",
          members,
          { userId: ids.practitioner2, employmentType: "visiting" },
          role,
        ),
        403,
        "/problems/forbidden",
      );
      await problem(
        await call("PATCH", `${members}/${ids.practitioner}`, { active: false }, role),
        403,
        "/problems/forbidden",
      );
    }
    assert.equal(await countEvents(t), before + 8, "eight AccessDenied, nothing else");
    assert.equal(await countEvents(t, "AccessDenied"), 8);
    const writes = await countEvents(t);
    const bad = await problem(
      await call("POST", members, { userId: "nope", employmentType: "intern", extra: 1 }),
      422,
      "/problems/validation",
    );
    assert.deepEqual(fieldPaths(bad), ["employmentType", "extra", "userId"]);
    assert.deepEqual(
      fieldPaths(await problem(await call("POST", members, {}), 422, "/problems/validation")),
      ["employmentType", "userId"],
    );
    assert.deepEqual(
      fieldPaths(
        await problem(
          await call("PATCH", `${members}/${ids.practitioner}`, {
            active: 1,
            employmentType: null,
          }),
          422,
          "/problems/validation",
        ),
      ),
      ["active", "employmentType"],
    );
    assert.deepEqual(
      fieldPaths(
        await problem(
          await call("POST", members, { userId: ids.practitioner2, employmentType: "visit\u0000" }),
          422,
          "/problems/validation",
        ),
      ),
      ["employmentType"],
    );
    await problem(await call("POST", members, "nope"), 400, "/problems/malformed-request");
    await problem(await call("GET", `${members}?cursor=abc`), 422, "/problems/invalid-cursor");
    await problem(await call("GET", `${members}?active=yes`), 422, "/problems/validation");
    await problem(
      await call("PATCH", `${members}/not-a-uuid`, { active: false }),
      422,
      "/problems/validation",
    );
    await problem(
      await call("GET", `${members}/${ids.practitioner}%00`),
      404,
      "/problems/not-found",
    );
    // a cursor of the clinic list is not one of the members list
    await call("POST", "/v1/clinics", details("X-2", "Another"));
    const list = await (await call("GET", "/v1/clinics?limit=1")).json();
    assert.ok(list.nextCursor);
    await problem(
      await call("GET", `${members}?cursor=${list.nextCursor}`),
      422,
      "/problems/invalid-cursor",
    );
    assert.equal(await countEvents(t), writes + 2, "only the second clinic's two events");
  },
);
