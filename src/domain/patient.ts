import { z } from "zod";
import {
  GENDERS,
  PatientDeleted,
  type PatientDemographics,
  PatientRegistered,
  PatientRestored,
  PatientUpdated,
} from "../../events/patient.ts";
import {
  ConflictError,
  type FieldIssue,
  GoneError,
  NotFoundError,
  ValidationError,
} from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, requiredReason, unreachable } from "./decider.ts";

const E164 = /^\+[1-9]\d{1,14}$/;
const e164 = z.string().trim().regex(E164, "must be E.164, e.g. +15551234567");
const name = z.string().trim().min(1).max(100);

/**
 * A patient as the API takes it (camelCase, unknown fields refused). Date
 * rules that need today's date are checked by {@link checkDates}.
 */
export const PatientInput = z.strictObject({
  mrn: z.string().trim().regex(/^[A-Za-z0-9-]{1,32}$/, "1–32 letters, digits or dashes"),
  firstName: name,
  middleName: name.nullable().optional(),
  lastName: name,
  dateOfBirth: z.iso.date("must be a date, YYYY-MM-DD"),
  gender: z.enum(GENDERS),
  phone: e164.nullable().optional(),
  email: z.email().max(320).transform((s) => s.toLowerCase()).nullable().optional(),
  address: z.strictObject({
    line1: z.string().trim().min(1).max(200),
    line2: z.string().trim().max(200).nullable().optional(),
    city: z.string().trim().min(1).max(100),
    state: z.string().regex(/^[A-Z]{2}$/, "two capital letters, e.g. CA"),
    zip: z.string().regex(/^\d{5}(-\d{4})?$/, "12345 or 12345-6789"),
  }).nullable().optional(),
  emergencyContact: z.strictObject({
    name: z.string().trim().min(1).max(200),
    phone: e164,
    relation: z.string().trim().min(1).max(100),
  }).nullable().optional(),
  insurance: z.strictObject({
    payer: z.string().trim().min(1).max(200),
    memberId: z.string().trim().min(1).max(100),
    groupNumber: z.string().trim().max(100).nullable().optional(),
  }).nullable().optional(),
});
export type PatientInput = z.infer<typeof PatientInput>;

/** The stored shape: every optional field present, absent ones null. */
export const normalize = (p: PatientInput): PatientDemographics => ({
  mrn: p.mrn,
  firstName: p.firstName,
  middleName: p.middleName ?? null,
  lastName: p.lastName,
  dateOfBirth: p.dateOfBirth,
  gender: p.gender,
  phone: p.phone ?? null,
  email: p.email ?? null,
  address: p.address ? { ...p.address, line2: p.address.line2 ?? null } : null,
  emergencyContact: p.emergencyContact ?? null,
  insurance: p.insurance ? { ...p.insurance, groupNumber: p.insurance.groupNumber ?? null } : null,
});

/** Whole years between a date of birth and `today` (both YYYY-MM-DD). */
export const age = (dateOfBirth: string, today: string): number => {
  const [by, bm, bd] = dateOfBirth.split("-").map(Number) as [number, number, number];
  const [ty, tm, td] = today.split("-").map(Number) as [number, number, number];
  return ty - by - (tm < bm || (tm === bm && td < bd) ? 1 : 0);
};

export const fullName = (p: Pick<PatientDemographics, "firstName" | "middleName" | "lastName">) =>
  [p.firstName, p.middleName, p.lastName].filter(Boolean).join(" ");

/** A date of birth is not in the future and no more than 150 years ago. */
export const checkDates = (dateOfBirth: string, today: string): FieldIssue[] => {
  if (dateOfBirth > today) return [{ path: "dateOfBirth", message: "is in the future" }];
  if (age(dateOfBirth, today) > 150) return [{ path: "dateOfBirth", message: "age over 150" }];
  return [];
};

export type Patient =
  | { status: "none" }
  | { status: "erased"; patientId: string }
  | { status: "active" | "deleted"; patientId: string; data: PatientDemographics };

export type PatientCommand =
  | { type: "RegisterPatient"; patientId: string; data: PatientDemographics; today: string }
  | { type: "UpdatePatient"; changes: Partial<PatientDemographics>; today: string }
  /** A PATCH: absent fields stay; nested objects are replaced whole, as sent. */
  | { type: "PatchPatient"; patch: Partial<PatientInput>; today: string }
  | { type: "DeletePatient"; reason: string }
  | { type: "RestorePatient" };

