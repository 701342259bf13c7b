import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import { encounters } from "../projections/encounters.ts";
import { media } from "../projections/media.ts";
import { patients } from "../projections/patients.ts";
import { proxies } from "../projections/proxies.ts";
import { sessions } from "../projections/sessions.ts";
import { users } from "../projections/users.ts";
import { rebuildProjection } from "../src/store/projection_engine.ts";
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
const U = "00000000-0000-4000-8000-0000000000b1";
const U2 = "00000000-0000-4000-8000-0000000000b2";
const S = "00000000-0000-4000-8000-0000000000c1";
const S2 = "00000000-0000-4000-8000-0000000000c2";

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

eachDriver("read model users: registered, role changed, deactivated, erased", async (h) => {
  const rows = (given: GivenEvent[]) =>
    givenEventsThenRows(
      h,
      users,
      given,
      sql`select u.id::text, u.email, u.name, u.role, u.active, u.pending,
        u.patient_id::text, u.phone, u.specialization, u.version,
        u.erased_at is not null as erased, c.password_hash
        from users u left join user_credentials c on c.user_id = u.id order by u.id`,
    );
  const registered = (id: string, email: string, name: string): GivenEvent => ({
    stream: `user-${id}`,
    type: "UserRegistered",
    data: {
      userId: id,
      email,
      name,
      role: "reception",
      patientId: null,
      passwordHash: `hash-${name}`,
    },
  });
  const row = (over: Record<string, unknown>) => ({
    id: U,
    email: "grace@example.org",
    name: "Grace",
    role: "reception",
    active: true,
    pending: false,
    patient_id: null,
    phone: null,
    specialization: null,
    version: 1,
    erased: false,
    password_hash: "hash-Grace",
    ...over,
  });
  const other = row({
    id: U2,
    email: "alan@example.org",
    name: "Alan",
    password_hash: "hash-Alan",
  });

  // the email is stored lower-case
  assert.deepEqual(
    await rows([
      registered(U, "Grace@Example.org", "Grace"),
      registered(U2, "alan@example.org", "Alan"),
    ]),
    [row({}), other],
  );
  assert.deepEqual(
    await rows([
      {
        stream: `user-${U}`,
        type: "UserRoleChanged",
        data: { userId: U, role: "patient", patientId: P },
      },
      {
        stream: `user-${U}`,
        type: "UserProfileUpdated",
        data: { userId: U, phone: "555-0199", specialization: null },
      },
    ]),
    [row({ role: "patient", patient_id: P, phone: "555-0199", version: 3 }), other],
  );
  const patientUser = row({ role: "patient", patient_id: P, phone: "555-0199" });
  assert.deepEqual(
    await rows([{ stream: `user-${U}`, type: "UserDeactivated", data: { userId: U } }]),
    [{ ...patientUser, active: false, version: 4 }, other],
  );
  assert.deepEqual(
    await rows([{ stream: `user-${U}`, type: "UserReactivated", data: { userId: U } }]),
    [{ ...patientUser, version: 5 }, other],
  );
  // erasure: an inactive tombstone keeping id, role and patient link; PHI and
  // the password hash gone; the other user untouched
  assert.deepEqual(await rows([erase(`user-${U}`)]), [
    row({
      email: null,
      name: null,
      role: "patient",
      active: false,
      patient_id: P,
      version: 5,
      erased: true,
      password_hash: null,
    }),
    other,
  ]);
  // a reactivation after erasure does not bring the account back
  assert.deepEqual(
    (await rows([{ stream: `user-${U}`, type: "UserReactivated", data: { userId: U } }]))
      .map((r) => (r as { active: boolean }).active),
    [false, true],
  );
}, opts);

eachDriver("read model sessions: logged in, refreshed, ended, user erased", async (h) => {
  const rows = (given: GivenEvent[]) =>
    givenEventsThenRows(
      h,
      sessions,
      given,
      sql`select id::text, user_id::text, ended_at is not null as ended, end_reason, version,
        amr from sessions order by id`,
    );
  const tokens = () =>
    h.db.query(sql`select digest, session_id::text, rotated from session_refresh_tokens
      order by digest`);
  const loggedIn = (id: string, digest: string): GivenEvent => ({
    stream: `session-${id}`,
    type: "UserLoggedIn",
    data: { sessionId: id, userId: U, refreshTokenDigest: digest, amr: ["pwd"] },
  });
  const row = (id: string, over: Record<string, unknown> = {}) => ({
    id,
    user_id: U,
    ended: false,
    end_reason: null,
    version: 1,
    amr: ["pwd"],
    ...over,
  });

  assert.deepEqual(await rows([loggedIn(S, "d1"), loggedIn(S2, "e1")]), [row(S), row(S2)]);
  assert.deepEqual(await tokens(), [
    { digest: "d1", session_id: S, rotated: false },
    { digest: "e1", session_id: S2, rotated: false },
  ]);

  // a refresh rotates the old digest (kept, to recognise reuse) and stores the new one
  assert.deepEqual(
    await rows([
      {
        stream: `session-${S}`,
        type: "SessionRefreshed",
        data: { sessionId: S, userId: U, refreshTokenDigest: "d2" },
      },
      {
        stream: `session-${S}`,
        type: "SessionSecondFactorVerified",
        data: { sessionId: S, userId: U },
      },
    ]),
    [row(S, { version: 3, amr: ["pwd", "otp"] }), row(S2)],
  );
  assert.deepEqual(await tokens(), [
    { digest: "d1", session_id: S, rotated: true },
    { digest: "d2", session_id: S, rotated: false },
    { digest: "e1", session_id: S2, rotated: false },
  ]);

  assert.deepEqual(
    await rows([{
      stream: `session-${S}`,
      type: "SessionEnded",
      data: { sessionId: S, userId: U, reason: "logout" },
    }]),
    [row(S, { ended: true, end_reason: "logout", version: 4, amr: ["pwd", "otp"] }), row(S2)],
  );

  // erasing the user ends the sessions still open and drops every digest
  // (a replay reads them as null: sealed with the user's key)
  assert.deepEqual(await rows([erase(`user-${U}`)]), [
    row(S, { ended: true, end_reason: "logout", version: 4, amr: ["pwd", "otp"] }),
    row(S2, { ended: true, end_reason: "erased" }),
  ]);
  assert.deepEqual(await tokens(), []);
}, opts);

eachDriver("read models: an actor that is no user (the CLI) is kept as no one", async (h) => {
  await h.store.append(`proxies-${P}`, "any", [{
    type: "ProxyAdded",
    data: { proxyId: S, patientId: P, userId: U, level: "full" },
  }], { actorId: "cli", actorRole: "admin" });
  await rebuildProjection(h.store, proxies);
  assert.deepEqual(
    await h.db.query(sql`select user_id::text, added_by from patient_proxies`),
    [{ user_id: U, added_by: null }],
  );
}, opts);
