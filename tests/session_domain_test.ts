import assert from "node:assert/strict";
import {
  fold,
  refreshOutcome,
  type SessionCommand,
  sessionDecider,
  type SessionEvent,
} from "../src/domain/session.ts";
import { ConflictError } from "../src/errors.ts";
import { spec } from "./support/decider.ts";

const sessionId = "00000000-0000-4000-8000-000000000001";
const userId = "00000000-0000-4000-8000-000000000002";
const t0 = new Date("2026-11-24T12:00:00Z");
const at = (s: number) => new Date(t0.getTime() + s * 1000);

const loggedIn: SessionEvent = {
  type: "UserLoggedIn",
  data: { sessionId, userId, refreshTokenDigest: "d1", amr: ["pwd"] },
  recordedAt: t0,
};
const rotate = (
  over: Partial<Extract<SessionCommand, { type: "RotateRefreshToken" }>> = {},
): SessionCommand => ({
  type: "RotateRefreshToken",
  presentedDigest: "d1",
  nextDigest: "d2",
  now: at(60),
  lastSeenAt: null,
  idleTimeoutMs: 900_000,
  userActive: true,
  ...over,
});
const session = spec(sessionDecider);
const outcome = (given: SessionEvent[], cmd: SessionCommand) =>
  refreshOutcome(session.given(given).when(cmd).events());

Deno.test("session decider: the current token rotates; amr survives", () => {
  const events = session.given([loggedIn]).when(rotate()).events();
  assert.equal(refreshOutcome(events), "rotated");
  assert.deepEqual(events.map((e) => e.type), ["SessionRefreshed"]);
  const s = fold([loggedIn, { ...events[0]!, recordedAt: at(60) }]);
  assert.equal(s.status === "open" && s.refreshDigest, "d2");
  assert.deepEqual(s.status === "open" && s.amr, ["pwd"]);
});

Deno.test("session decider: an older token of the session is reuse and ends it", () => {
  const refreshed: SessionEvent = {
    type: "SessionRefreshed",
    data: { sessionId, userId, refreshTokenDigest: "d2" },
    recordedAt: at(30),
  };
  session.given([loggedIn, refreshed]).when(rotate()).then([
    { type: "RefreshReuseDetected", data: { sessionId, userId } },
    { type: "SessionEnded", data: { sessionId, userId, reason: "refresh_reuse" } },
  ]);
  const ended: SessionEvent = {
    type: "SessionEnded",
    data: { sessionId, userId, reason: "refresh_reuse" },
    recordedAt: at(31),
  };
  session.given([loggedIn, refreshed, ended]).when(rotate()).then([]);
  assert.equal(outcome([loggedIn, refreshed, ended], rotate()), "ended");
});

Deno.test("session decider: idle counts API activity, not only refreshes", () => {
  assert.equal(outcome([loggedIn], rotate({ now: at(901) })), "idle");
  assert.equal(outcome([loggedIn], rotate({ now: at(901), lastSeenAt: at(500) })), "rotated");
  assert.equal(outcome([loggedIn], rotate({ userActive: false })), "inactive");
});

Deno.test("session decider: start once; end and second factor only on an open session, once", () => {
  session.given([]).when({
    type: "StartSession",
    sessionId,
    userId,
    refreshTokenDigest: "d1",
    amr: ["pwd"],
  }).then([{
    type: "UserLoggedIn",
    data: { sessionId, userId, refreshTokenDigest: "d1", amr: ["pwd"] },
  }]);
  session.given([loggedIn]).when({
    type: "StartSession",
    sessionId,
    userId,
    refreshTokenDigest: "d1",
    amr: ["pwd"],
  }).thenThrows(ConflictError);
  const ended = {
    type: "SessionEnded" as const,
    data: { sessionId, userId, reason: "logout" as const },
  };
  session.given([loggedIn]).when({ type: "EndSession", reason: "logout" }).then([ended]);
  session.given([loggedIn, ended]).when({ type: "EndSession", reason: "logout_all" }).then([]);
  session.given([]).when({ type: "EndSession", reason: "logout" }).then([]);
  const verified = { type: "SessionSecondFactorVerified" as const, data: { sessionId, userId } };
  session.given([loggedIn]).when({ type: "VerifySecondFactor" }).then([verified]);
  session.given([loggedIn, verified]).when({ type: "VerifySecondFactor" }).then([]);
  session.given([loggedIn, ended]).when({ type: "VerifySecondFactor" }).then([]);
});
