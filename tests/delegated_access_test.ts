import assert from "node:assert/strict";
import { registerUser } from "../src/auth/accounts.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { TestSmtp } from "./support/smtp.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

/**
 * Delegated access end to end, through every part at once over HTTP: the
 * clinic directory and memberships, family proxies, one-time codes, the
 * outbox (in-app and a real SMTP server), grants and their metadata.
 */
const PURPOSE = "Purpose-sentinel: second opinion on the knee MRI";

const waitFor = async (what: string, check: () => Promise<boolean>) => {
  for (let i = 0; i < 800; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
};

for (const driver of await drivers()) {
  Deno.test(`delegated access [${driver}]: request → code in-app and by mail → verify; clinic grant; proxy shares → redeem; revoke`, async () => {
    const smtp = await new TestSmtp().start();
    const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
    const t = await openTestApp({
      CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
      CHARTLOG_SMTP_URL: smtp.url,
      ...(pg ? { DATABASE_URL: pg.url } : {}),
    }, { workers: true, outbox: { pollMs: 10, retryMs: 50 } });
    try {
      const tokenOf = async (email: string) =>
        (await login(t.app, email)).body.accessToken as string;
      const call = async (token: string, method: string, path: string, body?: unknown) => {
        const res = await t.app.request(path, {
          method,
          headers: { ...bearer(token), ...(body ? { "content-type": "application/json" } : {}) },
          ...(body ? { body: JSON.stringify(body) } : {}),
        });
        const text = await res.text();
        return { status: res.status, body: text ? JSON.parse(text) : null };
      };
      const ok = async (token: string, method: string, path: string, body?: unknown) => {
        const r = await call(token, method, path, body);
        assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
        return r.body;
      };

      await createUser(t.runtime, "admin");
      const admin = await tokenOf("admin@clinic.test");
      const asker = await createUser(t.runtime, "practitioner", "asker@clinic.test");
      const colleague = await createUser(t.runtime, "practitioner", "colleague@clinic.test");
      const named = await createUser(t.runtime, "practitioner", "named@clinic.test");
      const askerT = await tokenOf("asker@clinic.test");
      const colleagueT = await tokenOf("colleague@clinic.test");
      const namedT = await tokenOf("named@clinic.test");
      const patient = await ok(admin, "POST", "/v1/patients", {
        mrn: "DEL-1",
        firstName: "Perpetua",
        lastName: "Annesley",
        dateOfBirth: "1961-06-01",
        gender: "F",
      });
      const pid = patient.id as string;
      await registerUser(
        t.runtime.store,
        {
          email: "perpetua@mail.test",
          name: "Perpetua Annesley",
          role: "patient",
          password: PASSWORD,
          patientId: pid,
        },
        { actorId: "test-setup" },
        t.runtime.passwordParams,
      );
      const patientT = await tokenOf("perpetua@mail.test");
      // a family member: a patient-role account without a record, made a full proxy by the patient
      const family = await ok(admin, "POST", "/v1/users", {
        email: "son@mail.test",
        name: "Son",
        role: "patient",
        password: PASSWORD,
      });
      const proxy = await ok(patientT, "POST", `/v1/patients/${pid}/proxies`, {
        userId: family.id,
        level: "full",
      });
      const familyT = await tokenOf("son@mail.test");

      // nobody of the three may read the record yet
      for (const tok of [askerT, colleagueT, namedT]) {
        assert.equal((await call(tok, "GET", `/v1/patients/${pid}`)).status, 403);
      }

      // 1. the practitioner asks; the code reaches the patient in-app and by mail
      const req = await ok(askerT, "POST", `/v1/patients/${pid}/access-requests`, {
        purpose: PURPOSE,
      });
      assert.equal(JSON.stringify(req).match(/\b\d{6}\b/), null, "no code in the answer");
      const codeFor = async (token: string, requestId: string) => {
        let code: string | null = null;
        await waitFor("the in-app notification", async () => {
          const n = await ok(token, "GET", "/v1/me/notifications");
          const item = n.items.find((i: { requestId?: string }) => i.requestId === requestId);
          code = item?.code ?? null;
          return code !== null;
        });
        return code! as string;
      };
      const code = await codeFor(patientT, req.id);
      assert.equal(await codeFor(familyT, req.id), code, "a full proxy sees it too");
      await waitFor("the mail", () => Promise.resolve(smtp.received.length === 1));
      assert.deepEqual(smtp.received[0]!.to, ["perpetua@mail.test"]);
      assert.ok(smtp.received[0]!.raw.includes(code));
      assert.ok(!smtp.received[0]!.raw.includes("Purpose-sentinel"));

      const verified = await ok(askerT, "POST", `/v1/access-requests/${req.id}/verify`, { code });
      const grantId = (verified.grant?.id ?? verified.id ?? verified.grantId) as string;
      assert.ok(grantId);
      await ok(askerT, "GET", `/v1/patients/${pid}`);
      // the code cannot be used twice
      assert.equal(
        (await call(askerT, "POST", `/v1/access-requests/${req.id}/verify`, { code })).status,
        409,
      );

      // 2. a clinic grant: every active member may use it, until they leave
      const clinic = await ok(admin, "POST", "/v1/clinics", {
        name: "Northside Orthopaedics",
        licenseNumber: "LIC-DEL-1",
      });
      for (const u of [asker, colleague]) {
        await ok(admin, "POST", `/v1/clinics/${clinic.id}/practitioners`, {
          userId: u.id,
          employmentType: "visiting",
        });
      }
      const req2 = await ok(askerT, "POST", `/v1/patients/${pid}/access-requests`, {
        purpose: PURPOSE,
        durationHours: 48,
        clinicId: clinic.id,
      });
      const code2 = await codeFor(patientT, req2.id);
      await ok(askerT, "POST", `/v1/access-requests/${req2.id}/verify`, { code: code2 });
      await ok(colleagueT, "GET", `/v1/patients/${pid}`);
      await ok(admin, "PATCH", `/v1/clinics/${clinic.id}/practitioners/${colleague.id}`, {
        active: false,
      });
      assert.equal((await call(colleagueT, "GET", `/v1/patients/${pid}`)).status, 403);

      // 3. the family member shares first; the named practitioner redeems
      const shared = await ok(familyT, "POST", "/v1/me/access-codes", {
        patientId: pid,
        practitionerId: named.id,
        purpose: PURPOSE,
        durationHours: 2,
      });
      assert.match(shared.code, /^\d{6}$/);
      // another practitioner cannot use it
      const wrong = await call(askerT, "POST", "/v1/access-codes/redeem", {
        patientId: pid,
        code: shared.code,
      });
      assert.ok(wrong.status >= 400 && wrong.status < 500, String(wrong.status));
      const redeemed = await ok(namedT, "POST", "/v1/access-codes/redeem", {
        patientId: pid,
        code: shared.code,
      });
      const sharedGrant = (redeemed.grant?.id ?? redeemed.id ?? redeemed.grantId) as string;
      await ok(namedT, "GET", `/v1/patients/${pid}`);

      // the patient's list shows the grants; the proxy revokes one, and it ends at once
      const grants = await ok(patientT, "GET", `/v1/patients/${pid}/grants`);
      assert.ok(grants.items.length >= 3);
      await ok(familyT, "DELETE", `/v1/grants/${sharedGrant}`);
      assert.equal((await call(namedT, "GET", `/v1/patients/${pid}`)).status, 403);

      // the reads through grants carry the grant's id
      const viewed = await t.runtime.db.query<{ actor: string; grant: string | null }>(
        sql`select metadata->>'actorId' as actor, metadata->>'grantId' as grant from events
          where type = 'PatientViewed' order by global_position`,
      );
      assert.ok(viewed.some((v) => v.actor === asker.id && v.grant === grantId));
      assert.ok(viewed.some((v) => v.actor === named.id && v.grant === sharedGrant));
      assert.ok(viewed.some((v) => v.actor === colleague.id && v.grant !== null));

      // what the family member did, they did as the patient's proxy: its id is the grant
      const byProxy = await t.runtime.db.query<{ type: string; grant: string | null }>(
        sql`select type, metadata->>'grantId' as grant from events
          where metadata->>'actorId' = ${family.id} and type in ('AccessCodeShared',
            'AccessGrantRevoked') order by global_position`,
      );
      assert.deepEqual(byProxy, [
        { type: "AccessCodeShared", grant: proxy.proxyId },
        { type: "AccessGrantRevoked", grant: proxy.proxyId },
      ]);

      // no code in plaintext at rest or in the logs
      const text = (await t.runtime.db.query<{ t: string }>(
        sql`select coalesce(string_agg(e::text, '|'), '') as t from events e`,
      ))[0]!.t;
      for (const c of [code, code2, shared.code]) {
        const alone = new RegExp(`(^|[^0-9])${c}([^0-9]|$)`);
        assert.ok(!alone.test(text), "a code in the events table");
        assert.ok(!alone.test(t.logs.text()), "a code in the logs");
      }
    } finally {
      await t.close();
      await pg?.drop();
      await smtp.stop();
    }
  });
}
