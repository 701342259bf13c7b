import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { deriveJwtKey } from "../src/auth/tokens.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createCheapUser, createUser, login, PASSWORD } from "./support/users.ts";

/** A clock the tests move by hand. */
const clock = () => {
  let t = Date.parse("2026-11-24T12:00:00Z");
  return { now: () => new Date(t), advance: (ms: number) => (t += ms) };
};

const me = (
  app: { request: (p: string, i?: RequestInit) => Response | Promise<Response> },
  token: string,
) => app.request("/v1/me", { headers: bearer(token) });

const assert401 = async (res: Response) => {
  assert.equal(res.status, 401);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal((await res.json()).type, "/problems/unauthorized");
};

const types = async (
  t: { runtime: { db: { query: <T>(q: ReturnType<typeof sql>) => Promise<T[]> } } },
) =>
  (await t.runtime.db.query<{ type: string }>(
    sql`select type from events order by global_position`,
  ))
    .map((r) => r.type);

Deno.test("auth: login, /v1/me, and every kind of bad token is a 401", async () => {
  const c = clock();
  const t = await openTestApp({}, { now: c.now });
  try {
    const admin = await createUser(t.runtime, "admin");
    const nurse = await createUser(t.runtime, "practitioner");
    const { res, body } = await login(t.app, "ADMIN@clinic.test"); // email is case-insensitive
    assert.equal(res.status, 200);
    assert.equal(body.tokenType, "Bearer");
    assert.equal(body.expiresIn, 300);
    assert.match(
      res.headers.get("set-cookie")!,
      /chartlog_refresh=.+; Max-Age=900; Path=\/v1\/auth; HttpOnly; Secure; SameSite=Strict/,
    );
    assert.equal(res.headers.get("cache-control"), "no-store");

    const ok = await me(t.app, body.accessToken);
    assert.equal(ok.status, 200);
    const user = await ok.json();
    assert.equal(user.id, admin.id);
    assert.equal(user.email, "admin@clinic.test");
    assert.ok(!("passwordHash" in user) && !("version" in user));
    assert.equal(ok.headers.get("etag"), '"1"');

    // no token, garbage, wrong signature, alg none, wrong audience, expired
    await assert401(await t.app.request("/v1/me"));
    await assert401(await me(t.app, "not-a-jwt"));
    const [, payload] = body.accessToken.split(".");
    const forged = await new SignJWT(
      JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))),
    )
      .setProtectedHeader({ alg: "HS256" }).sign(crypto.getRandomValues(new Uint8Array(32)));
    await assert401(await me(t.app, forged));
    const none = `${
      btoa(JSON.stringify({ alg: "none", typ: "JWT" })).replace(/=+$/, "")
    }.${payload}.`;
    await assert401(
      await t.app.request("/v1/me", { headers: { authorization: `Bearer ${none}` } }),
    );
    const key = t.runtime.sessions.settings.jwtKey;
    const claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
    const wrongAud = await new SignJWT({ ...claims, aud: "someone-else" })
      .setProtectedHeader({ alg: "HS256" }).sign(key);
    await assert401(await me(t.app, wrongAud));
    const rightAud = await new SignJWT({ ...claims }).setProtectedHeader({ alg: "HS256" }).sign(
      key,
    );
    assert.equal((await me(t.app, rightAud)).status, 200); // the control: same claims, our key
    c.advance(16 * 60_000);
    await assert401(await me(t.app, body.accessToken));

    // a deactivated user's token stops working at once
    const n = await login(t.app, nurse.email);
    assert.equal((await me(t.app, n.body.accessToken)).status, 200);
    const fresh = (await login(t.app, admin.email)).body.accessToken;
    const off = await t.app.request(`/v1/users/${nurse.id}`, {
      method: "PATCH",
      headers: { ...bearer(fresh), "content-type": "application/json" },
      body: JSON.stringify({ active: false }),
    });
    assert.equal(off.status, 200);
    assert.equal((await off.json()).active, false);
    await assert401(await me(t.app, n.body.accessToken));
    const again = await login(t.app, nurse.email);
    assert.equal(again.res.status, 401);
    assert.equal(again.body.detail, "invalid credentials or account temporarily locked");
  } finally {
    await t.close();
  }
});

