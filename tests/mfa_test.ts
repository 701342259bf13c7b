import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { catalog } from "../events/index.ts";
import { sessions } from "../projections/sessions.ts";
import { users } from "../projections/users.ts";
import { currentCode } from "../src/auth/mfa.ts";
import type { Runtime } from "../src/runtime.ts";
import { rebuildProjection } from "../src/store/projection_engine.ts";
import { ident, sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { eachDriver } from "./support/harness.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const clock = () => {
  let t = Date.parse("2026-11-24T12:00:10Z");
  return { now: () => new Date(t), advance: (ms: number) => (t += ms) };
};

const post = (
  app: { request: (p: string, i?: RequestInit) => Response | Promise<Response> },
  path: string,
  token: string,
  body?: unknown,
  method = "POST",
) =>
  app.request(path, {
    method,
    headers: { ...bearer(token), "content-type": "application/json" },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });

const loginOtp = async (app: Parameters<typeof post>[0], email: string, otp?: string) => {
  const res = await app.request("/v1/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password: PASSWORD, ...(otp ? { otp } : {}) }),
  });
  return { res, body: await res.json() };
};

Deno.test("mfa: enrol, log in with codes (never twice), recovery codes, disable", async () => {
  const c = clock();
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "1000" }, { now: c.now });
  try {
    const u = await createUser(t.runtime, "practitioner");
    const token = (await login(t.app, u.email)).body.accessToken;
    const start = await post(t.app, "/v1/me/mfa/totp", token);
    assert.equal(start.status, 201);
    const { otpauthUri, secret } = await start.json();
    assert.match(otpauthUri, /^otpauth:\/\/totp\/Chartlog:.*secret=[A-Z2-7]+/);

    assert.equal(
      (await post(t.app, "/v1/me/mfa/totp/confirm", token, { code: "000000" })).status,
      401,
    );
    const ok = await post(t.app, "/v1/me/mfa/totp/confirm", token, {
      code: currentCode(secret, c.now()),
    });
    assert.equal(ok.status, 200);
    const { recoveryCodes } = await ok.json();
    assert.equal(recoveryCodes.length, 10);
    assert.equal(
      (await (await t.app.request("/v1/me", { headers: bearer(token) })).json()).mfaEnabled,
      true,
    );
    assert.equal((await post(t.app, "/v1/me/mfa/totp", token)).status, 409);

    // login now needs the second factor
    const bare = await loginOtp(t.app, u.email);
    assert.equal(bare.res.status, 401);
    assert.equal(bare.body.type, "/problems/mfa-required");
    assert.equal((await loginOtp(t.app, u.email, "123456")).res.status, 401);
    c.advance(30_000);
    const code = currentCode(secret, c.now());
    const first = await loginOtp(t.app, u.email, code);
    assert.equal(first.res.status, 200, JSON.stringify(first.body));
    assert.equal((await loginOtp(t.app, u.email, code)).res.status, 401, "a code is accepted once");
    c.advance(30_000);
    assert.equal((await loginOtp(t.app, u.email, currentCode(secret, c.now()))).res.status, 200);
    assert.equal((await loginOtp(t.app, u.email, recoveryCodes[0])).res.status, 200);
    assert.equal(
      (await loginOtp(t.app, u.email, recoveryCodes[0])).res.status,
      401,
      "recovery codes are single use",
    );

    // secrets stay out of the log
    const [dump] = await t.runtime.db.query<{ d: string }>(
      sql`select string_agg(data::text, ' ') as d from events`,
    );
    for (const s of [secret, ...recoveryCodes]) assert.ok(!dump!.d.includes(s));

    // turn it off with a code; logins need only the password again
    c.advance(30_000);
    const t2 = (await loginOtp(t.app, u.email, recoveryCodes[1])).body.accessToken;
    assert.equal(
      (await post(t.app, "/v1/me/mfa/totp", t2, { code: "999999" }, "DELETE")).status,
      401,
    );
    assert.equal(
      (await post(t.app, "/v1/me/mfa/totp", t2, { code: currentCode(secret, c.now()) }, "DELETE"))
        .status,
      204,
    );
    assert.equal((await loginOtp(t.app, u.email)).res.status, 200);
    const reasons = await t.runtime.db.query<{ r: string }>(
      sql`select data->>'reason' as r from events where type = 'LoginFailed' order by global_position`,
    );
    assert.deepEqual(reasons.map((x) => x.r), [
      "mfa_required",
      "bad_mfa_code",
      "bad_mfa_code",
      "bad_mfa_code",
    ]);
  } finally {
    await t.close();
  }
});

