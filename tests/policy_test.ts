/** The policy's pure rules, without a database. */
import assert from "node:assert/strict";
import type { Role } from "../events/user.ts";
import { type Actor, refusedToPlanFor } from "../src/auth/policy.ts";

const SELF = "6f1b0f7e-3c1a-4d53-9a57-1b1f0d6a9e01";
const OTHER = "7d1c7a0e-0b8e-4c53-9a8e-2d6c1f0a9b01";
const actor = (role: Role, mfaPending = false): Actor => ({
  userId: SELF,
  role,
  sessionId: "s",
  patientId: null,
  mfaPending,
});

Deno.test("policy: planning an encounter for someone else is care-team management", () => {
  // naming yourself needs nothing beyond encounter.create
  for (const role of ["practitioner", "admin", "clinical_ops"] as const) {
    assert.equal(refusedToPlanFor(actor(role), SELF), null, role);
  }
  // naming another practitioner hands them a relation: careteam.manage
  assert.equal(refusedToPlanFor(actor("practitioner"), OTHER), "careteam.manage");
  assert.equal(refusedToPlanFor(actor("admin"), OTHER), null);
  assert.equal(refusedToPlanFor(actor("clinical_ops"), OTHER), null);
  // an admin who still has to enrol a second factor may not manage the team yet
  assert.equal(refusedToPlanFor(actor("admin", true), OTHER), "careteam.manage");
});
