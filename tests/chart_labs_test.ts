import assert from "node:assert/strict";
import { registerUser } from "../src/auth/accounts.ts";
import { addDays } from "../src/clinical/chart_kinds.ts";
import { decide, fold, LAB_MOVES, LAB_STATUSES, type LabStatus } from "../src/domain/chart.ts";
import { ConflictError, ForbiddenError, IllegalTransitionError } from "../src/errors.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const E = "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
const P = "6a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d";
const by = { id: P, role: "practitioner" };
const labRecorded = (status: LabStatus) => ({
  type: "ChartEntryRecorded",
  data: {
    entryId: E,
    patientId: P,
    kind: "lab-tests",
    encounterId: null,
    clinicId: null,
    patientEntered: false,
    createdBy: by,
    content: { testName: "cbc", status, orderedById: P },
  },
});

Deno.test("lab-test decider: every move of the status machine, acknowledge rules", () => {
  const legal: string[] = [];
  for (const from of LAB_STATUSES) {
    for (const to of LAB_STATUSES) {
      const move = { type: "ChangeLabStatus" as const, by, status: to, results: {} };
      const s = fold([labRecorded(from)]);
      if (LAB_MOVES[from].includes(to)) {
        const [e] = decide(move, s);
        assert.equal(e!.type, "LabTestStatusChanged");
        const after = fold([labRecorded(from), e!]);
        assert.equal(after.status === "current" && after.content?.status, to);
        legal.push(`${from}>${to}`);
      } else {
        assert.throws(() => decide(move, s), IllegalTransitionError, `${from}>${to}`);
      }
    }
  }
  assert.deepEqual(legal.sort(), [
    "in_progress>cancelled",
    "in_progress>completed",
    "ordered>cancelled",
    "ordered>in_progress",
  ]);
  const ack = { type: "AcknowledgeResult" as const, by };
  assert.throws(() => decide(ack, fold([labRecorded("in_progress")])), ConflictError);
  assert.throws(
    () => decide({ ...ack, by: { id: E, role: "practitioner" } }, fold([labRecorded("completed")])),
    ForbiddenError,
  );
  const [a] = decide(ack, fold([labRecorded("completed")]));
  assert.equal(a!.type, "LabResultAcknowledged");
  // idempotent; a changed result is unseen again
  assert.deepEqual(decide(ack, fold([labRecorded("completed"), a!])), []);
  const amended = {
    type: "ChartEntryAmended",
    data: {
      entryId: E,
      patientId: P,
      kind: "lab-tests",
      amendedBy: by,
      reason: "r",
      changes: { resultText: "corrected" },
    },
  };
  const s = fold([labRecorded("completed"), a!, amended]);
  assert.equal(s.status === "current" && s.acknowledgedBy, null);
  assert.equal(decide(ack, s).length, 1);
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
  for (const role of ["admin", "practitioner", "reception"] as const) {
    const u = await createUser(t.runtime, role);
    ids[role] = u.id;
    tokens[role] = (await login(t.app, u.email)).body.accessToken;
  }
  const second = await createUser(t.runtime, "practitioner", "second@clinic.test");
  ids.second = second.id;
  tokens.second = (await login(t.app, second.email)).body.accessToken;
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
  const ok = async (
    who: string,
    method: string,
    path: string,
    body?: unknown,
    status = 200,
    h = {},
  ) => {
    const r = await call(who, method, path, body, h);
    assert.equal(r.status, status, `${method} ${path}: ${await r.clone().text()}`);
    return await r.json();
  };
  const patient = await ok("admin", "POST", "/v1/patients", {
    mrn: "LAB-1",
    firstName: "Lab",
    lastName: "Walk",
    dateOfBirth: "1970-01-01",
    gender: "F",
  }, 201);
  for (const p of [ids.practitioner, ids.second]) {
    await ok("admin", "POST", `/v1/patients/${patient.id}/care-team`, { practitionerId: p }, 201);
  }
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
  return {
    t,
    ids,
    call,
    ok,
    base: `/v1/patients/${patient.id}/chart`,
    close: async () => {
      await t.close();
      await pg?.drop();
    },
  };
};

type Setup = Awaited<ReturnType<typeof setup>>;

/** Every page of a list, following `nextCursor`; the totals must agree. */
const walk = async (s: Setup, path: string) => {
  const sep = path.includes("?") ? "&" : "?";
  const out: string[] = [];
  let cursor: string | null = null;
  let total = -1;
  do {
    const page = await s.ok(
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

const paths = (r: { errors: { path: string }[] }) => r.errors.map((e) => e.path).sort();

for (const driver of await drivers()) {
  Deno.test(`lab tests [${driver}]: queries against a model, concurrent moves`, async () => {
    const s = await setup(driver);
    try {
      const labs = `${s.base}/lab-tests`;
      interface Lab {
        id: string;
        status: LabStatus;
        abnormal: boolean;
        acknowledged: boolean;
        eie: boolean;
      }
      const model: Lab[] = [];
      // deterministic variety: every status, abnormal or not, acknowledged or not
      for (let i = 0; i < 16; i++) {
        const abnormal = i % 3 === 0;
        const results = i % 5 === 4 ? undefined : [
          { name: "Hb", value: 11 + i, unit: "g/dl", referenceRange: "12-16", abnormal },
          { name: "note", value: "fine", abnormal: i % 7 === 1 ? false : null },
        ];
        const start = (["ordered", "in_progress", "completed"] as const)[i % 3]!;
        const e = await s.ok("practitioner", "POST", labs, {
          testName: `panel ${i}`,
          status: start,
          ...(results ? { results } : {}),
        }, 201);
        assert.equal(e.orderedById, s.ids.practitioner);
        assert.equal(e.acknowledgement, null);
        const lab: Lab = {
          id: e.id,
          status: start,
          abnormal: abnormal && results !== undefined,
          acknowledged: false,
          eie: false,
        };
        // move some along
        if (i % 4 === 1 && lab.status === "ordered") {
          await s.ok("practitioner", "PATCH", `${labs}/${e.id}`, { status: "cancelled" });
          lab.status = "cancelled";
        } else if (i % 4 === 2 && lab.status === "in_progress") {
          await s.ok("practitioner", "PATCH", `${labs}/${e.id}`, {
            status: "completed",
            resultText: "done",
          });
          lab.status = "completed";
        }
        if (lab.status === "completed" && i % 2 === 0) {
          await s.ok("practitioner", "POST", `${labs}/${e.id}/acknowledge`);
          lab.acknowledged = true;
        }
        model.push(lab);
      }
      // an amendment of the results: the facets follow, the acknowledgement is reset
      const acked = model.find((l) => l.acknowledged && !l.abnormal)!;
      const amended = await s.ok("practitioner", "POST", `${labs}/${acked.id}/amendments`, {
        reason: "flag missed",
        changes: { results: [{ name: "K", value: 6.1, unit: "mmol/l", abnormal: true }] },
      });
      assert.equal(amended.acknowledgement, null);
      acked.abnormal = true;
      acked.acknowledged = false;
      const gone = model.find((l) => l.status === "ordered")!;
      await s.ok("practitioner", "POST", `${labs}/${gone.id}/entered-in-error`, { reason: "dup" });
      gone.eie = true;

      const expect = (f: (l: Lab) => boolean, includeEie = false) =>
        model.filter((l) => (includeEie || !l.eie) && f(l)).map((l) => l.id).sort().reverse();
      const cases: [string, (l: Lab) => boolean, boolean?][] = [
        ["", () => true],
        ["?status=ordered", (l) => l.status === "ordered"],
        ["?status=ordered,in_progress", (l) => ["ordered", "in_progress"].includes(l.status)],
        [
          "?status=completed,cancelled,completed",
          (l) => ["completed", "cancelled"].includes(l.status),
        ],
        ["?abnormal=true", (l) => l.abnormal],
        ["?abnormal=false", (l) => !l.abnormal],
        ["?acknowledged=true", (l) => l.acknowledged],
        ["?abnormal=true&acknowledged=false", (l) => l.abnormal && !l.acknowledged],
        [
          "?status=completed&acknowledged=false",
          (l) => l.status === "completed" && !l.acknowledged,
        ],
        ["?status=ordered&includeEnteredInError=true", (l) => l.status === "ordered", true],
      ];
      for (const [q, f, eie] of cases) {
        // one clinical date (today): newest first is id descending
        assert.deepEqual(await walk(s, `${labs}${q}`), expect(f, eie), q);
      }
      assert.ok(expect((l) => l.abnormal && !l.acknowledged).length > 0);
      for (const q of ["?status=", "?status=done", "?status=ordered,", "?abnormal=yes"]) {
        const r = await s.call("practitioner", "GET", `${labs}${q}`);
        assert.equal(r.status, 422, q);
        assert.equal((await r.json()).type, "/problems/validation");
      }

      // 20 concurrent moves from one version (If-Match): exactly one wins, the rest 412
      const race = await s.ok("practitioner", "POST", labs, { testName: "race" }, 201);
      const moves = await Promise.all(
        Array.from(
          { length: 20 },
          () =>
            s.call("practitioner", "PATCH", `${labs}/${race.id}`, { status: "in_progress" }, {
              "if-match": '"1"',
            }),
        ),
      );
      const statuses = await Promise.all(moves.map(async (r) => {
        await r.body?.cancel();
        return r.status;
      }));
      assert.equal(statuses.filter((x) => x === 200).length, 1, statuses.join());
      assert.ok(statuses.every((x) => x === 200 || x === 412 || x === 409), statuses.join());
      // without If-Match the losers are decided again on the new version: illegal, 409
      const race2 = await s.ok("practitioner", "POST", labs, { testName: "race 2" }, 201);
      const moves2 = await Promise.all(
        Array.from(
          { length: 20 },
          () => s.call("practitioner", "PATCH", `${labs}/${race2.id}`, { status: "in_progress" }),
        ),
      );
      const types = await Promise.all(
        moves2.map(async (r) =>
          r.status === 200 ? (await r.body?.cancel(), "ok") : (await r.json()).type
        ),
      );
      assert.equal(types.filter((x) => x === "ok").length, 1, types.join());
      assert.ok(
        types.every((x) => x === "ok" || x === "/problems/illegal-transition"),
        types.join(),
      );
      const h = await s.ok("practitioner", "GET", `${labs}/${race2.id}/history`);
      assert.deepEqual(h.items.map((i: { change: string }) => i.change), [
        "recorded",
        "status_changed",
      ]);
    } finally {
      await s.close();
    }
  });
}

Deno.test("visits and lab tests: validation, moves, acknowledge, history, policy", async () => {
  const s = await setup("pglite");
  try {
    const { base } = s;
    const problem = async (r: Response, status: number) => {
      assert.equal(r.status, status, await r.clone().text());
      return await r.json();
    };
    // visits: 422 names every bad field, nested ones by their path
    const v = await problem(
      await s.call("practitioner", "POST", `${base}/visits`, {
        visitDate: addDays(TODAY, 1),
        visitType: "checkup",
        weightKg: 900,
        temperatureC: 12,
        practitionerId: s.ids.reception,
        vitalSigns: { heartRate: 500, respiratoryRate: 1.5, spo2: 101, pulse: 3 },
        followUp: { needed: "yes", notes: "" },
        clinicId: "nope",
        color: "red",
      }),
      422,
    );
    assert.deepEqual(paths(v), [
      "clinicId",
      "color",
      "followUp.needed",
      "followUp.notes",
      "practitionerId",
      "temperatureC",
      "visitDate",
      "visitType",
      "vitalSigns.heartRate",
      "vitalSigns.pulse",
      "vitalSigns.respiratoryRate",
      "vitalSigns.spo2",
      "weightKg",
    ]);
    const cross = await problem(
      await s.call("practitioner", "POST", `${base}/visits`, {
        visitDate: "2026-06-10",
        visitType: "follow_up",
        vitalSigns: { systolic: 80, diastolic: 90 },
        followUp: { needed: true },
      }),
      422,
    );
    assert.deepEqual(paths(cross), ["followUp.date", "vitalSigns.systolic"]);
    const early = await problem(
      await s.call("practitioner", "POST", `${base}/visits`, {
        visitDate: "2026-06-10",
        visitType: "follow_up",
        followUp: { needed: true, date: "2026-06-09" },
      }),
      422,
    );
    assert.deepEqual(paths(early), ["followUp.date"]);
    const visit = await problem(
      await s.call("practitioner", "POST", `${base}/visits`, {
        visitDate: "2026-06-10",
        visitType: "emergency",
        diagnosis: "sprain",
        weightKg: 70.5,
        temperatureC: 37.2,
        vitalSigns: { heartRate: 72, systolic: 120, diastolic: 80, spo2: 98 },
        followUp: { needed: true, date: "2026-06-24", notes: "recheck" },
      }),
      201,
    );
    assert.equal(visit.practitionerId, s.ids.practitioner);
    assert.equal(visit.kind, "visits");
    assert.deepEqual(visit.vitalSigns, { heartRate: 72, systolic: 120, diastolic: 80, spo2: 98 });
    const older = await problem(
      await s.call("practitioner", "POST", `${base}/visits`, {
        visitDate: "2026-05-01",
        visitType: "routine_checkup",
        practitionerId: s.ids.second,
      }),
      201,
    );
    assert.equal(older.practitionerId, s.ids.second);
    // the clinical date is the visit date
    assert.deepEqual(await walk(s, `${base}/visits?from=2026-06-01`), [visit.id]);
    assert.deepEqual(await walk(s, `${base}/visits?to=2026-05-31`), [older.id]);
    assert.deepEqual(await walk(s, `${base}/visits`), [visit.id, older.id]);
    // an amendment keeps the nested rules
    const badAmend = await problem(
      await s.call("practitioner", "POST", `${base}/visits/${visit.id}/amendments`, {
        reason: "typo",
        changes: { vitalSigns: { systolic: 70, diastolic: 80 } },
      }),
      422,
    );
    assert.deepEqual(paths(badAmend), ["changes.vitalSigns.systolic"]);
    // patients add no visits and no lab tests
    await problem(
      await s.call("patient", "POST", `${base}/visits`, {
        visitDate: "2026-06-10",
        visitType: "other",
      }),
      403,
    );
    await problem(await s.call("patient", "POST", `${base}/lab-tests`, { testName: "x" }), 403);

    // lab tests: validation, a new test is never cancelled, the attachment is the patient's
    const labs = `${base}/lab-tests`;
    const l = await problem(
      await s.call("practitioner", "POST", labs, {
        testName: "",
        status: "cancelled",
        orderedById: s.ids.reception,
        results: [{ name: "Hb", value: 12 }, { value: {}, abnormal: "yes", unit: "" }],
        attachmentMediaId: crypto.randomUUID(),
      }),
      422,
    );
    assert.deepEqual(paths(l), [
      "attachmentMediaId",
      "orderedById",
      "results.1.abnormal",
      "results.1.name",
      "results.1.unit",
      "results.1.value",
      "status",
      "testName",
    ]);
    const doc = new FormData();
    doc.set("category", "patient_records");
    doc.set("file", new Blob(["result\n"]), "result.txt");
    const media = await s.t.app.request(`${base.replace("/chart", "")}/documents`, {
      method: "POST",
      headers: bearer((await login(s.t.app, "self@home.test")).body.accessToken),
      body: doc,
    });
    const pdf = (await problem(media, 201)).id;

    // every move over HTTP: a test in each status, then each target
    const inStatus = async (status: LabStatus) => {
      const e = await s.ok("practitioner", "POST", labs, {
        testName: "cbc",
        ...(status === "cancelled" ? {} : { status }),
      }, 201);
      if (status === "cancelled") {
        await s.ok("practitioner", "PATCH", `${labs}/${e.id}`, { status: "cancelled" });
      }
      return e.id as string;
    };
    for (const from of LAB_STATUSES) {
      for (const to of LAB_STATUSES) {
        const id = await inStatus(from);
        const r = await s.call("practitioner", "PATCH", `${labs}/${id}`, { status: to });
        const body = await r.json();
        if (LAB_MOVES[from].includes(to)) {
          assert.equal(r.status, 200, `${from}>${to}`);
          assert.equal(body.status, to);
        } else {
          assert.equal(r.status, 409, `${from}>${to}`);
          assert.equal(body.type, "/problems/illegal-transition");
          const after = await s.ok("practitioner", "GET", `${labs}/${id}`);
          assert.equal(after.status, from);
        }
      }
    }
    // PATCH: bad bodies are 422 naming the fields; a stale If-Match is 412; unknown 404
    const lab = await problem(
      await s.call("practitioner", "POST", labs, {
        testName: "lipids",
        testType: "blood",
        attachmentMediaId: pdf,
      }),
      201,
    );
    assert.equal(lab.status, "ordered");
    assert.equal(lab.orderedById, s.ids.practitioner);
    assert.equal(lab.attachmentMediaId, pdf);
    const url = `${labs}/${lab.id}`;
    const badPatch = await problem(
      await s.call("practitioner", "PATCH", url, {
        status: "done",
        results: [{ name: "LDL" }],
        extra: 1,
      }),
      422,
    );
    assert.deepEqual(paths(badPatch), ["extra", "results.0.value", "status"]);
    await problem(
      await s.call("practitioner", "PATCH", `${labs}/${crypto.randomUUID()}`, {
        status: "in_progress",
      }),
      404,
    );
    // the status is not amendable: only PATCH moves it
    const viaAmend = await problem(
      await s.call("practitioner", "POST", `${url}/amendments`, {
        reason: "skip",
        changes: { status: "completed" },
      }),
      422,
    );
    assert.deepEqual(paths(viaAmend), ["changes.status"]);
    const started = await s.call("practitioner", "PATCH", url, { status: "in_progress" }, {
      "if-match": '"1"',
    });
    assert.equal((await problem(started, 200)).status, "in_progress");
    assert.equal(started.headers.get("etag"), '"2"');
    await problem(
      await s.call("practitioner", "PATCH", url, { status: "completed" }, { "if-match": '"1"' }),
      412,
    );
    // acknowledge: only completed (409), only the orderer (403), idempotent
    const early409 = await problem(
      await s.call("practitioner", "POST", `${url}/acknowledge`),
      409,
    );
    assert.equal(early409.type, "/problems/conflict");
    const done = await problem(
      await s.call("practitioner", "PATCH", url, {
        status: "completed",
        resultText: "LDL high",
        results: [{
          name: "LDL",
          value: 4.9,
          unit: "mmol/l",
          referenceRange: "<3",
          abnormal: true,
        }],
      }, { "if-match": '"2"' }),
      200,
    );
    assert.equal(done.resultText, "LDL high");
    await problem(await s.call("second", "POST", `${url}/acknowledge`), 403);
    await problem(await s.call("patient", "POST", `${url}/acknowledge`), 403);
    await problem(await s.call("patient", "PATCH", url, { status: "cancelled" }), 403);
    const seen = await s.ok("practitioner", "POST", `${url}/acknowledge`);
    assert.equal(seen.acknowledgement.by.id, s.ids.practitioner);
    const again = await s.call("practitioner", "POST", `${url}/acknowledge`);
    assert.equal(again.status, 200);
    assert.equal(again.headers.get("etag"), '"4"');
    assert.deepEqual((await again.json()).acknowledgement, seen.acknowledgement);
    const listed = await s.ok("practitioner", "GET", `${labs}?acknowledged=true`);
    assert.deepEqual(listed.items.map((i: { id: string }) => i.id), [lab.id]);
    assert.deepEqual(listed.items[0].acknowledgement, seen.acknowledgement);
    // completed is an end
    await problem(await s.call("practitioner", "PATCH", url, { status: "cancelled" }), 409);
    // history: every version, who and what changed
    const h = await s.ok("practitioner", "GET", `${url}/history`);
    assert.deepEqual(h.items.map((i: { change: string }) => i.change), [
      "recorded",
      "status_changed",
      "status_changed",
      "acknowledged",
    ]);
    assert.deepEqual(h.items[2].changes, {
      resultText: "LDL high",
      results: [{ name: "LDL", value: 4.9, unit: "mmol/l", referenceRange: "<3", abnormal: true }],
      status: "completed",
    });
    assert.equal(h.items[2].content.status, "completed");
    assert.deepEqual(h.items[3].by, { id: s.ids.practitioner, role: "practitioner" });
    // nothing of the result in plaintext in the log
    const [leak] = await s.t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where data::text like '%LDL high%'`,
    );
    assert.equal(leak?.n, 0);
  } finally {
    await s.close();
  }
});
