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
 * The analysts' read-only role: SELECT on the de-identified views of schema
 * `analytics` ({@link ANALYTICS_SCHEMA}) and nothing else — not the log,
 * not the projection tables, not the keys (see {@link grantAnalyticsAccess}).
 */
export const ANALYST_ROLE = "chartlog_analyst";
/** The schema of the analysts' views (migration 11; views made by projection builds). */
export const ANALYTICS_SCHEMA = "analytics";

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
  // of migration 8 refuses any update that leaves a key); never deleted
  subject_keys: ["select", "insert", "update (wrapped_key, destroyed_at)"],
  // the installation id is read; the blob directory claim is recorded once
  installation: ["select", "update (blob_dir_claimed_at)"],
  // read to report the schema's migration
  schema_migrations: ["select"],
  // idle timeout bookkeeping, not a projection (a rebuild must not forget it)
  session_activity: ["select", "insert", "update"],
  // each projection's version, tables and checkpoint, written by builds and workers
  projection_state: ["select", "insert", "update"],
  // the transparency log's tree (a cache for proofs: verify recomputes it from
  // events); nodes are only ever added as the tree grows
  merkle_nodes: ["select", "insert"],
};

/**
 * Functions the app calls, as `name(argument types)`: directly, or through a
 * column default or check of a table it writes. EXECUTE is revoked from
 * PUBLIC on every function the owner has in `public`, and granted to
 * `chartlog_app` on these only. Trigger functions need no line.
 */
export const APP_FUNCTIONS: readonly string[] = [
  // migration 10 (append_events replaced by 12, same signature): a group-commit batch of
  // appends in one statement, and a batch of one event (src/store/append.ts)
  "append_events(text[], text[], integer[], integer[], text[], uuid[], text[], integer[], text[], text[], timestamptz)",
  "append_event(text, text, integer, text, uuid, text, integer, text, text, timestamptz)",
];

const PRIVILEGE = /^(select|insert|update|delete)( \([a-z_][a-z0-9_]*(, [a-z_][a-z0-9_]*)*\))?$/;
const FUNCTION = /^[a-z_][a-z0-9_]*\(([a-z_][a-z0-9_ ]*(\[\])?(, [a-z_][a-z0-9_ ]*(\[\])?)*)?\)$/;

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

interface RoleState {
  user: string;
  super: boolean;
  createrole: boolean;
  owner: boolean;
  app: boolean;
  analyst: boolean;
  /** May act as chartlog_owner (SET ROLE; before PostgreSQL 16, membership). */
  member: boolean;
  /** Owns the database (so schema public too, since PostgreSQL 15). */
  dbowner: boolean;
}

/** The migrating connection's role and the two roles' existence, in one round trip. */
const roleState = async (db: Db): Promise<RoleState> => {
  const [r] = await db.query<RoleState>(sql`select current_user as user,
    r.rolsuper as super, r.rolcreaterole as createrole,
    exists (select from pg_roles where rolname = ${OWNER_ROLE}) as owner,
    exists (select from pg_roles where rolname = ${APP_ROLE}) as app,
    exists (select from pg_roles where rolname = ${ANALYST_ROLE}) as analyst,
    exists (select from pg_roles where rolname = ${OWNER_ROLE}) and pg_has_role(current_user,
      ${OWNER_ROLE}, case when current_setting('server_version_num')::int >= 160000
        then 'set' else 'member' end) as member,
    pg_has_role(current_user, (select datdba from pg_database
      where datname = current_database()), 'member') as dbowner
    from pg_roles r where r.rolname = current_user`);
  return r!;
};

/** Another migration (of another database on this cluster) created it first. */
const lostRace = (err: unknown) => ["42710", "23505", "XX000"].includes(pgCode(err) ?? "");

/**
 * Before migrations, outside their transaction (roles are cluster-wide):
 * with a superuser or CREATEROLE connection, creates the roles when
 * missing (tolerating a concurrent run that made them first) and sets the
 * app's and the analyst's passwords when given; otherwise says it skipped that.
 */
