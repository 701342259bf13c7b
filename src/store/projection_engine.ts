import type { Logger } from "pino";
import { UnavailableError } from "../errors.ts";
import { holder } from "./append.ts";
import { applyEvent } from "./apply.ts";
import type { Db } from "./db.ts";
import type { EventStore } from "./event_store.ts";
import { LOCK_APPEND, projectionLockName } from "./locks.ts";
import { ANALYST_ROLE, ANALYTICS_SCHEMA, APP_ROLE } from "./roles.ts";
import { ident, type Query, sql } from "./sql.ts";
import type { Projection, StoredEvent } from "./types.ts";

const REPLAY_BATCH = 2000;

/**
 * Brings each projection's tables to its version at start-up. Tables belong
 * to a version: a projection whose stored version differs (or whose tables
 * are missing, as on a new database) is built beside the old tables and
 * switched in (see {@link rebuildProjection}); one already at its version is
 * left alone, its setup DDL is not run again.
 */
export const setupProjections = async (
  store: EventStore,
  projections: readonly Projection[],
): Promise<void> => {
  for (const p of projections) {
    if (await isCurrent(store.db, p)) continue;
    await buildProjection(store, p, { onlyIfStale: true });
  }
};

/** Whether the projection's tables (and views) exist and were built by this version. */
const isCurrent = async (db: Db, p: Projection): Promise<boolean> => {
  const views = (p.views ?? []).map((v) => v.name);
  const [r] = await db.query<{ version: number | null; missing: number }>(sql`select
      (select version from projection_state where name = ${p.name}) as version,
      (select count(*)::int from unnest(${p.tables}::text[]) as t(name)
        where to_regclass('public.' || quote_ident(t.name)) is null)
      + (select count(*)::int from unnest(${views}::text[]) as v(name)
        where to_regclass(${ANALYTICS_SCHEMA} || '.' || quote_ident(v.name)) is null) as missing`);
  return Number(r?.version) === p.version && Number(r?.missing) === 0;
};

/**
 * The event types a projection folds, as its handler map declares them;
 * undefined (every type) when it has an `anyEvent` handler. Replays and the
 * worker read only these: other events are skipped in SQL, never decoded.
 */
export const handledTypes = (p: Projection): readonly string[] | undefined =>
  p.anyEvent ? undefined : Object.keys(p.handlers);

export { applyEvent };

/** The schema a projection's next tables are built in before they are switched in. */
export const buildSchema = (p: Projection): string => {
  if (!/^[a-z][a-z0-9_]{0,40}$/.test(p.name)) throw new Error(`bad projection name ${p.name}`);
  return `chartlog_build_${p.name}`;
};

/** The lock one builder of a projection holds (across instances; in process on PGlite). */
const buildLockName = (name: string) => `chartlog.build:${name}`;
const buildingInProcess = new Map<string, Promise<unknown>>();

/**
 * Rebuilds a projection from position 0 into new tables and switches them
 * in; returns the number of events folded. The running server keeps
 * serving (and, for inline projections, writing) the old tables meanwhile.
 * See {@link buildProjection}.
 */
export const rebuildProjection = async (
  store: EventStore,
  p: Projection,
  onProgress?: (done: number, total: number) => void,
): Promise<number> => await buildProjection(store, p, { onProgress });

/**
 * Builds a projection's tables beside the ones in use and switches them in:
 *
 * 1. its setup DDL runs in a build schema of its own (`chartlog_build_NAME`,
 *    first on the search path, so the handlers' unqualified table names
 *    resolve there and reads of other projections' tables fall through to
 *    `public`);
 * 2. it catches up from position 0 in batches of one transaction each,
 *    reading below the in-flight horizon like the async worker: appends go
 *    on, and the old tables keep serving and (inline) being written;
 * 3. one transaction takes the append lock, folds the last events, locks
 *    the projection's checkpoint row (a running async worker folds each
 *    batch under that row lock, so it waits here and then goes on from the
 *    new checkpoint), drops its views in schema `analytics` and the old
 *    tables, moves the new ones into `public`, makes the views again over
 *    them and records version, tables and checkpoint.
 *
 * Builders of one projection take turns (an advisory lock); with
 * `onlyIfStale` (start-up) a builder that finds the version already built
 * by another does nothing. A build that dies leaves only its build schema,
 * which the next build drops.
 */
