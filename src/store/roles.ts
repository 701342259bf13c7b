import type { Logger } from "pino";
import { type Db, pgCode } from "./db.ts";
import { ident, sql } from "./sql.ts";

/**
 * Database roles (PostgreSQL only: PGlite has one user and skips all this).
 *
 * `chartlog_owner` owns the log's tables and runs the migrations;
 * `chartlog_app`, the runtime role, gets exactly what {@link APP_GRANTS}
 * lists on them, so it cannot rewrite the log or disable its triggers (only
 * an owner may ALTER or DROP a table, its triggers and functions). The app
 * creates, and so owns, the projection tables it builds: it has CREATE on
 * schema `public` and on the database (build schemas), never ownership of
 * `public` itself (a schema's owner may drop anything in it).
 */
export const OWNER_ROLE = "chartlog_owner";
export const APP_ROLE = "chartlog_app";

/**
 * Every table the migrations create (all owned by `chartlog_owner`) and
 * exactly what `chartlog_app` may do on it; applied after each migration
 * run (REVOKE ALL, then GRANT these), so a change here takes effect at the
 * next `deno task migrate`. A new table is one line here; a table without a
 * line gets nothing (migrate logs a warning, tests/db_roles_test.ts fails).
 * Privileges: select, insert, update, delete, `update (col, …)`.
 */
export const APP_GRANTS: Readonly<Record<string, readonly string[]>> = {
  // the log: appended and read, never changed (its triggers refuse that even to the owner)
  events: ["select", "insert"],
  // keys are made and read; the only update is crypto-shredding (a trigger
  // of migration 7 refuses any new or replaced key); never deleted
  subject_keys: ["select", "insert", "update (wrapped_key, destroyed_at)"],
  // the installation id is read; the blob directory claim is recorded once
  installation: ["select", "update (blob_dir_claimed_at)"],
  // read to report the schema's migration
  schema_migrations: ["select"],
  // idle timeout bookkeeping, not a projection (a rebuild must not forget it)
  session_activity: ["select", "insert", "update"],
  // each projection's version, tables and checkpoint, written by builds and workers
  projection_state: ["select", "insert", "update"],
};

/**
 * Functions the app calls, as `name(argument types)`: directly, or through a
 * column default or check of a table it writes. EXECUTE is revoked from
 * PUBLIC on every function the owner has in `public`, and granted to
 * `chartlog_app` on these only. Trigger functions need no line.
 */
export const APP_FUNCTIONS: readonly string[] = [];

const PRIVILEGE = /^(select|insert|update|delete)( \([a-z_][a-z0-9_]*(, [a-z_][a-z0-9_]*)*\))?$/;
const FUNCTION = /^[a-z_][a-z0-9_]*\(([a-z_][a-z0-9_ ]*(, [a-z_][a-z0-9_ ]*)*)?\)$/;

/** The GRANT and REVOKE statements that give `chartlog_app` exactly {@link APP_GRANTS}. */
export const grantStatements = (
  grants: Readonly<Record<string, readonly string[]>> = APP_GRANTS,
  functions: readonly string[] = APP_FUNCTIONS,
): string[] => {
  const out: string[] = [];
  for (const [table, privileges] of Object.entries(grants)) {
    const t = ident(`public.${table}`);
    const quoted = sql`${t}`.text;
    for (const p of privileges) {
      if (!PRIVILEGE.test(p)) throw new Error(`APP_GRANTS.${table}: bad privilege "${p}"`);
    }
    out.push(`revoke all on table ${quoted} from public, ${APP_ROLE}`);
    if (privileges.length > 0) {
      out.push(`grant ${privileges.join(", ")} on table ${quoted} to ${APP_ROLE}`);
    }
  }
  for (const f of functions) {
    if (!FUNCTION.test(f)) throw new Error(`APP_FUNCTIONS: bad signature "${f}"`);
    out.push(`grant execute on function public.${f} to ${APP_ROLE}`);
  }
  return out;
};

