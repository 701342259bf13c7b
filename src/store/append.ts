import { setImmediate } from "node:timers";
import { EventMetadata } from "../../events/metadata.ts";
import { ConcurrencyError, UnavailableError, ValidationError } from "../errors.ts";
import { applyEvent, handles } from "./apply.ts";
import type { Catalog } from "./catalog.ts";
import { type Db, pgCode, pgConstraint } from "./db.ts";
import { eventHash } from "./hash_chain.ts";
import { LOCK_APPEND } from "./locks.ts";
import type { PhiCodec } from "./phi_codec.ts";
import { streamVersion } from "./read.ts";
import { sql } from "./sql.ts";
import type { AppendResult, ExpectedVersion, NewEvent, Projection, StoredEvent } from "./types.ts";

export interface AppenderOptions {
  db: Db;
  catalog: Catalog;
  codec: PhiCodec;
  /** Inline projections: updated in the same transaction as each append. */
  inline: readonly Projection[];
  /** Upper bound of events committed in one group-commit transaction. */
  maxBatchEvents: number;
  now: () => Date;
}

interface PreparedEvent {
  eventId: string;
  type: string;
  schemaVersion: number;
  plain: Record<string, unknown>;
  sealed: Record<string, unknown>;
}

interface Pending {
  streamId: string;
  expected: ExpectedVersion;
  events: PreparedEvent[];
  metadata: EventMetadata;
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
}

type Outcome = { ok: AppendResult } | { error: Error };

/**
 * Told of each committed group-commit transaction: the types of the events it
 * appended, in order (metrics count them; types only, never data or ids).
 */
export type CommitListener = (types: readonly string[]) => void;

const yieldToCallers = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The default name PostgreSQL gave `unique (stream_id, stream_version)` in migration 1. */
export const STREAM_VERSION_CONSTRAINT = "events_stream_id_stream_version_key";

const STREAM_ID = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$/;

/**
 * The write side of the log. Appends are validated against the catalogue,
 * PHI is sealed, and then the append joins a queue: concurrent appends are
 * committed together in one transaction (group commit) while each caller
 * still gets its own optimistic-concurrency check and acknowledgement.
 * Append transactions hold an advisory lock so global positions follow
 * commit order.
 */
export class Appender {
  readonly #o: AppenderOptions;
  #queue: Pending[] = [];
  #running = false;
  readonly #listeners = new Set<CommitListener>();

  constructor(opts: AppenderOptions) {
    this.#o = opts;
  }

