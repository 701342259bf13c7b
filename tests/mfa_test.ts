import assert from "node:assert/strict";
import { currentCode } from "../src/auth/mfa.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
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
