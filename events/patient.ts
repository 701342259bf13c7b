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

const PHI_FIELDS = Object.keys(PatientDemographics.shape);

export const PatientRegistered = defineEvent({
  type: "PatientRegistered",
  version: 1,
  schema: PatientDemographics.extend({ patientId }),
  phi: { ...patientKey, fields: PHI_FIELDS },
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

export const patientEvents = [
  PatientRegistered,
  PatientUpdated,
  PatientDeleted,
  PatientRestored,
  MrnReserved,
];
