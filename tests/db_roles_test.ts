import assert from "node:assert/strict";
import { projections as appProjections } from "../projections/index.ts";
import { pgCode } from "../src/store/db.ts";
import { migrate } from "../src/store/migrations.ts";
import { openPostgres } from "../src/store/postgres_driver.ts";
import {
  buildProjection,
  projectionStatus,
  rebuildProjection,
} from "../src/store/projection_engine.ts";
import {
  APP_GRANTS,
  APP_ROLE,
  assertNoAppRoutines,
  OWNER_ROLE,
  prepareRoles,
} from "../src/store/roles.ts";
import { shredSubject } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, postgresAvailable } from "./support/harness.ts";
import { bearer, createUser, login } from "./support/users.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { startServer, waitForStatus } from "./support/server.ts";

/**
 * The runtime role (src/store/roles.ts) on real PostgreSQL: migrated as a
 * superuser, the log belongs to chartlog_owner and chartlog_app cannot
 * rewrite it, while the server runs normally as chartlog_app. PGlite has
 * one user: nothing to test there. Trust auth on 127.0.0.1 lets the test
 * connect as chartlog_app without its password.
 */
const pg = await postgresAvailable();

/** The same database, connected as another role. */
const asRole = (url: string, role: string) => {
  const u = new URL(url);
  u.username = role;
  u.password = "";
  return u.toString();
};

const refused = async (what: string, run: () => Promise<unknown>, message?: RegExp) => {
  let err: unknown = null;
  try {
    await run();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `${what}: was allowed`);
  assert.equal(pgCode(err), "42501", `${what}: ${(err as Error).message}`);
  if (message) assert.match((err as Error).message, message, what);
};

const ownerOf = async (db: ReturnType<typeof openPostgres>) =>
  Object.fromEntries(
    (await db.query<{ name: string; owner: string }>(sql`select c.relname as name,
      pg_get_userbyid(c.relowner) as owner from pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'`))
      .map((r) => [r.name, r.owner]),
  );