/** How {@link prepareRoles} found the migrating connection. */
export interface RolePlan {
  /** Both roles exist (after creating them if this connection could). */
  roles: boolean;
  /** The connection is `chartlog_app`: it may check that the schema is current, never migrate. */
  isApp: boolean;
  superuser: boolean;
  /** Migrations run as `chartlog_owner` (`SET LOCAL ROLE`): the connection is a member. */
  setRole: boolean;
  /** The connection may grant on the owner's tables (it is, or may become, their owner). */
  grant: boolean;
  /** The connection may grant on schema public and the database (superuser or their owner). */
  grantSchema: boolean;
}

type Log = Pick<Logger, "info" | "warn">;

const roleExists = async (db: Db, name: string): Promise<boolean> =>
  (await db.query(sql`select 1 from pg_roles where rolname = ${name}`)).length > 0;

/** Another migration (of another database on this cluster) created it first. */
const lostRace = (err: unknown) => ["42710", "23505", "XX000"].includes(pgCode(err) ?? "");

/**
 * Before migrations, outside their transaction (roles are cluster-wide):
 * with a superuser or CREATEROLE connection, creates both roles when
 * missing (tolerating a concurrent run that made them first) and sets the
 * app's password when one is given; otherwise says it skipped that.
 */
export const prepareRoles = async (
  db: Db,
  opts: { appPassword?: string | null; log?: Log } = {},
): Promise<RolePlan> => {
  const [me] = await db.query<{ user: string; super: boolean; createrole: boolean; v: number }>(
    sql`select current_user as user, rolsuper as super, rolcreaterole as createrole,
      current_setting('server_version_num')::int as v from pg_roles where rolname = current_user`,
  );
  const superuser = !!me?.super;
  const privileged = superuser || !!me?.createrole;
  const make = async (name: string, attrs: string) => {
    if (await roleExists(db, name)) return;
    if (!privileged) return;
    try {
      await db.exec(`create role ${name} ${attrs}`);
      opts.log?.info({ role: name }, "created database role");
    } catch (err) {
      if (!lostRace(err) || !(await roleExists(db, name))) throw err;
    }
  };
  await make(OWNER_ROLE, "nologin");
  await make(APP_ROLE, "login");
  const roles = await roleExists(db, OWNER_ROLE) && await roleExists(db, APP_ROLE);
  if (!privileged && !roles) {
    opts.log?.warn(
      { user: me?.user },
      `the migrating role may not create roles (neither superuser nor CREATEROLE): skipped creating ${OWNER_ROLE} and ${APP_ROLE}; migrations run as itself`,
    );
  }
  if (roles && privileged && opts.appPassword) {
    const [s] = await db.query<{ q: string }>(
      sql`select format('alter role %I password %L', ${APP_ROLE}::text, ${opts.appPassword}::text) as q`,
    );
    // the statement carries the password: keep statement logging off while migrating
    await db.exec(s!.q).catch((err) => {
      // another instance set it at the same moment ("tuple concurrently updated")
      if (pgCode(err) !== "XX000") throw err;
    });
  } else if (opts.appPassword) {
    opts.log?.warn(
      {},
      `CHARTLOG_APP_DB_PASSWORD is ignored: the migrating role cannot alter ${APP_ROLE}`,
    );
  }
  const member = async () => {
    const [m] = await db.query<{ ok: boolean }>(
      sql`select pg_has_role(current_user, ${OWNER_ROLE}, ${me!.v >= 160000 ? "set" : "member"})
        as ok`,
    );
    return !!m?.ok;
  };
  let setRole = roles && me?.user !== OWNER_ROLE && await member();
  const isApp = me?.user === APP_ROLE;
  if (roles && !setRole && me?.user !== OWNER_ROLE && !isApp) {
    if (privileged) {
      // a CREATEROLE connection may make itself a member (PostgreSQL 16: with ADMIN on the role,
      // which the role's creator has)
      try {
        await db.exec(`grant ${OWNER_ROLE} to current_user`);
        setRole = await member();
      } catch (err) {
        if (pgCode(err) !== "42501") throw err;
      }
    }
    if (!setRole) {
      opts.log?.warn(
        { user: me?.user },
        `the migrating role may not act as ${OWNER_ROLE}: migrations run as itself, grants are skipped`,
      );
    }
  }
  const [own] = await db.query<{ ok: boolean }>(sql`select pg_has_role(current_user,
    (select datdba from pg_database where datname = current_database()), 'member') as ok`);
  return {
    roles,
    isApp,
    superuser,
    setRole,
    grant: roles && (setRole || me?.user === OWNER_ROLE),
    grantSchema: roles && (superuser || !!own?.ok),
  };
};

