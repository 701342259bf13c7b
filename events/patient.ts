import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Patient records. Everything that identifies the patient is PHI, sealed with
 * the patient's own data key (`patient-<id>`): shredding that key erases the
 * record's content everywhere in the log while the facts (who, when, which
 * id) stay.
 */
const patientId = z.uuid();
const patientKey = { subject: (d: { patientId: string }) => `patient-${d.patientId}` };

export const GENDERS = ["M", "F", "O", "U"] as const;

/** The record's fields, as stored (validation of input lives in src/domain/patient.ts). */
export const PatientDemographics = z.strictObject({
  mrn: z.string(),
  firstName: z.string(),
  middleName: z.string().nullable(),
  lastName: z.string(),
  dateOfBirth: z.iso.date(),
  gender: z.enum(GENDERS),
  phone: z.string().nullable(),
  email: z.string().nullable(),
  address: z.strictObject({
    line1: z.string(),
    line2: z.string().nullable(),
    city: z.string(),
    state: z.string(),
    zip: z.string(),
  }).nullable(),
  emergencyContact: z.strictObject({
    name: z.string(),
    phone: z.string(),
    relation: z.string(),
  }).nullable(),
  insurance: z.strictObject({
    payer: z.string(),
    memberId: z.string(),
    groupNumber: z.string().nullable(),
  }).nullable(),
});
export type PatientDemographics = z.infer<typeof PatientDemographics>;

const PHI_FIELDS = Object.keys(PatientDemographics.shape) as (keyof PatientDemographics)[];

export const PatientRegistered = defineEvent({
  type: "PatientRegistered",
  version: 1,
  schema: PatientDemographics.extend({ patientId }),
  // eleven fields, read on every GET of the record: one AES-GCM operation, not eleven
  phi: { ...patientKey, fields: PHI_FIELDS, envelope: true },
});

/** Some fields changed; `changes` holds their new values (sealed as a whole). */
export const PatientUpdated = defineEvent({
  type: "PatientUpdated",
  version: 1,
  schema: z.strictObject({ patientId, changes: PatientDemographics.partial() }),
  phi: { ...patientKey, fields: ["changes"] },
});

/** Soft delete: hidden from lists, kept in the log. The reason may hold PHI: sealed. */
export const PatientDeleted = defineEvent({
  type: "PatientDeleted",
  version: 1,
  schema: z.strictObject({ patientId, reason: z.string() }),
  phi: { ...patientKey, fields: ["reason"] },
});

export const PatientRestored = defineEvent({
  type: "PatientRestored",
  version: 1,
  schema: z.strictObject({ patientId }),
});

/**
 * Claims an MRN for a patient. Stream `mrn-<keyed digest of the MRN>`,
 * appended with "no_stream": two registrations with one MRN cannot both win,
 * and the MRN itself never appears in a stream id.
 */
export const MrnReserved = defineEvent({
  type: "MrnReserved",
  version: 1,
  schema: z.strictObject({ patientId }),
});

/** A practitioner joined the patient's care team. Stream `careteam-<patientId>`. */
export const CareTeamMemberAdded = defineEvent({
  type: "CareTeamMemberAdded",
  version: 1,
  schema: z.strictObject({ patientId, practitionerId: z.uuid() }),
});

export const CareTeamMemberRemoved = defineEvent({
  type: "CareTeamMemberRemoved",
  version: 1,
  schema: z.strictObject({ patientId, practitionerId: z.uuid() }),
});

/** Reads of PHI: each successful one is an event. Stream `access-<actorId>`. */
export const PatientViewed = defineEvent({
  type: "PatientViewed",
  version: 1,
  schema: z.strictObject({ patientId, asOf: z.iso.datetime().nullable() }),
});

/** A search or list: the ids it returned, never the query text (it may hold PHI). */
export const PatientsSearched = defineEvent({
  type: "PatientsSearched",
  version: 1,
  schema: z.strictObject({ patientIds: z.array(z.uuid()), total: z.number().int() }),
});

export const PatientHistoryViewed = defineEvent({
  type: "PatientHistoryViewed",
  version: 1,
  schema: z.strictObject({ patientId }),
});

/** A read of a care team (who treats the patient): the members returned. */
export const CareTeamViewed = defineEvent({
  type: "CareTeamViewed",
  version: 1,
  schema: z.strictObject({ patientId, practitionerIds: z.array(z.uuid()) }),
});

export const patientEvents = [
  CareTeamViewed,
  CareTeamMemberAdded,
  CareTeamMemberRemoved,
  PatientViewed,
  PatientsSearched,
  PatientHistoryViewed,
  PatientRegistered,
  PatientUpdated,
  PatientDeleted,
  PatientRestored,
  MrnReserved,
];
