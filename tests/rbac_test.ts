import assert from "node:assert/strict";
import { ROLES } from "../events/user.ts";
import { ACTIONS, type Grant, RBAC } from "../src/auth/policy.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { bearer, createUser, login } from "./support/users.ts";

/** Routes anyone may call: no actor, so no policy decision. */
const PUBLIC = new Set([
  "GET /",
  "GET /health",
  "GET /ready",
  "GET /openapi.json",
  "GET /docs",
  "GET /docs/assets/:name",
  "GET /problems/:slug",
  "POST /v1/auth/login",
  "POST /v1/auth/refresh",
  "POST /v1/auth/signup",
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
    for (const role of ROLES) users.set(role, await createUser(t.runtime, role));
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
          const patient = {
            mrn: `MRN-${role}`,
            firstName: "Walk",
            lastName: "Matrix",
            dateOfBirth: "1980-01-01",
            gender: "U",
          };
          const body = method === "POST" && path === "/v1/users"
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
          const url = path.replace(":id", target.id).replace(":practitionerId", target.id);
          const res = await t.app.request(url, {
            method,
            headers: { ...bearer(tok), ...(body ? { "content-type": "application/json" } : {}) },
            ...(body ? { body: JSON.stringify(body) } : {}),
          });
          // the walk holds no relation to any patient: "related" is a refusal here
          const allowed = row.grants[role] === "yes";
          cells.push(`${role} ${route} ${res.status}`);
          if (allowed) {
            // past the policy; the handler may still refuse the (empty) input
            assert.ok(![401, 403].includes(res.status), `${role} ${route}: ${res.status}`);
          } else {
            assert.equal(res.status, 403, `${role} ${route}`);
            assert.equal((await res.json()).type, "/problems/forbidden");
            denied++;
          }
          if (!res.bodyUsed) await res.body?.cancel();
        }
      }
    }
    // 4. each refusal is an AccessDenied event naming actor and action, nothing more
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
