import assert from "node:assert/strict";
import { decide, decideAll, fold, type User } from "../src/domain/user.ts";
import { ConflictError, NotFoundError, ValidationError } from "../src/errors.ts";

const id = "6f1b0f7e-3c1a-4d53-9a57-1b1f0d6a9e01";
const registered = [{
  type: "UserRegistered",
  data: {
    userId: id,
    email: "a@b.c",
    name: "A",
    role: "practitioner",
    patientId: null,
    passwordHash: "h",
  },
}];
const given = (events: { type: string; data: Record<string, unknown> }[]): User => fold(events);

Deno.test("user decider: register, and only once", () => {
  const cmd = {
    type: "RegisterUser" as const,
    userId: id,
    email: "a@b.c",
    name: "A",
    role: "practitioner" as const,
    patientId: null,
    passwordHash: "h",
  };
  assert.deepEqual(decide(cmd, given([])), [{
    type: "UserRegistered",
    data: {
      userId: id,
      email: "a@b.c",
      name: "A",
      role: "practitioner",
      patientId: null,
      passwordHash: "h",
    },
  }]);
  assert.throws(() => decide(cmd, given(registered)), ConflictError);
});

Deno.test("user decider: only a patient user has a patient link, at most one", () => {
  const base = {
    type: "RegisterUser" as const,
    userId: id,
    email: "p@b.c",
    name: "P",
    passwordHash: "h",
  };
  // a family member: a patient user of no record of their own
  assert.equal(decide({ ...base, role: "patient", patientId: null }, given([])).length, 1);
  assert.throws(
    () => decide({ ...base, role: "admin", patientId: id }, given([])),
    ValidationError,
  );
  assert.equal(decide({ ...base, role: "patient", patientId: id }, given([])).length, 1);
  assert.equal(
    decide({ type: "ChangeRole", role: "patient", patientId: null }, given(registered)).length,
    1,
  );
  assert.throws(
    () => decide({ type: "ChangeRole", role: "analyst", patientId: id }, given(registered)),
    ValidationError,
  );
});

Deno.test("user decider: role, activation and no-op commands", () => {
  const s = given(registered);
  assert.deepEqual(decide({ type: "ChangeRole", role: "practitioner", patientId: null }, s), []);
  assert.deepEqual(decide({ type: "SetActive", active: true }, s), []);
  assert.deepEqual(
    decideAll([
      { type: "ChangeRole", role: "clinical_ops", patientId: null },
      { type: "SetActive", active: false },
      { type: "SetActive", active: false },
    ], s).map((e) => e.type),
    ["UserRoleChanged", "UserDeactivated"],
  );
  const off = given([...registered, { type: "UserDeactivated", data: { userId: id } }]);
  assert.equal(off.status, "inactive");
  assert.deepEqual(decide({ type: "SetActive", active: true }, off).map((e) => e.type), [
    "UserReactivated",
  ]);
  assert.deepEqual(decide({ type: "UpdateProfile" }, s), []);
  assert.throws(() => decide({ type: "SetActive", active: false }, given([])), NotFoundError);
});

Deno.test("user decider: an operator's password reset names the operator and the reason", () => {
  const cmd = {
    type: "ResetPassword" as const,
    passwordHash: "h2",
    operatorId: "0d7c2a55-5a0e-4c57-8d4e-2f0c3b9a1e77",
    reason: "forgot it",
  };
  assert.deepEqual(decide(cmd, given(registered)), [{
    type: "UserPasswordReset",
    data: { userId: id, passwordHash: "h2", operatorId: cmd.operatorId, reason: "forgot it" },
  }]);
  assert.throws(() => decide(cmd, given([])), NotFoundError);
});
