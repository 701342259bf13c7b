import assert from "node:assert/strict";
import { registerUser } from "../src/auth/accounts.ts";
import { addDays } from "../src/clinical/chart_kinds.ts";
import { decide, fold } from "../src/domain/chart.ts";
import { ConflictError, NotFoundError, ValidationError } from "../src/errors.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const E = "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
const P = "6a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d";
const by = { id: P, role: "practitioner" };
const recorded = {
  type: "ChartEntryRecorded",
  data: {
    entryId: E,
    patientId: P,
    kind: "allergies",
    encounterId: null,
    clinicId: null,
    patientEntered: false,
    createdBy: by,
    content: { allergen: "a", type: "food", severity: "mild" },
  },
};

Deno.test("chart decider: amend while current, entered-in-error once, never an edit in place", () => {
  const amend = {
    type: "AmendEntry" as const,
    by,
    reason: "typo",
    changes: { severity: "severe" },
  };
  assert.throws(() => decide(amend, fold([])), NotFoundError);
  const [a] = decide(amend, fold([recorded]));
  assert.equal(a!.type, "ChartEntryAmended");
  assert.throws(() => decide({ ...amend, reason: " " }, fold([recorded])), ValidationError);
  assert.throws(() => decide({ ...amend, changes: {} }, fold([recorded])), ValidationError);
  const s = fold([recorded, a!]);
  assert.deepEqual(s.status === "current" && s.content, {
    allergen: "a",
    type: "food",
    severity: "severe",
  });
  // the rules are asked on the state decided on
  assert.throws(
    () =>
      decide(
        {
          ...amend,
          validate: (c) => c.severity === "severe" ? [{ path: "x", message: "no" }] : [],
        },
        fold([recorded]),
      ),
    ValidationError,
  );
  const eie = { type: "MarkEnteredInError" as const, by, reason: "wrong patient" };
  const [x] = decide(eie, s);
  const gone = fold([recorded, a!, x!]);
  assert.equal(gone.status, "entered_in_error");
  assert.deepEqual(decide(eie, gone), []);
  assert.throws(() => decide(amend, gone), ConflictError);
  assert.throws(() => decide({ ...recorded.data, type: "RecordEntry" } as never, s), ConflictError);
});

const TODAY = "2026-06-15";
const NOW = new Date(`${TODAY}T12:00:00Z`);

const setup = async (driver: string) => {
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  const t = await openTestApp({
    CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
    ...(pg ? { DATABASE_URL: pg.url } : {}),
  }, { now: () => NOW });
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  for (const role of ["admin", "practitioner", "reception", "analyst", "auditor"] as const) {
    const u = await createUser(t.runtime, role);
    ids[role] = u.id;
    tokens[role] = (await login(t.app, u.email)).body.accessToken;
  }
  const call = async (who: string, method: string, path: string, body?: unknown, h = {}) =>
    await t.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[who]!),
        ...(body ? { "content-type": "application/json" } : {}),
        ...h,
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
  const ok = async (who: string, method: string, path: string, body?: unknown, status = 200) => {
    const r = await call(who, method, path, body);
    assert.equal(r.status, status, `${method} ${path}: ${await r.clone().text()}`);
    return await r.json();
  };
  const patient = await ok("admin", "POST", "/v1/patients", {
    mrn: "CH-1",
    firstName: "Chart",
    lastName: "Walk",
    dateOfBirth: "1970-01-01",
    gender: "F",
  }, 201);
  await ok("admin", "POST", `/v1/patients/${patient.id}/care-team`, {
    practitionerId: ids.practitioner,
  }, 201);
  const self = await registerUser(
    t.runtime.store,
    {
      email: "self@home.test",
      name: "Self",
      role: "patient",
      password: PASSWORD,
      patientId: patient.id,
    },
    { actorId: "test-setup" },
    t.runtime.passwordParams,
  );
  tokens.patient = (await login(t.app, self.email)).body.accessToken;
  ids.patient = self.id;
  return {
    t,
    ids,
    tokens,
    call,
    ok,
    patient: patient.id as string,
    close: async () => {
      await t.close();
      await pg?.drop();
    },
  };
};

