import assert from "node:assert/strict";
import {
  age,
  checkDates,
  decide,
  fold,
  fullName,
  normalize,
  PatientInput,
} from "../src/domain/patient.ts";
import { ConflictError, NotFoundError, ValidationError } from "../src/errors.ts";
import { catalog } from "../events/index.ts";

const TODAY = "2026-11-24";
const id = "0e5d3f2a-9d1b-4c8e-8f55-7f0c2b9e4a11";
const valid = {
  mrn: "MRN-000123",
  firstName: "Ada",
  middleName: "King",
  lastName: "Lovelace",
  dateOfBirth: "1990-12-10",
  gender: "F",
  phone: "+15551234567",
  email: "Ada@Example.ORG",
  address: { line1: "1 Main St", city: "Springfield", state: "IL", zip: "62701-1234" },
  emergencyContact: { name: "Charles Babbage", phone: "+15557654321", relation: "friend" },
  insurance: { payer: "Acme Health", memberId: "X1234" },
};

const issuesOf = (input: unknown): string[] => {
  const r = PatientInput.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => i.path.join("."));
};

Deno.test("patient input: a complete record parses and normalises", () => {
  const p = normalize(PatientInput.parse(valid));
  assert.equal(p.email, "ada@example.org");
  assert.equal(p.address!.line2, null);
  assert.equal(p.insurance!.groupNumber, null);
  assert.equal(fullName(p), "Ada King Lovelace");
  assert.equal(age(p.dateOfBirth, TODAY), 35);
  // the stored shape is exactly what the event schema accepts
  assert.doesNotThrow(() => catalog.validate("PatientRegistered", { patientId: id, ...p }));
  const minimal = normalize(PatientInput.parse({
    mrn: "7",
    firstName: "B",
    lastName: "C",
    dateOfBirth: "2000-01-01",
    gender: "U",
  }));
  assert.deepEqual(
    [minimal.middleName, minimal.phone, minimal.email, minimal.address, minimal.emergencyContact],
    [null, null, null, null, null],
  );
});

Deno.test("patient input: each rule names its field", () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ mrn: "has space" }, "mrn"],
    [{ firstName: "" }, "firstName"],
    [{ lastName: "x".repeat(101) }, "lastName"],
    [{ dateOfBirth: "10/12/1990" }, "dateOfBirth"],
    [{ dateOfBirth: "1990-02-30" }, "dateOfBirth"],
    [{ gender: "X" }, "gender"],
    [{ phone: "555-1234" }, "phone"],
    [{ email: "not-an-email" }, "email"],
    [{ address: { ...valid.address, state: "Illinois" } }, "address.state"],
    [{ address: { ...valid.address, zip: "6270" } }, "address.zip"],
    [{ address: { ...valid.address, zip: "62701-12" } }, "address.zip"],
    [{ emergencyContact: { ...valid.emergencyContact, phone: "12" } }, "emergencyContact.phone"],
    [{ insurance: { payer: "A" } }, "insurance.memberId"],
  ];
  for (const [patch, path] of cases) {
    assert.deepEqual(issuesOf({ ...valid, ...patch }), [path], JSON.stringify(patch));
  }
  // unknown fields are refused, not dropped
  assert.ok(issuesOf({ ...valid, ssn: "123-45-6789" }).length > 0);
  assert.ok(issuesOf({ ...valid, address: { ...valid.address, country: "US" } }).length > 0);
  // every bad field at once
  assert.deepEqual(issuesOf({ ...valid, phone: "1", email: "x", gender: "Q" }).sort(), [
    "email",
    "gender",
    "phone",
  ]);
});

Deno.test("patient dates: not in the future, not over 150 years", () => {
  assert.deepEqual(checkDates("2026-11-24", TODAY), []);
  assert.deepEqual(checkDates("2026-11-25", TODAY), [{
    path: "dateOfBirth",
    message: "is in the future",
  }]);
  assert.deepEqual(checkDates("1875-11-25", TODAY), []); // 150 until tomorrow
  assert.deepEqual(checkDates("1875-11-24", TODAY), [{
    path: "dateOfBirth",
    message: "age over 150",
  }]);
  assert.equal(age("2000-02-29", "2026-02-28"), 25);
  assert.equal(age("2000-02-29", "2026-03-01"), 26);
});

Deno.test("patient decider: register, update, delete with a reason, restore", () => {
  const data = normalize(PatientInput.parse(valid));
  const registered = decide(
    { type: "RegisterPatient", patientId: id, data, today: TODAY },
    fold([]),
  );
  assert.deepEqual(registered.map((e) => e.type), ["PatientRegistered"]);
  const s = fold(
    registered.map((e) => ({ type: e.type, data: e.data as Record<string, unknown> })),
  );
  assert.equal(s.status, "active");
  assert.throws(
    () => decide({ type: "RegisterPatient", patientId: id, data, today: TODAY }, s),
    ConflictError,
  );
  assert.throws(
    () =>
      decide({
        type: "RegisterPatient",
        patientId: id,
        data: { ...data, dateOfBirth: "2030-01-01" },
        today: TODAY,
      }, fold([])),
    ValidationError,
  );

  // only what changed is recorded; unchanged input is no event at all
  assert.deepEqual(
    decide({ type: "UpdatePatient", changes: { lastName: "Lovelace" }, today: TODAY }, s),
    [],
  );
  assert.deepEqual(
    decide({
      type: "UpdatePatient",
      changes: { lastName: "Byron", firstName: "Ada" },
      today: TODAY,
    }, s),
    [{ type: "PatientUpdated", data: { patientId: id, changes: { lastName: "Byron" } } }],
  );
  assert.throws(
    () => decide({ type: "UpdatePatient", changes: { mrn: "OTHER" }, today: TODAY }, s),
    ValidationError,
  );
  assert.throws(
    () =>
      decide({ type: "UpdatePatient", changes: { dateOfBirth: "2027-01-01" }, today: TODAY }, s),
    ValidationError,
  );

  assert.throws(() => decide({ type: "DeletePatient", reason: "  " }, s), ValidationError);
  const deleted = fold([
    ...registered.map((e) => ({ type: e.type, data: e.data as Record<string, unknown> })),
    { type: "PatientDeleted", data: { patientId: id, reason: "duplicate record" } },
  ]);
  assert.equal(deleted.status, "deleted");
  assert.throws(() => decide({ type: "DeletePatient", reason: "again" }, deleted), ConflictError);
  assert.throws(
    () => decide({ type: "UpdatePatient", changes: { lastName: "X" }, today: TODAY }, deleted),
    ConflictError,
  );
  assert.deepEqual(decide({ type: "RestorePatient" }, deleted).map((e) => e.type), [
    "PatientRestored",
  ]);
  assert.throws(() => decide({ type: "RestorePatient" }, s), ConflictError);
  assert.throws(() => decide({ type: "RestorePatient" }, fold([])), NotFoundError);
});
