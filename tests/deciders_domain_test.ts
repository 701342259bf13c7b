/**
 * Every decider, given events → when a command → then events (or an error),
 * through one helper, pure and without I/O.
 */
import assert from "node:assert/strict";
import { careTeamDecider } from "../src/domain/care_team.ts";
import { encounterDecider, type EncounterEvent } from "../src/domain/encounter.ts";
import { mediaDecider, type NewMediaEvent } from "../src/domain/media.ts";
import { mfaDecider } from "../src/domain/mfa.ts";
import { type NewPatientEvent, patientDecider, type PatientEvent } from "../src/domain/patient.ts";
import { type NewUserEvent, userDecider } from "../src/domain/user.ts";
import { ConflictError, GoneError, NotFoundError, ValidationError } from "../src/errors.ts";
import { spec } from "./support/decider.ts";

const P = "0e5d3f2a-9d1b-4c8e-8f55-7f0c2b9e4a11";
const D = "6f1b0f7e-3c1a-4d53-9a57-1b1f0d6a9e01";
const M = "3a0f6c2e-5b1d-4e7f-8a9b-0c1d2e3f4a5b";
const E = "7d1c7a0e-0b8e-4c53-9a8e-2d6c1f0a9b01";
const TODAY = "2026-11-24";

const demographics = {
  mrn: "MRN-1",
  firstName: "Ada",
  middleName: null,
  lastName: "Lovelace",
  dateOfBirth: "1990-12-10",
  gender: "F" as const,
  phone: null,
  email: null,
  address: null,
  emergencyContact: null,
  insurance: null,
};
const registered: NewPatientEvent = {
  type: "PatientRegistered",
  data: { patientId: P, ...demographics },
};

Deno.test("patient decider: update only what changed; delete needs a reason; restore only the deleted", () => {
  const patient = spec(patientDecider);
  patient.given([registered]).when({
    type: "UpdatePatient",
    changes: { firstName: "Ada", lastName: "Byron" },
    today: TODAY,
  }).then([{ type: "PatientUpdated", data: { patientId: P, changes: { lastName: "Byron" } } }]);
  patient.given([registered]).when({
    type: "UpdatePatient",
    changes: { firstName: "Ada" },
    today: TODAY,
  })
    .then([]);
  patient.given([registered]).when({ type: "DeletePatient", reason: " " }).thenThrows(
    ValidationError,
  );
  patient.given([]).when({ type: "RestorePatient" }).thenThrows(NotFoundError);
  patient.given([registered]).when({ type: "RestorePatient" }).thenThrows(ConflictError);
  patient.given([registered, {
    type: "PatientDeleted",
    data: { patientId: P, reason: "duplicate" },
  }]).when({ type: "RestorePatient" }).then([{ type: "PatientRestored", data: { patientId: P } }]);
});

Deno.test("patient decider: a PATCH merges on the stream's state; nested objects are replaced whole", () => {
  const withAddress: NewPatientEvent = {
    type: "PatientRegistered",
    data: {
      patientId: P,
      ...demographics,
      address: {
        line1: "1 Main St",
        line2: "Apt 2",
        city: "Springfield",
        state: "IL",
        zip: "62701",
      },
    },
  };
  const patient = spec(patientDecider).given([withAddress]);
  patient.when({
    type: "PatchPatient",
    patch: { address: { line1: "2 Oak St", city: "Springfield", state: "IL", zip: "62701" } },
    today: TODAY,
  }).then([{
    type: "PatientUpdated",
    data: {
      patientId: P,
      changes: {
        address: { line1: "2 Oak St", line2: null, city: "Springfield", state: "IL", zip: "62701" },
      },
    },
  }]);
  patient.when({ type: "PatchPatient", patch: { lastName: "Lovelace" }, today: TODAY }).then([]);
  patient.when({ type: "PatchPatient", patch: { mrn: "OTHER" }, today: TODAY })
    .thenThrows(ValidationError, /invalid patient/);
  spec(patientDecider).given([]).when({ type: "PatchPatient", patch: {}, today: TODAY })
    .thenThrows(NotFoundError);
});