const isPatientEvent = eventsOf(PatientRegistered, PatientUpdated, PatientDeleted, PatientRestored);
export type PatientEvent = EventOf<
  typeof PatientRegistered | typeof PatientUpdated | typeof PatientDeleted | typeof PatientRestored
>;
export type NewPatientEvent = NewEventOf<
  typeof PatientRegistered | typeof PatientUpdated | typeof PatientDeleted | typeof PatientRestored
>;

const initialState = (): Patient => ({ status: "none" });

/** After erasure the sealed fields read as null: the record is a tombstone. */
export const evolve = (s: Patient, e: PatientEvent): Patient => {
  switch (e.type) {
    case "PatientRegistered": {
      if (e.data.mrn === null) return { status: "erased", patientId: e.data.patientId };
      const { patientId, ...data } = e.data;
      return { status: "active", patientId, data };
    }
    case "PatientUpdated":
      return s.status === "active" || s.status === "deleted"
        ? { ...s, data: { ...s.data, ...e.data.changes } }
        : s;
    case "PatientDeleted":
      return s.status === "active" ? { ...s, status: "deleted" } : s;
    case "PatientRestored":
      return s.status === "deleted" ? { ...s, status: "active" } : s;
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Patient =>
  foldEvents({ initialState, accepts: isPatientEvent, evolve }, events);

const sameValue = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

const changed = (
  changes: Partial<PatientDemographics>,
  data: PatientDemographics,
): Partial<PatientDemographics> => {
  const out: Partial<PatientDemographics> = {};
  for (const k of Object.keys(changes) as (keyof PatientDemographics)[]) {
    if (changes[k] !== undefined && !sameValue(changes[k], data[k])) {
      Object.assign(out, { [k]: changes[k] });
    }
  }
  return out;
};

/** Pure: the events a command produces on a patient, or a typed error. */
export const decide = (cmd: PatientCommand, s: Patient): NewPatientEvent[] => {
  if (cmd.type === "RegisterPatient") {
    if (s.status !== "none") throw new ConflictError("patient exists");
    const issues = checkDates(cmd.data.dateOfBirth, cmd.today);
    if (issues.length) throw new ValidationError("invalid patient", issues);
    return [{ type: "PatientRegistered", data: { patientId: cmd.patientId, ...cmd.data } }];
  }
  // a delete without a reason is refused as such, whatever the record's state
  const reason = cmd.type === "DeletePatient" ? requiredReason(cmd.reason) : "";
  if (s.status === "none") throw new NotFoundError("no such patient");
  if (s.status === "erased") throw new GoneError("the patient was erased");
  const patientId = s.patientId;
  switch (cmd.type) {
    case "PatchPatient": {
      const merged = normalize({ ...s.data, ...cmd.patch });
      const changes: Partial<PatientDemographics> = {};
      for (const k of Object.keys(cmd.patch) as (keyof PatientDemographics)[]) {
        Object.assign(changes, { [k]: merged[k] });
      }
      return decide({ type: "UpdatePatient", changes, today: cmd.today }, s);
    }
    case "UpdatePatient": {
      if (s.status === "deleted") throw new ConflictError("a deleted patient cannot be edited");
      if (cmd.changes.mrn !== undefined && cmd.changes.mrn !== s.data.mrn) {
        throw new ValidationError("invalid patient", [
          { path: "mrn", message: "cannot change; register the record under its MRN" },
        ]);
      }
      const changes = changed(cmd.changes, s.data);
      if (Object.keys(changes).length === 0) return [];
      const merged = { ...s.data, ...changes };
      const issues = checkDates(merged.dateOfBirth, cmd.today);
      if (issues.length) throw new ValidationError("invalid patient", issues);
      return [{ type: "PatientUpdated", data: { patientId, changes } }];
    }
    case "DeletePatient":
      if (s.status === "deleted") throw new ConflictError("the patient is already deleted");
      return [{ type: "PatientDeleted", data: { patientId, reason } }];
    case "RestorePatient":
      if (s.status !== "deleted") throw new ConflictError("the patient is not deleted");
      return [{ type: "PatientRestored", data: { patientId } }];
    default:
      return unreachable(cmd, "command");
  }
};

export const patientDecider: Decider<Patient, PatientCommand, PatientEvent, NewPatientEvent> = {
  initialState,
  accepts: isPatientEvent,
  evolve,
  decide,
};