export const buildProjection = async (
  store: EventStore,
  p: Projection,
  opts: {
    onProgress?: (done: number, total: number) => void;
    onlyIfStale?: boolean;
    /** Events read and folded per transaction (tests make pages small). */
    pageSize?: number;
  } = {},
): Promise<number> => {
  const previous = buildingInProcess.get(p.name);
  const run = (async () => {
    await previous?.catch(() => {});
    const reserved = await store.db.reserve();
    try {
      await reserved.query(sql`select pg_advisory_lock(hashtext(${buildLockName(p.name)}))`);
      try {
        if (opts.onlyIfStale && await isCurrent(reserved, p)) return 0;
        return await build(store, reserved, p, opts.onProgress, opts.pageSize);
      } finally {
        await reserved.query(sql`select pg_advisory_unlock(hashtext(${buildLockName(p.name)}))`)
          .catch(() => {});
      }
    } finally {
      await reserved.release();
    }
  })();
  buildingInProcess.set(p.name, run);
  try {
    return await run;
  } finally {
    if (buildingInProcess.get(p.name) === run) buildingInProcess.delete(p.name);
  }
};

/**
 * The catch-up of a write-only projection with a `foldBatch` on PostgreSQL,
 * as three overlapping streams of work instead of one after another: the
 * next page is read (on the pool: one statement, its own snapshot and
 * horizon, like any page) while this one is decoded and folded here, and a
 * page's statements go out on the build's session in one round trip
 * (BEGIN, the search path, the fold's statements, COMMIT), not awaited
 * until the next page's are ready. A rebuild is bound by this process's
 * one thread (unsealing, row parsing, the fold); one after another, that
 * thread waited for the server about a fifth of the time. Pages are still
 * committed in order, one transaction each, and a failed one stops the
 * build before the next is sent.
 */
const catchUpPipelined = async (
  store: EventStore,
  session: Db,
  p: Projection,
  inBuild: Query,
  types: readonly string[] | undefined,
  pageSize: number,
  onPage: (page: { events: readonly unknown[]; position: number }) => void,
  from: number,
): Promise<void> => {
  const read = (after: number) => {
    const page = store.followFolded(after, pageSize, { db: store.db, horizon: true, types });
    page.catch(() => {}); // awaited below; not unhandled while a write is awaited first
    return page;
  };
  let next = read(from);
  let writing: Promise<unknown> = Promise.resolve();
  try {
    for (;;) {
      const page = await next;
      const full = page.events.length === pageSize;
      if (full) next = read(page.position);
      const held: Query[] = [];
      if (page.events.length > 0) await p.foldBatch!(holder(held), page.events);
      await writing;
      writing = session.batch([sql`begin`, inBuild, ...held, sql`commit`]);
      writing.catch(() => {}); // awaited below
      onPage(page);
      if (!full) break;
    }
    await writing;
  } catch (err) {
    // every batch ends its transaction (COMMIT rolls a failed one back); the
    // session goes back only once nothing of this build is still running on it
    await writing.catch(() => {});
    throw err;
  }
};

