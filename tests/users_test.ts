import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { sql } from "../src/store/sql.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { openTestApp, TEST_CHECKPOINT_KEY } from "./support/app.ts";
import { createTestDatabase, postgresAvailable } from "./support/harness.ts";
import { bearer, createCheapUser, createUser, login, PASSWORD } from "./support/users.ts";

Deno.test("users: admin creates, lists, reads and changes users; bad input is a 422", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "1000" });
  try {
    await createUser(t.runtime, "admin");
    const token = (await login(t.app, "admin@clinic.test")).body.accessToken;
    const post = (body: unknown) =>
      t.app.request("/v1/users", {
        method: "POST",
        headers: { ...bearer(token), "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const valid = {
      email: "Dr.Who@Clinic.Test",
      name: "Dr Who",
      role: "practitioner",
      password: "twelve chars min",
    };
    const created = await post(valid);
    assert.equal(created.status, 201);
    const user = await created.json();
    assert.equal(user.email, "dr.who@clinic.test");
    assert.equal(created.headers.get("location"), `/v1/users/${user.id}`);
    assert.equal(created.headers.get("etag"), '"1"');

    // every bad field is named
    const bad = await post({
      email: "nope",
      name: "",
      role: "wizard",
      password: "short",
      extra: 1,
    });
    assert.equal(bad.status, 422);
    const paths = (await bad.json()).errors.map((e: { path: string }) => e.path).sort();
    for (const p of ["email", "name", "password", "role"]) assert.ok(paths.includes(p), p);
    assert.ok(paths.some((p: string) => p === "" || p.includes("extra")), "unknown field reported");
    // a family member: role patient, no record of their own (a proxy once a patient adds them)
    const family = await post({ ...valid, email: "p@clinic.test", role: "patient" });
    assert.equal(family.status, 201);
    assert.equal((await family.json()).patientId, null);
    assert.equal(
      (await post({ ...valid, email: "x@clinic.test", patientId: crypto.randomUUID() })).status,
      422,
    );
    assert.equal((await post(valid)).status, 409); // same email, any case
    assert.equal((await post({ ...valid, email: "DR.WHO@clinic.test" })).status, 409);
    const pid = crypto.randomUUID();
    assert.equal(
      (await post({ ...valid, email: "p1@clinic.test", role: "patient", patientId: pid })).status,
      201,
    );
    assert.equal(
      (await post({ ...valid, email: "p2@clinic.test", role: "patient", patientId: pid })).status,
      409,
    );

    // keyset pages with a total
    for (let i = 0; i < 5; i++) await post({ ...valid, email: `u${i}@clinic.test` });
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = `/v1/users?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const page = await (await t.app.request(q, { headers: bearer(token) })).json();
      assert.equal(page.total, 9); // admin, dr.who, p, p1, u0–u4
      seen.push(...page.items.map((u: { email: string }) => u.email));
      cursor = page.nextCursor;
    } while (cursor);
    assert.equal(seen.length, 9);
    assert.deepEqual(seen, [...seen].sort());
    const byRole = await (await t.app.request("/v1/users?role=patient", { headers: bearer(token) }))
      .json();
    assert.equal(byRole.total, 2);
    assert.equal(
      (await t.app.request("/v1/users?limit=101", { headers: bearer(token) })).status,
      422,
    );

    // read, If-Match, 404
    const got = await t.app.request(`/v1/users/${user.id}`, { headers: bearer(token) });
    assert.equal(got.status, 200);
    assert.equal((await got.json()).name, "Dr Who");
    assert.equal(
      (await t.app.request(`/v1/users/${crypto.randomUUID()}`, { headers: bearer(token) })).status,
      404,
    );
    const patch = (body: unknown, ifMatch?: string) =>
      t.app.request(`/v1/users/${user.id}`, {
        method: "PATCH",
        headers: {
          ...bearer(token),
          "content-type": "application/json",
          ...(ifMatch ? { "if-match": ifMatch } : {}),
        },
        body: JSON.stringify(body),
      });
    assert.equal((await patch({ role: "clinical_ops" }, '"7"')).status, 412);
    const changed = await patch({ role: "clinical_ops", active: false }, '"1"');
    assert.equal(changed.status, 200);
    assert.equal(changed.headers.get("etag"), '"3"'); // two events in one append
    const body = await changed.json();
    assert.equal(body.role, "clinical_ops");
    assert.equal(body.active, false);
    assert.equal((await patch({ patientId: crypto.randomUUID() })).status, 422);
    assert.equal((await patch({ nickname: "x" })).status, 422);

    // the caller's own profile
    const meRes = await t.app.request("/v1/me", {
      method: "PATCH",
      headers: { ...bearer(token), "content-type": "application/json" },
      body: JSON.stringify({ phone: "+15551234567", specialization: "dermatology" }),
    });
    assert.equal(meRes.status, 200);
    assert.equal((await meRes.json()).specialization, "dermatology");
    const badPhone = await t.app.request("/v1/me", {
      method: "PATCH",
      headers: { ...bearer(token), "content-type": "application/json" },
      body: JSON.stringify({ phone: "555-1234" }),
    });
    assert.equal(badPhone.status, 422);
    // the log keeps who did it
    const [e] = await t.runtime.db.query<{ actor: string }>(sql`select metadata->>'actorId' as actor
      from events where type = 'UserRoleChanged'`);
    assert.ok(e!.actor);
  } finally {
    await t.close();
  }
});

Deno.test({
  name: "users: `deno task user create` bootstraps a user from stdin",
  ignore: !(await postgresAvailable()),
  fn: async () => {
    const db = await createTestDatabase({ app: true });
    const key = crypto.getRandomValues(new Uint8Array(32));
    try {
      const cmd = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../src/cli/user.ts", import.meta.url).pathname,
          "create",
          "--email",
          "Boot@Clinic.Test",
          "--role",
          "admin",
          "--name",
          "Boot Strap",
        ],
        env: { DATABASE_URL: db.url, CHARTLOG_MASTER_KEY: keyEnv(key), LOG_LEVEL: "warn" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = cmd.stdin.getWriter();
      await w.write(new TextEncoder().encode("a bootstrap passphrase\n"));
      await w.close();
      const out = await cmd.output();
      const stdout = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      assert.match(stdout, /^created user [0-9a-f-]{36} \(admin\)/);
      assert.ok(!stdout.includes("passphrase"));

      // a family member: role patient without --patient-id
      const family = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../src/cli/user.ts", import.meta.url).pathname,
          "create",
          "--email",
          "family@home.test",
          "--role",
          "patient",
          "--name",
          "Family",
        ],
        env: { DATABASE_URL: db.url, CHARTLOG_MASTER_KEY: keyEnv(key), LOG_LEVEL: "warn" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const fw = family.stdin.getWriter();
      await fw.write(new TextEncoder().encode("a family passphrase\n"));
      await fw.close();
      const fout = await family.output();
      assert.equal(fout.code, 0, new TextDecoder().decode(fout.stderr));
      assert.match(
        new TextDecoder().decode(fout.stdout),
        /^created user [0-9a-f-]{36} \(patient\)/,
      );

      const short = await runCli("user.ts", [
        "create",
        "--email",
        "x@y.z",
        "--role",
        "admin",
        "--name",
        "X",
      ], {
        DATABASE_URL: db.url,
        CHARTLOG_MASTER_KEY: keyEnv(key),
      });
      assert.equal(short.code, 1); // empty stdin: no password
      assert.match(short.stderr, /password/);

      const t = await openTestApp({ DATABASE_URL: db.url, CHARTLOG_MASTER_KEY: keyEnv(key) });
      try {
        const { res } = await login(t.app, "boot@clinic.test", "a bootstrap passphrase");
        assert.equal(res.status, 200);
        const member = await login(t.app, "family@home.test", "a family passphrase");
        assert.equal(member.res.status, 200);
        const me = await t.app.request("/v1/me", { headers: bearer(member.body.accessToken) });
        assert.equal(me.status, 200);
        assert.equal((await me.json()).patientId, null);
      } finally {
        await t.close();
      }
    } finally {
      await db.drop();
    }
  },
});

Deno.test("users: self sign-up creates a pending practitioner an admin must approve", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "1000" });
  try {
    await createUser(t.runtime, "admin");
    const admin = (await login(t.app, "admin@clinic.test")).body.accessToken;
    const signup = (body: unknown) =>
      t.app.request("/v1/auth/signup", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const res = await signup({
      email: "new.doc@clinic.test",
      name: "New Doc",
      password: "a long passphrase",
    });
    assert.equal(res.status, 202);
    assert.equal(
      (await signup({
        email: "x@clinic.test",
        name: "X",
        password: "a long passphrase",
        role: "admin",
      })).status,
      422,
    );
    // an email that has an account gets the very answer a new one got, and nothing is created
    const again = await signup({
      email: "NEW.doc@clinic.test",
      name: "Again",
      password: "another passphrase",
    });
    assert.equal(again.status, res.status);
    assert.deepEqual(await again.json(), await res.json());
    const headers = (r: Response) => [...r.headers].filter(([k]) => k !== "x-request-id");
    assert.deepEqual(headers(again), headers(res));
    const rows = await t.runtime.db.query<{ id: string }>(
      sql`select id::text as id from users where email = 'new.doc@clinic.test'`,
    );
    assert.equal(rows.length, 1);
    const id = rows[0]!.id;
    const [refused] = await t.runtime.db.query<{ data: Record<string, string>; ip: string }>(
      sql`select data, metadata->>'ip' as ip from events where type = 'SignupRefused'`,
    );
    assert.deepEqual(refused!.data, { userId: id, reason: "email_taken" });
    assert.ok(refused!.ip, "the attempt says where it came from");
    const [dump] = await t.runtime.db.query<{ d: string }>(
      sql`select string_agg(data::text || metadata::text, ' ') as d from events`,
    );
    assert.ok(!dump!.d.includes("another passphrase") && !dump!.d.includes("a long passphrase"));

    const before = await login(t.app, "new.doc@clinic.test", "a long passphrase");
    assert.equal(before.res.status, 401);
    assert.match(before.body.detail, /approval/);
    const wrong = await login(t.app, "new.doc@clinic.test", "not the passphrase");
    assert.equal(wrong.body.detail, "invalid credentials or account temporarily locked"); // nothing said without the password

    const view = await (await t.app.request(`/v1/users/${id}`, { headers: bearer(admin) })).json();
    assert.deepEqual([view.role, view.active, view.pending], ["practitioner", false, true]);
    const approve = await t.app.request(`/v1/users/${id}`, {
      method: "PATCH",
      headers: { ...bearer(admin), "content-type": "application/json" },
      body: JSON.stringify({ active: true }),
    });
    assert.equal(approve.status, 200);
    assert.deepEqual([(await approve.json()).pending], [false]);
    assert.equal((await login(t.app, "new.doc@clinic.test", "a long passphrase")).res.status, 200);
    const [e] = await t.runtime.db.query<{ type: string; actor: string }>(sql`select type,
      metadata->>'actorId' as actor from events where type = 'UserApproved'`);
    assert.ok(e!.actor);
  } finally {
    await t.close();
  }
  const off = await openTestApp({ CHARTLOG_SIGNUP: "off" });
  try {
    const res = await off.app.request("/v1/auth/signup", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "a@clinic.test", name: "A", password: "a long passphrase" }),
    });
    assert.equal(res.status, 403);
    assert.equal((await off.runtime.db.query(sql`select 1 from users`)).length, 0);
  } finally {
    await off.close();
  }
  // production starts with sign-up off unless it is asked for
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
  const prod = {
    CHARTLOG_ENV: "production",
    CHARTLOG_MASTER_KEY: key,
    CHARTLOG_CHECKPOINT_KEY: TEST_CHECKPOINT_KEY,
  };
  assert.equal(loadConfig(prod).signup, false);
  assert.equal(loadConfig({ ...prod, CHARTLOG_SIGNUP: "on" }).signup, true);
  assert.equal(loadConfig({}).signup, true);
});

Deno.test("users: changing the password checks the old one and ends the other sessions", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "1000" });
  try {
    const u = await createUser(t.runtime, "practitioner");
    const a = (await login(t.app, u.email)).body.accessToken;
    const b = (await login(t.app, u.email)).body.accessToken;
    const change = (body: unknown) =>
      t.app.request("/v1/me/password", {
        method: "POST",
        headers: { ...bearer(a), "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const wrong = await change({
      currentPassword: "not it at all",
      newPassword: "a brand new passphrase",
    });
    assert.equal(wrong.status, 422);
    assert.equal((await wrong.json()).errors[0].path, "currentPassword");
    assert.equal(
      (await change({ currentPassword: "correct horse battery staple", newPassword: "short" }))
        .status,
      422,
    );
    assert.equal(
      (await change({
        currentPassword: "correct horse battery staple",
        newPassword: "a brand new passphrase",
      }))
        .status,
      204,
    );
    assert.equal((await t.app.request("/v1/me", { headers: bearer(a) })).status, 200);
    assert.equal((await t.app.request("/v1/me", { headers: bearer(b) })).status, 401);
    assert.equal((await login(t.app, u.email)).res.status, 401);
    assert.equal((await login(t.app, u.email, "a brand new passphrase")).res.status, 200);
  } finally {
    await t.close();
  }
});

Deno.test("users: wrong current passwords count towards the lock and are events", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "1000" });
  try {
    const u = await createCheapUser(t.runtime, "practitioner");
    const token = (await login(t.app, u.email)).body.accessToken;
    const change = async (currentPassword: string) => {
      const res = await t.app.request("/v1/me/password", {
        method: "POST",
        headers: { ...bearer(token), "content-type": "application/json" },
        body: JSON.stringify({ currentPassword, newPassword: "a brand new passphrase" }),
      });
      const { requestId: _r, ...body } = await res.json();
      return { status: res.status, body };
    };
    const wrong = [];
    for (let i = 0; i < 5; i++) wrong.push(await change(`guess number ${i}`));
    assert.deepEqual(wrong.map((w) => w.status), Array(5).fill(422));
    // locked now: the right password gets the very answer a wrong one gets
    const right = await change(PASSWORD);
    assert.deepEqual(right, wrong[0]);
    assert.equal((await login(t.app, u.email)).res.status, 401, "login is locked too");
    const evs = await t.runtime.db.query<{ type: string; reason: string | null }>(
      sql`select type, data->>'reason' as reason from events
        where stream_id = ${`auth-${u.id}`} order by stream_version`,
    );
    assert.deepEqual(evs.map((e) => e.reason ?? e.type), [
      "LoginSucceeded",
      ...Array(5).fill("wrong_current_password"),
      "AccountLocked",
      "locked",
      "locked",
    ]);
    // nothing changed: the old password is still the password
    const [cred] = await t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where type = 'UserPasswordChanged'`,
    );
    assert.equal(cred!.n, 0);
  } finally {
    await t.close();
  }
});
