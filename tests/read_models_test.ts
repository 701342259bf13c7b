import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import { encounters } from "../projections/encounters.ts";
import { media } from "../projections/media.ts";
import { patients } from "../projections/patients.ts";
import { sql } from "../src/store/sql.ts";
import { eachDriver } from "./support/harness.ts";
import { type GivenEvent, givenEventsThenRows } from "./support/projection.ts";

/**
 * The app's read models, given events → then rows: each step appends events
 * of the real catalogue (PHI sealed by the store) to the same log, replays
 * the projection over the whole log as a rebuild does, and checks its rows.
 */
const opts = { catalog };

const P = "00000000-0000-4000-8000-000000000001";
const P2 = "00000000-0000-4000-8000-000000000002";
const DOC = "00000000-0000-4000-8000-0000000000d1";
const ENC = "00000000-0000-4000-8000-0000000000e1";
const ENC2 = "00000000-0000-4000-8000-0000000000e2";
const M = "00000000-0000-4000-8000-0000000000a1";
const SHA = "a".repeat(64);

const demographics = (mrn: string, first: string) => ({
  mrn,
  firstName: first,
  middleName: null,
  lastName: "Lovelace",
  dateOfBirth: "1980-02-03",
  gender: "F",
  phone: "555-0100",
  email: `${first.toLowerCase()}@example.org`,
  address: { line1: "1 Main St", line2: null, city: "Springfield", state: "IL", zip: "62701" },
  emergencyContact: null,
  insurance: null,
});

const erase = (subjectId: string): GivenEvent => ({
  stream: `subject-${subjectId}`,
  type: "SubjectKeyDestroyed",
  data: { subjectId, reason: "erasure request" },
});

eachDriver("read model patients: registered, updated, deleted, restored, erased", async (h) => {
  const rows = (given: GivenEvent[]) =>
    givenEventsThenRows(
      h,
      patients,
      given,
      sql`select id::text, mrn, first_name, last_name, email, date_of_birth::text as dob,
        gender, city, state, deleted, version, erased_at is not null as erased
        from patients order by id`,
    );
  const team = () =>
    h.db.query(sql`select patient_id::text, practitioner_id::text from care_team
      order by patient_id, practitioner_id`);
  const row = (over: Record<string, unknown>) => ({
    id: P,
    mrn: "MRN-1",
    first_name: "Ada",
    last_name: "Lovelace",
    email: "ada@example.org",
    dob: "1980-02-03",
    gender: "F",
    city: "Springfield",
    state: "IL",
    deleted: false,
    version: 1,
    erased: false,
    ...over,
  });
  const other = row({ id: P2, mrn: "MRN-2", first_name: "Bea", email: "bea@example.org" });

  assert.deepEqual(
    await rows([
      {
        stream: `patient-${P}`,
        type: "PatientRegistered",
        data: { patientId: P, ...demographics("MRN-1", "Ada") },
      },
      {
        stream: `patient-${P2}`,
        type: "PatientRegistered",
        data: { patientId: P2, ...demographics("MRN-2", "Bea") },
      },
      {
        stream: `careteam-${P}`,
        type: "CareTeamMemberAdded",
        data: { patientId: P, practitionerId: DOC },
      },
      {
        stream: `careteam-${P2}`,
        type: "CareTeamMemberAdded",
        data: { patientId: P2, practitionerId: DOC },
      },
    ]),
    [row({}), other],
  );
  assert.deepEqual(await team(), [
    { patient_id: P, practitioner_id: DOC },
    { patient_id: P2, practitioner_id: DOC },
  ]);

  // an update touches only the fields it names; a null address clears city and state
  assert.deepEqual(
    await rows([{
      stream: `patient-${P}`,
      type: "PatientUpdated",
      data: { patientId: P, changes: { firstName: "Augusta", email: null, address: null } },
    }]),
    [row({ first_name: "Augusta", email: null, city: null, state: null, version: 2 }), other],
  );

  const updated = row({ first_name: "Augusta", email: null, city: null, state: null });
  assert.deepEqual(
    await rows([{
      stream: `patient-${P}`,
      type: "PatientDeleted",
      data: { patientId: P, reason: "duplicate" },
    }]),
    [{ ...updated, deleted: true, version: 3 }, other],
  );
  assert.deepEqual(
    await rows([{ stream: `patient-${P}`, type: "PatientRestored", data: { patientId: P } }]),
    [{ ...updated, version: 4 }, other],
  );

  // erasure leaves a tombstone: PHI columns null, erased_at set, care team gone;
  // the other patient keeps everything (and a replay over sealed-but-erased
  // events does not trip on the nullable PHI columns)
  assert.deepEqual(await rows([erase(`patient-${P}`)]), [
    row({
      mrn: null,
      first_name: null,
      last_name: null,
      email: null,
      dob: null,
      gender: null,
      city: null,
      state: null,
      version: 4,
      erased: true,
    }),
    other,
  ]);
  assert.deepEqual(await team(), [{ patient_id: P2, practitioner_id: DOC }]);
}, opts);