Deno.test({
  name: "db roles: migrated as a superuser, chartlog_app cannot rewrite the log or replace a key",
  ignore: !pg,
  fn: async () => {
    const tdb = await createTestDatabase();
    const admin = openPostgres(tdb.url, { max: 2 });
    const app = openPostgres(asRole(tdb.url, APP_ROLE), { max: 1 });
    try {
      await migrate(admin);
      // every table the migrations made is the owner's, and each has its line in APP_GRANTS
      const owners = await ownerOf(admin);
      assert.deepEqual(
        Object.keys(owners).sort(),
        Object.keys(APP_GRANTS).sort(),
        "a table without a line in APP_GRANTS (src/store/roles.ts)",
      );
      for (const [t, o] of Object.entries(owners)) assert.equal(o, OWNER_ROLE, t);
      const [fn] = await admin.query<{ owner: string; public: boolean; app: boolean }>(sql`select
        pg_get_userbyid(proowner) as owner,
        has_function_privilege('public', p.oid, 'execute') as public,
        has_function_privilege(${APP_ROLE}, p.oid, 'execute') as app
        from pg_proc p where proname = 'events_append_only'`);
      assert.deepEqual(fn, { owner: OWNER_ROLE, public: false, app: false });
      // the one-statement appends (migration 10): the owner's, and the app's only
      const af = await admin.query<{ owner: string; public: boolean; app: boolean }>(sql`select
        proname as name, pg_get_userbyid(proowner) as owner,
        has_function_privilege('public', p.oid, 'execute') as public,
        has_function_privilege(${APP_ROLE}, p.oid, 'execute') as app
        from pg_proc p where proname in ('append_events', 'append_event') order by proname`);
      assert.deepEqual(af, [
        { name: "append_event", owner: OWNER_ROLE, public: false, app: true },
        { name: "append_events", owner: OWNER_ROLE, public: false, app: true },
      ]);

      // what the app does: append (identity column, advisory lock, pg_current_xact_id) and read
      await app.query(sql`select pg_advisory_xact_lock(1)`);
      const [row] = await app.query<{ p: string }>(sql`insert into events (stream_id,
        stream_version, event_id, type, schema_version, data, metadata, recorded_at, hash)
        values ('s-1', 1, gen_random_uuid(), 'T', 1, '{}', '{}', now(), 'h')
        returning global_position::text as p, transaction_id::text`);
      assert.ok(Number(row!.p) > 0);
      assert.equal((await app.query(sql`select * from events`)).length, 1);

      // what it must not do to the log
      await refused("update", () => app.query(sql`update events set type = 'X'`));
      await refused("delete", () => app.query(sql`delete from events`));
      await refused("truncate", () => app.query(sql`truncate events`));
      await refused(
        "disable trigger",
        () => app.query(sql`alter table events disable trigger events_no_update`),
      );
      await refused(
        "disable all triggers",
        () => app.query(sql`alter table events disable trigger all`),
      );
      await refused("drop trigger", () => app.query(sql`drop trigger events_no_delete on events`));
      await refused("drop table", () => app.query(sql`drop table events`));
      await refused(
        "take ownership",
        () => app.query(sql`alter table events owner to chartlog_app`),
      );
      await refused(
        "drop the trigger function",
        () => app.query(sql`drop function events_append_only() cascade`),
      );
      await refused(
        "replace the trigger function",
        () =>
          app.exec(`create or replace function events_append_only() returns trigger
          language plpgsql as $$ begin return new; end $$`),
      );
      await refused(
        "add a trigger",
        () =>
          app.exec(`create function mine() returns trigger language plpgsql as $$
          begin return null; end $$;
          create trigger mine before insert on events for each row execute function mine()`),
      );
      await refused("drop schema public", () => app.query(sql`drop schema public cascade`));
      await refused("rewrite the migrations", () => app.query(sql`delete from schema_migrations`));
      await refused(
        "change the installation id",
        () => app.query(sql`update installation set id = gen_random_uuid()`),
      );
      await app.query(sql`update installation set blob_dir_claimed_at = now()`);
      assert.equal((await admin.query(sql`select * from events`)).length, 1);

      // subject keys: made, read and shredded; never replaced, restored, moved or deleted
      await app.query(sql`insert into subject_keys (subject_id, wrapped_key) values ('a', 'k1')`);
      await app.query(sql`insert into subject_keys (subject_id, wrapped_key) values ('a', 'k2')
        on conflict do nothing`);
      await refused(
        "replace a key",
        () => app.query(sql`update subject_keys set wrapped_key = 'k2' where subject_id = 'a'`),
      );
      await refused(
        "move a key",
        () => app.query(sql`update subject_keys set subject_id = 'b' where subject_id = 'a'`),
      );
      await refused("delete a key", () => app.query(sql`delete from subject_keys`));
      await refused(
        "disable the key trigger",
        () => app.query(sql`alter table subject_keys disable trigger subject_keys_shred_only`),
      );
      await app.query(sql`update subject_keys set wrapped_key = null, destroyed_at = now()
        where subject_id = 'a'`);
      await refused(
        "restore a key",
        () => app.query(sql`update subject_keys set wrapped_key = 'k1' where subject_id = 'a'`),
      );
      await refused(
        "re-date a shredding",
        () => app.query(sql`update subject_keys set destroyed_at = now() - interval '1 day'`),
      );
      assert.deepEqual(
        await app.query(sql`select subject_id, wrapped_key from subject_keys`),
        [{ subject_id: "a", wrapped_key: null }],
      );

      // a function of the app's in public could stand in for a built-in in a migration
      await assertNoAppRoutines(admin);
      await app.exec(`create function lower(varchar) returns text language sql as 'select 1'`);
      await assert.rejects(() => assertNoAppRoutines(admin), /refusing to migrate/);
      await app.exec(`drop function lower(varchar)`);

      // a database migrated before the roles (one user owned everything) is given to them
      await admin.exec(`alter table events owner to postgres;
        alter function events_append_only() owner to postgres;
        create table patients_old (id int); insert into projection_state (name, version, mode,
          tables) values ('old', 1, 'inline', '{patients_old}');
        create schema chartlog_build_old`);
      await migrate(admin);
      const again = await ownerOf(admin);
      assert.equal(again.events, OWNER_ROLE);
      assert.equal(again.patients_old, APP_ROLE);
      const [s] = await admin.query<{ owner: string }>(sql`select
        pg_get_userbyid(nspowner) as owner from pg_namespace where nspname = 'chartlog_build_old'`);
      assert.equal(s?.owner, APP_ROLE);
      await refused(
        "disable trigger after the hand-over",
        () => app.query(sql`alter table events disable trigger all`),
      );
    } finally {
      await app.close();
      await admin.close();
      await tdb.drop();
    }
  },
});

