import assert from "node:assert/strict";
import { decide, evolve, initialSession, type SessionCommand } from "../src/domain/session.ts";

const sessionId = "00000000-0000-4000-8000-000000000001";
const userId = "00000000-0000-4000-8000-000000000002";
const t0 = new Date("2026-11-24T12:00:00Z");
const at = (s: number) => new Date(t0.getTime() + s * 1000);

const given = (...events: { type: string; data: Record<string, unknown>; recordedAt: Date }[]) =>
  events.reduce(evolve, initialSession);
const loggedIn = {
  type: "UserLoggedIn",
  data: { sessionId, userId, refreshTokenDigest: "d1", amr: ["pwd"] },
  recordedAt: t0,
};
const rotate = (over: Partial<SessionCommand> = {}): SessionCommand => ({
  type: "RotateRefreshToken",
  presentedDigest: "d1",
  nextDigest: "d2",
  now: at(60),
  lastSeenAt: null,
  idleTimeoutMs: 900_000,
  userActive: true,
  ...over,
});

Deno.test("session decider: the current token rotates; amr survives", () => {
  const d = decide(rotate(), given(loggedIn));
  assert.equal(d.outcome, "rotated");
  assert.deepEqual(d.events.map((e) => e.type), ["SessionRefreshed"]);
  const s = given(loggedIn, { ...d.events[0]!, recordedAt: at(60) } as typeof loggedIn);
  assert.equal(s.status === "open" && s.refreshDigest, "d2");
  assert.deepEqual(s.status === "open" && s.amr, ["pwd"]);
});

Deno.test("session decider: an older token of the session is reuse and ends it", () => {
  const refreshed = {
    type: "SessionRefreshed",
    data: { sessionId, userId, refreshTokenDigest: "d2" },
    recordedAt: at(30),
  };
  const d = decide(rotate(), given(loggedIn, refreshed));
  assert.equal(d.outcome, "reuse");
  assert.deepEqual(d.events.map((e) => e.type), ["RefreshReuseDetected", "SessionEnded"]);
  const ended = { type: "SessionEnded", data: { reason: "refresh_reuse" }, recordedAt: at(31) };
  assert.deepEqual(decide(rotate(), given(loggedIn, refreshed, ended)), {
    events: [],
    outcome: "ended",
  });
});

Deno.test("session decider: idle counts API activity, not only refreshes", () => {
  assert.equal(decide(rotate({ now: at(901) }), given(loggedIn)).outcome, "idle");
  assert.equal(
    decide(rotate({ now: at(901), lastSeenAt: at(500) }), given(loggedIn)).outcome,
    "rotated",
  );
  assert.equal(decide(rotate({ userActive: false }), given(loggedIn)).outcome, "inactive");
});