Deno.test("auth: a token signed with our key but with malformed claims is a 401, not a 500", async () => {
  const t = await openTestApp();
  try {
    const admin = await createUser(t.runtime, "admin");
    const { body } = await login(t.app, admin.email);
    const payload = body.accessToken.split(".")[1];
    const claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
    // the key derived as the app derives it, from the configured master key
    const key = await deriveJwtKey(t.config.masterKey!);
    const sign = (c: Record<string, unknown>) =>
      new SignJWT(c).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(key);
    // the control: the same claims re-signed with the derived key are accepted
    assert.equal((await me(t.app, await sign(claims))).status, 200);
    for (
      const bad of [
        { sid: "not-a-uuid" },
        { sub: "not-a-uuid" },
        { sid: `${claims.sid}\u0000` },
        { sub: 42 },
        { sid: ["x"] },
        { role: "superuser" },
        { role: 7 },
        { jti: 1 },
        { exp: "tomorrow" },
      ]
    ) {
      const res = await me(t.app, await sign({ ...claims, ...bad }));
      assert.equal(res.status, 401, JSON.stringify(bad));
      await assert401(res);
    }
    assert.ok(!t.logs.lines.some((l) => l.msg === "unhandled error"));
  } finally {
    await t.close();
  }
});

/** An app with a movable clock, one reception user, and a refresh helper. */
const sessionsFixture = async (env: Record<string, string> = {}) => {
  const c = clock();
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "1000", ...env }, { now: c.now });
  const u = await createUser(t.runtime, "reception");
  const refresh = (body: unknown, headers: Record<string, string> = {}) =>
    t.app.request("/v1/auth/refresh", {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
  return { c, t, u, refresh, login: async () => (await login(t.app, u.email)).body };
};

Deno.test("auth: refresh rotates the token, from the body or the cookie", async () => {
  const { c, t, refresh, login } = await sessionsFixture();
  try {
    const first = await login();
    c.advance(60_000);
    const r1 = await refresh({ refreshToken: first.refreshToken });
    assert.equal(r1.status, 200);
    const second = await r1.json();
    assert.notEqual(second.refreshToken, first.refreshToken);
    assert.notEqual(second.accessToken, first.accessToken);
    assert.equal((await me(t.app, second.accessToken)).status, 200);
    assert.match(
      r1.headers.get("set-cookie")!,
      new RegExp(`chartlog_refresh=${second.refreshToken}`),
    );
    const r2 = await refresh({}, { cookie: `chartlog_refresh=${second.refreshToken}` });
    assert.equal(r2.status, 200);
    await assert401(await refresh({}));
    assert.ok((await types(t)).includes("SessionRefreshed"));
  } finally {
    await t.close();
  }
});

Deno.test("auth: presenting a rotated refresh token revokes the whole session", async () => {
  const { t, refresh, login } = await sessionsFixture();
  try {
    const first = await login();
    const second = await (await refresh({ refreshToken: first.refreshToken })).json();
    await assert401(await refresh({ refreshToken: first.refreshToken }));
    // the thief's copy and the owner's current token are both dead now
    await assert401(await refresh({ refreshToken: second.refreshToken }));
    await assert401(await me(t.app, second.accessToken));
    const evs = await types(t);
    assert.ok(evs.includes("RefreshReuseDetected"));
    assert.equal(evs.at(-1), "SessionEnded");
  } finally {
    await t.close();
  }
});

Deno.test("auth: logout ends this session only", async () => {
  const { t, refresh, login } = await sessionsFixture();
  try {
    const a = await login();
    const b = await login();
    const out = await t.app.request("/v1/auth/logout", {
      method: "POST",
      headers: bearer(a.accessToken),
    });
    assert.equal(out.status, 204);
    await assert401(await me(t.app, a.accessToken));
    await assert401(await refresh({ refreshToken: a.refreshToken }));
    assert.equal((await me(t.app, b.accessToken)).status, 200);
  } finally {
    await t.close();
  }
});

Deno.test("auth: logout-all ends the sessions of every device", async () => {
  const { t, refresh, login } = await sessionsFixture();
  try {
    const b = await login();
    const d = await login();
    const all = await t.app.request("/v1/auth/logout-all", {
      method: "POST",
      headers: bearer(d.accessToken),
    });
    assert.equal(all.status, 204);
    await assert401(await me(t.app, b.accessToken));
    await assert401(await me(t.app, d.accessToken));
    await assert401(await refresh({ refreshToken: b.refreshToken }));
  } finally {
    await t.close();
  }
});

Deno.test("auth: a session idle longer than the timeout cannot be refreshed", async () => {
  const { c, t, refresh, login } = await sessionsFixture();
  try {
    const e = await login();
    c.advance(14 * 60_000);
    const stillOk = await refresh({ refreshToken: e.refreshToken });
    assert.equal(stillOk.status, 200); // activity (a refresh) restarts the idle clock
    const f = await stillOk.json();
    c.advance(15 * 60_000 + 1000);
    await assert401(await refresh({ refreshToken: f.refreshToken }));
    const [ended] = await t.runtime.db.query<{ reason: string }>(
      sql`select data->>'reason' as reason from events where type = 'SessionEnded'
        order by global_position desc limit 1`,
    );
    assert.equal(ended!.reason, "idle_timeout");
  } finally {
    await t.close();
  }
});

Deno.test("auth: 5 failed logins lock the account for 15 minutes, answered as an unknown email is", async () => {
  const c = clock();
  const t = await openTestApp({}, { now: c.now });
  try {
    const u = await createUser(t.runtime, "practitioner");
    const unknown = await login(t.app, "nobody@clinic.test", "whatever-long-password");
    assert.equal(unknown.res.status, 401);
    assert.equal(unknown.body.detail, "invalid credentials or account temporarily locked");
    for (let i = 0; i < 5; i++) {
      const r = await login(t.app, u.email, "wrong password here");
      assert.equal(r.res.status, 401);
      assert.equal(r.body.detail, "invalid credentials or account temporarily locked");
    }
    const locked = await login(t.app, u.email); // even the right password
    // an existing, locked account and an unknown email: the same answer, field by field
    assert.equal(locked.res.status, unknown.res.status);
    const { requestId: _a, ...lockedBody } = locked.body;
    const { requestId: _b, ...unknownBody } = unknown.body;
    assert.deepEqual(lockedBody, unknownBody);
    assert.equal(lockedBody.type, "/problems/unauthorized");
    const headers = (r: Response) =>
      [...r.headers].filter(([k]) => !["x-request-id", "server-timing"].includes(k));
    assert.deepEqual(headers(locked.res), headers(unknown.res));
    assert.equal(locked.res.headers.get("retry-after"), null);
    c.advance(15 * 60_000 + 1000);
    assert.equal((await login(t.app, u.email)).res.status, 200);

    const evs = await t.runtime.db.query<{ type: string; reason: string | null }>(
      sql`select type, data->>'reason' as reason from events
        where type in ('LoginFailed', 'AccountLocked', 'LoginSucceeded') order by global_position`,
    );
    assert.deepEqual(evs.map((e) => e.reason ?? e.type), [
      "unknown_email",
      "bad_password",
      "bad_password",
      "bad_password",
      "bad_password",
      "bad_password",
      "AccountLocked",
      "locked",
      "LoginSucceeded",
    ]);
    // failures carry who and from where, never what was typed
    const [meta] = await t.runtime.db.query<{ m: Record<string, string> }>(
      sql`select metadata as m from events where type = 'LoginFailed' order by global_position limit 1`,
    );
    assert.equal(meta!.m.userAgent, "chartlog-tests/1");
    assert.ok(meta!.m.ip);
  } finally {
    await t.close();
  }
});

Deno.test("auth: the per-address rate limiter answers 429 with Retry-After", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "3" });
  try {
    for (let i = 0; i < 3; i++) {
      assert.equal((await login(t.app, "x@clinic.test", "not the password")).res.status, 401);
    }
    const { res, body } = await login(t.app, "x@clinic.test", "not the password");
    assert.equal(res.status, 429);
    assert.equal(body.type, "/problems/rate-limited");
    assert.ok(Number(res.headers.get("retry-after")) > 0);
    assert.equal((await t.app.request("/health")).status, 200); // other routes are not limited
  } finally {
    await t.close();
  }
});