Deno.test("patient decider: an erased record (its PHI read as null) is gone to every command", () => {
  const erased = {
    type: "PatientRegistered" as const,
    data: {
      patientId: P,
      mrn: null,
      firstName: null,
      middleName: null,
      lastName: null,
      dateOfBirth: null,
      gender: null,
      phone: null,
      email: null,
      address: null,
      emergencyContact: null,
      insurance: null,
    },
  };
  const patient = spec(patientDecider).given([erased]);
  patient.when({ type: "UpdatePatient", changes: { lastName: "X" }, today: TODAY })
    .thenThrows(GoneError);
  patient.when({ type: "DeletePatient", reason: "r" }).thenThrows(GoneError);
  patient.when({ type: "RegisterPatient", patientId: P, data: demographics, today: TODAY })
    .thenThrows(ConflictError);
});

const planned: EncounterEvent = {
  type: "EncounterPlanned",
  data: {
    encounterId: E,
    patientId: P,
    practitionerId: D,
    startsAt: "2026-12-01T09:00:00Z",
    reason: "r",
  },
};

Deno.test("encounter decider: plan once; finish only what is in progress; the same status is no event", () => {
  const enc = spec(encounterDecider);
  enc.given([planned]).when({ type: "ChangeStatus", to: "in_progress" }).then([{
    type: "EncounterStatusChanged",
    data: { encounterId: E, patientId: P, from: "planned", to: "in_progress" },
  }]);
  enc.given([planned]).when({ type: "ChangeStatus", to: "planned" }).then([]);
  enc.given([planned]).when({ type: "ChangeStatus", to: "finished" }).thenThrows(
    ConflictError,
    /planned to finished/,
  );
  enc.given([]).when({ type: "ChangeStatus", to: "finished" }).thenThrows(NotFoundError);
  enc.given([planned]).when({
    type: "PlanEncounter",
    encounterId: E,
    patientId: P,
    practitionerId: D,
    startsAt: "2026-12-01T09:00:00Z",
    reason: "r",
  }).thenThrows(ConflictError);
});

Deno.test("care team decider: add once, remove members only", () => {
  const added = { type: "CareTeamMemberAdded" as const, data: { patientId: P, practitionerId: D } };
  const team = spec(careTeamDecider);
  team.given([]).when({ type: "AddMember", patientId: P, practitionerId: D }).then([added]);
  team.given([added]).when({ type: "AddMember", patientId: P, practitionerId: D }).then([]);
  team.given([]).when({ type: "RemoveMember", patientId: P, practitionerId: D }).then([]);
  team.given([added]).when({ type: "RemoveMember", patientId: P, practitionerId: D }).then([{
    type: "CareTeamMemberRemoved",
    data: { patientId: P, practitionerId: D },
  }]);
});

const uploaded: NewMediaEvent = {
  type: "MediaUploaded",
  data: {
    mediaId: M,
    patientId: P,
    encounterId: null,
    uploaderId: D,
    kind: "photo",
    category: "wound",
    contentType: "image/png",
    size: 1,
    sha256: "0".repeat(64),
    blob: "b",
    uploadSize: 1,
    uploadSha256: "0".repeat(64),
    width: 1,
    height: 1,
    thumbnail: null,
    scan: { status: "clean", scanner: null },
    dicomPatientMismatch: false,
    filename: "a.png",
    notes: null,
    dicom: null,
  },
};

Deno.test("media decider: recorded once; soft delete with a reason; restore only the deleted", () => {
  const media = spec(mediaDecider);
  media.given([]).when({ type: "RecordUpload", data: uploaded.data }).then([uploaded]);
  media.given([uploaded]).when({ type: "RecordUpload", data: uploaded.data }).thenThrows(
    ConflictError,
  );
  media.given([]).when({ type: "DeleteMedia", reason: "wrong patient" }).thenThrows(NotFoundError);
  media.given([uploaded]).when({ type: "DeleteMedia", reason: "  " }).thenThrows(ValidationError);
  const deleted: NewMediaEvent = {
    type: "MediaDeleted",
    data: { mediaId: M, patientId: P, reason: "wrong patient" },
  };
  media.given([uploaded]).when({ type: "DeleteMedia", reason: "wrong patient" }).then([deleted]);
  media.given([uploaded, deleted]).when({ type: "DeleteMedia", reason: "again" }).thenThrows(
    ConflictError,
  );
  media.given([uploaded]).when({ type: "RestoreMedia" }).thenThrows(ConflictError);
  media.given([uploaded, deleted]).when({ type: "RestoreMedia" }).then([{
    type: "MediaRestored",
    data: { mediaId: M, patientId: P },
  }]);
});

