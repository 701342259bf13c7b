import assert from "node:assert/strict";
import { type Role, ROLES } from "../events/user.ts";
import {
  type Action,
  ACTIONS,
  type Grant,
  RBAC,
  type Relation,
  relationsFor,
} from "../src/auth/policy.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { registerUser } from "../src/auth/accounts.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

/** Routes anyone may call: no actor, so no policy decision. */
const PUBLIC = new Set([
  "GET /",
  "GET /health",
  "GET /ready",
  // token-protected (CHARTLOG_METRICS_TOKEN), like /health not a policy action
  "GET /metrics",
  "GET /openapi.json",
  "GET /docs",
  "GET /docs/assets/:name",
  "GET /problems/:slug",
  "POST /v1/auth/login",
  "POST /v1/auth/refresh",
  "POST /v1/auth/signup",
  // the checkpoint signing keys are public: verifiers outside need them
  "GET /v1/audit/public-key",
]);

/** The README's RBAC table: action → routes and the roles allowed. */
const readMatrix = async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const block = readme.split("<!-- rbac:start -->")[1]!.split("<!-- rbac:end -->")[0]!;
  const rows = block.trim().split("\n").filter((l) => l.startsWith("|")).map((l) =>
    l.split("|").slice(1, -1).map((c) => c.trim())
  );
  const [header, , ...body] = rows;
  const roles = header!.slice(2);
  assert.deepEqual(roles, [...ROLES], "README columns are the roles, in order");
  const GRANTS: Record<string, Grant> = { "✓": "yes", "—": "no", "rel": "related" };
  return body.map((cells) => ({
    action: cells[0]!.replaceAll("`", ""),
    routes: [...cells[1]!.matchAll(/`([A-Z]+) ([^`]+)`/g)].map((m) => `${m[1]} ${m[2]}`),
    grants: Object.fromEntries(roles.map((r, i) => {
      const g = GRANTS[cells[i + 2]!];
      assert.ok(g, `README cell ${cells[0]} × ${r}: ${cells[i + 2]}`);
      return [r, g];
    })) as Record<string, Grant>,
  }));
};

Deno.test("rbac: the README matrix is the policy, and it walks every route", async () => {
  const matrix = await readMatrix();
  // 1. the table and the code say the same
  assert.deepEqual(
    Object.fromEntries(matrix.map((r) => [r.action, r.grants])),
    Object.fromEntries(ACTIONS.map((a) => [a, { ...RBAC[a] }])),
  );

  // every test request comes from one address: lift the login rate limit
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000" });
  try {
    // 2. every mounted route is public or in the table, and every table route is mounted
    const mounted = t.app.routes.filter((r) => r.method !== "ALL").map((r) =>
      `${r.method} ${r.path}`
    );
    const inTable = new Set(matrix.flatMap((r) => r.routes.map((x) => x.split("?")[0]!)));
    const unaccounted = mounted.filter((r) => !PUBLIC.has(r) && !inTable.has(r));
    assert.deepEqual(unaccounted, [], "routes missing from the README RBAC table");
    assert.deepEqual([...inTable].filter((r) => !mounted.includes(r)), []);

    // 3. every role against every route
    const target = await createUser(t.runtime, "reception", "target@clinic.test");
    const users = new Map<string, { id: string; email: string }>();
    for (const role of ROLES) {
      if (role !== "patient") users.set(role, await createUser(t.runtime, role));
    }
    // two patients, each with an encounter and a document: `related` is the
    // record the "rel" roles stand in a relation to, `other` one they do not
    const admin = (await login(t.app, users.get("admin")!.email)).body.accessToken;
    const call = async (token: string, method: string, path: string, body?: unknown) => {
      const res = await t.app.request(path, {
        method,
        headers: {
          ...bearer(token),
          ...(body && !(body instanceof FormData) ? { "content-type": "application/json" } : {}),
        },
        ...(body instanceof FormData ? { body } : body ? { body: JSON.stringify(body) } : {}),
      });
      assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
      return await res.json();
    };
    const careTeamMember = users.get("practitioner")!;
    // practitioners outside the walk open break-glass, one on each record: the grant the
    // patient may list and revoke, and a relation (active grant) of its own
    const emergency = await createUser(t.runtime, "practitioner", "emergency@clinic.test");
    const elsewhere = await createUser(t.runtime, "practitioner", "elsewhere@clinic.test");
    const tokenOf = async (u: { email: string }) => (await login(t.app, u.email)).body.accessToken;
    const encounterPractitioner = await createUser(t.runtime, "practitioner", "enc@clinic.test");
    const otherPractitioner = await createUser(t.runtime, "practitioner", "other@clinic.test");
    const record = async (
      mrn: string,
      practitioner: { id: string; email: string },
      breaksGlass: { email: string },
    ) => {
      const practitionerId = practitioner.id;
      const p = await call(admin, "POST", "/v1/patients", {
        mrn,
        firstName: "Rel",
        lastName: "Walk",
        dateOfBirth: "1975-05-05",
        gender: "F",
      });
      // planned: a practitioner named on it is related to the patient
      const e = await call(admin, "POST", `/v1/patients/${p.id}/encounters`, {
        practitionerId,
        startsAt: "2099-01-01T09:00:00Z",
        reason: "walk",
      });
      const doc = new FormData();
      doc.set("category", "patient_records");
      doc.set("file", new Blob(["a note\n"]), "note.txt");
      const m = await call(admin, "POST", `/v1/patients/${p.id}/documents`, doc);
      const g = await call(await tokenOf(breaksGlass), "POST", `/v1/patients/${p.id}/break-glass`, {
        reason: "unconscious in the emergency room",
      });
      // a chart entry of each kind, by the encounter's practitioner (related through it)
      const author = await tokenOf(practitioner);
      const chart = {
        allergies: (await call(author, "POST", `/v1/patients/${p.id}/chart/allergies`, {
          allergen: "peanut",
          type: "food",
          severity: "mild",
        })).id as string,
        prescriptions: (await call(author, "POST", `/v1/patients/${p.id}/chart/prescriptions`, {
          medication: "walk",
          dosage: "1 tablet",
          frequency: "daily",
          route: "oral",
          startDate: "2026-01-01",
        })).id as string,
        vaccinations: (await call(author, "POST", `/v1/patients/${p.id}/chart/vaccinations`, {
          vaccineName: "walk",
          vaccineType: "inactivated",
          administeredAt: "2026-01-01T09:00:00Z",
        })).id as string,
        visits: (await call(author, "POST", `/v1/patients/${p.id}/chart/visits`, {
          visitDate: "2026-01-01",
          visitType: "routine_checkup",
        })).id as string,
        // ordered: its acknowledgement is a 409 to every practitioner the policy lets through
        "lab-tests": (await call(author, "POST", `/v1/patients/${p.id}/chart/lab-tests`, {
          testName: "walk",
        })).id as string,
      };
      return {
        patients: p.id as string,
        encounters: e.id as string,
        media: m.id as string,
        grants: g.grantId as string,
        chart,
      };
    };
    // the related record's entries are recorded at a clinic (the author's only one) that a
    // clinic owner owns: relation "clinic_owner"; the owner of the walk owns no clinic
    const clinic = await call(admin, "POST", "/v1/clinics", {
      name: "Walk clinic",
      licenseNumber: "WALK-1",
    });
    await call(admin, "POST", `/v1/clinics/${clinic.id}/practitioners`, {
      userId: encounterPractitioner.id,
      employmentType: "full_time",
    });
    const owner = await createUser(t.runtime, "clinic_owner", "owner@clinic.test");
    await call(admin, "POST", `/v1/clinics/${clinic.id}/owners`, { userId: owner.id });
    const related = await record("REL-1", encounterPractitioner, emergency);
    const other = await record("REL-2", otherPractitioner, elsewhere);
    await call(admin, "POST", `/v1/patients/${related.patients}/care-team`, {
      practitionerId: careTeamMember.id,
    });
    // the patient role's user is the related record's own (relation "self")
    users.set(
      "patient",
      await registerUser(
        t.runtime.store,
        {
          email: "patient@clinic.test",
          name: "Test patient",
          role: "patient",
          password: PASSWORD,
          patientId: related.patients,
        },
        { actorId: "test-setup" },
        t.runtime.passwordParams,
      ),
    );
    // family members (patient users without a record) made proxies of the related
    // record (before the walk: it logs the admin out)
    const family = async (email: string, level: "full" | "read_only") => {
      const u = await registerUser(
        t.runtime.store,
        {
          email,
          name: "Family",
          role: "patient",
          password: PASSWORD,
        },
        { actorId: "test-setup" },
        t.runtime.passwordParams,
      );
      await call(admin, "POST", `/v1/patients/${related.patients}/proxies`, {
        userId: u.id,
        level,
      });
      return u;
    };
    const fullProxy = await family("full.proxy@home.test", "full");
    const readOnlyProxy = await family("read.only@home.test", "read_only");

    /**
     * The path with its ids: a "rel" cell's from `fixture` (by resource), any other's `target`.
     * `self`: the caller's id, for a resource of their own (a practitioner's profile).
     */
    const urlOf = (path: string, fixture?: typeof related, self?: string) =>
      path.replace(
        /\/chart\/(allergies|prescriptions|vaccinations|visits|lab-tests)\/:entryId/,
        (_m, kind: keyof typeof related.chart) =>
          `/chart/${kind}/${fixture ? fixture.chart[kind] : target.id}`,
      ).replace(
        /^\/v1\/(patients|encounters|media|grants)\/:id/,
        (m, kind: "patients" | "encounters" | "media" | "grants") =>
          fixture ? `/v1/${kind}/${fixture[kind]}` : m,
      ).replace(/^\/v1\/practitioners\/:id/, (m) => self ? `/v1/practitioners/${self}` : m)
        .replace(":id", target.id).replace(":practitionerId", target.id)
        .replace(":userId", target.id);
    const bodyOf = (role: string, method: string, path: string, fixture?: typeof related) => {
      const patient = {
        mrn: `MRN-${role}`,
        firstName: "Walk",
        lastName: "Matrix",
        dateOfBirth: "1980-01-01",
        gender: "U",
      };
      // the patient is in the body: the record the walk means, or one of no relation
      if (method === "POST" && path === "/v1/me/access-codes") {
        return {
          patientId: (fixture ?? other).patients,
          practitionerId: careTeamMember.id,
          purpose: "walk",
        };
      }
      return method === "POST" && path === "/v1/users"
        ? {
          email: `made-by-${role}@clinic.test`,
          name: "Made",
          role: "analyst",
          password: "a long enough password",
        }
        : method === "POST" && path === "/v1/patients"
        ? patient
        : method === "PUT"
        ? patient
        : method === "POST" && path.endsWith("/care-team")
        ? { practitionerId: target.id }
        : method === "PATCH"
        ? {}
        : undefined;
    };
    const request = (token: string, method: string, url: string, body: unknown) =>
      t.app.request(url, {
        method,
        headers: { ...bearer(token), ...(body ? { "content-type": "application/json" } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    /** Past the policy: the handler may still refuse the (empty) input, but never fail. */
    const assertAllowed = (status: number, cell: string) => {
      assert.ok(![401, 403].includes(status), `${cell}: ${status}`);
      assert.ok(status < 500, `${cell}: ${status}`);
    };
    let denied = 0;
    const cells: string[] = [];
    for (const role of ROLES) {
      const email = users.get(role)!.email;
      const token = (await login(t.app, email)).body.accessToken;
      // logging out ends sessions (logout-all: every one): walk those last
      const walk = [...matrix].sort((a, b) =>
        Number(a.action === "session.logout") - Number(b.action === "session.logout")
      );
      for (const row of walk) {
        for (const route of row.routes) {
          // logging out ends the session: do it on a session of its own
          const tok = row.action === "session.logout"
            ? (await login(t.app, email)).body.accessToken
            : token;
          const [method, path] = route.split(" ") as [string, string];
          // without a relation, a "rel" cell is refused on a real record of another patient
          const rel = row.grants[role] === "related";
          const url = urlOf(path, rel ? other : undefined);
          const res = await request(
            tok,
            method,
            url,
            bodyOf(role, method, path, rel ? other : undefined),
          );
          cells.push(`${role} ${route} ${res.status}`);
          if (row.grants[role] === "yes") {
            assertAllowed(res.status, `${role} ${route}`);
          } else {
            assert.equal(res.status, 403, `${role} ${route}${rel ? " (unrelated)" : ""}`);
            assert.equal((await res.json()).type, "/problems/forbidden");
            denied++;
          }
          if (!res.bodyUsed) await res.body?.cancel();
        }
      }
    }
    // 4. with a relation, a "rel" cell is allowed where the action counts it
    // (relationsFor), else refused: the patient to their own record, one
    // practitioner through the care team only, another only as the
    // practitioner of an encounter, a third only through a grant
    // (break-glass), a full and a read-only proxy (whose
    // writes are 403). The writes carry empty bodies (a delete without its
    // reason is a 422), so the records stay as they are.
    const withRelation: [Role, { id: string; email: string }, Relation[]][] = [
      // first: the patient revokes this grant in their walk
      ["practitioner", emergency, ["active_grant", "self"]],
      ["patient", users.get("patient")!, ["self"]],
      // "self" of a practitioner: their own profile (urlOf puts their id in its path)
      ["practitioner", careTeamMember, ["care_team", "self"]],
      ["practitioner", encounterPractitioner, ["encounter_practitioner", "self"]],
      ["patient", fullProxy, ["proxy", "full_proxy"]],
      ["patient", readOnlyProxy, ["proxy"]],
      // reads the entries recorded at the clinic it owns (all of the related record's)
      ["clinic_owner", owner, ["clinic_owner"]],
    ];
    let relAllowed = 0;
    let relDenied = 0;
    for (const [role, user, held] of withRelation) {
      const token = (await login(t.app, user.email)).body.accessToken;
      for (const row of matrix) {
        if (row.grants[role] !== "related") continue;
        const counts = relationsFor(row.action as Action, role).some((r) => held.includes(r));
        for (const route of row.routes) {
          const [method, path] = route.split(" ") as [string, string];
          const res = await request(
            token,
            method,
            urlOf(path, related, user.id),
            bodyOf(role, method, path, related),
          );
          const cell = `${role} ${user.email} ${route} (related: ${held.join(", ")})`;
          cells.push(`${cell} ${res.status}`);
          if (!counts) {
            assert.equal(res.status, 403, cell);
            assert.equal((await res.json()).type, "/problems/forbidden");
            denied++;
            relDenied++;
            continue;
          }
          assertAllowed(res.status, cell);
          if (method === "GET" && !path.endsWith("/thumbnail")) {
            assert.equal(res.status, 200, cell);
          }
          if (!res.bodyUsed) await res.body?.cancel();
          relAllowed++;
        }
      }
      if (role === "practitioner") {
        // the list holds what the reads above allow: the related record, not the other
        const list = await call(token, "GET", "/v1/patients?limit=100");
        assert.deepEqual(list.items.map((p: { id: string }) => p.id), [related.patients]);
      }
    }
    assert.ok(relAllowed > 0);
    // the read-only proxy's writes and the full proxy's proxy management, at least
    assert.ok(relDenied >= 3, `${relDenied} related cells refused`);

    // 5. each refusal is an AccessDenied event naming actor and action, nothing more
    const events = await t.runtime.db.query<{ data: Record<string, unknown>; ip: string | null }>(
      sql`select data, metadata->>'ip' as ip from events where type = 'AccessDenied'`,
    );
    assert.equal(events.length, denied);
    assert.ok(denied > 0);
    assert.deepEqual(Object.keys(events[0]!.data).sort(), ["action", "actorId", "resourceId"]);
    console.log(`rbac: ${cells.length} role × route cells, ${denied} denied`);
  } finally {
    await t.close();
  }
});