/** Every page of a list, following `nextCursor`; the totals must agree. */
const walk = async (
  ok: (w: string, m: string, p: string) => Promise<Record<string, unknown>>,
  path: string,
) => {
  const sep = path.includes("?") ? "&" : "?";
  const out: string[] = [];
  let cursor: string | null = null;
  let total = -1;
  do {
    const page = await ok(
      "practitioner",
      "GET",
      `${path}${sep}limit=3${cursor ? `&cursor=${cursor}` : ""}`,
    ) as { items: { id: string }[]; nextCursor: string | null; total: number };
    if (total >= 0) assert.equal(page.total, total);
    total = page.total;
    out.push(...page.items.map((i) => i.id));
    cursor = page.nextCursor;
  } while (cursor);
  assert.equal(out.length, total, path);
  return out;
};

// the lists' SQL on both stores
for (const driver of await drivers()) {
  Deno.test(`chart lists [${driver}]: every query against an in-memory model`, async () => {
    const s = await setup(driver);
    try {
      const base = `/v1/patients/${s.patient}/chart`;
      interface Rx {
        id: string;
        start: string;
        last: string | null;
        patientEntered: boolean;
        eie: boolean;
      }
      const rx: Rx[] = [];
      // deterministic variety: starts around today, ends by date, by duration or open
      for (let i = 0; i < 14; i++) {
        const start = addDays(TODAY, (i * 7) % 40 - 25);
        const shape = i % 3;
        const endDate = shape === 0 ? addDays(start, (i * 5) % 30) : null;
        const durationDays = shape === 1 ? 1 + (i * 3) % 20 : null;
        const who = i % 4 === 3 ? "patient" : "practitioner";
        const e = await s.ok(who, "POST", `${base}/prescriptions`, {
          medication: `med ${i}`,
          dosage: "5 mg",
          frequency: "daily",
          route: "oral",
          startDate: start,
          ...(endDate ? { endDate } : {}),
          ...(durationDays ? { durationDays } : {}),
        }, 201);
        assert.equal(e.patientEntered, who === "patient");
        assert.equal(e.clinicId, null);
        rx.push({
          id: e.id,
          start,
          last: endDate ?? (durationDays ? addDays(start, durationDays - 1) : null),
          patientEntered: who === "patient",
          eie: false,
        });
      }
      for (const r of [rx[2]!, rx[7]!]) {
        await s.ok("practitioner", "POST", `${base}/prescriptions/${r.id}/entered-in-error`, {
          reason: "duplicate",
        });
        r.eie = true;
      }
      const order = (xs: Rx[]) =>
        [...xs].sort((a, b) =>
          a.start === b.start ? (a.id < b.id ? 1 : -1) : a.start < b.start ? 1 : -1
        ).map((r) => r.id);
      const live = (r: Rx) => !r.eie;
      const active = (r: Rx) => r.start <= TODAY && (r.last === null || r.last >= TODAY);
      const cases: [string, (r: Rx) => boolean][] = [
        ["", live],
        ["?includeEnteredInError=true", () => true],
        ["?patientEntered=true", (r) => live(r) && r.patientEntered],
        ["?patientEntered=false", (r) => live(r) && !r.patientEntered],
        ["?active=true", (r) => live(r) && active(r)],
        ["?active=false", (r) => live(r) && !active(r)],
        [
          "?endingWithinDays=7",
          (r) => live(r) && r.last !== null && r.last >= TODAY && r.last <= addDays(TODAY, 7),
        ],
        ["?endingWithinDays=0", (r) => live(r) && r.last === TODAY],
        [
          `?from=${addDays(TODAY, -10)}&to=${TODAY}`,
          (r) => live(r) && r.start >= addDays(TODAY, -10) && r.start <= TODAY,
        ],
        [
          "?active=true&patientEntered=false&includeEnteredInError=true",
          (r) => active(r) && !r.patientEntered,
        ],
      ];
      for (const [q, keep] of cases) {
        assert.deepEqual(await walk(s.ok, `${base}/prescriptions${q}`), order(rx.filter(keep)), q);
      }
      assert.ok(rx.some((r) => active(r)) && rx.some((r) => !active(r)));

      // allergies: critical = severe or life-threatening
      const sev = ["mild", "moderate", "severe", "life_threatening"];
      const allergies: { id: string; critical: boolean }[] = [];
      for (let i = 0; i < 6; i++) {
        const e = await s.ok(i === 5 ? "patient" : "practitioner", "POST", `${base}/allergies`, {
          allergen: `allergen ${i}`,
          type: "food",
          severity: sev[i % 4],
        }, 201);
        allergies.push({ id: e.id, critical: i % 4 >= 2 });
      }
      const ids = (f: (a: { critical: boolean }) => boolean) =>
        allergies.filter(f).map((a) => a.id).sort().reverse();
      assert.deepEqual(await walk(s.ok, `${base}/allergies?critical=true`), ids((a) => a.critical));
      assert.deepEqual(
        await walk(s.ok, `${base}/allergies?critical=false`),
        ids((a) => !a.critical),
      );
      // an allergy's clinical date is the day it was recorded (UTC)
      assert.equal((await walk(s.ok, `${base}/allergies?from=${TODAY}&to=${TODAY}`)).length, 6);
      assert.equal((await walk(s.ok, `${base}/allergies?to=${addDays(TODAY, -1)}`)).length, 0);

      // vaccinations: clinical date = the UTC day administered; dueWithinDays on the next due date
      const vax: { id: string; day: string; due: string | null }[] = [];
      for (let i = 0; i < 8; i++) {
        const day = addDays(TODAY, -((i * 11) % 60));
        const due = i % 3 === 2 ? null : addDays(TODAY, (i * 4) % 20 - 5);
        const e = await s.ok("practitioner", "POST", `${base}/vaccinations`, {
          vaccineName: `vaccine ${i}`,
          vaccineType: "inactivated",
          // late in the UTC day, with an offset: the clinical date is the UTC day
          administeredAt: `${day}T20:30:00-02:00`,
          ...(due && due >= addDays(day, 1) ? { nextDueDate: due } : {}),
        }, 201);
        vax.push({
          id: e.id,
          day: addDays(day, 1),
          due: due && due >= addDays(day, 1) ? due : null,
        });
      }
      const vaxOrder = (f: (v: (typeof vax)[number]) => boolean) =>
        vax.filter(f).sort((a, b) =>
          a.day === b.day ? (a.id < b.id ? 1 : -1) : a.day < b.day ? 1 : -1
        ).map((v) => v.id);
      for (const n of [0, 3, 10]) {
        assert.deepEqual(
          await walk(s.ok, `${base}/vaccinations?dueWithinDays=${n}`),
          vaxOrder((v) => v.due !== null && v.due >= TODAY && v.due <= addDays(TODAY, n)),
          `dueWithinDays=${n}`,
        );
      }
      assert.deepEqual(
        await walk(s.ok, `${base}/vaccinations?from=${addDays(TODAY, -20)}`),
        vaxOrder((v) => v.day >= addDays(TODAY, -20)),
      );
      assert.ok(vax.some((v) => v.due !== null && v.due >= TODAY));

      // bad parameters and cursors are 422s; another list's cursor too
      for (
        const q of [
          "?active=yes",
          "?endingWithinDays=-1",
          "?from=2026-13-01",
          "?limit=0",
          "?cursor=nope",
          "?critical=true",
        ]
      ) {
        const r = await s.call("practitioner", "GET", `${base}/prescriptions${q}`);
        assert.equal(r.status, 422, q);
        await r.body?.cancel();
      }
      const page = await s.ok("practitioner", "GET", `${base}/prescriptions?limit=1`);
      const r = await s.call(
        "practitioner",
        "GET",
        `${base}/allergies?cursor=${page.nextCursor}`,
      );
      assert.equal(r.status, 422);
      await r.body?.cancel();
    } finally {
      await s.close();
    }
  });
}