/**
 * As a superuser, inside the migration transaction and before it switches
 * to the owner: objects of a database migrated before the roles existed
 * change hands (log tables and their functions to the owner, projection
 * tables and build schemas to the app). Changes only what differs.
 */
export const reassignObjects = async (tx: Db, log?: Log): Promise<void> => {
  const tables = Object.keys(APP_GRANTS);
  const wrongOwner = await tx.query<{ name: string }>(sql`select c.relname as name
    from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
      and c.relname = any(${tables}::text[]) and c.relowner <> ${OWNER_ROLE}::regrole`);
  for (const { name } of wrongOwner) {
    await tx.query(sql`alter table ${ident(`public.${name}`)} owner to ${ident(OWNER_ROLE)}`);
  }
  const fns = await tx.query<{ f: string }>(sql`select p.oid::regprocedure::text as f
    from pg_proc p where p.pronamespace = 'public'::regnamespace
      and p.proowner not in (${OWNER_ROLE}::regrole, ${APP_ROLE}::regrole)
      and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass
        and d.objid = p.oid and d.deptype = 'e')`);
  for (const { f } of fns) {
    const [s] = await tx.query<{ q: string }>(
      sql`select format('alter function %s owner to %I', ${f}::text, ${OWNER_ROLE}::text) as q`,
    );
    await tx.exec(s!.q);
  }
  const [ps] = await tx.query<{ present: boolean }>(
    sql`select to_regclass('public.projection_state') is not null as present`,
  );
  const appTables = ps?.present
    ? await tx.query<{ name: string }>(sql`select c.relname as name from pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
        and c.relowner <> ${APP_ROLE}::regrole and not (c.relname = any(${tables}::text[]))
        and c.relname in (select unnest(tables) from projection_state)`)
    : [];
  for (const { name } of appTables) {
    await tx.query(sql`alter table ${ident(`public.${name}`)} owner to ${ident(APP_ROLE)}`);
  }
  const schemas = await tx.query<{ name: string }>(sql`select nspname as name from pg_namespace
    where nspname like 'chartlog\\_build\\_%' and nspowner <> ${APP_ROLE}::regrole`);
  for (const { name } of schemas) {
    await tx.query(sql`alter schema ${ident(name)} owner to ${ident(APP_ROLE)}`);
  }
  const moved = wrongOwner.length + fns.length + appTables.length + schemas.length;
  if (moved > 0) {
    log?.info(
      { owner: wrongOwner.length + fns.length, app: appTables.length + schemas.length },
      "database objects given to their roles",
    );
  }
};

/**
 * Both roles' access to schema `public` (USAGE and CREATE: the owner makes
 * the log's tables there, the app its projection tables) and the app's to
 * the database (CONNECT, and CREATE for its build schemas).
 */
export const grantSchemaAccess = async (tx: Db): Promise<void> => {
  const [db] = await tx.query<{ q: string }>(sql`select format(
    'grant connect, create on database %I to ' || ${APP_ROLE}::text, current_database()) as q`);
  await tx.exec(`grant usage, create on schema public to ${OWNER_ROLE}, ${APP_ROLE};
    ${db!.q}`);
};