Deno.test("auth: no password, token or refresh token reaches the logs or the event log", async () => {
  const t = await openTestApp();
  try {
    const admin = await createUser(t.runtime, "admin");
    const { body } = await login(t.app, admin.email);
    const r = await t.app.request("/v1/auth/refresh", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: body.refreshToken }),
    });
    const rotated = await r.json();
    const created = await t.app.request("/v1/users", {
      method: "POST",
      headers: { ...bearer(rotated.accessToken), "content-type": "application/json" },
      body: JSON.stringify({
        email: "new.person@clinic.test",
        name: "Ophelia Quagmire",
        role: "practitioner",
        password: "another secret passphrase",
      }),
    });
    assert.equal(created.status, 201);
    await login(t.app, admin.email, "a wrong but long password");
    const [dump] = await t.runtime.db.query<{ d: string }>(
      sql`select string_agg(data::text || metadata::text, ' ') as d from events`,
    );
    const logs = t.logs.text();
    const secrets = [
      PASSWORD,
      "another secret passphrase",
      "a wrong but long password",
      body.accessToken,
      body.refreshToken,
      rotated.accessToken,
      rotated.refreshToken,
      "Ophelia",
      "new.person@clinic.test",
      "scrypt$",
    ];
    for (const s of secrets) {
      assert.ok(!dump!.d.includes(s), `event log holds ${s.slice(0, 12)}…`);
      assert.ok(!logs.includes(s), `logs hold ${s.slice(0, 12)}…`);
    }
  } finally {
    await t.close();
  }
});