export const prepareRoles = async (
  db: Db,
  opts: { appPassword?: string | null; analystPassword?: string | null; log?: Log } = {},
): Promise<RolePlan> => {
  let st = await roleState(db);
  const superuser = st.super;
  const privileged = superuser || st.createrole;
  if (privileged && !(st.owner && st.app && st.analyst)) {
    for (
      const [name, attrs, exists] of [
        [OWNER_ROLE, "nologin", st.owner],
        [APP_ROLE, "login", st.app],
        [ANALYST_ROLE, "login", st.analyst],
      ] as const
    ) {
      if (exists) continue;
      try {
        await db.exec(`create role ${name} ${attrs}`);
        opts.log?.info({ role: name }, "created database role");
      } catch (err) {
        // made by a concurrent migration of another database: checked below
        if (!lostRace(err)) throw err;
      }
    }
    st = await roleState(db);
  }
  const roles = st.owner && st.app;
  if (!roles) {
    if (privileged) throw new Error(`${OWNER_ROLE} and ${APP_ROLE} could not be created`);
    opts.log?.warn(
      { user: st.user },
      `the migrating role may not create roles (neither superuser nor CREATEROLE): skipped creating ${OWNER_ROLE} and ${APP_ROLE}; migrations run as itself`,
    );
  }
  const passwords = [
    [APP_ROLE, opts.appPassword, "CHARTLOG_APP_DB_PASSWORD"],
    [ANALYST_ROLE, opts.analystPassword, "CHARTLOG_ANALYST_DB_PASSWORD"],
  ] as const;
  for (const [role, password, env] of passwords) {
    if (!password) continue;
    if (roles && privileged) {
      const [s] = await db.query<{ q: string }>(
        sql`select format('alter role %I password %L', ${role}::text, ${password}::text) as q`,
      );
      // the statement carries the password: keep statement logging off while migrating
      await db.exec(s!.q).catch((err) => {
        // another instance set it at the same moment ("tuple concurrently updated")
        if (pgCode(err) !== "XX000") throw err;
      });
    } else {
      opts.log?.warn({}, `${env} is ignored: the migrating role cannot alter ${role}`);
    }
  }
  const isOwner = st.user === OWNER_ROLE;
  const isApp = st.user === APP_ROLE;
  let setRole = roles && !isOwner && st.member;
  if (roles && !setRole && !isOwner && !isApp) {
    if (privileged) {
      // a CREATEROLE connection may make itself a member (PostgreSQL 16: with ADMIN on the role,
      // which the role's creator has)
      try {
        await db.exec(`grant ${OWNER_ROLE} to current_user`);
        setRole = (await roleState(db)).member;
      } catch (err) {
        if (pgCode(err) !== "42501") throw err;
      }
    }
    if (!setRole) {
      opts.log?.warn(
        { user: st.user },
        `the migrating role may not act as ${OWNER_ROLE}: migrations run as itself, grants are skipped`,
      );
    }
  }
  return {
    roles,
    isApp,
    superuser,
    setRole,
    grant: roles && (setRole || isOwner),
    grantSchema: roles && (superuser || st.dbowner),
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
  const [ps] = await tx.query<{ present: boolean }>(
    sql`select to_regclass('public.projection_state') is not null as present`,
  );
  const [w] = await tx.query<
    { log: string[]; fns: string[]; app: string[]; schemas: string[]; views: string[] }
  >(
    sql`select
      array(select c.relname::text from pg_class c
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
          and c.relname = any(${tables}::text[]) and c.relowner <> ${OWNER_ROLE}::regrole) as log,
      array(select p.oid::regprocedure::text from pg_proc p
        where p.pronamespace = 'public'::regnamespace
          and p.proowner not in (${OWNER_ROLE}::regrole, ${APP_ROLE}::regrole)
          and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass
            and d.objid = p.oid and d.deptype = 'e')) as fns,
      ${
      ps?.present
        ? sql`array(select c.relname::text from pg_class c
          where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
            and c.relowner <> ${APP_ROLE}::regrole and not (c.relname = any(${tables}::text[]))
            and c.relname in (select unnest(tables) from projection_state))`
        : sql`'{}'::text[]`
    } as app,
      array(select nspname::text from pg_namespace where nspname like 'chartlog\\_build\\_%'
        and nspowner <> ${APP_ROLE}::regrole) as schemas,
      array(select c.relname::text from pg_class c
        where c.relnamespace = to_regnamespace(${ANALYTICS_SCHEMA}) and c.relkind = 'v'
          and c.relowner <> ${APP_ROLE}::regrole) as views`,
  );
  const q = (name: string) => sql`${ident(name)}`.text;
  const statements = [
    ...w!.log.map((t) => `alter table ${q(`public.${t}`)} owner to ${OWNER_ROLE}`),
    // regprocedure's text is quoted and qualified as needed
    ...w!.fns.map((f) => `alter function ${f} owner to ${OWNER_ROLE}`),
    ...w!.app.map((t) => `alter table ${q(`public.${t}`)} owner to ${APP_ROLE}`),
    ...w!.schemas.map((n) => `alter schema ${q(n)} owner to ${APP_ROLE}`),
    // the analysts' views: their builder drops and makes them again, and reads with their rights
    ...w!.views.flatMap((v) => [
      `alter view ${q(`${ANALYTICS_SCHEMA}.${v}`)} owner to ${APP_ROLE}`,
      `grant select on ${q(`${ANALYTICS_SCHEMA}.${v}`)} to ${ANALYST_ROLE}`,
    ]),
  ];
  if (statements.length === 0) return;
  await tx.exec(statements.join(";\n"));
  log?.info(
    {
      owner: w!.log.length + w!.fns.length,
      app: w!.app.length + w!.schemas.length + w!.views.length,
    },
    "database objects given to their roles",
  );
};

/**
 * Both roles' access to schema `public` (USAGE and CREATE: the owner makes
 * the log's tables there, the app its projection tables) and to the
 * database (the app: CONNECT, and CREATE for its build schemas; the owner:
 * CREATE for schema `analytics`).
 */
export const grantSchemaAccess = async (tx: Db): Promise<void> => {
  await tx.exec(`grant usage, create on schema public to ${OWNER_ROLE}, ${APP_ROLE};
    do $$ begin
      execute format('grant connect, create on database %I to ${APP_ROLE}', current_database());
      -- migration 11 makes schema analytics
      execute format('grant create on database %I to ${OWNER_ROLE}', current_database());
    end $$`);
};

/**
 * Inside the migration transaction, after the migrations (as the owner):
 * the app's privileges on every listed table and function, EXECUTE revoked
 * from PUBLIC on the owner's functions. Warns of an owner table without a
 * line in {@link APP_GRANTS} and of an app that owns the database or `public`.
 */
export const applyGrants = async (tx: Db, log?: Log): Promise<void> => {
  const [st] = await tx.query<{ tables: string[]; db: boolean; schema: boolean }>(sql`select
    array(select c.relname::text from pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
        and c.relowner = ${OWNER_ROLE}::regrole) as tables,
    pg_has_role(${APP_ROLE}, (select datdba from pg_database where datname = current_database()),
      'member') as db,
    pg_has_role(${APP_ROLE}, (select nspowner from pg_namespace where nspname = 'public'),
      'member') as schema`);
  const present = new Set(st!.tables);
  const grants = Object.fromEntries(Object.entries(APP_GRANTS).filter(([t]) => present.has(t)));
  await tx.exec([
    ...grantStatements(grants, []),
    `do $$ declare f regprocedure; begin
      for f in select p.oid from pg_proc p where p.pronamespace = 'public'::regnamespace
        and p.proowner = '${OWNER_ROLE}'::regrole loop
        execute format('revoke execute on function %s from public', f);
      end loop;
    end $$`,
    ...grantStatements({}, APP_FUNCTIONS),
  ].join(";\n"));
  const unlisted = [...present].filter((t) => !(t in APP_GRANTS));
  if (unlisted.length > 0) {
    log?.warn(
      { tables: unlisted },
      `tables of ${OWNER_ROLE} without a line in APP_GRANTS (src/store/roles.ts): ${APP_ROLE} may not use them`,
    );
  }
  if (st?.db || st?.schema) {
    log?.warn(
      {},
      `${APP_ROLE} owns the database or schema public, so it could drop the log: give them to another role`,
    );
  }
};

/**
 * Inside the migration transaction, after the migrations (as the owner of
 * schema `analytics`): the app makes the analysts' views there (USAGE,
 * CREATE); `chartlog_analyst` may look into it (USAGE) and gets SELECT on
 * each view as a build makes it (src/store/projection_engine.ts). The
 * analyst has no privilege on any table in `public`: PostgreSQL gives
 * PUBLIC none on tables, and {@link applyGrants} revokes what it may have
 * had on the log's. Skipped (logged) until the analyst role exists.
 */
export const grantAnalyticsAccess = async (tx: Db, log?: Log): Promise<void> => {
  const [r] = await tx.query<{ analyst: boolean; schema: boolean }>(sql`select
    to_regrole(${ANALYST_ROLE}) is not null as analyst,
    to_regnamespace(${ANALYTICS_SCHEMA}) is not null as schema`);
  if (!r?.schema) return;
  await tx.exec(`revoke all on schema ${ANALYTICS_SCHEMA} from public;
    grant usage, create on schema ${ANALYTICS_SCHEMA} to ${APP_ROLE}`);
  if (!r.analyst) {
    log?.warn({}, `${ANALYST_ROLE} does not exist: analysts have no database role yet`);
    return;
  }
  await tx.exec(`grant usage on schema ${ANALYTICS_SCHEMA} to ${ANALYST_ROLE}`);
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