Deno.test({
  name: "db roles: the server runs as chartlog_app (start-up, appends, projections, rebuild)",
  ignore: !pg,
  fn: async () => {
    const tdb = await createTestDatabase();
    let t: Awaited<ReturnType<typeof openTestApp>> | null = null;
    const admin = openPostgres(tdb.url, { max: 1 });
    try {
      t = await openTestApp({
        DATABASE_URL: asRole(tdb.url, APP_ROLE),
        CHARTLOG_OWNER_DATABASE_URL: tdb.url,
        CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
      }, { workers: true });
      const [me] = await t.runtime.db.query<{ u: string }>(sql`select current_user as u`);
      assert.equal(me?.u, APP_ROLE);
      // migrations ran as the owner, projection tables were built by the app
      const owners = await ownerOf(admin);
      assert.equal(owners.events, OWNER_ROLE);
      for (const p of appProjections) {
        for (const table of p.tables) assert.equal(owners[table], APP_ROLE, table);
      }

      // appends and inline projections through the API
      const user = await createUser(t.runtime, "admin");
      const token = (await login(t.app, user.email)).body.accessToken as string;
      const call = (method: string, path: string, body?: unknown) =>
        t!.app.request(path, {
          method,
          headers: {
            ...bearer(token),
            "user-agent": "tests/roles",
            ...(body ? { "content-type": "application/json" } : {}),
          },
          ...(body ? { body: JSON.stringify(body) } : {}),
        }, { remoteAddr: { hostname: "10.9.8.7", port: 4242, transport: "tcp" } });
      const created = await call("POST", "/v1/patients", {
        mrn: "MRN-ROLES-1",
        firstName: "Ada",
        lastName: "Lovelace",
        dateOfBirth: "1990-12-10",
        gender: "F",
        address: { line1: "1 Analytical Way", city: "Springfield", state: "IL", zip: "62701" },
      });
      assert.equal(created.status, 201, await created.clone().text());
      const patient = await created.json();
      const read = await call("GET", `/v1/patients/${patient.id}`);
      assert.equal(read.status, 200);
      assert.equal((await read.json()).firstName, "Ada");

      // async projections catch up as the app
      for (let i = 0; i < 200; i++) {
        const status = await projectionStatus(t.runtime.store, t.runtime.projections);
        if (status.every((s) => s.lag === 0 && s.lastError === null)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const status = await projectionStatus(t.runtime.store, t.runtime.projections);
      assert.deepEqual(status.filter((s) => s.lag > 0 || s.lastError), []);

      // rebuild of every projection, and a version bump built in a build schema, as the app
      for (const p of t.runtime.projections) await rebuildProjection(t.runtime.store, p);
      const bumped = { ...appProjections.find((p) => p.name === "patients")! };
      bumped.version++;
      await buildProjection(t.runtime.store, bumped, { onlyIfStale: true });
      const [state] = await admin.query<{ version: number }>(
        sql`select version from projection_state where name = 'patients'`,
      );
      assert.equal(Number(state?.version), bumped.version);
      assert.equal((await ownerOf(admin)).patients, APP_ROLE);
      const after = await call("GET", `/v1/patients/${patient.id}`);
      assert.equal(after.status, 200);
      await after.body?.cancel();

      // crypto-shredding as the app, through the log
      await shredSubject(t.runtime.store, `patient-${patient.id}`, "test", { actorId: "test" });
      const [key] = await admin.query<{ wrapped_key: string | null }>(sql`select wrapped_key
        from subject_keys where subject_id = ${`patient-${patient.id}`}`);
      assert.equal(key?.wrapped_key, null);

      const erased = await call("GET", `/v1/patients/${patient.id}`);
      assert.equal(erased.status, 410);
      await erased.body?.cancel();
    } finally {
      await t?.close();
      await admin.close();
      await tdb.drop();
    }
  },
});

Deno.test({
  name: "db roles: CHARTLOG_APP_DB_PASSWORD sets the runtime role's password",
  ignore: !pg,
  fn: async () => {
    const tdb = await createTestDatabase();
    const admin = openPostgres(tdb.url, { max: 1 });
    try {
      await migrate(admin, { appPassword: `pw-${crypto.randomUUID()}` });
      const [r] = await admin.query<{ set: boolean }>(sql`select rolpassword is not null as set
        from pg_authid where rolname = ${APP_ROLE}`);
      assert.equal(r?.set, true);
    } finally {
      await admin.close();
      await tdb.drop();
    }
  },
});

Deno.test({
  name:
    "db roles: as docker-compose runs it, `deno task migrate` with both URLs, then the real server and `deno task rebuild` as chartlog_app alone",
  ignore: !pg,
  fn: async () => {
    const tdb = await createTestDatabase();
    const dir = await Deno.makeTempDir({ prefix: "chartlog-roles-" });
    const key = keyEnv(crypto.getRandomValues(new Uint8Array(32)));
    const app = { DATABASE_URL: asRole(tdb.url, APP_ROLE), CHARTLOG_MASTER_KEY: key };
    const servers: Awaited<ReturnType<typeof startServer>>[] = [];
    const admin = openPostgres(tdb.url, { max: 1 });
    const ownerWarning = (l: Record<string, unknown>) =>
      l.level === 40 && /runs as the owner/.test(String(l.msg));
    try {
      const migrated = await runCli("migrate.ts", [], {
        ...app,
        CHARTLOG_OWNER_DATABASE_URL: tdb.url,
      });
      assert.equal(migrated.code, 0, migrated.stderr);
      assert.match(migrated.stdout, /^applied migration 1: event log$/m);
      const owners = await ownerOf(admin);
      assert.equal(owners.events, OWNER_ROLE);
      assert.equal(owners.patients, APP_ROLE);

      // the server connects as chartlog_app only: the schema is up to date, nothing to migrate
      const env = {
        ...app,
        CHARTLOG_DATA_DIR: `${dir}/data`,
        CHARTLOG_MFA_REQUIRED_ROLES: "none",
        LOG_LEVEL: "info",
      };
      const server = await startServer(env, dir);
      servers.push(server);
      await waitForStatus(server, "/ready", 200);
      // writes as the app: a failed login appends an event
      const res = await fetch(`${server.url}/v1/auth/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "nobody@x.test", password: "x" }),
      });
      assert.equal(res.status, 401);
      await res.body?.cancel();
      const rebuilt = await runCli("rebuild.ts", ["--all"], app);
      assert.equal(rebuilt.code, 0, rebuilt.stderr);
      assert.match(rebuilt.stdout, /stream_summary v\d+: rebuilt from [1-9]\d* events/);
      await server.kill();
      assert.ok(!server.stdout.some((l) => /runs as the owner/.test(l)), server.stdout.join("\n"));

      // a server connected as the superuser warns that it runs as the owner
      const su = await startServer({ ...env, DATABASE_URL: tdb.url }, dir);
      servers.push(su);
      await su.waitForLog(ownerWarning);
    } finally {
      for (const s of servers) await s.kill();
      await admin.close();
      await tdb.drop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "db roles: a CREATEROLE (not superuser) owner of the database migrates as chartlog_owner",
  ignore: !pg,
  fn: async () => {
    const creator = `chartlog_test_creator_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    const tdb = await createTestDatabase();
    const admin = openPostgres(tdb.url, { max: 1 });
    try {
      await admin.exec(`create role ${creator} login createrole;
        alter database ${new URL(tdb.url).pathname.slice(1)} owner to ${creator}`);
      const db = openPostgres(asRole(tdb.url, creator), { max: 1 });
      try {
        await migrate(db);
      } finally {
        await db.close();
      }
      const owners = await ownerOf(admin);
      for (const t of Object.keys(APP_GRANTS)) assert.equal(owners[t], OWNER_ROLE, t);
      const [p] = await admin.query<{ insert: boolean; update: boolean; create: boolean }>(
        sql`select
        has_table_privilege(${APP_ROLE}, 'public.events', 'insert') as insert,
        has_table_privilege(${APP_ROLE}, 'public.events', 'update') as update,
        has_schema_privilege(${APP_ROLE}, 'public', 'create') as create`,
      );
      assert.deepEqual(p, { insert: true, update: false, create: true });
    } finally {
      await admin.close();
      await tdb.drop();
      const a = openPostgres(tdb.url.replace(/\/[^/]*$/, "/postgres"), { max: 1 });
      await a.exec(`drop role if exists ${creator}`).finally(() => a.close());
    }
  },
});

Deno.test({
  name: "db roles: chartlog_app never applies migrations, it names the ones pending",
  ignore: !pg,
  fn: async () => {
    const tdb = await createTestDatabase();
    const admin = openPostgres(tdb.url, { max: 1 });
    const app = openPostgres(asRole(tdb.url, APP_ROLE), { max: 1 });
    try {
      await prepareRoles(admin); // the roles exist
      await assert.rejects(() => migrate(app), /migrations 1, 2, .* are pending and chartlog_app/);
      const [r] = await admin.query<{ made: boolean }>(
        sql`select to_regclass('public.schema_migrations') is not null as made`,
      );
      assert.equal(r?.made, false);
      await migrate(admin);
      assert.deepEqual(await migrate(app), []);
    } finally {
      await app.close();
      await admin.close();
      await tdb.drop();
    }
  },
});