Deno.test("mfa: roles that must use it can only enrol until they do", async () => {
  const c = clock();
  const t = await openTestApp({ CHARTLOG_MFA_REQUIRED_ROLES: "admin" }, { now: c.now });
  try {
    await createUser(t.runtime, "admin");
    await createUser(t.runtime, "practitioner");
    const first = (await login(t.app, "admin@clinic.test")).body;
    assert.equal(first.mfaEnrolmentRequired, true, "login says enrolment is required");
    const token = first.accessToken;
    const other = (await login(t.app, "practitioner@clinic.test")).body;
    assert.equal(other.mfaEnrolmentRequired, false);
    const denied = await t.app.request("/v1/users", { headers: bearer(token) });
    assert.equal(denied.status, 403);
    const problem = await denied.json();
    assert.equal(problem.type, "/problems/mfa-enrolment-required");
    assert.match(problem.detail, /POST \/v1\/me\/mfa\/totp/);
    const doc = await (await t.app.request("/problems/mfa-enrolment-required")).json();
    assert.equal(doc.status, 403);
    assert.equal((await t.app.request("/v1/me", { headers: bearer(token) })).status, 200);
    const { secret } = await (await post(t.app, "/v1/me/mfa/totp", token)).json();
    assert.equal(
      (await post(t.app, "/v1/me/mfa/totp/confirm", token, { code: currentCode(secret, c.now()) }))
        .status,
      200,
    );
    assert.equal((await t.app.request("/v1/users", { headers: bearer(token) })).status, 200);
    const [d] = await t.runtime.db.query<{ action: string }>(
      sql`select data->>'action' as action from events where type = 'AccessDenied'`,
    );
    assert.equal(d!.action, "user.list");
  } finally {
    await t.close();
  }
});

const amrOf = (token: string) =>
  JSON.parse(atob(token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/"))).amr;

Deno.test("mfa: a password-only session stays enrol-only after the account enrols elsewhere", async () => {
  const c = clock();
  const t = await openTestApp({
    CHARTLOG_MFA_REQUIRED_ROLES: "admin",
    CHARTLOG_LOGIN_RATE_PER_MIN: "1000",
  }, { now: c.now });
  try {
    await createUser(t.runtime, "admin");
    const early = (await login(t.app, "admin@clinic.test")).body;
    assert.deepEqual(amrOf(early.accessToken), ["pwd"]);
    const other = (await login(t.app, "admin@clinic.test")).body.accessToken;
    const { secret } = await (await post(t.app, "/v1/me/mfa/totp", other)).json();
    assert.equal(
      (await post(t.app, "/v1/me/mfa/totp/confirm", other, { code: currentCode(secret, c.now()) }))
        .status,
      200,
    );
    // the enrolling session presented a code; the early one never did
    assert.equal((await t.app.request("/v1/users", { headers: bearer(other) })).status, 200);
    assert.equal(
      (await t.app.request("/v1/users", { headers: bearer(early.accessToken) })).status,
      403,
    );
    const refreshed = await t.app.request("/v1/auth/refresh", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: early.refreshToken }),
    });
    assert.equal(refreshed.status, 200);
    const again = await refreshed.json();
    assert.deepEqual(amrOf(again.accessToken), ["pwd"]);
    assert.equal(
      (await t.app.request("/v1/users", { headers: bearer(again.accessToken) })).status,
      403,
    );
    assert.equal(
      (await t.app.request("/v1/me", { headers: bearer(again.accessToken) })).status,
      200,
    );

    // a fresh login with the code is a full session
    c.advance(30_000);
    const full = await loginOtp(t.app, "admin@clinic.test", currentCode(secret, c.now()));
    assert.equal(full.res.status, 200);
    assert.deepEqual(amrOf(full.body.accessToken), ["pwd", "otp"]);
    assert.equal(
      (await t.app.request("/v1/users", { headers: bearer(full.body.accessToken) })).status,
      200,
    );
    const amrs = await t.runtime.db.query<{ amr: string[] }>(
      sql`select amr from sessions order by started_at, id`,
    );
    assert.deepEqual(amrs.map((r) => r.amr.length).sort(), [1, 2, 2]);
  } finally {
    await t.close();
  }
});

/** Every row of every table (the log included), as text. */
const dumpTables = async (db: Runtime["db"]) => {
  const tables = await db.query<{ name: string }>(
    sql`select table_name as name from information_schema.tables
      where table_schema = current_schema() and table_type = 'BASE TABLE'`,
  );
  let out = "";
  for (const { name } of tables) {
    const [r] = await db.query<{ d: string | null }>(
      sql`select string_agg(t::text, ' ') as d from ${ident(name)} t`,
    );
    out += ` ${r?.d ?? ""}`;
  }
  return out;
};

