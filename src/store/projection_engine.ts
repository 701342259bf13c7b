import type { Logger } from "pino";
import { UnavailableError } from "../errors.ts";
import { applyEvent } from "./apply.ts";
import type { Db } from "./db.ts";
import type { EventStore } from "./event_store.ts";
import { LOCK_APPEND, projectionLockName } from "./locks.ts";
import { ident, sql } from "./sql.ts";
import type { Projection } from "./types.ts";

const REPLAY_BATCH = 2000;

/**
 * Creates each projection's tables and registers it. A projection whose
 * version changed since its rows were built is rebuilt from the log (inline
 * ones now, async ones by resetting their checkpoint for the worker).
 */
export const setupProjections = async (
  store: EventStore,
  projections: readonly Projection[],
): Promise<void> => {
  for (const p of projections) {
    await store.db.exec(p.setup);
    const [state] = await store.db.query<{ version: number }>(
      sql`select version from projection_state where name = ${p.name}`,
    );
    if (state && Number(state.version) === p.version) continue;
    if (!state && p.mode === "async") {
      await store.db.query(sql`insert into projection_state (name, version, mode)
        values (${p.name}, ${p.version}, ${p.mode}) on conflict (name) do nothing`);
      continue;
    }
    await rebuildProjection(store, p);
  }
};

/**
 * The event types a projection folds, as its handler map declares them;
 * undefined (every type) when it has an `anyEvent` handler. Replays and the
 * worker read only these: other events are skipped in SQL, never decoded.
 */
export const handledTypes = (p: Projection): readonly string[] | undefined =>
  p.anyEvent ? undefined : Object.keys(p.handlers);

export { applyEvent };

/**
 * Replays the whole log into a projection from position 0, in one
 * transaction that holds the append lock: no append lands half-way, and the
 * result is the same rows a fresh database would build. Readers see the old
 * rows until it commits. Appends wait for the duration.
 */
export const rebuildProjection = async (
  store: EventStore,
  p: Projection,
  onProgress?: (done: number, total: number) => void,
): Promise<number> => {
  const reserved = await store.db.reserve();
  try {
    if (p.mode === "async") {
      // the running worker (in any instance) holds this lock; wait for it
      await reserved.query(sql`select pg_advisory_lock(hashtext(${projectionLockName(p.name)}))`);
    }
    return await reserved.transaction(async (tx) => {
      await tx.query(sql`select pg_advisory_xact_lock(${LOCK_APPEND})`);
      for (const t of p.tables) await tx.query(sql`truncate ${ident(t)}`);
      const types = handledTypes(p);
      const [c] = await tx.query<{ n: string | number }>(sql`select count(*) as n from events
        ${types ? sql`where type = any(${types}::text[])` : sql``}`);
      const total = Number(c?.n ?? 0);
      let position = 0, done = 0;
      onProgress?.(0, total);
      for (;;) {
        // the append lock is held: no append is in flight, so no horizon is needed
        const page = await store.follow(position, REPLAY_BATCH, { db: tx, horizon: false, types });
        for (const e of page.events) await applyEvent(tx, p, e);
        // past skipped events too: the checkpoint ends at the head of the log
        position = page.position;
        done += page.events.length;
        onProgress?.(done, total);
        if (page.events.length < REPLAY_BATCH) break;
      }
      await tx.query(sql`insert into projection_state (name, version, mode, position, updated_at)
        values (${p.name}, ${p.version}, ${p.mode}, ${position}, now())
        on conflict (name) do update set version = excluded.version, mode = excluded.mode,
          position = excluded.position, updated_at = now(), last_error = null`);
      return done;
    });
  } finally {
    if (p.mode === "async") {
      await reserved.query(sql`select pg_advisory_unlock(hashtext(${projectionLockName(p.name)}))`)
        .catch(() => {});
    }
    await reserved.release();
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
          const { events, position: next } = await this.store.follow(position, batch, {
            db: reserved,
            types,
          });
          if (events.length === 0 && next === position) {
            await sleep(pollMs, signal);
            continue;
          }
          // skipped events move the checkpoint too, folded ones with it in one transaction
          await reserved.transaction(async (tx) => {
            for (const e of events) await applyEvent(tx, this.projection, e);
            await tx.query(sql`update projection_state set position = ${next}, updated_at = now(),
              last_error = null where name = ${name}`);
          });
          position = next;
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
