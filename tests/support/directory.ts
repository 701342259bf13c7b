import assert from "node:assert/strict";
import { ROLES } from "../../events/user.ts";
import { sql } from "../../src/store/sql.ts";
import { openTestApp } from "./app.ts";
import { createTestDatabase, drivers } from "./harness.ts";
import { bearer, createUser, login } from "./users.ts";

/** HTTP helpers of the directory tests (clinics, practitioner profiles, memberships). */
export type App = Awaited<ReturnType<typeof openTestApp>>;

/** The app on each available driver: PGlite in memory, and a fresh PostgreSQL database. */
export const eachApp = (name: string, fn: (t: App, api: Api) => Promise<void>) =>
  Deno.test(name, async (ctx) => {
    for (const kind of await drivers()) {
      await ctx.step(kind, async () => {
        const pg = kind === "postgres" ? await createTestDatabase({ app: true }) : null;
        const t = await openTestApp({
          CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
          ...(pg ? { DATABASE_URL: pg.url } : {}),
        });
        try {
          await fn(t, await apiFor(t));
        } finally {
          await t.close();
          await pg?.drop();
        }
      });
    }
  });

export type Api = Awaited<ReturnType<typeof apiFor>>;

/** One signed-in user per role (and a second practitioner), and a caller. */
export const apiFor = async (t: App) => {
  const ids: Record<string, string> = {};
  const tokens: Record<string, string> = {};
  for (const role of ROLES) {
    if (role === "patient") continue;
    ids[role] = (await createUser(t.runtime, role)).id;
    tokens[role] = (await login(t.app, `${role}@clinic.test`)).body.accessToken;
  }
  ids.practitioner2 = (await createUser(t.runtime, "practitioner", "p2@clinic.test")).id;
  tokens.practitioner2 = (await login(t.app, "p2@clinic.test")).body.accessToken;
  const call = (
    method: string,
    path: string,
    body?: unknown,
    as = "admin",
    headers: Record<string, string> = {},
  ) =>
    t.app.request(path, {
      method,
      headers: {
        ...(tokens[as] ? bearer(tokens[as]) : {}),
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
        ...headers,
      },
      ...(body !== undefined
        ? { body: typeof body === "string" ? body : JSON.stringify(body) }
        : {}),
    });
  return { ids, tokens, call };
};

/** A problem+json answer of this status and type; returns its body. */
export const problem = async (res: Response, status: number, type: string) => {
  const body = await res.json();
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal(body.type, type);
  return body as { errors?: { path: string; message: string }[]; detail?: string };
};

export const fieldPaths = (b: { errors?: { path: string }[] }) =>
  (b.errors ?? []).map((e) => e.path).sort();

export const countEvents = async (t: App, type?: string) =>
  (await t.runtime.db.query<{ n: number }>(
    type
      ? sql`select count(*)::int as n from events where type = ${type}`
      : sql`select count(*)::int as n from events`,
  ))[0]!.n;