const sha256 = (code: string) =>
  createHash("sha256").update(code.replace(/[\s-]/g, "").toUpperCase()).digest("hex");

Deno.test("mfa: the TOTP secret stays sealed at rest and recovery codes are keyed digests", async () => {
  const c = clock();
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "1000" }, { now: c.now });
  try {
    const u = await createUser(t.runtime, "practitioner");
    const token = (await login(t.app, u.email)).body.accessToken;
    const { secret } = await (await post(t.app, "/v1/me/mfa/totp", token)).json();
    const { recoveryCodes } = await (await post(t.app, "/v1/me/mfa/totp/confirm", token, {
      code: currentCode(secret, c.now()),
    })).json();
    assert.equal(recoveryCodes.length, 10);

    // an account enrolled by an earlier version: the secret is sealed in the log
    // as before, its recovery codes are unkeyed SHA-256 digests
    const old = await createUser(t.runtime, "reception");
    const oldSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    const oldCodes = Array.from({ length: 10 }, (_, i) => `ABCDE-0000${i}`);
    await t.runtime.store.append(`auth-${old.id}`, "any", [
      { type: "MfaEnrollmentStarted", data: { userId: old.id, secret: oldSecret } },
      { type: "MfaEnabled", data: { userId: old.id, recoveryCodeDigests: oldCodes.map(sha256) } },
    ]);

    const check = async (when: string) => {
      const dump = await dumpTables(t.runtime.db);
      for (const s of [secret, oldSecret]) assert.ok(!dump.includes(s), `${when}: a secret`);
      for (const code of [...recoveryCodes, ...oldCodes]) {
        assert.ok(!dump.includes(sha256(code)), `${when}: a plain SHA-256 of a recovery code`);
        assert.ok(!dump.includes(code), `${when}: a recovery code`);
      }
    };
    await check("after enrolment");
    // a version bump rebuilds from the log: the new rows hold sealed data only
    await rebuildProjection(t.runtime.store, users);
    await check("after a rebuild");

    c.advance(30_000);
    assert.equal((await loginOtp(t.app, u.email, currentCode(secret, c.now()))).res.status, 200);
    assert.equal((await loginOtp(t.app, u.email, recoveryCodes[3])).res.status, 200);
    assert.equal((await loginOtp(t.app, u.email, recoveryCodes[3])).res.status, 401);
    assert.equal(
      (await loginOtp(t.app, old.email, currentCode(oldSecret, c.now()))).res.status,
      200,
    );
    // legacy recovery codes were not carried over (their digests were cheap to reverse)
    assert.equal((await loginOtp(t.app, old.email, oldCodes[0])).res.status, 401);
    await rebuildProjection(t.runtime.store, users);
    assert.equal((await loginOtp(t.app, u.email, recoveryCodes[3])).res.status, 401, "still used");
    assert.equal((await loginOtp(t.app, u.email, recoveryCodes[4])).res.status, 200);
    await check("at the end");
  } finally {
    await t.close();
  }
});

eachDriver(
  "mfa: upgrading a database whose user_mfa held plain secrets leaves only sealed ones",
  async (h) => {
    const userId = crypto.randomUUID();
    const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXQ";
    await h.store.append(`auth-${userId}`, "any", [
      { type: "MfaEnrollmentStarted", data: { userId, secret } },
    ]);
    // the table as users v3 left it: the secret in the clear
    await h.db.exec(`alter table user_mfa drop column sealed_secret;
      alter table user_mfa add column secret text`);
    await h.db.query(sql`update user_mfa set secret = ${secret}`);
    await h.db.query(sql`update projection_state set version = 3 where name = 'users'`);

    await h.openStore({ projections: [users, sessions] }); // start-up: setup, then rebuild
    const columns = (await h.db.query<{ c: string }>(
      sql`select column_name as c from information_schema.columns where table_name = 'user_mfa'`,
    )).map((r) => r.c);
    assert.ok(!columns.includes("secret"), columns.join(","));
    const [row] = await h.db.query<{ s: { $sealed: unknown }; d: string }>(
      sql`select sealed_secret as s, t::text as d from user_mfa t`,
    );
    assert.ok(row!.s.$sealed, "sealed as in the log");
    assert.ok(!row!.d.includes(secret));
    assert.equal(await h.store.codec.unseal("secret", row!.s as never), secret);
    // migration 2 (session activity) applies on this driver too
    const [a] = await h.db.query<{ ok: boolean }>(
      sql`select to_regclass('session_activity') is not null as ok`,
    );
    assert.ok(a!.ok);
  },
  { catalog, projections: [users, sessions] },
);
