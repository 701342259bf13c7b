import assert from "node:assert/strict";
import { createHmac, randomInt } from "node:crypto";
import postgres from "postgres";
import { registerUser } from "../src/auth/accounts.ts";
import { ConfigError, loadConfig } from "../src/config.ts";
import { accessCodeMail } from "../src/outbox/delivery.ts";
import { rebuildProjection } from "../src/store/projection_engine.ts";
import { sql } from "../src/store/sql.ts";
import { notifications } from "../projections/notifications.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers, PG_ADMIN_URL } from "./support/harness.ts";
import { TestSmtp } from "./support/smtp.ts";
import { bearer, createCheapUser, createUser, login, PASSWORD } from "./support/users.ts";

const PURPOSE = "Purpose-sentinel: review of the migraine diary";
const PATIENT_NAME = { first: "Ottoline", last: "Quarrendon" };
const PRACTITIONER_NAME = "Dr Ifeoma Castellanos";

/**
 * Polls `check`. A list's page and its `total` are two statements: a check on
 * the outbox asks for every item too, since a page read just before the
 * worker's commit and a total read just after it (no items, total 3) would
 * pass `every` on nothing.
 */
const waitFor = async (what: string, check: () => boolean | Promise<boolean>) => {
  for (let i = 0; i < 600; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
};

/** A clock the test moves: events, sessions and the outbox all read it. */
const testClock = () => {
  let ms = Date.parse("2026-11-30T12:00:00.000Z");
  return { now: () => new Date(ms), advance: (by: number) => (ms += by) };
};

type TestApp = Awaited<ReturnType<typeof openTestApp>>;

/**
 * The app with its workers on, an admin, a practitioner, a patient record
 * with its patient account (with an e-mail address), a full and a
 * read-only proxy.
 */
const world = async (
  driver: string,
  opts: {
    smtp?: TestSmtp;
    env?: Record<string, string>;
    backoffMs?: number;
    workers?: boolean;
  } = {},
) => {
  const clock = testClock();
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  let t: TestApp;
  try {
    t = await openTestApp({
      CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
      ...(pg ? { DATABASE_URL: pg.url } : {}),
      ...(opts.smtp ? { CHARTLOG_SMTP_URL: opts.smtp.url } : {}),
      ...opts.env,
    }, {
      now: clock.now,
      workers: opts.workers ?? true,
      outbox: {
        pollMs: 10,
        retryMs: 50,
        ...(opts.backoffMs ? { backoffMs: () => opts.backoffMs! } : {}),
      },
    });
  } catch (err) {
    await pg?.drop();
    throw err;
  }
  const admin = await createUser(t.runtime, "admin");
  const adminToken = (await login(t.app, admin.email)).body.accessToken as string;
  const practitioner = await registerUser(
    t.runtime.store,
    {
      email: "castellanos@clinic.test",
      name: PRACTITIONER_NAME,
      role: "practitioner",
      password: PASSWORD,
      patientId: null,
    },
    { actorId: "test-setup" },
    t.runtime.passwordParams,
  );
  const res = await t.app.request("/v1/patients", {
    method: "POST",
    headers: { ...bearer(adminToken), "content-type": "application/json" },
    body: JSON.stringify({
      mrn: `MRN-${crypto.randomUUID().slice(0, 8)}`,
      firstName: PATIENT_NAME.first,
      lastName: PATIENT_NAME.last,
      dateOfBirth: "1984-04-04",
      gender: "F",
    }),
  });
  assert.equal(res.status, 201, await res.clone().text());
  const patientId = (await res.json()).id as string;
  const patientUser = await registerUser(
    t.runtime.store,
    {
      email: "ottoline@mail.test",
      name: `${PATIENT_NAME.first} ${PATIENT_NAME.last}`,
      role: "patient",
      password: PASSWORD,
      patientId,
    },
    { actorId: "test-setup" },
    t.runtime.passwordParams,
  );
  const proxy = async (email: string, level: "full" | "read_only") => {
    // a family member: a patient-role account without a record of its own
    const u = await createCheapUser(t.runtime, "patient", email);
    const proxyId = crypto.randomUUID();
    await t.runtime.store.append(`proxies-${patientId}`, "any", [{
      type: "ProxyAdded",
      data: { proxyId, patientId, userId: u.id, level },
    }], { actorId: admin.id });
    return { ...u, proxyId };
  };
  const fullProxy = await proxy("full-proxy@mail.test", "full");
  const readOnlyProxy = await proxy("ro-proxy@mail.test", "read_only");

  /** Appends an AccessRequested as the access-request route will (the code sealed by the catalogue). */
  const requestAccess = async () => {
    const requestId = crypto.randomUUID();
    const code = String(randomInt(0, 1_000_000)).padStart(6, "0");
    const digest = createHmac("sha256", "test-key").update(code).digest("hex");
    await t.runtime.store.append(`access-request-${requestId}`, "no_stream", [{
      type: "AccessRequested",
      data: {
        requestId,
        patientId,
        practitionerId: practitioner.id,
        clinicId: null,
        purpose: PURPOSE,
        durationHours: 24,
        codeDigest: digest,
        code,
        expiresAt: new Date(clock.now().getTime() + 10 * 60_000).toISOString(),
      },
    }], { actorId: practitioner.id, actorRole: "practitioner" });
    return { requestId, code };
  };
  const get = async (token: string, path: string) => {
    const r = await t.app.request(path, { headers: bearer(token) });
    return { status: r.status, body: await r.json() };
  };
  const tokenOf = async (email: string) => (await login(t.app, email)).body.accessToken as string;
  const outbox = async (query = "") =>
    (await get(adminToken, `/v1/admin/outbox${query}`)).body as {
      items: Record<string, unknown>[];
      total: number;
      nextCursor: string | null;
    };
  return {
    t,
    pg,
    clock,
    adminToken,
    practitioner,
    patientId,
    patientUser,
    fullProxy,
    readOnlyProxy,
    requestAccess,
    get,
    tokenOf,
    outbox,
    close: async () => {
      try {
        await t.close();
      } finally {
        await pg?.drop();
      }
    },
  };
};

/** The text of every event row, to search for a plaintext code. */
const eventsText = async (t: TestApp) =>
  (await t.runtime.db.query<{ t: string }>(
    sql`select coalesce(string_agg(e::text, '|'), '') as t from events e`,
  ))[0]!.t;

for (const driver of await drivers()) {
  Deno.test(`outbox [${driver}]: a code reaches the patient in-app and by SMTP, nothing clinical in the mail, none in plaintext at rest or in logs`, async () => {
    const smtp = await new TestSmtp().start();
    const w = await world(driver, { smtp });
    try {
      const { code, requestId } = await w.requestAccess();
      await waitFor("both channels delivered", async () => {
        const o = await w.outbox();
        return o.total === 3 && o.items.length === 3 &&
          o.items.every((i) => i.status === "delivered");
      });
      // e-mail: one, to the patient account's address, with the code, who asks and until when
      assert.equal(smtp.received.length, 1);
      const mail = smtp.received[0]!;
      assert.deepEqual(mail.to, ["ottoline@mail.test"]);
      assert.ok(mail.raw.includes(code), "the code is in the mail");
      assert.ok(mail.raw.includes(PRACTITIONER_NAME));
      assert.ok(mail.raw.includes("12:10 UTC"), "its expiry");
      for (const secret of [PURPOSE, "migraine", PATIENT_NAME.first, PATIENT_NAME.last]) {
        assert.ok(!mail.raw.includes(secret), `the mail holds no ${secret}`);
      }

      // in-app: the patient and the full proxy see the code; the read-only proxy nothing
      for (const who of [w.patientUser, w.fullProxy]) {
        const inbox = await w.get(await w.tokenOf(who.email), "/v1/me/notifications");
        assert.equal(inbox.status, 200);
        assert.equal(inbox.body.total, 1);
        const [n] = inbox.body.items;
        assert.equal(n.code, code);
        assert.equal(n.requestId, requestId);
        assert.equal(n.patientId, w.patientId);
        assert.deepEqual(n.practitioner, { id: w.practitioner.id, name: PRACTITIONER_NAME });
        assert.equal(n.expired, false);
        assert.equal(n.expiresAt, "2026-11-30T12:10:00.000Z");
      }
      const ro = await w.get(await w.tokenOf(w.readOnlyProxy.email), "/v1/me/notifications");
      assert.deepEqual(ro.body, { items: [], nextCursor: null, total: 0 });
      // a practitioner's inbox is their own, and empty
      const pr = await w.get(await w.tokenOf(w.practitioner.email), "/v1/me/notifications");
      assert.equal(pr.body.total, 0);

      // the development outbox: channels, status, attempts and (in test) the code
      const o = await w.outbox();
      assert.deepEqual(
        o.items.map((i) => [i.channel, i.userId]).sort(),
        [
          ["email", w.patientUser.id],
          ["in_app", w.fullProxy.id],
          ["in_app", w.patientUser.id],
        ].sort(),
      );
      for (const i of o.items) {
        assert.equal(i.attempts, 0);
        assert.equal(i.code, code);
        assert.equal(i.lastError, null);
      }
      assert.equal((await w.outbox("?channel=email&status=delivered")).total, 1);
      assert.equal((await w.outbox("?status=failed")).total, 0);

      // every delivery is an event, once
      const delivered = await w.t.runtime.db.query<{ id: string; channel: string; n: number }>(
        sql`select data->>'notificationId' as id, data->>'channel' as channel,
          count(*)::int as n from events where type = 'NotificationDelivered' group by 1, 2`,
      );
      assert.equal(delivered.length, 3);
      assert.ok(delivered.every((d) => d.n === 1));

      // the code is nowhere in the clear: not in the log, not in any read model, not in the logs
      assert.ok(!(await eventsText(w.t)).includes(code), "no plaintext code in events");
      assert.ok(!(await eventsText(w.t)).includes("migraine"), "no plaintext purpose in events");
      const [rm] = await w.t.runtime.db.query<{ t: string }>(
        sql`select coalesce(string_agg(n::text, '|'), '') as t from notifications n`,
      );
      assert.ok(!rm!.t.includes(code));
      assert.ok(!w.t.logs.text().includes(code), "no code in the logs");
      assert.ok(!w.t.logs.text().includes("ottoline@mail.test"), "no address in the logs");
      assert.ok(w.t.logs.lines.some((l) => l.msg === "notification delivered"));

      // newest first, paginated with sealed cursors
      const second = await w.requestAccess();
      w.clock.advance(1000);
      const third = await w.requestAccess();
      const token = await w.tokenOf(w.patientUser.email);
      await waitFor(
        "three in the inbox",
        async () => (await w.get(token, "/v1/me/notifications")).body.total === 3,
      );
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const q: string = cursor ? `&cursor=${cursor}` : "";
        const p = await w.get(token, `/v1/me/notifications?limit=1${q}`);
        assert.equal(p.status, 200);
        assert.equal(p.body.items.length, 1);
        seen.push(p.body.items[0].code);
        cursor = p.body.nextCursor;
      } while (cursor);
      assert.equal(seen[0], third.code);
      assert.deepEqual(new Set(seen.slice(1)), new Set([second.code, code]));
      // another user's cursor, a forged one, a bad limit: 422s, never a 500
      const first = await w.get(token, "/v1/me/notifications?limit=1");
      const foreign = await w.get(
        await w.tokenOf(w.fullProxy.email),
        `/v1/me/notifications?cursor=${first.body.nextCursor}`,
      );
      assert.equal(foreign.status, 422);
      assert.equal(foreign.body.type, "/problems/invalid-cursor");
      const bad = await w.get(token, "/v1/me/notifications?limit=0&cursor=nonsense");
      assert.equal(bad.status, 422);
      assert.equal((await w.get(token, "/v1/admin/outbox")).status, 403);
      const anon = await w.t.app.request("/v1/me/notifications");
      assert.equal(anon.status, 401);
      await anon.body?.cancel();

      // a proxy removed no longer reads the patient's codes, at once
      await w.t.runtime.store.append(`proxies-${w.patientId}`, "any", [{
        type: "ProxyRemoved",
        data: { proxyId: w.fullProxy.proxyId, patientId: w.patientId, userId: w.fullProxy.id },
      }], { actorId: "test-setup" });
      const removed = await w.get(await w.tokenOf(w.fullProxy.email), "/v1/me/notifications");
      assert.deepEqual(removed.body, { items: [], nextCursor: null, total: 0 });

      // once the code has expired the inbox no longer shows it
      w.clock.advance(11 * 60_000);
      const later = await w.get(await w.tokenOf(w.patientUser.email), "/v1/me/notifications");
      assert.ok(
        later.body.items.every((i: { code: unknown; expired: boolean }) =>
          i.code === null && i.expired
        ),
      );
    } finally {
      await w.close();
      await smtp.stop();
    }
  });

  Deno.test(`outbox [${driver}]: SMTP down → NotificationFailed with a retry time, then delivered once it is back`, async () => {
    const smtp = await new TestSmtp().start();
    await smtp.stop(); // the port is known, nothing listens on it
    const w = await world(driver, { smtp, backoffMs: 60_000 });
    try {
      const { code } = await w.requestAccess();
      await waitFor("a failed attempt", async () => {
        const [e] = (await w.outbox("?channel=email")).items;
        return e?.attempts === 1;
      });
      const [failed] = await w.t.runtime.db.query<{ data: Record<string, unknown> }>(
        sql`select data from events where type = 'NotificationFailed'`,
      );
      assert.equal(failed!.data.channel, "email");
      assert.equal(failed!.data.attempt, 1);
      assert.match(String(failed!.data.error), /^smtp_[a-z0-9_]+$/);
      assert.equal(failed!.data.retryAt, "2026-11-30T12:01:00.000Z");
      const [pending] = (await w.outbox("?channel=email")).items;
      assert.equal(pending!.status, "pending");
      assert.equal(pending!.retryAt, "2026-11-30T12:01:00.000Z");
      assert.equal(pending!.lastError, failed!.data.error);
      // the clock has not moved: no second attempt, however often the worker looks
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await w.outbox("?channel=email")).items[0]!.attempts, 1);

      await smtp.start();
      w.clock.advance(61_000);
      await waitFor("delivered", async () => {
        const [e] = (await w.outbox("?channel=email")).items;
        return e?.status === "delivered";
      });
      assert.equal(smtp.received.length, 1);
      assert.ok(smtp.received[0]!.raw.includes(code));
      assert.ok(!w.t.logs.text().includes(code));
      // the log of this notification: one failure, one delivery
      const trail = await w.t.runtime.db.query<{ type: string; v: number }>(
        sql`select type, stream_version as v from events where stream_id like 'notification-%'
          and data->>'channel' = 'email' order by global_position`,
      );
      assert.deepEqual(trail.map((r) => r.type), ["NotificationFailed", "NotificationDelivered"]);
      // a rebuild from the log makes the same rows (ids, states, attempts, times)
      const digest = async () =>
        (await w.t.runtime.db.query<{ d: string }>(sql`select
          md5(coalesce(string_agg(n::text, '|' order by n.id), '')) as d from notifications n`))[0]!
          .d;
      const before = await digest();
      await rebuildProjection(w.t.runtime.store, notifications);
      assert.equal(await digest(), before);
    } finally {
      await w.close();
      await smtp.stop();
    }
  });

  Deno.test(`outbox [${driver}]: without SMTP the code goes in-app only; an erased patient's notifications are gone`, async () => {
    const w = await world(driver);
    try {
      const { code } = await w.requestAccess();
      await waitFor("settled", async () => {
        const o = await w.outbox();
        return o.total === 3 && o.items.length === 3 &&
          o.items.every((i) => i.status !== "pending");
      });
      const [email] = (await w.outbox("?channel=email")).items;
      assert.equal(email!.status, "failed");
      assert.equal(email!.lastError, "smtp_not_configured");
      assert.equal(email!.retryAt, null);
      const inbox = await w.get(await w.tokenOf(w.patientUser.email), "/v1/me/notifications");
      assert.equal(inbox.body.items[0].code, code);

      const res = await w.t.app.request(`/v1/patients/${w.patientId}/erasure`, {
        method: "POST",
        headers: { ...bearer(w.adminToken), "content-type": "application/json" },
        body: JSON.stringify({ reason: "right to erasure, ticket 4711" }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      await res.body?.cancel();
      await waitFor("erased from the outbox", async () => {
        const [r] = await w.t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from notifications where patient_id = ${w.patientId}::uuid`,
        );
        return r!.n === 0;
      });
      assert.equal((await w.outbox()).total, 0);
      // the full proxy (not erased) keeps nothing of the patient either
      const proxyInbox = await w.get(await w.tokenOf(w.fullProxy.email), "/v1/me/notifications");
      assert.equal(proxyInbox.body.total, 0);
      assert.ok(!(await eventsText(w.t)).includes(code));
    } finally {
      await w.close();
    }
  });
}

for (const driver of await drivers()) {
  Deno.test(`outbox [${driver}]: 20 deliverers at once send each mail once and record each outcome once`, async () => {
    const smtp = await new TestSmtp().start();
    // no worker: the test folds (a rebuild) and delivers by hand, 20 times over at once
    const w = await world(driver, { smtp, workers: false, env: { CHARTLOG_DB_POOL_MAX: "30" } });
    try {
      const codes = [];
      for (let i = 0; i < 3; i++) codes.push((await w.requestAccess()).code);
      await rebuildProjection(w.t.runtime.store, notifications);
      assert.equal((await w.outbox()).total, 9);
      const recorded = await Promise.all(
        Array.from({ length: 20 }, () => w.t.runtime.outbox.deliverDue()),
      );
      assert.equal(recorded.reduce((a, b) => a + b, 0), 9);
      assert.equal(smtp.received.length, 3);
      for (const code of codes) {
        assert.equal(smtp.received.filter((m) => m.raw.includes(code)).length, 1);
      }
      const events = await w.t.runtime.db.query<{ n: number }>(sql`select count(*)::int as n
        from events where type like 'Notification%' group by stream_id`);
      assert.equal(events.length, 9);
      assert.ok(events.every((e) => e.n === 1));
      // folded, all delivered; a second round finds nothing due
      await rebuildProjection(w.t.runtime.store, notifications);
      assert.equal((await w.outbox("?status=delivered")).total, 9);
      assert.equal(await w.t.runtime.outbox.deliverDue(), 0);
    } finally {
      await w.close();
      await smtp.stop();
    }
  });
}

Deno.test("outbox: bad input on both lists is a 422 naming every bad field, never a 500", async () => {
  const w = await world("pglite", { workers: false });
  try {
    for (let i = 0; i < 3; i++) await w.requestAccess();
    await rebuildProjection(w.t.runtime.store, notifications);
    const patient = await w.tokenOf(w.patientUser.email);
    const lists = [
      { token: patient, url: "/v1/me/notifications?limit=1" },
      { token: w.adminToken, url: "/v1/admin/outbox?limit=1" },
      { token: w.adminToken, url: "/v1/admin/outbox?limit=1&channel=in_app" },
    ];
    const cursors: string[] = [];
    for (const l of lists) {
      const first = await w.get(l.token, l.url);
      assert.ok(first.body.nextCursor);
      cursors.push(first.body.nextCursor);
      const next = await w.get(l.token, `${l.url}&cursor=${first.body.nextCursor}`);
      assert.equal(next.status, 200);
      assert.notEqual(next.body.items[0].id, first.body.items[0].id);
    }
    const flip = (c: string, at: number) =>
      c.slice(0, at) + (c[at] === "A" ? "B" : "A") + c.slice(at + 1);
    for (const [i, l] of lists.entries()) {
      const own = cursors[i]!;
      const bad = [
        "garbage!",
        "a",
        own.slice(0, 10),
        flip(own, 20),
        flip(own, own.length - 2),
        btoa(JSON.stringify({ c: "2026-11-30T12:00:00Z", i: crypto.randomUUID() })),
        "x".repeat(400),
        ...cursors.filter((_, j) => j !== i), // another list's, or another filter's
      ];
      for (const c of bad) {
        const res = await w.get(l.token, `${l.url}&cursor=${encodeURIComponent(c)}`);
        assert.equal(res.status, 422, `${l.url} ${c}`);
        assert.equal(res.body.type, "/problems/invalid-cursor");
        assert.deepEqual(res.body.errors.map((e: { path: string }) => e.path), ["cursor"]);
      }
    }
    const res = await w.get(
      w.adminToken,
      "/v1/admin/outbox?limit=1000&status=lost&channel=pigeon&cursor=" + "y".repeat(600),
    );
    assert.equal(res.status, 422);
    assert.deepEqual(
      res.body.errors.map((e: { path: string }) => e.path).sort(),
      ["channel", "cursor", "limit", "status"],
    );
    const nul = await w.get(patient, "/v1/me/notifications?cursor=a%00b");
    assert.equal(nul.status, 422);
    assert.ok(!w.t.logs.lines.some((l) => l.msg === "unhandled error" || Number(l.status) >= 500));
  } finally {
    await w.close();
  }
});

Deno.test("outbox: GET /v1/admin/outbox is a 404 in production, for everyone", async () => {
  const t = await openTestApp({ CHARTLOG_ENV: "production" });
  try {
    const anon = await t.app.request("/v1/admin/outbox");
    assert.equal(anon.status, 404);
    assert.equal((await anon.json()).type, "/problems/not-found");
    const admin = await createUser(t.runtime, "admin");
    const token = (await login(t.app, admin.email)).body.accessToken;
    const res = await t.app.request("/v1/admin/outbox", { headers: bearer(token) });
    assert.equal(res.status, 404);
    await res.body?.cancel();
  } finally {
    await t.close();
  }
});

if ((await drivers()).includes("postgres")) {
  Deno.test("outbox [postgres]: the worker's connection killed mid-stream → it resumes, no notification lost", async () => {
    const smtp = await new TestSmtp().start();
    const w = await world("postgres", { smtp });
    const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
    try {
      const dbName = new URL(w.pg!.url).pathname.slice(1);
      const codes: string[] = [];
      for (let i = 0; i < 4; i++) codes.push((await w.requestAccess()).code);
      await waitFor("first deliveries", () => smtp.received.length >= 1);
      // the backend of the notifications worker: the one holding its projection's advisory lock
      // (a bigint key: objid holds its low 32 bits)
      const killed = await admin`select pg_terminate_backend(a.pid) as ok
        from pg_stat_activity a where a.datname = ${dbName} and exists (
          select 1 from pg_locks l where l.pid = a.pid and l.locktype = 'advisory'
            and l.granted and l.objsubid = 1 and l.objid::bigint =
              (hashtext('chartlog.projection:notifications')::bigint & 4294967295))`;
      assert.equal(killed.length, 1);
      assert.ok(killed[0]!.ok);
      for (let i = 0; i < 4; i++) codes.push((await w.requestAccess()).code);
      await waitFor("every notification delivered", async () => {
        const o = await w.outbox("?limit=100");
        return o.total === 24 && o.items.length === 24 &&
          o.items.every((i) => i.status === "delivered");
      });
      await waitFor(
        "the loss logged",
        () =>
          w.t.logs.lines.some((l) =>
            l.msg === "projection worker lost its database connection and its lock" &&
            l.projection === "notifications"
          ),
      );
      // every code reached the patient's mailbox (at least once), and each outcome is recorded once
      const mailed = smtp.received.map((m) => m.raw).join("\n");
      for (const code of codes) assert.ok(mailed.includes(code), "a code was lost");
      const dup = await w.t.runtime.db.query(sql`select data->>'notificationId' from events
        where type = 'NotificationDelivered' group by 1 having count(*) > 1`);
      assert.deepEqual(dup, []);
      assert.ok(!(await eventsText(w.t)).includes(codes[0]!));
    } finally {
      await admin.end();
      await w.close();
      await smtp.stop();
    }
  });
}

Deno.test("outbox: CHARTLOG_SMTP_URL and CHARTLOG_SMTP_FROM are validated, never echoed", () => {
  const none = loadConfig({});
  assert.equal(none.smtpUrl, null); // no e-mail channel
  assert.equal(none.smtpFrom, "Chartlog <no-reply@chartlog.invalid>");
  // empty is unset, as docker compose passes an unset `${VAR:-}`
  const empty = loadConfig({ CHARTLOG_SMTP_URL: "", CHARTLOG_SMTP_FROM: "" });
  assert.equal(empty.smtpUrl, null);
  assert.equal(empty.smtpFrom, "Chartlog <no-reply@chartlog.invalid>");
  for (const url of ["smtp://mail.example:587", "smtps://u:p%40ss@mail.example:465"]) {
    assert.equal(loadConfig({ CHARTLOG_SMTP_URL: url }).smtpUrl, url);
  }
  assert.equal(
    loadConfig({ CHARTLOG_SMTP_FROM: "Clinic <no-reply@clinic.example>" }).smtpFrom,
    "Clinic <no-reply@clinic.example>",
  );
  const bad: Record<string, string>[] = [
    { CHARTLOG_SMTP_URL: "http://user:s3cret-pass@mail.example" },
    { CHARTLOG_SMTP_URL: "smtp-s3cret-nonsense" },
    { CHARTLOG_SMTP_FROM: "not an address" },
    { CHARTLOG_SMTP_FROM: "Evil\r\nBcc: x@y.z <a@b.c>" },
  ];
  for (const env of bad) {
    assert.throws(() => loadConfig(env), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, new RegExp(Object.keys(env)[0]!));
      assert.ok(!e.message.includes(Object.values(env)[0]!), "the value is echoed");
      return true;
    });
  }
});

Deno.test("outbox: the access-code mail says who asks, the code and until when", () => {
  const text = accessCodeMail({
    practitioner: "Dr A",
    clinic: "North Clinic",
    code: "012345",
    expiresAt: new Date("2026-11-30T12:10:00.000Z"),
  });
  assert.match(text, /Dr A of North Clinic asks for access/);
  assert.match(text, /^ {4}012345$/m);
  assert.match(text, /until 2026-11-30 12:10 UTC/);
  assert.match(
    accessCodeMail({ practitioner: null, clinic: null, code: "1", expiresAt: new Date() }),
    /A practitioner asks/,
  );
});