/** The app on each available driver: PGlite in memory, and a fresh PostgreSQL database. */
const eachApp = async (
  t: Deno.TestContext,
  env: Record<string, string>,
  fn: (app: Awaited<ReturnType<typeof openTestApp>>) => Promise<void>,
) => {
  for (const kind of await drivers()) {
    await t.step(kind, async () => {
      const db = kind === "postgres" ? await createTestDatabase({ app: true }) : null;
      const app = await openTestApp({ ...env, ...(db ? { DATABASE_URL: db.url } : {}) });
      try {
        await fn(app);
      } finally {
        await app.close();
        await db?.drop();
      }
    });
  }
};

Deno.test("auth: 20 concurrent wrong passwords lock the account exactly once", async (t) => {
  await eachApp(t, { CHARTLOG_LOGIN_RATE_PER_MIN: "1000" }, async (a) => {
    const u = await createCheapUser(a.runtime, "practitioner");
    const tries = await Promise.all(
      Array.from({ length: 20 }, () => login(a.app, u.email, "a wrong guess, again")),
    );
    assert.deepEqual(tries.map((r) => r.res.status), Array(20).fill(401));
    const evs = await a.runtime.db.query<{ type: string; reason: string | null }>(
      sql`select type, data->>'reason' as reason from events
        where type in ('LoginFailed', 'AccountLocked') order by global_position`,
    );
    assert.equal(evs.filter((e) => e.type === "AccountLocked").length, 1);
    // five counted failures, the lock, then every later attempt refused as locked
    assert.deepEqual(evs.map((e) => e.reason ?? e.type), [
      ...Array(5).fill("bad_password"),
      "AccountLocked",
      ...Array(15).fill("locked"),
    ]);
    assert.equal((await login(a.app, u.email)).res.status, 401, "even the right password");
  });
});

