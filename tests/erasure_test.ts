/**
 * Erasure reaches the read models: after `POST /v1/patients/:id/erasure` no
 * table holds any of the patient's PHI in the clear, the patient's account
 * is deactivated and erased, every projection rebuilds over the erased
 * events to the same rows, the hash chain still verifies, and the patient
 * answers 410 to everyone.
 */
import assert from "node:assert/strict";
import { Image } from "imagescript";
import { registerUser } from "../src/auth/accounts.ts";
import type { Db } from "../src/store/db.ts";
import { rebuildProjection, setupProjections } from "../src/store/projection_engine.ts";
import { ident, sql } from "../src/store/sql.ts";
import { verifyChain } from "../src/store/verify_chain.ts";
import { openTestApp } from "./support/app.ts";
import { buildDicom } from "./support/dicom.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { form, problemOf } from "./support/media.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

/** The patient's PHI, each value distinctive enough that a hit is a leak. */
const PHI = {
  mrn: "ERZ-55231",
  firstName: "Quillonia",
  middleName: "Berengaria",
  lastName: "Marchbankes",
  dateOfBirth: "1961-07-23",
  phone: "+15555550199",
  email: "q.marchbankes@example.test",
  line1: "17 Orrery Lane",
  city: "Zephyrtown",
  zip: "99401",
  contactName: "Ottoline Marchbankes",
  contactPhone: "+15555550142",
  memberId: "INS-8812377",
  accountEmail: "quillonia@home.test",
  accountName: "Quillonia M.",
  encounterReason: "suspected zephyrosis",
  notes: "ulcer beside the orrery scar",
  photoName: "quillonia-heel.jpg",
  docName: "quillonia-knee.dcm",
  docDescription: "knee series for Quillonia",
  dicomName: "MARCHBANKES^QUILLONIA",
  dicomAccession: "ACC-7712399",
  visitDiagnosis: "orrery-scar dermatitis",
  labTest: "zephyrosis titre panel",
  labResult: "titre 1:640 Quillonia",
  dicomStudy: "Orrery knee study",
  dicomBirth: "19610723",
  studyDate: "2019-02-17",
  allergen: "Zyxwortberry pollen",
  reaction: "orrery hives",
  medication: "Quillonex",
  amendReason: "Quillonex dose was misheard",
};

const photo = (w: number, h: number) => {
  const img = new Image(w, h);
  for (let y = 1; y <= h; y++) {
    for (let x = 1; x <= w; x++) {
      img.setPixelAt(x, y, Image.rgbaToColor((x * 255 / w) | 0, (y * 255 / h) | 0, 90, 255));
    }
  }
  return img;
};

/** Every (table, column, value) where a PHI value appears in a text or jsonb column. */
const findPhi = async (db: Db, values: string[]) => {
  const cols = await db.query<{ table_name: string; column_name: string }>(
    sql`select table_name, column_name from information_schema.columns
      where table_schema = current_schema()
        and data_type in ('text', 'character varying', 'jsonb', 'json', 'date', 'USER-DEFINED')
      order by table_name, column_name`,
  );
  assert.ok(cols.some((c) => c.table_name === "patients" && c.column_name === "mrn"));
  const hits: string[] = [];
  for (const { table_name: t, column_name: c } of cols) {
    // one query per column: which of the values occur in it
    const rows = await db.query<{ v: string }>(sql`select v from unnest(${values}::text[]) as v
      where exists (select 1 from ${ident(t)}
        where position(lower(v) in lower(${ident(c)}::text)) > 0)`);
    for (const r of rows) hits.push(`${t}.${c}: ${r.v}`);
  }
  return hits;
};

/** Every projection table's rows, in a stable order, as text. */
const snapshot = async (db: Db, tables: string[]) => {
  const out: Record<string, string[]> = {};
  for (const t of tables) {
    const rows = await db.query<{ r: string }>(sql`select (x.*)::text as r from ${ident(t)} x`);
    out[t] = rows.map((r) => r.r).sort();
  }
  return out;
};

