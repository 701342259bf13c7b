import assert from "node:assert/strict";
import {
  accessRequestDecider,
  type AccessRequestEvent,
  verifyOutcome,
} from "../src/domain/access_request.ts";
import { accessShareDecider, type AccessShareEvent } from "../src/domain/access_share.ts";
import { redeemerDecider, type RedeemerEvent } from "../src/domain/access_redeemer.ts";
import { NotFoundError } from "../src/errors.ts";
import { spec } from "./support/decider.ts";

const P = "3a0f6c2e-5b1d-4e7f-8a9b-0c1d2e3f4a5b";
const DOC = "7d1c7a0e-0b8e-4c53-9a8e-2d6c1f0a9b01";
const R = "11111111-2222-4333-8444-555555555555";
const G = "66666666-7777-4888-9999-aaaaaaaaaaaa";
const T0 = Date.parse("2026-11-24T12:00:00Z");
const at = (ms: number) => new Date(T0 + ms);
const RIGHT = "a".repeat(64);
const WRONG = "b".repeat(64);

const requested: AccessRequestEvent = {
  type: "AccessRequested",
  data: {
    requestId: R,
    patientId: P,
    practitionerId: DOC,
    clinicId: null,
    purpose: "p",
    durationHours: 2,
    codeDigest: RIGHT,
    code: "123456",
    expiresAt: at(10 * 60_000).toISOString(),
  },
};
const failed = (attempt: number): AccessRequestEvent => ({
  type: "AccessCodeFailed",
  data: { patientId: P, practitionerId: DOC, requestId: R, attempt },
});
const verifyCmd = (digest: string, ms = 0, practitionerId = DOC) => ({
  type: "VerifyCode" as const,
  practitionerId,
  candidateDigest: digest,
  grantId: G,
  now: at(ms),
});

Deno.test("access request decider: the right code in time is a grant in one decision", () => {
  const r = spec(accessRequestDecider).given([requested]).when(verifyCmd(RIGHT, 60_000));
  assert.deepEqual(r.events().map((e) => e.type), ["AccessCodeVerified", "AccessGranted"]);
  const granted = r.events()[1]!.data as { expiresAt: string; granteeKind: string };
  assert.equal(granted.expiresAt, at(60_000 + 2 * 3_600_000).toISOString());
  assert.equal(granted.granteeKind, "practitioner");
  assert.equal(verifyOutcome(r.state(), r.events()), "granted");
});

Deno.test("access request decider: the fifth wrong code locks; then even the right one fails", () => {
  const four = [requested, failed(1), failed(2), failed(3), failed(4)];
  spec(accessRequestDecider).given(four).when(verifyCmd(WRONG)).then([
    failed(5) as never,
    {
      type: "AccessCodeLocked",
      data: { patientId: P, practitionerId: DOC, requestId: R, until: null },
    },
  ]);
  const locked: AccessRequestEvent[] = [...four, failed(5), {
    type: "AccessCodeLocked",
    data: { patientId: P, practitionerId: DOC, requestId: R, until: null },
  }];
  const after = spec(accessRequestDecider).given(locked).when(verifyCmd(RIGHT));
  after.then([failed(6) as never]);
  assert.equal(verifyOutcome(after.state(), after.events()), "locked");
});

Deno.test("access request decider: expired, used, and someone else's request", () => {
  const late = spec(accessRequestDecider).given([requested]).when(verifyCmd(RIGHT, 10 * 60_000));
  assert.deepEqual(late.events().map((e) => e.type), ["AccessCodeFailed", "AccessCodeExpired"]);
  assert.equal(verifyOutcome(late.state(), late.events()), "expired");
  const verified = spec(accessRequestDecider).given([requested]).when(verifyCmd(RIGHT)).events();
  const used = spec(accessRequestDecider).given([requested, ...verified as AccessRequestEvent[]])
    .when(verifyCmd(RIGHT));
  used.then([failed(1) as never]);
  assert.equal(verifyOutcome(used.state(), used.events()), "used");
  spec(accessRequestDecider).given([requested]).when(verifyCmd(RIGHT, 0, G))
    .thenThrows(NotFoundError);
  spec(accessRequestDecider).given([]).when(verifyCmd(RIGHT)).thenThrows(NotFoundError);
});

Deno.test("access share decider: redeem once; then used; late is expired", () => {
  const shared: AccessShareEvent = {
    type: "AccessCodeShared",
    data: {
      shareId: R,
      patientId: P,
      practitionerId: null,
      clinicId: G,
      purpose: "p",
      durationHours: 24,
      codeDigest: RIGHT,
      expiresAt: at(10 * 60_000).toISOString(),
    },
  };
  const cmd = (ms: number) => ({
    type: "RedeemCode" as const,
    practitionerId: DOC,
    grantId: G,
    now: at(ms),
  });
  const ok = spec(accessShareDecider).given([shared]).when(cmd(0)).events();
  assert.deepEqual(ok.map((e) => e.type), ["AccessCodeRedeemed", "AccessGranted"]);
  assert.equal((ok[1]!.data as { granteeId: string }).granteeId, G, "to the clinic named");
  const again = spec(accessShareDecider).given([shared, ...ok as AccessShareEvent[]]).when(cmd(0));
  assert.deepEqual(again.events().map((e) => e.type), ["AccessCodeFailed"]);
  const late = spec(accessShareDecider).given([shared]).when(cmd(10 * 60_000)).events();
  assert.deepEqual(late.map((e) => e.type), ["AccessCodeFailed", "AccessCodeExpired"]);
});

Deno.test("access redeemer decider: five wrong within 15 minutes block for 15 minutes", () => {
  const wrongAt = (attempt: number, ms: number): RedeemerEvent => ({
    type: "AccessCodeFailed",
    data: { patientId: P, practitionerId: DOC, requestId: null, attempt },
    recordedAt: at(ms),
  });
  const cmd = (ms: number) => ({
    type: "FailRedeem" as const,
    patientId: P,
    practitionerId: DOC,
    now: at(ms),
  });
  const four = [1, 2, 3, 4].map((n) => wrongAt(n, n * 1000));
  const fifth = spec(redeemerDecider).given(four).when(cmd(60_000)).events();
  assert.deepEqual(fifth.map((e) => e.type), ["AccessCodeFailed", "AccessCodeLocked"]);
  assert.equal(
    (fifth[1]!.data as { until: string }).until,
    at(60_000 + 15 * 60_000).toISOString(),
  );
  // the same four, but the first is older than 15 minutes by then: no block
  const spread = spec(redeemerDecider).given(four).when(cmd(15 * 60_000 + 1500)).events();
  assert.deepEqual(spread.map((e) => e.type), ["AccessCodeFailed"]);
  // while blocked, attempts are recorded but do not count towards the next block
  const blocked: RedeemerEvent[] = [...four, wrongAt(5, 60_000), {
    type: "AccessCodeLocked",
    data: {
      patientId: P,
      practitionerId: DOC,
      requestId: null,
      until: at(16 * 60_000).toISOString(),
    },
  }, ...[6, 7, 8, 9, 10].map((n) => wrongAt(n, 2 * 60_000))];
  const during = spec(redeemerDecider).given(blocked).when(cmd(3 * 60_000)).events();
  assert.deepEqual(during.map((e) => e.type), ["AccessCodeFailed"]);
  const afterBlock = spec(redeemerDecider).given(blocked).when(cmd(16 * 60_000)).events();
  assert.deepEqual(afterBlock.map((e) => e.type), ["AccessCodeFailed"], "a fresh count");
});