  /** See `EventStore.onCommit`. */
  onCommit(listener: CommitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** See `EventStore.append`. */
  async append(
    streamId: string,
    expected: ExpectedVersion,
    events: readonly NewEvent[],
    metadata: EventMetadata = {},
  ): Promise<AppendResult> {
    if (!STREAM_ID.test(streamId)) {
      throw new ValidationError("invalid stream id", [{ path: "streamId", message: "invalid" }]);
    }
    if (typeof expected === "number" && (!Number.isInteger(expected) || expected < 0)) {
      throw new ValidationError("invalid expected version", [
        { path: "expectedVersion", message: "must be a non-negative integer" },
      ]);
    }
    if (events.length === 0) {
      throw new ValidationError("nothing to append", [{ path: "events", message: "empty" }]);
    }
    const meta = EventMetadata.safeParse(metadata);
    if (!meta.success) {
      throw new ValidationError(
        "invalid event metadata",
        meta.error.issues.map((i) => ({
          path: `metadata.${i.path.join(".")}`,
          message: i.message,
        })),
      );
    }
    const prepared: PreparedEvent[] = [];
    for (const e of events) {
      const def = this.#o.catalog.get(e.type);
      const plain = this.#o.catalog.validate(e.type, e.data);
      prepared.push({
        eventId: e.id ?? crypto.randomUUID(),
        type: e.type,
        schemaVersion: def.version,
        plain,
        sealed: await this.#o.codec.sealPayload(def, plain),
      });
    }
    return await new Promise<AppendResult>((resolve, reject) => {
      this.#queue.push({
        streamId,
        expected,
        events: prepared,
        metadata: meta.data,
        resolve,
        reject,
      });
      void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      // Let callers acknowledged by the previous batch queue their next append
      // first (a macrotask runs after their microtasks): batches stay full
      // under steady load instead of alternating between halves of the writers.
      while ((await yieldToCallers(), this.#queue.length > 0)) {
        let n = 0, size = 0;
        while (
          n < this.#queue.length &&
          (n === 0 || size + this.#queue[n]!.events.length <= this.#o.maxBatchEvents)
        ) {
          size += this.#queue[n]!.events.length;
          n++;
        }
        const batch = this.#queue.splice(0, n);
        try {
          await this.#commit(batch);
        } catch (err) {
          // #commit settles every caller itself; this is a last resort so that
          // no caller waits forever and the queue keeps moving
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.#running = false;
    }
  }

  async #commit(batch: Pending[]): Promise<void> {
    let outcomes: Outcome[];
    try {
      outcomes = await this.#runBatch(batch);
    } catch (err) {
      if (batch.length === 1) {
        batch[0]!.reject(await this.#mapError(err, batch[0]!));
        return;
      }
      // A lost connection leaves the commit in doubt: retrying could append twice.
      if (err instanceof UnavailableError) {
        for (const p of batch) p.reject(err);
        return;
      }
      // One request spoiled the shared transaction (e.g. an inline projection
      // refused it): retry each alone so only that caller sees the failure.
      for (const p of batch) await this.#commit([p]);
      return;
    }
    batch.forEach((p, i) => {
      const o = outcomes[i]!;
      if ("ok" in o) p.resolve(o.ok);
      else p.reject(o.error);
    });
    if (this.#listeners.size > 0) {
      const types = batch.flatMap((p, i) =>
        "ok" in outcomes[i]! ? p.events.map((e) => e.type) : []
      );
      if (types.length > 0) {
        for (const l of this.#listeners) {
          // an observer never fails an append that is already committed
          try {
            l(types);
          } catch { /* ignored */ }
        }
      }
    }
  }

  async #mapError(err: unknown, p: Pending): Promise<unknown> {
    // unique (stream_id, stream_version): a writer outside this process got there first.
    // Any other unique violation (an inline projection's index) is not a version conflict.
    if (pgCode(err) === "23505" && pgConstraint(err) === STREAM_VERSION_CONSTRAINT) {
      const actual = await streamVersion(this.#o.db, p.streamId).catch(() => -1);
      return new ConcurrencyError(p.streamId, p.expected, actual);
    }
    return err;
  }

  /**
   * One group-commit transaction. On PostgreSQL it drives BEGIN and COMMIT
   * itself on a reserved connection so that statements can be pipelined:
   * BEGIN, the lock and the head lookup go out together, and so do the insert
   * and COMMIT when no inline projection must see the new rows first. That
   * is two network round trips per batch. PGlite, one session shared by every
   * caller, needs its own transaction API to keep other queries out.
   */
  async #runBatch(batch: Pending[]): Promise<Outcome[]> {
    const db = this.#o.db;
    if (db.kind !== "postgres") {
      return await db.transaction((tx) => this.#applyBatch(tx, batch, false));
    }
    const conn = await db.reserve();
    try {
      return await this.#applyBatch(conn, batch, true);
    } catch (err) {
      await conn.query(sql`rollback`).catch(() => {});
      throw err;
    } finally {
      await conn.release();
    }
  }

  async #applyBatch(tx: Db, batch: Pending[], ownTransaction: boolean): Promise<Outcome[]> {
    const streams = [...new Set(batch.map((p) => p.streamId))];
    const heads = new Map<string, { version: number; hash: string }>();
    // Sent together (postgres.js pipelines them): the server runs them in
    // order, and the head lookup takes its snapshot only once the lock is held.
    const opened = await tx.batch([
      ...(ownTransaction ? [sql`begin`] : []),
      sql`select pg_advisory_xact_lock(${LOCK_APPEND})`,
      // one backward index probe per stream for its last event
      sql`select s.stream_id, e.stream_version, e.hash
        from unnest(${streams}::text[]) as s(stream_id)
        cross join lateral (select stream_version, hash from events
          where events.stream_id = s.stream_id order by stream_version desc limit 1) as e`,
    ]);
    for (const r of opened.at(-1)!) {
      heads.set(r.stream_id as string, {
        version: Number(r.stream_version),
        hash: r.hash as string,
      });
    }

    const recordedAt = this.#o.now();
    const rows: Record<string, unknown>[] = [];
    const outcomes: Outcome[] = [];
    const accepted: { p: Pending; first: number }[] = [];
    for (const p of batch) {
      const head = heads.get(p.streamId);
      const current = head?.version ?? 0;
      const ok = p.expected === "any" ||
        (p.expected === "no_stream" ? current === 0 : p.expected === current);
      if (!ok) {
        outcomes.push({ error: new ConcurrencyError(p.streamId, p.expected, current) });
        continue;
      }
      let prevHash = head?.hash ?? null;
      let version = current;
      accepted.push({ p, first: rows.length });
      for (const e of p.events) {
        version++;
        const hash = eventHash({
          streamId: p.streamId,
          streamVersion: version,
          eventId: e.eventId,
          type: e.type,
          schemaVersion: e.schemaVersion,
          data: e.sealed,
          metadata: p.metadata,
          recordedAt,
          prevHash,
        });
        rows.push({
          ord: rows.length,
          stream_id: p.streamId,
          stream_version: version,
          event_id: e.eventId,
          type: e.type,
          schema_version: e.schemaVersion,
          data: e.sealed,
          metadata: p.metadata,
          recorded_at: recordedAt.toISOString(),
          prev_hash: prevHash,
          hash,
        });
        prevHash = hash;
      }
      heads.set(p.streamId, { version, hash: prevHash! });
      outcomes.push({ ok: { streamId: p.streamId, version, positions: [] } });
    }
    if (rows.length === 0) {
      if (ownTransaction) await tx.query(sql`commit`);
      return outcomes;
    }

    // Text casts kept on purpose (issue 11 item 9). tests/bench/native_params_bench.ts,
    // median of paired ratios new/old for 50 single-event appends, two runs:
    // rows bound natively as jsonb 1.05-1.07 on PostgreSQL, 1.04-1.05 on
    // PGlite; with recorded_at bound once as a Date too 1.06-1.08 / 1.08-1.09;
    // recorded_at alone as a Date 1.02-1.05 / 1.04 (A/A noise: 0.99-1.01).
    // Single appends are the common case; batches of 100 and 1000 events
    // with one Date were 3-10 % faster.
    const insert =
      sql`insert into events (stream_id, stream_version, event_id, type, schema_version, data,
          metadata, recorded_at, prev_hash, hash)
        select x.stream_id, x.stream_version, x.event_id, x.type, x.schema_version, x.data,
          x.metadata, x.recorded_at, x.prev_hash, x.hash
        from jsonb_to_recordset(${JSON.stringify(rows)}::text::jsonb) as x(ord int,
          stream_id text, stream_version int, event_id uuid, type text, schema_version int,
          data jsonb, metadata jsonb, recorded_at timestamptz, prev_hash text, hash text)
        order by x.ord
        returning global_position, transaction_id::text as transaction_id`;
    const inline = accepted.some(({ p }) =>
      p.events.some((e) => this.#o.inline.some((proj) => handles(proj, e.type)))
    );
    const inserted =
      (ownTransaction && !inline
        ? (await tx.batch([insert, sql`commit`]))[0]!
        : await tx.query(insert)) as { global_position: string | number; transaction_id: string }[];
    // identity values are assigned in insertion order, which follows `order by x.ord`
    const positions = inserted.map((r) => Number(r.global_position)).sort((a, b) => a - b);
    const txid = inserted[0]!.transaction_id;

    for (const { p, first } of accepted) {
      const outcome = outcomes[batch.indexOf(p)] as { ok: AppendResult };
      outcome.ok.positions = positions.slice(first, first + p.events.length);
      for (const [i, e] of p.events.entries()) {
        const row = rows[first + i]!;
        const stored: StoredEvent = {
          globalPosition: positions[first + i]!,
          streamId: p.streamId,
          streamVersion: row.stream_version as number,
          eventId: e.eventId,
          type: e.type,
          schemaVersion: e.schemaVersion,
          data: e.plain,
          metadata: p.metadata,
          recordedAt,
          transactionId: txid,
          prevHash: row.prev_hash as string | null,
          hash: row.hash as string,
          erasedFields: [],
        };
        for (const proj of this.#o.inline) await applyEvent(tx, proj, stored);
      }
    }
    if (ownTransaction && inline) await tx.query(sql`commit`);
    return outcomes;
  }
}