const build = async (
  store: EventStore,
  db: Db,
  p: Projection,
  onProgress?: (done: number, total: number) => void,
  pageSize = REPLAY_BATCH,
): Promise<number> => {
  const schema = buildSchema(p);
  const inBuild = sql`select set_config('search_path', ${`${schema}, public`}, true)`;
  await db.query(sql`drop schema if exists ${ident(schema)} cascade`);
  await db.query(sql`create schema ${ident(schema)}`);
  await db.transaction(async (tx) => {
    await tx.query(inBuild);
    await tx.exec(p.setup);
    const made = (await tx.query<{ t: string }>(sql`select table_name as t
      from information_schema.tables where table_schema = ${schema} order by 1`)).map((r) => r.t);
    const declared = [...p.tables].sort();
    if (made.join() !== declared.join()) {
      throw new Error(
        `projection ${p.name}: its setup makes tables [${made}] but it declares [${declared}]`,
      );
    }
  });
  const types = handledTypes(p);
  const [c] = await db.query<{ n: string | number }>(sql`select count(*) as n from events
    ${types ? sql`where type = any(${types}::text[])` : sql``}`);
  let total = Number(c?.n ?? 0);
  let position = 0, done = 0;
  onProgress?.(0, total);
  const fold = async (tx: Db, horizon: boolean): Promise<number> => {
    const page = p.foldBatch
      ? await store.followFolded(position, pageSize, { db: tx, horizon, types })
      : await store.follow(position, pageSize, { db: tx, horizon, types });
    if (p.foldBatch) {
      if (page.events.length > 0) await p.foldBatch(tx, page.events);
    } else for (const e of page.events as StoredEvent[]) await applyEvent(tx, p, e);
    // past skipped events too: the checkpoint ends at the head of the log
    position = page.position;
    done += page.events.length;
    total = Math.max(total, done);
    onProgress?.(done, total);
    return page.events.length;
  };
  // catch up beside the tables in use, a batch per transaction
  if (db.kind === "postgres" && p.writeOnly && p.foldBatch) {
    await catchUpPipelined(store, db, p, inBuild, types, pageSize, (page) => {
      position = page.position;
      done += page.events.length;
      total = Math.max(total, done);
      onProgress?.(done, total);
    }, position);
  } else {
    for (;;) {
      const n = await db.transaction(async (tx) => {
        await tx.query(inBuild);
        return await fold(tx, true);
      });
      if (n < pageSize) break;
    }
  }
  // the last events and the switch, with appends held
  await db.transaction(async (tx) => {
    await tx.query(sql`select pg_advisory_xact_lock(${LOCK_APPEND})`);
    await tx.query(inBuild);
    // the append lock is held: no append is in flight, so no horizon is needed
    while (await fold(tx, false) === pageSize);
    await tx.query(sql`insert into projection_state (name, version, mode)
      values (${p.name}, ${p.version}, ${p.mode}) on conflict (name) do nothing`);
    const [state] = await tx.query<{ tables: string[] | null }>(
      sql`select tables from projection_state where name = ${p.name} for update`,
    );
    await tx.query(sql`select set_config('search_path', 'public', true)`);
    const give = await giveToApp(tx, schema, p.tables);
    // the analysts' views name the old tables: they go first and come back over the new ones
    for (const v of p.views ?? []) {
      await tx.query(sql`drop view if exists ${ident(`${ANALYTICS_SCHEMA}.${v.name}`)}`);
    }
    const old = new Set([...(state?.tables ?? []), ...p.tables]);
    for (const t of old) await tx.query(sql`drop table if exists ${ident(`public.${t}`)}`);
    for (const t of p.tables) {
      await tx.query(sql`alter table ${ident(`${schema}.${t}`)} set schema public`);
    }
    await tx.query(sql`drop schema ${ident(schema)}`);
    await makeViews(tx, p, give);
    await tx.query(sql`update projection_state set version = ${p.version}, mode = ${p.mode},
      position = ${position}, tables = ${p.tables}::text[], updated_at = now(),
      last_error = null where name = ${p.name}`);
  });
  return done;
};

/**
 * Projection tables belong to `chartlog_app` (src/store/roles.ts). A build
 * run by the owner or a superuser (`deno task rebuild`, a server connected
 * as the owner) hands its new tables over before they are switched in, while
 * nothing else uses them. Left to the next migration, that ALTER would take
 * the tables in use one by one, and deadlock with a query joining two of them.
 */