Deno.test("chart entries: validation, clinic, amendments, history, policy, audit, no plaintext", async () => {
  const s = await setup("pglite");
  try {
    const base = `/v1/patients/${s.patient}/chart`;
    const problem = async (r: Response, status: number) => {
      assert.equal(r.status, status, await r.clone().text());
      return await r.json();
    };
    // 422 names every bad field, per kind
    const a = await problem(
      await s.call("practitioner", "POST", `${base}/allergies`, {
        type: "pollen",
        severity: "deadly",
        diagnosedById: s.ids.reception,
        extra: 1,
        encounterId: crypto.randomUUID(),
      }),
      422,
    );
    assert.deepEqual(
      a.errors.map((e: { path: string }) => e.path).sort(),
      ["allergen", "diagnosedById", "encounterId", "extra", "severity", "type"],
    );
    const p = await problem(
      await s.call("practitioner", "POST", `${base}/prescriptions`, {
        medication: "",
        dosage: "lots",
        frequency: "daily",
        route: "by mouth",
        startDate: "2026-06-10",
        endDate: "2026-06-01",
        quantity: -1,
        refillsAllowed: 1.5,
        durationDays: 0,
      }),
      422,
    );
    assert.deepEqual(
      p.errors.map((e: { path: string }) => e.path).sort(),
      ["dosage", "durationDays", "endDate", "medication", "quantity", "refillsAllowed", "route"],
    );
    const order = await problem(
      await s.call("practitioner", "POST", `${base}/prescriptions`, {
        medication: "x",
        dosage: "5 mg",
        frequency: "daily",
        route: "oral",
        startDate: "2026-06-10",
        endDate: "2026-06-01",
        prescriberId: s.ids.reception,
      }),
      422,
    );
    assert.deepEqual(order.errors.map((e: { path: string }) => e.path).sort(), [
      "endDate",
      "prescriberId",
    ]);
    for (const dosage of ["500 mg", "2.5 ml", "1-2 tablets", "10 units", "1 puff", "0.5mg"]) {
      const r = await s.call("practitioner", "POST", `${base}/prescriptions`, {
        medication: "ok",
        dosage,
        frequency: "daily",
        route: "oral",
        startDate: TODAY,
      });
      assert.equal(r.status, 201, dosage);
      await r.body?.cancel();
    }

    // vaccinations: not in the future, due after, an enum type, the patient's own certificate
    const doc = new FormData();
    doc.set("category", "patient_records");
    doc.set("file", new Blob(["certificate\n"]), "certificate.txt");
    const upload = async (patientId: string) => {
      const r = await s.t.app.request(`/v1/patients/${patientId}/documents`, {
        method: "POST",
        headers: bearer(s.tokens.admin!),
        body: doc,
      });
      assert.equal(r.status, 201, await r.clone().text());
      return (await r.json()).id as string;
    };
    const stranger = await s.ok("admin", "POST", "/v1/patients", {
      mrn: "CH-2",
      firstName: "Other",
      lastName: "Walk",
      dateOfBirth: "1971-01-01",
      gender: "M",
    }, 201);
    const theirs = await upload(stranger.id);
    const v = await problem(
      await s.call("practitioner", "POST", `${base}/vaccinations`, {
        vaccineName: "flu",
        vaccineType: "attenuated",
        administeredAt: "2026-06-16T01:00:00Z",
        certificateMediaId: theirs,
      }),
      422,
    );
    assert.deepEqual(v.errors.map((e: { path: string }) => e.path).sort(), [
      "administeredAt",
      "certificateMediaId",
      "vaccineType",
    ]);
    const vDates = await problem(
      await s.call("practitioner", "POST", `${base}/vaccinations`, {
        vaccineName: "flu",
        vaccineType: "inactivated",
        administeredAt: "2026-06-16T01:00:00Z",
        nextDueDate: "2026-01-01",
      }),
      422,
    );
    assert.deepEqual(vDates.errors.map((e: { path: string }) => e.path).sort(), [
      "administeredAt",
      "nextDueDate",
    ]);
    const certified = await problem(
      await s.call("practitioner", "POST", `${base}/vaccinations`, {
        vaccineName: "tetanus",
        vaccineType: "toxoid",
        administeredAt: "2026-06-15T08:00:00Z",
        batchNumber: "B-77",
        nextDueDate: "2036-06-15",
        requiredByLaw: true,
        certificateMediaId: await upload(s.patient),
      }),
      201,
    );
    assert.equal(certified.requiredByLaw, true);
    // patients add allergies and home medication, not vaccinations
    await problem(
      await s.call("patient", "POST", `${base}/vaccinations`, {
        vaccineName: "flu",
        vaccineType: "inactivated",
        administeredAt: "2026-06-01T08:00:00Z",
      }),
      403,
    );

    // clinic: the only active membership is the default; another clinic is a 422
    const clinic = await s.ok("admin", "POST", "/v1/clinics", {
      name: "North Clinic",
      licenseNumber: "LIC-1",
      address: { line1: "1 Main St", line2: null, city: "Springfield", state: "IL", zip: "62701" },
      phone: "555-0100",
      email: "north@example.org",
      operatingHours: {},
      services: [],
    }, 201);
    await s.ok("admin", "POST", `/v1/clinics/${clinic.id}/practitioners`, {
      userId: s.ids.practitioner,
      employmentType: "full_time",
    }, 201);
    const secret = "Xylocarpine hypersensitivity";
    const res = await s.call("practitioner", "POST", `${base}/allergies`, {
      allergen: secret,
      type: "medication",
      severity: "severe",
      reaction: "wheals",
      diagnosedById: s.ids.practitioner,
    });
    const entry = await problem(res, 201);
    assert.equal(entry.clinicId, clinic.id);
    assert.equal(entry.patientEntered, false);
    assert.deepEqual(entry.createdBy, { id: s.ids.practitioner, role: "practitioner" });
    assert.equal(res.headers.get("etag"), '"1"');
    assert.equal(res.headers.get("location"), `${base}/allergies/${entry.id}`);
    const other = await problem(
      await s.call("practitioner", "POST", `${base}/allergies`, {
        allergen: "x",
        type: "food",
        severity: "mild",
        clinicId: crypto.randomUUID(),
      }),
      422,
    );
    assert.deepEqual(other.errors.map((e: { path: string }) => e.path), ["clinicId"]);

    // the patient's own entry is patient-entered, with no clinic
    const own = await problem(
      await s.call("patient", "POST", `${base}/allergies`, {
        allergen: "cats",
        type: "environmental",
        severity: "mild",
      }),
      201,
    );
    assert.equal(own.patientEntered, true);
    assert.equal(own.clinicId, null);

    // amendments: a new version with a reason; If-Match; stale is 412
    const url = `${base}/allergies/${entry.id}`;
    const amend = (body: unknown, h = {}) =>
      s.call("practitioner", "POST", `${url}/amendments`, body, h);
    const bad = await problem(
      await amend({ reason: "fix", changes: { severity: "fatal", allergen: null, x: 1 } }),
      422,
    );
    assert.deepEqual(bad.errors.map((e: { path: string }) => e.path).sort(), [
      "changes.allergen",
      "changes.severity",
      "changes.x",
    ]);
    const v2 = await amend({
      reason: "was milder",
      changes: { severity: "moderate", reaction: null },
    }, {
      "if-match": '"1"',
    });
    assert.equal(v2.status, 200, await v2.clone().text());
    assert.equal(v2.headers.get("etag"), '"2"');
    const amended = await v2.json();
    assert.equal(amended.severity, "moderate");
    assert.equal("reaction" in amended, false);
    await problem(
      await amend({ reason: "late", changes: { severity: "mild" } }, { "if-match": '"1"' }),
      412,
    );
    // a patient amends only patient-entered entries; reception none
    const mine = await s.call("patient", "POST", `${base}/allergies/${own.id}/amendments`, {
      reason: "it is dogs",
      changes: { allergen: "dogs" },
    });
    assert.equal(mine.status, 200, await mine.clone().text());
    await problem(
      await s.call("patient", "POST", `${url}/amendments`, {
        reason: "no",
        changes: { severity: "mild" },
      }),
      403,
    );
    await problem(await s.call("reception", "GET", `${base}/allergies`), 403);
    await problem(await s.call("analyst", "GET", url), 403);
    await problem(await s.call("auditor", "GET", url), 403);
    await problem(
      await s.call("practitioner", "GET", `${base}/allergies/${crypto.randomUUID()}`),
      404,
    );
    await problem(await s.call("practitioner", "GET", `${base}/prescriptions/${entry.id}`), 404);

    // entered in error: hidden from lists unless asked for; the history has every version
    await problem(
      await s.call("practitioner", "POST", `${url}/entered-in-error`, { reason: "wrong patient" }),
      200,
    );
    const listed = await s.ok("practitioner", "GET", `${base}/allergies`);
    assert.ok(!listed.items.some((i: { id: string }) => i.id === entry.id));
    const all = await s.ok("practitioner", "GET", `${base}/allergies?includeEnteredInError=true`);
    assert.ok(
      all.items.some((i: { id: string; enteredInError: boolean }) =>
        i.id === entry.id && i.enteredInError
      ),
    );
    const patientOnly = await s.ok("practitioner", "GET", `${base}/allergies?patientEntered=true`);
    assert.deepEqual(patientOnly.items.map((i: { id: string }) => i.id), [own.id]);
    const history = await s.ok("practitioner", "GET", `${url}/history`);
    assert.deepEqual(history.items.map((h: { change: string }) => h.change), [
      "recorded",
      "amended",
      "entered_in_error",
    ]);
    assert.equal(history.items[1].reason, "was milder");
    assert.deepEqual(history.items[1].changes, { severity: "moderate", reaction: null });
    assert.equal(history.items[0].content.severity, "severe");
    assert.equal(history.items[2].by.id, s.ids.practitioner);
    await problem(await amend({ reason: "late", changes: { severity: "mild" } }), 409);

    // two amendments each valid alone but not together: the second is decided on the first
    const course = await s.ok("practitioner", "POST", `${base}/prescriptions`, {
      medication: "course",
      dosage: "5 mg",
      frequency: "daily",
      route: "oral",
      startDate: "2026-06-01",
      endDate: "2026-06-30",
    }, 201);
    assert.equal(course.prescriberId, s.ids.practitioner, "a practitioner prescribes by default");
    const both = await Promise.all(
      [{ startDate: "2026-06-20" }, { endDate: "2026-06-10" }].map((changes) =>
        s.call("practitioner", "POST", `${base}/prescriptions/${course.id}/amendments`, {
          reason: "adjusted",
          changes,
        })
      ),
    );
    assert.deepEqual(both.map((r) => r.status).sort(), [200, 422]);
    await Promise.all(both.map((r) => r.body?.cancel()));

    // every read appends one access event (ids only), before answering
    const accessCount = async () =>
      (await s.t.runtime.db.query<{ n: number }>(sql`select count(*)::int as n from events
        where stream_id = ${`access-${s.ids.practitioner}`}`))[0]!.n;
    for (
      const path of [
        `${base}/allergies`,
        url,
        `${url}/history`,
        `${base}/prescriptions?active=true`,
      ]
    ) {
      const before = await accessCount();
      await s.ok("practitioner", "GET", path);
      assert.equal(await accessCount(), before + 1, path);
    }
    const [viewed] = await s.t.runtime.db.query<{ data: Record<string, unknown> }>(sql`select data
      from events where type = 'ChartEntryViewed' order by global_position desc limit 1`);
    assert.deepEqual(Object.keys(viewed!.data).sort(), ["entryId", "history", "kind", "patientId"]);

    // encounters' lists: entries recorded against an encounter
    const enc = await s.ok("admin", "POST", `/v1/patients/${s.patient}/encounters`, {
      practitionerId: s.ids.practitioner,
      startsAt: "2026-06-15T09:00:00Z",
      reason: "visit",
    }, 201);
    const inEnc = await s.ok("practitioner", "POST", `${base}/prescriptions`, {
      medication: "enc med",
      dosage: "1 tablet",
      frequency: "daily",
      route: "oral",
      startDate: TODAY,
      encounterId: enc.id,
    }, 201);
    const byEnc = await s.ok("practitioner", "GET", `/v1/encounters/${enc.id}/chart/prescriptions`);
    assert.deepEqual(byEnc.items.map((i: { id: string }) => i.id), [inEnc.id]);
    assert.equal(byEnc.items[0].encounterId, enc.id);
    await problem(
      await s.call("admin", "GET", `/v1/encounters/${crypto.randomUUID()}/chart/allergies`),
      404,
    );

    // nothing of the chart in plaintext in the events table, nor in the logs
    const [leak] = await s.t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events
      where position(lower(${secret}) in lower(data::text)) > 0
         or position('wrong patient' in data::text) > 0
         or position('was milder' in data::text) > 0`,
    );
    assert.equal(leak!.n, 0);
    for (const w of [secret, "wrong patient", "was milder", "Xylocarpine"]) {
      assert.ok(!s.t.logs.text().includes(w), w);
    }
  } finally {
    await s.close();
  }
});
