import assert from "node:assert/strict";
import type { LOGIN_FAILURE_REASONS } from "../events/auth.ts";
import {
  type CredentialCommand,
  type CredentialEvent,
  credentialsDecider,
  fold,
  LOCKOUT_MS,
  type NewCredentialEvent,
  refusal,
} from "../src/domain/credentials.ts";
import { ConflictError } from "../src/errors.ts";
import { spec } from "./support/decider.ts";

const userId = "6f1b0f7e-3c1a-4d53-9a57-1b1f0d6a9e01";
const operatorId = "0d7c2a55-5a0e-4c57-8d4e-2f0c3b9a1e77";
const sessionId = "b3f9d0a4-8a51-4c1e-9f3a-77e2a1c5d604";
const now = new Date("2026-11-24T12:00:00Z");
const later = (ms: number) => new Date(now.getTime() + ms);

const failed = (reason: (typeof LOGIN_FAILURE_REASONS)[number]): NewCredentialEvent => ({
  type: "LoginFailed",
  data: { userId, reason },
});
const locked = (until: Date): NewCredentialEvent => ({
  type: "AccountLocked",
  data: { userId, until: until.toISOString(), failures: 5 },
});

/** given events / when command / then events */
const then = (given: CredentialEvent[], when: CredentialCommand) =>
  spec(credentialsDecider).given(given).when(when).events();

const attempt = (over: Partial<Extract<CredentialCommand, { type: "AttemptLogin" }>> = {}) => ({
  type: "AttemptLogin" as const,
  userId,
  sessionId,
  now,
  passwordOk: true,
  account: "active" as const,
  secondFactor: "not_enrolled" as const,
  ...over,
});

Deno.test("credentials decider: a right password succeeds and ends the failures in a row", () => {
  assert.deepEqual(then([failed("bad_password")], attempt()), [
    { type: "LoginSucceeded", data: { userId, sessionId } },
  ]);
  const state = fold([failed("bad_password"), { type: "LoginSucceeded", data: { userId } }]);
  assert.equal(state.consecutiveFailures, 0);
});

Deno.test("credentials decider: the fifth counted failure locks, once", () => {
  const four = [
    failed("bad_password"),
    failed("bad_mfa_code"),
    failed("wrong_current_password"),
    failed("bad_password"),
  ];
  assert.deepEqual(then(four.slice(0, 3), attempt({ passwordOk: false })), [
    failed("bad_password"),
  ]);
  assert.deepEqual(then(four, attempt({ passwordOk: false })), [
    failed("bad_password"),
    locked(later(LOCKOUT_MS)),
  ]);
  // refusals that are not a wrong secret do not count
  const noise = [failed("locked"), failed("mfa_required"), failed("pending_approval")];
  assert.deepEqual(then([...noise, ...four.slice(0, 3)], attempt({ passwordOk: false })), [
    failed("bad_password"),
  ]);
});

Deno.test("credentials decider: a locked account refuses even the right password and code", () => {
  const given = [locked(later(LOCKOUT_MS))];
  assert.deepEqual(then(given, attempt()), [failed("locked")]);
  assert.deepEqual(then(given, attempt({ passwordOk: false })), [failed("locked")]);
  assert.deepEqual(
    then(given, { type: "CheckCurrentPassword", userId, now, passwordOk: true }),
    [failed("locked")],
  );
  // the lock runs out on its own
  const after = attempt({ now: later(LOCKOUT_MS + 1) });
  assert.equal(refusal(then(given, after)), null);
});

Deno.test("credentials decider: account state and second factor, behind the right password", () => {
  assert.deepEqual(then([], attempt({ account: "pending" })), [failed("pending_approval")]);
  assert.deepEqual(then([], attempt({ account: "inactive" })), [failed("inactive")]);
  assert.deepEqual(then([], attempt({ secondFactor: "missing" })), [failed("mfa_required")]);
  assert.deepEqual(then([], attempt({ secondFactor: "invalid" })), [failed("bad_mfa_code")]);
  const verified = {
    type: "MfaVerified" as const,
    data: { userId, method: "totp" as const, step: 1, recoveryCodeDigest: null },
  };
  assert.deepEqual(then([], attempt({ secondFactor: { verified } })), [
    verified,
    { type: "LoginSucceeded", data: { userId, sessionId } },
  ]);
});

Deno.test("credentials decider: a wrong current password counts; a right one appends nothing", () => {
  const check = (passwordOk: boolean) => ({
    type: "CheckCurrentPassword" as const,
    userId,
    now,
    passwordOk,
  });
  assert.deepEqual(then([], check(false)), [failed("wrong_current_password")]);
  assert.deepEqual(then([], check(true)), []);
  const four = Array.from({ length: 4 }, () => failed("wrong_current_password"));
  assert.deepEqual(then(four, check(false)), [
    failed("wrong_current_password"),
    locked(later(LOCKOUT_MS)),
  ]);
});

Deno.test("credentials decider: an operator unlocks a locked account, not an unlocked one", () => {
  const unlock = { type: "Unlock" as const, userId, now, operatorId, reason: "verified by phone" };
  assert.deepEqual(then([locked(later(LOCKOUT_MS))], unlock), [{
    type: "AccountUnlocked",
    data: { userId, operatorId, reason: "verified by phone" },
  }]);
  spec(credentialsDecider).given([]).when(unlock).thenThrows(ConflictError);
  const unlocked = fold([
    failed("bad_password"),
    locked(later(LOCKOUT_MS)),
    { type: "AccountUnlocked", data: { userId } },
  ]);
  assert.deepEqual(unlocked, { consecutiveFailures: 0, lockedUntil: null });
});