const giveToApp = async (tx: Db, schema: string, tables: readonly string[]): Promise<boolean> => {
  if (tx.kind !== "postgres") return false;
  const [r] = await tx.query<{ give: boolean }>(sql`select
    to_regrole(${APP_ROLE}) is not null and current_user <> ${APP_ROLE}::name
      and pg_has_role(current_user, ${APP_ROLE}::name, 'member') as give`);
  if (!r?.give) return false;
  for (const t of tables) {
    await tx.query(sql`alter table ${ident(`${schema}.${t}`)} owner to ${ident(APP_ROLE)}`);
  }
  return true;
};

/**
 * The projection's views in schema `analytics`, over its tables just
 * switched in. A view reads its tables with its owner's rights, so
 * `chartlog_analyst` gets SELECT on the views and on nothing beneath them.
 * Views made by the owner or a superuser go to the app with the tables.
 */
const makeViews = async (tx: Db, p: Projection, give: boolean): Promise<void> => {
  if (!p.views?.length) return;
  const [r] = await tx.query<{ analyst: boolean }>(
    tx.kind === "postgres"
      ? sql`select to_regrole(${ANALYST_ROLE}) is not null as analyst`
      : sql`select false as analyst`,
  );
  for (const v of p.views) {
    const name = ident(`${ANALYTICS_SCHEMA}.${v.name}`);
    await tx.exec(`create view ${sql`${name}`.text} as ${v.select}`);
    if (give) await tx.query(sql`alter view ${name} owner to ${ident(APP_ROLE)}`);
    if (r?.analyst) await tx.query(sql`grant select on ${name} to ${ident(ANALYST_ROLE)}`);
  }
};

export interface ProjectionStatus {
  name: string;
  version: number;
  mode: "inline" | "async";
  position: number;
  head: number;
  /** Events written to the log that this projection has not folded yet. */
  lag: number;
  lastError: string | null;
}

/** Each projection's checkpoint and lag behind the head of the log. */
export const projectionStatus = async (
  store: EventStore,
  projections: readonly Projection[],
): Promise<ProjectionStatus[]> => {
  const head = await store.headPosition();
  const rows = await store.db.query<{ name: string; position: string; last_error: string | null }>(
    sql`select name, position, last_error from projection_state`,
  );
  const byName = new Map(rows.map((r) => [r.name, r]));
  return projections.map((p) => {
    const r = byName.get(p.name);
    // inline projections commit with the append: never behind
    const position = p.mode === "inline" ? head : Number(r?.position ?? 0);
    return {
      name: p.name,
      version: p.version,
      mode: p.mode,
      position,
      head,
      lag: Math.max(0, head - position),
      lastError: r?.last_error ?? null,
    };
  });
};

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

const heldInProcess = new Set<string>();

/**
 * Follows the log for one async projection. Across every app instance only
 * one worker per projection is active: it holds a session advisory lock on a
 * reserved connection; the others retry now and then. Each batch of events
 * and the checkpoint commit together, so a crash never folds an event twice.
 * When its connection is lost (and the lock with it: the server released it)
 * the worker logs that, backs off (doubling up to `maxRetryMs`), takes the
 * lock again and resumes from the committed checkpoint.
 */
export class ProjectionWorker {
  readonly #abort = new AbortController();
  #done: Promise<void> | null = null;

  constructor(
    readonly store: EventStore,
    readonly projection: Projection,
    readonly log: Logger,
    readonly opts: {
      pollMs?: number;
      lockRetryMs?: number;
      batch?: number;
      retryMs?: number;
      maxRetryMs?: number;
      /**
       * Work that must have one doer across instances and follows this
       * projection (the outbox's deliveries): run on the worker's connection,
       * while it holds the lock, each time it has folded what the log holds
       * (below the in-flight horizon).
       * A throw is handled as the worker's own failures are.
       */
      whenCaughtUp?: (db: Db, signal: AbortSignal) => Promise<void>;
    } = {},
  ) {}

  start(): this {
    this.#done ??= this.#run();
    return this;
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#done;
  }