Deno.test("auth: 20 concurrent refreshes with one token: one wins, the session is revoked", async (ctx) => {
  for (const driver of await drivers()) {
    await ctx.step(driver, async () => {
      const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
      const { t, refresh, login } = await sessionsFixture(pg ? { DATABASE_URL: pg.url } : {});
      try {
        const first = await login();
        const answers = await Promise.all(
          Array.from({ length: 20 }, () => refresh({ refreshToken: first.refreshToken })),
        );
        const statuses = answers.map((r) => r.status);
        assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(","));
        assert.equal(statuses.filter((s) => s === 401).length, 19, statuses.join(","));
        const winner = await answers.find((r) => r.status === 200)!.json();
        for (const r of answers.filter((r) => r.status !== 200)) await r.body?.cancel();
        // the losers were reuse: the winner's tokens are dead too
        await assert401(await refresh({ refreshToken: winner.refreshToken }));
        await assert401(await me(t.app, winner.accessToken));
        const evs = await types(t);
        assert.equal(evs.filter((e) => e === "SessionRefreshed").length, 1);
        assert.equal(evs.filter((e) => e === "RefreshReuseDetected").length, 1);
        const [ended] = await t.runtime.db.query<{ reason: string }>(
          sql`select end_reason as reason from sessions`,
        );
        assert.equal(ended!.reason, "refresh_reuse");
      } finally {
        await t.close();
        await pg?.drop();
      }
    });
  }
});

Deno.test("auth: API calls keep a session alive; a truly idle one is logged out", async () => {
  const c = clock();
  // a token that lives for most of the idle timeout: refreshes alone would not
  // show a client calling every 500 s as active
  const t = await openTestApp({
    CHARTLOG_ACCESS_TOKEN_TTL_S: "600",
    CHARTLOG_SESSION_IDLE_TIMEOUT_S: "900",
  }, { now: c.now });
  try {
    const u = await createUser(t.runtime, "reception");
    const refresh = (token: string) =>
      t.app.request("/v1/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refreshToken: token }),
      });
    let tokens = (await login(t.app, u.email)).body;
    let refreshes = 0;
    // a steady client: a call every 500 s for an hour, refreshing when its token expired
    for (let i = 0; i < 7; i++) {
      c.advance(500_000);
      let res = await me(t.app, tokens.accessToken);
      if (res.status === 401) {
        await res.body?.cancel();
        const r = await refresh(tokens.refreshToken);
        assert.equal(r.status, 200, `refresh after ${(i + 1) * 500} s`);
        tokens = await r.json();
        refreshes++;
        res = await me(t.app, tokens.accessToken);
      }
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
    assert.ok(refreshes >= 3);

    // the mark is written at most once per tenth of the timeout
    const seen = async () =>
      (await t.runtime.db.query<{ at: Date | string }>(
        sql`select last_seen as at from session_activity`,
      )).map((r) => new Date(r.at).getTime());
    tokens = await (await refresh(tokens.refreshToken)).json();
    c.advance(100_000);
    assert.equal((await me(t.app, tokens.accessToken)).status, 200);
    const marked = c.now().getTime();
    assert.deepEqual(await seen(), [marked]);
    c.advance(80_000); // < 90 s later: no write
    assert.equal((await me(t.app, tokens.accessToken)).status, 200);
    assert.deepEqual(await seen(), [marked]);

    // then nothing for longer than the timeout: the session cannot be refreshed
    c.advance(900_000);
    await assert401(await refresh(tokens.refreshToken));
    const [ended] = await t.runtime.db.query<{ reason: string }>(
      sql`select end_reason as reason from sessions`,
    );
    assert.equal(ended!.reason, "idle_timeout");
  } finally {
    await t.close();
  }
});