eachDriver("read model encounters: planned, in progress, finished, cancelled", async (h) => {
  const rows = (given: GivenEvent[]) =>
    givenEventsThenRows(
      h,
      encounters,
      given,
      sql`select id::text, patient_id::text, practitioner_id::text,
        starts_at = '2026-03-01T09:00:00Z'::timestamptz as starts_ok, status, version,
        finished_at is not null as finished
        from encounters order by id`,
    );
  const planned = (id: string): GivenEvent => ({
    stream: `encounter-${id}`,
    type: "EncounterPlanned",
    data: {
      encounterId: id,
      patientId: P,
      practitionerId: DOC,
      startsAt: "2026-03-01T10:00:00+01:00",
      reason: "follow-up",
    },
  });
  const changed = (id: string, from: string, to: string): GivenEvent => ({
    stream: `encounter-${id}`,
    type: "EncounterStatusChanged",
    data: { encounterId: id, patientId: P, from, to },
  });
  const row = (id: string, status: string, version: number, finished = false) => ({
    id,
    patient_id: P,
    practitioner_id: DOC,
    starts_ok: true,
    status,
    version,
    finished,
  });

  assert.deepEqual(await rows([planned(ENC), planned(ENC2)]), [
    row(ENC, "planned", 1),
    row(ENC2, "planned", 1),
  ]);
  assert.deepEqual(await rows([changed(ENC, "planned", "in_progress")]), [
    row(ENC, "in_progress", 2),
    row(ENC2, "planned", 1),
  ]);
  assert.deepEqual(
    await rows([changed(ENC, "in_progress", "finished"), changed(ENC2, "planned", "cancelled")]),
    [row(ENC, "finished", 3, true), row(ENC2, "cancelled", 2)],
  );
  // the encounter rows hold no PHI: erasing the patient leaves them as they are
  assert.deepEqual(await rows([erase(`patient-${P}`)]), [
    row(ENC, "finished", 3, true),
    row(ENC2, "cancelled", 2),
  ]);
}, opts);

eachDriver("read model media: uploaded, deleted, restored, patient erased", async (h) => {
  const rows = (given: GivenEvent[]) =>
    givenEventsThenRows(
      h,
      media,
      given,
      sql`select id::text, patient_id::text, encounter_id::text, uploader_id::text, kind,
        category, content_type, size::int as size, sha256, blob, thumb_blob, scan_status,
        modality, study_date, deleted, version
        from media order by id`,
    );
  const uploaded: GivenEvent = {
    stream: `media-${M}`,
    type: "MediaUploaded",
    data: {
      mediaId: M,
      patientId: P,
      encounterId: ENC,
      uploaderId: DOC,
      kind: "document",
      category: "imaging",
      contentType: "application/dicom",
      size: 1234,
      sha256: SHA,
      blob: `blobs/${SHA}`,
      uploadSize: 1234,
      uploadSha256: SHA,
      width: null,
      height: null,
      thumbnail: { blob: "blobs/thumb", size: 10, sha256: SHA, width: 4, height: 4 },
      scan: { status: "clean", scanner: "clamd" },
      dicomPatientMismatch: false,
      filename: "ct-head.dcm",
      notes: "left side",
      dicom: { modality: "CT", studyDate: "20260301", patientName: "LOVELACE^ADA" },
    },
  };
  const row = (over: Record<string, unknown>) => ({
    id: M,
    patient_id: P,
    encounter_id: ENC,
    uploader_id: DOC,
    kind: "document",
    category: "imaging",
    content_type: "application/dicom",
    size: 1234,
    sha256: SHA,
    blob: `blobs/${SHA}`,
    thumb_blob: "blobs/thumb",
    scan_status: "clean",
    modality: "CT",
    study_date: "20260301",
    deleted: false,
    version: 1,
    ...over,
  });

  assert.deepEqual(await rows([uploaded]), [row({})]);
  assert.deepEqual(
    await rows([{
      stream: `media-${M}`,
      type: "MediaDeleted",
      data: { mediaId: M, patientId: P, reason: "wrong patient" },
    }]),
    [row({ deleted: true, version: 2 })],
  );
  assert.deepEqual(
    await rows([{
      stream: `media-${M}`,
      type: "MediaRestored",
      data: { mediaId: M, patientId: P },
    }]),
    [row({ version: 3 })],
  );
  // erasing the patient nulls the DICOM columns (a replay reads the sealed header as null)
  assert.deepEqual(await rows([erase(`patient-${P}`)]), [
    row({ modality: null, study_date: null, version: 3 }),
  ]);
}, opts);
