import type { EventMetadata } from "../../events/metadata.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { grantDecider } from "../domain/grant.ts";
import { UnavailableError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { ReservedDb } from "../store/db.ts";
import type { EventStore } from "../store/event_store.ts";
import { GRANT_SWEEPER_LOCK } from "../store/locks.ts";
import { sql } from "../store/sql.ts";

/** Who appends AccessGrantExpired: no user, the system. */
const SWEEPER_METADATA: EventMetadata = { actorId: "system:grant-sweeper", actorRole: "system" };

/**
 * One sweep: appends AccessGrantExpired for every active grant whose
 * `expires_at` is at or before `now`, in pages of `batch`. Each end is
 * decided on the grant's origin stream, so a revocation or another sweeper
 * in between makes this one decide nothing: one event per grant, however
 * many sweep. Returns how many it appended.
 */
export const sweepExpiredGrants = async (
  store: EventStore,
  now: Date,
  opts: { batch?: number } = {},
): Promise<number> => {
  const batch = opts.batch ?? 100;
  let appended = 0;
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const rows = await store.db.query<{ id: string; stream_id: string }>(
      sql`select id::text as id, stream_id from access_grants
        where status = 'active' and expires_at <= ${now}::timestamptz and id > ${after}::uuid
        order by id limit ${batch}`,
    );
    for (const g of rows) {
      const r = await handleCommand(store, grantDecider(g.id), g.stream_id, {
        type: "ExpireGrant",
        grantId: g.id,
        now,
      }, { metadata: SWEEPER_METADATA, unseal: false, retry: true });
      appended += r.events.length;
    }
    if (rows.length < batch) return appended;
    after = rows.at(-1)!.id;
  }
};

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

/**
 * PGlite is one session, where advisory locks are re-entrant: the guard is
 * in process, per database.
 */
const heldOnPglite = new WeakSet<object>();

/**
 * Sweeps expired grants now and then. As the async projection workers do
 * (src/store/projection_engine.ts), only one sweeper is active across app
 * instances: it holds a session advisory lock on a reserved connection; the
 * others try again every `lockRetryMs`. When the database goes away (and
 * the lock with it) it logs that, backs off (doubling up to `maxRetryMs`)
 * and takes the lock again. Expiry itself never waits for it: the policy
 * compares `expires_at` with its clock; the sweep records the end.
 */
export class GrantSweeper {
  readonly #abort = new AbortController();
  #done: Promise<void> | null = null;

  constructor(
    readonly store: EventStore,
    readonly log: Logger,
    readonly opts: {
      now?: () => Date;
      intervalMs?: number;
      lockRetryMs?: number;
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
    const { intervalMs = 30_000, lockRetryMs = 10_000 } = this.opts;
    const { retryMs = 500, maxRetryMs = 30_000 } = this.opts;
    const now = this.opts.now ?? (() => new Date());
    const signal = this.#abort.signal;
    const lock = sql`hashtext(${GRANT_SWEEPER_LOCK})`;
    let failures = 0;
    while (!signal.aborted) {
      let reserved: ReservedDb | null = null;
      let locked = false;
      try {
        reserved = await this.store.db.reserve();
        const [r] = await reserved.query<{ ok: boolean }>(
          sql`select pg_try_advisory_lock(${lock}) as ok`,
        );
        const db = this.store.db;
        locked = !!r?.ok && !(reserved.kind === "pglite" && heldOnPglite.has(db));
        if (!locked) {
          if (r?.ok) await reserved.query(sql`select pg_advisory_unlock(${lock})`);
          await reserved.release();
          reserved = null;
          failures = 0;
          await sleep(lockRetryMs, signal);
          continue;
        }
        if (reserved.kind === "pglite") heldOnPglite.add(db);
        this.log.info({ worker: "grant-sweeper" }, "grant sweeper active");
        failures = 0;
        while (!signal.aborted) {
          const ended = await sweepExpiredGrants(this.store, now());
          if (ended > 0) this.log.info({ worker: "grant-sweeper", ended }, "grants expired");
          // the lock lives with this session: a lost connection must show here, not go unseen
          await reserved.query(sql`select 1`);
          await sleep(intervalMs, signal);
        }
      } catch (err) {
        const e = err as { name?: string; code?: string };
        const delay = Math.min(maxRetryMs, retryMs * 2 ** failures++);
        // ids and codes only: a database error message may quote row values
        const fields = { worker: "grant-sweeper", err: { name: e.name, code: e.code } };
        if (err instanceof UnavailableError) {
          this.log.warn({ ...fields, retryInMs: delay }, "grant sweeper cannot reach the database");
        } else {
          this.log.error({ ...fields, retryInMs: delay }, "grant sweeper failed");
        }
        await sleep(delay, signal);
      } finally {
        if (locked) {
          if (reserved?.kind === "pglite") heldOnPglite.delete(this.store.db);
          await reserved?.query(sql`select pg_advisory_unlock(${lock})`).catch(() => {});
        }
        await reserved?.release().catch(() => {});
      }
    }
  }
}