/**
 * Inside the migration transaction, after the migrations (as the owner):
 * the app's privileges on every listed table and function, EXECUTE revoked
 * from PUBLIC on the owner's functions. Warns of an owner table without a
 * line in {@link APP_GRANTS} and of an app that owns the database or `public`.
 */
export const applyGrants = async (tx: Db, log?: Log): Promise<void> => {
  const present = new Set(
    (await tx.query<{ name: string }>(sql`select c.relname as name from pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
        and c.relowner = ${OWNER_ROLE}::regrole`)).map((r) => r.name),
  );
  const grants = Object.fromEntries(Object.entries(APP_GRANTS).filter(([t]) => present.has(t)));
  for (const s of grantStatements(grants)) await tx.exec(s);
  const fns = await tx.query<{ f: string }>(sql`select p.oid::regprocedure::text as f
    from pg_proc p where p.pronamespace = 'public'::regnamespace
      and p.proowner = ${OWNER_ROLE}::regrole`);
  for (const { f } of fns) {
    const [s] = await tx.query<{ q: string }>(sql`select format(
      'revoke execute on function %s from public', ${f}::text) as q`);
    await tx.exec(s!.q);
  }
  for (const s of grantStatements({}, APP_FUNCTIONS)) await tx.exec(s);
  const unlisted = [...present].filter((t) => !(t in APP_GRANTS));
  if (unlisted.length > 0) {
    log?.warn(
      { tables: unlisted },
      `tables of ${OWNER_ROLE} without a line in APP_GRANTS (src/store/roles.ts): ${APP_ROLE} may not use them`,
    );
  }
  const [o] = await tx.query<{ db: boolean; schema: boolean }>(sql`select
    pg_has_role(${APP_ROLE}, (select datdba from pg_database where datname = current_database()),
      'member') as db,
    pg_has_role(${APP_ROLE}, (select nspowner from pg_namespace where nspname = 'public'),
      'member') as schema`);
  if (o?.db || o?.schema) {
    log?.warn(
      {},
      `${APP_ROLE} owns the database or schema public, so it could drop the log: give them to another role`,
    );
  }
};

/**
 * Whether this connection may do what only the log's owner should: it owns
 * `events` (or is a member of its owner's role, as a superuser is).
 */
export const runsAsOwner = async (db: Db): Promise<boolean> => {
  if (db.kind !== "postgres") return false;
  const [r] = await db.query<{ owner: boolean }>(sql`select coalesce(pg_has_role(current_user,
    (select relowner from pg_class where oid = to_regclass('public.events')), 'member'), false)
    as owner`);
  return !!r?.owner;
};

/**
 * Before migrations run as the owner: `chartlog_app` may create objects in
 * `public` (for its projection tables), so a function, operator or type of
 * its own there could be resolved by a migration in place of a built-in and
 * run with the owner's rights. Refuses to migrate while there is one.
 */
export const assertNoAppRoutines = async (tx: Db): Promise<void> => {
  const [r] = await tx.query<{ n: number }>(sql`select
    (select count(*) from pg_proc where pronamespace = 'public'::regnamespace
      and proowner = ${APP_ROLE}::regrole)
    + (select count(*) from pg_operator where oprnamespace = 'public'::regnamespace
      and oprowner = ${APP_ROLE}::regrole)
    + (select count(*) from pg_type where typnamespace = 'public'::regnamespace
      and typowner = ${APP_ROLE}::regrole and typrelid = 0 and typcategory <> 'A')
    as n`);
  if (Number(r?.n) > 0) {
    throw new Error(
      `${APP_ROLE} owns functions, operators or types in schema public, which a migration could run as ${OWNER_ROLE}: refusing to migrate until they are dropped`,
    );
  }
};