Deno.test("user decider: a batch is decided in turn; only a patient user has a record", () => {
  const reg: NewUserEvent = {
    type: "UserRegistered",
    data: {
      userId: D,
      email: "a@b.c",
      name: "A",
      role: "practitioner",
      patientId: null,
      passwordHash: "h",
    },
  };
  const user = spec(userDecider);
  user.given([reg]).when([{ type: "SetActive", active: false }, {
    type: "SetActive",
    active: false,
  }])
    .then([{ type: "UserDeactivated", data: { userId: D } }]);
  // a patient user without a record is a family member
  user.given([reg]).when([{ type: "ChangeRole", role: "patient", patientId: null }])
    .then([{ type: "UserRoleChanged", data: { userId: D, role: "patient", patientId: null } }]);
  user.given([reg]).when([{ type: "ChangeRole", role: "auditor", patientId: D }])
    .thenThrows(ValidationError);
  user.given([]).when([{ type: "SetActive", active: true }]).thenThrows(NotFoundError);
});

Deno.test("mfa decider: start, confirm with a first code, disable; an operator resets what exists", () => {
  const mfa = spec(mfaDecider);
  const verified = {
    type: "MfaVerified" as const,
    data: { userId: D, method: "totp" as const, step: 7, recoveryCodeDigest: null },
  };
  const started = { type: "MfaEnrollmentStarted" as const, data: { userId: D, secret: "S" } };
  const enabled = {
    type: "MfaEnabled" as const,
    data: { userId: D, recoveryCodeDigests: ["r"] },
  };
  mfa.given([]).when({ type: "StartEnrollment", userId: D, secret: "S" }).then([started]);
  mfa.given([started, verified, enabled]).when({ type: "StartEnrollment", userId: D, secret: "T" })
    .thenThrows(ConflictError);
  mfa.given([]).when({
    type: "ConfirmEnrollment",
    userId: D,
    verified,
    recoveryCodeDigests: ["r"],
  }).thenThrows(NotFoundError);
  mfa.given([started]).when({
    type: "ConfirmEnrollment",
    userId: D,
    verified,
    recoveryCodeDigests: ["r"],
  }).then([verified, enabled]);
  mfa.given([started]).when({ type: "Disable", userId: D, verified }).thenThrows(NotFoundError);
  mfa.given([started, verified, enabled]).when({ type: "Disable", userId: D, verified })
    .then([verified, { type: "MfaDisabled", data: { userId: D } }]);
  const reset = { type: "Reset" as const, userId: D, operatorId: M, reason: "lost phone" };
  mfa.given([]).when(reset).thenThrows(ConflictError);
  mfa.given([started]).when(reset).then([{
    type: "MfaReset",
    data: { userId: D, operatorId: M, reason: "lost phone" },
  }]);
});

Deno.test("delete commands: a blank reason is a 422 naming `reason` in every state; the reason is stored trimmed", () => {
  const blank = (err: unknown) =>
    err instanceof ValidationError && err.issues.length === 1 && err.issues[0]!.path === "reason";
  const patientDeleted: NewPatientEvent = {
    type: "PatientDeleted",
    data: { patientId: P, reason: "duplicate" },
  };
  const erased: PatientEvent = {
    type: "PatientRegistered",
    data: {
      patientId: P,
      mrn: null,
      firstName: null,
      middleName: null,
      lastName: null,
      dateOfBirth: null,
      gender: null,
      phone: null,
      email: null,
      address: null,
      emergencyContact: null,
      insurance: null,
    },
  };
  const patient = spec(patientDecider);
  const states: PatientEvent[][] = [[], [registered], [registered, patientDeleted], [erased]];
  for (const given of states) {
    for (const reason of ["", "  \n\t"]) {
      const r = patient.given(given).when({ type: "DeletePatient", reason });
      assert.throws(r.events, blank, `patient ${given.length} events, ${JSON.stringify(reason)}`);
    }
  }
  patient.given([registered]).when({ type: "DeletePatient", reason: "  duplicate \n" })
    .then([patientDeleted]);

  const mediaDeleted: NewMediaEvent = {
    type: "MediaDeleted",
    data: { mediaId: M, patientId: P, reason: "wrong patient" },
  };
  const media = spec(mediaDecider);
  const mediaStates: NewMediaEvent[][] = [[], [uploaded], [uploaded, mediaDeleted]];
  for (const given of mediaStates) {
    for (const reason of ["", "  \n\t"]) {
      const r = media.given(given).when({ type: "DeleteMedia", reason });
      assert.throws(r.events, blank, `media ${given.length} events, ${JSON.stringify(reason)}`);
    }
  }
  media.given([uploaded]).when({ type: "DeleteMedia", reason: " wrong patient  " })
    .then([mediaDeleted]);
});