  async #run(): Promise<void> {
    const { pollMs = 200, lockRetryMs = 2000, batch = 500 } = this.opts;
    const { retryMs = 500, maxRetryMs = 30_000 } = this.opts;
    const name = this.projection.name;
    const types = handledTypes(this.projection);
    const signal = this.#abort.signal;
    let failures = 0;
    while (!signal.aborted) {
      let reserved: Awaited<ReturnType<Db["reserve"]>> | null = null;
      let locked = false;
      try {
        reserved = await this.store.db.reserve();
        const [r] = await reserved.query<{ ok: boolean }>(
          sql`select pg_try_advisory_lock(hashtext(${projectionLockName(name)})) as ok`,
        );
        // PGlite is one session, where advisory locks are re-entrant: guard in process
        locked = !!r?.ok && !(reserved.kind === "pglite" && heldInProcess.has(name));
        if (!locked) {
          if (r?.ok) {
            await reserved.query(
              sql`select pg_advisory_unlock(hashtext(${projectionLockName(name)}))`,
            );
          }
          await reserved.release();
          reserved = null;
          failures = 0;
          await sleep(lockRetryMs, signal);
          continue;
        }
        heldInProcess.add(name);
        this.log.info({ projection: name }, "projection worker active");
        const [s] = await reserved.query<{ position: string }>(
          sql`select position from projection_state where name = ${name}`,
        );
        let position = Number(s?.position ?? 0);
        failures = 0;
        while (!signal.aborted) {
          const page = await this.store.follow(position, batch, { db: reserved, types });
          if (page.events.length === 0 && page.position === position) {
            await this.opts.whenCaughtUp?.(reserved, signal);
            await sleep(pollMs, signal);
            continue;
          }
          // skipped events move the checkpoint too, folded ones with it in one
          // transaction, under the checkpoint row's lock: a rebuild switching
          // in new tables takes that lock, and its checkpoint is then the one
          // to go on from
          const folded = await reserved.transaction(async (tx) => {
            const [now] = await tx.query<{ position: string; version: number }>(sql`select
              position, version from projection_state where name = ${name} for update`);
            if (!now || Number(now.version) !== this.projection.version) return false;
            const from = Number(now.position);
            const { events, position: next } = from === position
              ? page
              : await this.store.follow(from, batch, { db: tx, types });
            for (const e of events) await applyEvent(tx, this.projection, e);
            await tx.query(sql`update projection_state set position = ${next}, updated_at = now(),
              last_error = null where name = ${name}`);
            position = next;
            return true;
          });
          if (!folded) {
            // another version's tables are in place (a newer deploy rebuilt them)
            this.log.warn({ projection: name }, "projection tables are of another version");
            await sleep(lockRetryMs, signal);
          } else if (page.events.length < batch) {
            // caught up with the horizon: a busy log must not starve the hook
            await this.opts.whenCaughtUp?.(reserved, signal);
          }
        }
      } catch (err) {
        const e = err as { name?: string; code?: string };
        const delay = Math.min(maxRetryMs, retryMs * 2 ** failures++);
        // ids and codes only: a database error message may quote row values
        const fields = { projection: name, err: { name: e.name, code: e.code }, retryInMs: delay };
        if (err instanceof UnavailableError) {
          this.log.warn(
            fields,
            locked
              ? "projection worker lost its database connection and its lock"
              : "projection worker cannot reach the database",
          );
        } else {
          this.log.error(fields, "projection worker failed");
          await this.store.db.query(
            sql`update projection_state set last_error = ${
              `${e.name ?? "Error"} ${e.code ?? ""}`.trim()
            } where name = ${name}`,
          ).catch(() => {});
        }
        await sleep(delay, signal);
      } finally {
        if (locked) {
          heldInProcess.delete(name);
          await reserved?.query(
            sql`select pg_advisory_unlock(hashtext(${projectionLockName(name)}))`,
          )
            .catch(() => {});
        }
        await reserved?.release().catch(() => {});
      }
    }
  }
}
