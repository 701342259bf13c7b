import assert from "node:assert/strict";
import { registerUser } from "../src/auth/accounts.ts";
import { decide, fold } from "../src/domain/clinic.ts";
import { NotFoundError, ValidationError } from "../src/errors.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, drivers } from "./support/harness.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const C = "0b7c5a9e-2f1d-4c3b-8a6e-5d4c3b2a1f0e";
const U = "1c8d6b0f-3a2e-4d4c-9b7f-6e5d4c3b2a1f";
const registered = {
  type: "ClinicRegistered",
  data: {
    clinicId: C,
    name: "Owned",
    licenseNumber: "OWN-0",
    address: null,
    phone: null,
    email: null,
    operatingHours: {},
    services: [],
  },
};

Deno.test("clinic decider: owners are added once, removed only when there", () => {
  const add = { type: "AddOwner" as const, userId: U, standing: "eligible" as const };
  assert.throws(() => decide(add, fold([])), NotFoundError);
  assert.throws(() => decide({ ...add, standing: "ineligible" }, fold([registered])), (e) => {
    assert.ok(e instanceof ValidationError);
    assert.deepEqual(e.issues.map((i) => i.path), ["userId"]);
    return true;
  });
  const [added] = decide(add, fold([registered]));
  assert.deepEqual(added, { type: "ClinicOwnerAdded", data: { clinicId: C, userId: U } });
  const owned = fold([registered, added!]);
  assert.deepEqual(decide(add, owned), [], "idempotent: no second event");
  const remove = { type: "RemoveOwner" as const, userId: U };
  assert.throws(() => decide(remove, fold([registered])), NotFoundError);
  const [removed] = decide(remove, owned);
  assert.equal(removed!.type, "ClinicOwnerRemoved");
  assert.throws(() => decide(remove, fold([registered, added!, removed!])), NotFoundError);
});

const NOW = new Date("2026-06-15T12:00:00Z");