// PostgreSQL when reachable, else PGlite: the projections' SQL is the same on both, and
// projection_test.ts covers rebuilding on each; one run keeps the suite fast
for (const driver of (await drivers()).slice(0, 1)) {
  Deno.test(`erasure [${driver}]: no PHI left in any table, account erased, rebuild and verify pass, 410 after`, async () => {
    const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
    const t = await openTestApp({
      CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
      ...(pg ? { DATABASE_URL: pg.url } : {}),
    });
    try {
      const tokens: Record<string, string> = {};
      const ids: Record<string, string> = {};
      for (const role of ["admin", "clinical_ops", "practitioner"] as const) {
        const u = await createUser(t.runtime, role);
        ids[role] = u.id;
        tokens[role] = (await login(t.app, u.email)).body.accessToken;
      }
      const request = (who: string, method: string, path: string, body?: FormData | object) =>
        t.app.request(path, {
          method,
          headers: {
            ...bearer(tokens[who]!),
            ...(body && !(body instanceof FormData) ? { "content-type": "application/json" } : {}),
          },
          ...(body ? { body: body instanceof FormData ? body : JSON.stringify(body) } : {}),
        });

      // a patient with everything: demographics, an account, an encounter, a photo, a DICOM file
      const res = await request("admin", "POST", "/v1/patients", {
        mrn: PHI.mrn,
        firstName: PHI.firstName,
        middleName: PHI.middleName,
        lastName: PHI.lastName,
        dateOfBirth: PHI.dateOfBirth,
        gender: "F",
        phone: PHI.phone,
        email: PHI.email,
        address: { line1: PHI.line1, line2: null, city: PHI.city, state: "OR", zip: PHI.zip },
        emergencyContact: { name: PHI.contactName, phone: PHI.contactPhone, relation: "sister" },
        insurance: { payer: "Acme Health", memberId: PHI.memberId, groupNumber: null },
      });
      assert.equal(res.status, 201, await res.clone().text());
      const patient = await res.json();
      const other = await (await request("admin", "POST", "/v1/patients", {
        mrn: "KEEP-1",
        firstName: "Kept",
        lastName: "Record",
        dateOfBirth: "1990-01-01",
        gender: "M",
      })).json();
      const account = await registerUser(
        t.runtime.store,
        {
          email: PHI.accountEmail,
          name: PHI.accountName,
          role: "patient",
          password: PASSWORD,
          patientId: patient.id,
        },
        { actorId: "test-setup" },
        t.runtime.passwordParams,
      );
      const own = await login(t.app, account.email);
      tokens.patient = own.body.accessToken;
      assert.equal((await request("patient", "GET", `/v1/patients/${patient.id}`)).status, 200);
      const encounter = await (await request(
        "admin",
        "POST",
        `/v1/patients/${patient.id}/encounters`,
        {
          practitionerId: ids.practitioner,
          startsAt: "2026-12-01T09:00:00Z",
          reason: PHI.encounterReason,
        },
      )).json();
      const up = await request(
        "practitioner",
        "POST",
        `/v1/encounters/${encounter.id}/media`,
        form(await photo(64, 48).encodeJPEG(90), PHI.photoName, {
          category: "before",
          notes: PHI.notes,
        }),
      );
      assert.equal(up.status, 201, await up.clone().text());
      const photoItem = await up.json();
      const dicom = buildDicom({
        patientName: PHI.dicomName,
        patientId: PHI.mrn,
        patientBirthDate: PHI.dicomBirth,
        studyDate: PHI.studyDate.replaceAll("-", ""),
        studyDescription: PHI.dicomStudy,
        accessionNumber: PHI.dicomAccession,
        modality: "MR",
      }, { pixels: { rows: 4, cols: 4 } });
      const doc = await request(
        "admin",
        "POST",
        `/v1/patients/${patient.id}/documents`,
        form(dicom, PHI.docName, { category: "medical_images", description: PHI.docDescription }),
      );
      assert.equal(doc.status, 201, await doc.clone().text());
      const docItem = await doc.json();

      // chart entries: an allergy and a prescription (amended), by the encounter's practitioner
      const chart = `/v1/patients/${patient.id}/chart`;
      const allergy = await request("practitioner", "POST", `${chart}/allergies`, {
        allergen: PHI.allergen,
        type: "environmental",
        severity: "severe",
        reaction: PHI.reaction,
      });
      assert.equal(allergy.status, 201, await allergy.clone().text());
      const rx = await (await request("practitioner", "POST", `${chart}/prescriptions`, {
        medication: PHI.medication,
        dosage: "20 mg",
        frequency: "twice daily",
        route: "oral",
        startDate: "2026-01-05",
      })).json();
      const amended = await request(
        "practitioner",
        "POST",
        `${chart}/prescriptions/${rx.id}/amendments`,
        { reason: PHI.amendReason, changes: { dosage: "10 mg" } },
      );
      assert.equal(amended.status, 200, await amended.clone().text());
      // a visit and a lab test moved to in_progress with a result (its own event type)
      const visit = await request("practitioner", "POST", `${chart}/visits`, {
        visitDate: "2026-01-05",
        visitType: "emergency",
        diagnosis: PHI.visitDiagnosis,
      });
      assert.equal(visit.status, 201, await visit.clone().text());
      const lab = await (await request("practitioner", "POST", `${chart}/lab-tests`, {
        testName: PHI.labTest,
      })).json();
      const moved = await request(
        "practitioner",
        "PATCH",
        `${chart}/lab-tests/${lab.id}`,
        { status: "in_progress", resultText: PHI.labResult },
      );
      assert.equal(moved.status, 200, await moved.clone().text());

      const values = Object.values(PHI);
      // the search finds what the read models hold today: it can fail
      const before = await findPhi(t.runtime.db, values);
      for (
        const col of [
          "patients.mrn",
          "patients.last_name",
          "users.email",
          "media.study_date",
          "chart_entries.content",
        ]
      ) {
        assert.ok(before.some((h) => h.startsWith(col)), `${col} before erasure`);
      }

      // only admins erase, and only with a reason; a refused erasure changes nothing
      const url = `/v1/patients/${patient.id}/erasure`;
      const head = await t.runtime.store.headPosition();
      assert.equal((await request("clinical_ops", "POST", url, { reason: "asked" })).status, 403);
      await problemOf(
        await request("admin", "POST", url, { reason: " " }),
        422,
        "/problems/validation",
      );
      await problemOf(
        await request("admin", "POST", url, { reason: "asked", extra: 1 }),
        422,
        "/problems/validation",
      );
      await problemOf(
        await request("admin", "POST", `/v1/patients/${crypto.randomUUID()}/erasure`, {
          reason: "asked",
        }),
        404,
        "/problems/not-found",
      );
      // the refused ones wrote their AccessDenied and nothing else
      assert.deepEqual(
        (await t.runtime.db.query<{ type: string }>(
          sql`select type from events where global_position > ${head}`,
        )).map((r) => r.type),
        ["AccessDenied"],
      );

      const erased = await request("admin", "POST", url, { reason: "patient's GDPR request" });
      assert.equal(erased.status, 200, await erased.clone().text());
      const summary = await erased.json();
      assert.equal(summary.patientId, patient.id);
      assert.deepEqual(summary.userIds, [account.id]);
      await problemOf(
        await request("admin", "POST", url, { reason: "again" }),
        410,
        "/problems/erased",
      );
      const described = await t.app.request("/problems/erased");
      assert.equal(described.status, 200);
      assert.equal((await described.json()).status, 410);

      const leaks = await findPhi(t.runtime.db, values);
      assert.deepEqual(leaks, []);
      // the chart's read model holds nothing of the patient any more
      const [rows] = await t.runtime.db.query<{ n: number }>(
        sql`select count(*)::int as n from chart_entries where patient_id = ${patient.id}::uuid`,
      );
      assert.equal(rows?.n, 0);

      // the account: deactivated by an event, its session and its password useless
      const userEvents = await t.runtime.store.readStream(`user-${account.id}`);
      assert.ok(userEvents.some((e) => e.type === "UserDeactivated"));
      const [ended] = await t.runtime.db.query<{ n: number }>(sql`select count(*)::int as n
        from events where type = 'SessionEnded' and data->>'userId' = ${account.id}
          and data->>'reason' = 'user_deactivated'`);
      assert.equal(ended?.n, 1);
      assert.equal((await request("patient", "GET", "/v1/me")).status, 401);
      assert.equal((await login(t.app, PHI.accountEmail)).res.status, 401);
      const refreshed = await t.app.request("/v1/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refreshToken: own.body.refreshToken }),
      });
      assert.equal(refreshed.status, 401);
      assert.equal((await request("admin", "GET", `/v1/users/${account.id}`)).status, 404);
      const listed = await (await request("admin", "GET", "/v1/users?limit=100")).json();
      assert.ok(!listed.items.some((u: { id: string }) => u.id === account.id));

      const gone = async (phase: string) => {
        for (
          const [who, method, path] of [
            ["admin", "GET", `/v1/patients/${patient.id}`],
            ["practitioner", "GET", `/v1/patients/${patient.id}`],
            ["admin", "PATCH", `/v1/patients/${patient.id}`],
            ["admin", "DELETE", `/v1/patients/${patient.id}?reason=x`],
            ["admin", "POST", `/v1/patients/${patient.id}/restore`],
            ["admin", "GET", `/v1/patients/${patient.id}/history`],
            ["admin", "GET", `/v1/patients/${patient.id}/care-team`],
            ["admin", "GET", `/v1/patients/${patient.id}/encounters`],
            ["admin", "GET", `/v1/patients/${patient.id}/media`],
            ["admin", "GET", `/v1/encounters/${encounter.id}`],
            ["admin", "GET", `/v1/encounters/${encounter.id}/media`],
            ["admin", "GET", `/v1/media/${photoItem.id}`],
            ["admin", "GET", `/v1/media/${photoItem.id}/content`],
            ["admin", "GET", `/v1/media/${docItem.id}`],
            ["admin", "GET", `${chart}/allergies`],
            ["admin", "GET", `${chart}/prescriptions/${rx.id}`],
            ["admin", "GET", `${chart}/prescriptions/${rx.id}/history`],
            ["admin", "GET", `/v1/encounters/${encounter.id}/chart/prescriptions`],
          ] as const
        ) {
          const r = await request(who, method, path, method === "PATCH" ? {} : undefined);
          await problemOf(r, 410, "/problems/erased").catch((err) => {
            throw new Error(`${phase}: ${method} ${path}: ${err.message}`);
          });
        }
        for (const q of ["", "?include_deleted=true", `?search=${PHI.mrn}`]) {
          const list = await (await request("admin", "GET", `/v1/patients${q}`)).json();
          assert.ok(!list.items.some((p: { id: string }) => p.id === patient.id), phase);
        }
        const list = await (await request("admin", "GET", "/v1/patients")).json();
        assert.ok(list.items.some((p: { id: string }) => p.id === other.id));
      };
      await gone("after erasure");

      // every projection rebuilds over the erased events, to the same rows (the
      // inline ones; async ones have no worker in this test, so they were empty)
      const tables = t.runtime.projections.filter((p) => p.mode === "inline")
        .flatMap((p) => [...p.tables]);
      const live = await snapshot(t.runtime.db, tables);
      for (const p of t.runtime.projections) await rebuildProjection(t.runtime.store, p);
      assert.deepEqual(await snapshot(t.runtime.db, tables), live);
      // and a start-up that finds every projection's version bumped builds new
      // tables beside these and switches them in, to the same rows
      const bumped = t.runtime.projections.map((p) => ({ ...p, version: p.version + 1 }));
      await setupProjections(t.runtime.store, bumped);
      assert.deepEqual(await snapshot(t.runtime.db, tables), live);
      const versions = await t.runtime.db.query<{ name: string; version: number }>(
        sql`select name, version from projection_state order by name`,
      );
      assert.deepEqual(
        versions,
        bumped.map((p) => ({ name: p.name, version: p.version }))
          .sort((a, b) => a.name.localeCompare(b.name)),
      );
      assert.deepEqual(await findPhi(t.runtime.db, values), []);
      const report = await verifyChain(t.runtime.db);
      assert.equal(report.ok, true);
      assert.equal(report.brokenCount, 0);
      await gone("after rebuild");
      // the address is free again for a new account
      await createUser(t.runtime, "patient", PHI.accountEmail);

      // 20 concurrent erasures of one patient: one does it, the others find it gone
      const twin = await (await request("admin", "POST", "/v1/patients", {
        mrn: "RACE-20",
        firstName: "Race",
        lastName: "Twenty",
        dateOfBirth: "1980-02-02",
        gender: "U",
      })).json();
      const twinUser = await createUser(t.runtime, "patient", "race@home.test");
      await t.runtime.store.append(`user-${twinUser.id}`, 1, [{
        type: "UserRoleChanged",
        data: { userId: twinUser.id, role: "patient", patientId: twin.id },
      }], { actorId: "test-setup" });
      const raced = await Promise.all(
        Array.from(
          { length: 20 },
          () => request("admin", "POST", `/v1/patients/${twin.id}/erasure`, { reason: "race" }),
        ),
      );
      const statuses = raced.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, ...Array(19).fill(410)]);
      for (const r of raced) await r.body?.cancel();
      const shreds = await t.runtime.db.query<{ stream_id: string }>(sql`select stream_id
        from events where type = 'SubjectKeyDestroyed' and stream_id in
          (${`subject-patient-${twin.id}`}, ${`subject-user-${twinUser.id}`})`);
      assert.equal(shreds.length, 2);
      await problemOf(
        await request("admin", "GET", `/v1/patients/${twin.id}`),
        410,
        "/problems/erased",
      );
    } finally {
      await t.close();
      await pg?.drop();
    }
  });
}