for (const driver of await drivers()) {
  Deno.test(`clinic owners [${driver}]: read their clinics' entries, nothing else`, async () => {
    const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
    const t = await openTestApp({
      CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
      ...(pg ? { DATABASE_URL: pg.url } : {}),
    }, { now: () => NOW });
    try {
      const tokens: Record<string, string> = {};
      const ids: Record<string, string> = {};
      const make = async (name: string, role: Parameters<typeof createUser>[1]) => {
        const u = await createUser(t.runtime, role, `${name}@clinic.test`);
        ids[name] = u.id;
        tokens[name] = (await login(t.app, u.email)).body.accessToken;
      };
      await make("admin", "admin");
      await make("ops", "clinical_ops");
      // pracA works at clinic A, pracB at B, pracN at none (its entries name no clinic)
      for (const p of ["pracA", "pracB", "pracN"]) await make(p, "practitioner");
      const call = (who: string, method: string, path: string, body?: unknown) =>
        t.app.request(path, {
          method,
          headers: {
            ...bearer(tokens[who]!),
            ...(body !== undefined ? { "content-type": "application/json" } : {}),
          },
          ...(body !== undefined
            ? { body: typeof body === "string" ? body : JSON.stringify(body) }
            : {}),
        });
      const expect = async (
        status: number,
        who: string,
        method: string,
        path: string,
        body?: unknown,
      ) => {
        const r = await call(who, method, path, body);
        const text = await r.text();
        assert.equal(r.status, status, `${who} ${method} ${path}: ${text}`);
        return text ? JSON.parse(text) : null;
      };

      // the role: an admin creates clinic_owner users through the API
      const created = await expect(201, "admin", "POST", "/v1/users", {
        email: "owner1@clinic.test",
        name: "Owner one",
        role: "clinic_owner",
        password: PASSWORD,
      });
      assert.equal(created.role, "clinic_owner");
      ids.owner1 = created.id;
      tokens.owner1 = (await login(t.app, "owner1@clinic.test")).body.accessToken;
      await make("owner2", "clinic_owner");

      const clinic = async (name: string, license: string, member: string) => {
        const c = await expect(201, "admin", "POST", "/v1/clinics", {
          name,
          licenseNumber: license,
        });
        await expect(201, "admin", "POST", `/v1/clinics/${c.id}/practitioners`, {
          userId: ids[member],
          employmentType: "full_time",
        });
        return c.id as string;
      };
      const A = await clinic("Clinic A", "LIC-A", "pracA");
      const B = await clinic("Clinic B", "LIC-B", "pracB");

      // POST owners: idempotent (201, then 200 and no event), admin only
      const added = await expect(201, "admin", "POST", `/v1/clinics/${A}/owners`, {
        userId: ids.owner1,
      });
      assert.deepEqual(
        { clinicId: added.clinicId, userId: added.userId, addedBy: added.addedBy },
        { clinicId: A, userId: ids.owner1, addedBy: ids.admin },
      );
      await expect(200, "admin", "POST", `/v1/clinics/${A}/owners`, { userId: ids.owner1 });
      await expect(403, "ops", "POST", `/v1/clinics/${B}/owners`, { userId: ids.owner2 });
      await expect(403, "owner1", "GET", `/v1/clinics/${A}/owners`);
      // 20 at once for one user: one event, every answer the same owner
      const burst = await Promise.all(
        Array.from(
          { length: 20 },
          () => call("admin", "POST", `/v1/clinics/${B}/owners`, { userId: ids.owner2 }),
        ),
      );
      const statuses = burst.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, ...Array(18).fill(200), 201].sort(), String(statuses));
      for (const r of burst) assert.equal((await r.json()).userId, ids.owner2);
      const [ev] = await t.runtime.db.query<{ n: number }>(sql`select count(*)::int
        as n from events where type = 'ClinicOwnerAdded' and stream_id = ${`clinic-${B}`}`);
      assert.equal(ev!.n, 1);
      const list = await expect(200, "admin", "GET", `/v1/clinics/${B}/owners`);
      assert.deepEqual(list.items.map((o: { userId: string }) => o.userId), [ids.owner2]);
      assert.equal(list.total, 1);

      // bad input: 422 naming the field, 404 for unknown ids, never a 500, no event
      const before = (await t.runtime.db.query<{ n: number }>(
        sql`select count(*)::int as n from events where type like 'ClinicOwner%'`,
      ))[0]!.n;
      const named = async (body: unknown, path = `/v1/clinics/${A}/owners`) => {
        const p = await expect(422, "admin", "POST", path, body);
        assert.equal(p.type, "/problems/validation");
        return p.errors.map((e: { path: string }) => e.path);
      };
      assert.deepEqual(await named({ userId: ids.pracA }), ["userId"]); // not a clinic_owner
      assert.deepEqual(await named({ userId: crypto.randomUUID() }), ["userId"]); // no such user
      assert.deepEqual(await named({ userId: ids.admin }), ["userId"]);
      assert.deepEqual(await named({ userId: 42 }), ["userId"]);
      assert.deepEqual(await named({ userId: "not-a-uuid" }), ["userId"]);
      assert.deepEqual(await named({ userId: `${ids.owner1}\u0000` }), ["userId"]);
      assert.deepEqual(await named({}), ["userId"]);
      assert.deepEqual(await named({ userId: ids.owner1, extra: true }), ["extra"]);
      for (const raw of ["{", "null", `"${ids.owner1}"`, `["${ids.owner1}"]`]) {
        const r = await call("admin", "POST", `/v1/clinics/${A}/owners`, raw);
        assert.ok([400, 422].includes(r.status), `${raw}: ${r.status}`);
        await r.body?.cancel();
      }
      await expect(404, "admin", "POST", `/v1/clinics/${crypto.randomUUID()}/owners`, {
        userId: ids.owner1,
      });
      for (const path of ["/v1/clinics/nope/owners", `/v1/clinics/${A}%00/owners`]) {
        const r = await call("admin", "POST", path, { userId: ids.owner1 });
        assert.ok([404, 422].includes(r.status), `${path}: ${r.status}`);
        await r.body?.cancel();
      }
      await expect(404, "admin", "GET", `/v1/clinics/${crypto.randomUUID()}/owners`);
      await expect(404, "admin", "DELETE", `/v1/clinics/${A}/owners/${ids.owner2}`);
      await expect(404, "admin", "DELETE", `/v1/clinics/${crypto.randomUUID()}/owners/${U}`);
      for (const path of [`/v1/clinics/${A}/owners/x`, `/v1/clinics/x/owners/${ids.owner1}`]) {
        const r = await call("admin", "DELETE", path);
        assert.ok([404, 422].includes(r.status), `${path}: ${r.status}`);
        await r.body?.cancel();
      }
      const after = (await t.runtime.db.query<{ n: number }>(
        sql`select count(*)::int as n from events where type like 'ClinicOwner%'`,
      ))[0]!.n;
      assert.equal(after, before, "a refused command appends nothing");

      // two patients; every practitioner on both care teams
      const patient = async (mrn: string) => {
        const p = await expect(201, "admin", "POST", "/v1/patients", {
          mrn,
          firstName: "Owned",
          lastName: "Chart",
          dateOfBirth: "1970-01-01",
          gender: "F",
        });
        for (const p2 of ["pracA", "pracB", "pracN"]) {
          await expect(201, "admin", "POST", `/v1/patients/${p.id}/care-team`, {
            practitionerId: ids[p2],
          });
        }
        return p.id as string;
      };
      const P1 = await patient("OWN-1");
      const P2 = await patient("OWN-2");
      const allergy = async (who: string, pid: string, allergen: string, extra = {}) =>
        (await expect(201, who, "POST", `/v1/patients/${pid}/chart/allergies`, {
          allergen,
          type: "food",
          severity: "mild",
          ...extra,
        })).id as string;
      const enc = await expect(201, "admin", "POST", `/v1/patients/${P1}/encounters`, {
        practitionerId: ids.pracA,
        startsAt: "2026-06-15T09:00:00Z",
        reason: "visit",
      });
      const a1 = await allergy("pracA", P1, "peanut");
      const aEnc = await allergy("pracA", P1, "latex", { encounterId: enc.id });
      const aGone = await allergy("pracA", P1, "wrong patient");
      await expect(
        200,
        "pracA",
        "POST",
        `/v1/patients/${P1}/chart/allergies/${aGone}/entered-in-error`,
        {
          reason: "wrong patient",
        },
      );
      const b1 = await allergy("pracB", P1, "shellfish");
      const bEnc = await allergy("pracB", P1, "dust", { encounterId: enc.id });
      const n1 = await allergy("pracN", P1, "pollen");
      const b2 = await allergy("pracB", P2, "penicillin");
      const rx = (await expect(201, "pracA", "POST", `/v1/patients/${P1}/chart/prescriptions`, {
        medication: "owned",
        dosage: "1 tablet",
        frequency: "daily",
        route: "oral",
        startDate: "2026-06-01",
      })).id as string;
      assert.equal(
        (await expect(200, "pracA", "GET", `/v1/patients/${P1}/chart/allergies/${a1}`)).clinicId,
        A,
      );

      const ids_ = (page: { items: { id: string }[] }) => page.items.map((e) => e.id).sort();
      const accessCount = async (who: string) =>
        (await t.runtime.db.query<{ n: number }>(sql`select count(*)::int as n from events
          where stream_id = ${`access-${ids[who]}`}`))[0]!.n;
      /** A read the owner may do: 200 and exactly one access event. */
      const read = async (who: string, path: string) => {
        const n = await accessCount(who);
        const body = await expect(200, who, "GET", path);
        assert.equal(await accessCount(who), n + 1, `one access event: ${path}`);
        return body;
      };
      const base1 = `/v1/patients/${P1}/chart`;

      // owner 1 (clinic A): only A's entries of P1, the entered-in-error one only when asked
      const l1 = await read("owner1", `${base1}/allergies`);
      assert.deepEqual(ids_(l1), [a1, aEnc].sort());
      assert.equal(l1.total, 2);
      assert.ok(l1.items.every((e: { clinicId: string }) => e.clinicId === A));
      assert.deepEqual(
        ids_(await read("owner1", `${base1}/allergies?includeEnteredInError=true`)),
        [a1, aEnc, aGone].sort(),
      );
      // paging keeps to the scope
      const p1 = await read("owner1", `${base1}/allergies?limit=1`);
      const p2 = await read("owner1", `${base1}/allergies?limit=1&cursor=${p1.nextCursor}`);
      assert.deepEqual([...ids_(p1), ...ids_(p2)].sort(), [a1, aEnc].sort());
      assert.equal(p2.nextCursor, null);
      assert.deepEqual(ids_(await read("owner1", `${base1}/prescriptions`)), [rx]);
      assert.deepEqual(ids_(await read("owner1", `${base1}/vaccinations`)), []);
      const one = await read("owner1", `${base1}/allergies/${a1}`);
      assert.equal(one.allergen, "peanut");
      assert.equal((await read("owner1", `${base1}/allergies/${a1}/history`)).items.length, 1);
      assert.deepEqual(
        ids_(await read("owner1", `/v1/encounters/${enc.id}/chart/allergies`)),
        [aEnc],
      );
      // another clinic's, or no clinic's, entry: 404 as if there were none (and no read event)
      for (const e of [b1, bEnc, n1]) {
        const n = await accessCount("owner1");
        await expect(404, "owner1", "GET", `${base1}/allergies/${e}`);
        await expect(404, "owner1", "GET", `${base1}/allergies/${e}/history`);
        assert.equal(await accessCount("owner1"), n);
      }
      // the entry exists, but not as a prescription of P1: 404 as for anyone
      await expect(404, "owner1", "GET", `${base1}/prescriptions/${a1}`);
      // a patient with no entry at their clinics: 403, as for an unknown patient
      for (const pid of [P2, crypto.randomUUID()]) {
        await expect(403, "owner1", "GET", `/v1/patients/${pid}/chart/allergies`);
        await expect(403, "owner1", "GET", `/v1/patients/${pid}/chart/allergies/${b2}`);
      }

      // owner 2 (clinic B): B's entries, of both patients
      assert.deepEqual(ids_(await read("owner2", `${base1}/allergies`)), [b1, bEnc].sort());
      assert.deepEqual(ids_(await read("owner2", `/v1/patients/${P2}/chart/allergies`)), [b2]);
      assert.deepEqual(ids_(await read("owner2", `/v1/encounters/${enc.id}/chart/allergies`)), [
        bEnc,
      ]);
      await expect(404, "owner2", "GET", `${base1}/allergies/${a1}`);

      // nothing else of the patient, and never a write
      const denied = async (method: string, path: string, body?: unknown) => {
        const p = await expect(403, "owner1", method, path, body);
        assert.equal(p.type, "/problems/forbidden");
      };
      await denied("GET", `/v1/patients/${P1}`);
      await denied("GET", "/v1/patients");
      await denied("GET", `/v1/patients/${P1}/care-team`);
      await denied("GET", `/v1/patients/${P1}/encounters`);
      await denied("GET", `/v1/encounters/${enc.id}`);
      await denied("GET", `/v1/patients/${P1}/media`);
      await denied("GET", `/v1/encounters/${enc.id}/media`);
      await denied("GET", `/v1/patients/${P1}/proxies`);
      await denied("GET", `/v1/patients/${P1}/grants`);
      await denied("GET", `/v1/patients/${P1}/history`);
      await denied("POST", `${base1}/allergies`, {
        allergen: "x",
        type: "food",
        severity: "mild",
        clinicId: A,
      });
      await denied("POST", `${base1}/allergies/${a1}/amendments`, {
        reason: "owner edit",
        changes: { severity: "severe" },
      });
      await denied("POST", `${base1}/allergies/${a1}/entered-in-error`, { reason: "owner" });
      await denied("POST", `/v1/patients/${P1}/break-glass`, { reason: "curious" });
      assert.equal(
        (await expect(200, "pracA", "GET", `${base1}/allergies/${a1}`)).severity,
        "mild",
        "the refused amendment changed nothing",
      );

      // removal ends access at once; removing again is a 404
      await expect(204, "admin", "DELETE", `/v1/clinics/${A}/owners/${ids.owner1}`);
      await expect(403, "owner1", "GET", `${base1}/allergies`);
      await expect(403, "owner1", "GET", `${base1}/allergies/${a1}`);
      await expect(403, "owner1", "GET", `/v1/encounters/${enc.id}/chart/allergies`);
      await expect(404, "admin", "DELETE", `/v1/clinics/${A}/owners/${ids.owner1}`);
      assert.deepEqual((await expect(200, "admin", "GET", `/v1/clinics/${A}/owners`)).items, []);
      // an owner of B too: B's entries only, A's stay a 404
      await expect(201, "admin", "POST", `/v1/clinics/${B}/owners`, { userId: ids.owner1 });
      assert.deepEqual(ids_(await read("owner1", `${base1}/allergies`)), [b1, bEnc].sort());
      await expect(404, "owner1", "GET", `${base1}/allergies/${a1}`);

      // the owner events name ids only, and the actor
      const rows = await t.runtime.db.query<{ type: string; data: object; actor: string }>(sql`
        select type, data, metadata->>'actorId' as actor from events
        where type like 'ClinicOwner%' order by global_position`);
      assert.deepEqual(rows.map((r) => r.type), [
        "ClinicOwnerAdded",
        "ClinicOwnerAdded",
        "ClinicOwnerRemoved",
        "ClinicOwnerAdded",
      ]);
      assert.ok(rows.every((r) => r.actor === ids.admin));
      assert.deepEqual(Object.keys(rows[0]!.data).sort(), ["clinicId", "userId"]);

      // a deactivated owner account can no longer be made an owner
      const gone = await registerUser(
        t.runtime.store,
        {
          email: "gone@clinic.test",
          name: "Gone",
          role: "clinic_owner",
          password: PASSWORD,
        },
        { actorId: "test-setup" },
        t.runtime.passwordParams,
      );
      await expect(200, "admin", "PATCH", `/v1/users/${gone.id}`, { active: false });
      assert.deepEqual(await named({ userId: gone.id }), ["userId"]);
    } finally {
      await t.close();
      await pg?.drop();
    }
  });
}
