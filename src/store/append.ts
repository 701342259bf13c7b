import { setImmediate } from "node:timers";
import { EventMetadata } from "../../events/metadata.ts";
import { ConcurrencyError, ConflictError, UnavailableError, ValidationError } from "../errors.ts";
import { applyEvent, handles } from "./apply.ts";
import type { Catalog } from "./catalog.ts";
import { type Db, pgCode, pgConstraint } from "./db.ts";
import { canonicalJson } from "./hash_chain.ts";
import type { FreshKey, PhiCodec } from "./phi_codec.ts";
import { streamVersion } from "./read.ts";
import { type Query, sql } from "./sql.ts";
import type { AppendResult, ExpectedVersion, NewEvent, Projection, StoredEvent } from "./types.ts";

export interface AppenderOptions {
  db: Db;
  catalog: Catalog;
  codec: PhiCodec;
  /** Inline projections: updated in the same transaction as each append. */
  inline: readonly Projection[];
  /** Upper bound of events committed in one group-commit transaction. */
  maxBatchEvents: number;
  /**
   * Group-commit batches sent before the earlier ones are acknowledged (at
   * least 1). A batch sent while another holds the append lock waits for it
   * inside PostgreSQL, so the lock passes to it at that commit instead of a
   * network round trip and a turn of the event loop later. 1 on PGlite (one
   * session: its queries run one at a time anyway).
   */
  inFlight: number;
  now: () => Date;
}

/** One stream's part of {@link Appender.appendMany}. */
export interface AppendRequest {
  streamId: string;
  expected: ExpectedVersion;
  events: readonly NewEvent[];
}

/** A batch must be retried unit by unit (a unit of several requests partly failed). */
class SplitBatch extends Error {}

/** #outcomes: a unit of several requests was partly appended (the transaction must roll back). */
const PARTIAL = Symbol("partial");

/** A batch of one unit, partly appended: its outcomes once rolled back. */
type Undo = { undo: Outcome[] };

/**
 * A Db for write-only projections (Projection.writeOnly): it keeps their
 * statements in `held`, in order, to be sent later, and answers each with
 * no rows at once.
 */
export const holder = (held: Query[]): Db => {
  const refuse = () => Promise.reject(new Error("a write-only projection only sends statements"));
  return {
    kind: "postgres",
    query: <T>(q: Query) => (held.push(q), Promise.resolve([] as T[])),
    batch: (qs: readonly Query[]) => (held.push(...qs), Promise.resolve(qs.map(() => []))),
    transaction: refuse,
    exec: refuse,
    reserve: refuse,
    close: refuse,
  };
};

/** The units of a batch (see Pending.unit), in order. */
const unitsOf = (batch: readonly Pending[]): Pending[][] => {
  const out: Pending[][] = [];
  for (let i = 0; i < batch.length; i += batch[i]!.unit.length) out.push(batch[i]!.unit);
  return out;
};

/** What an append may carry besides its events. */
export interface AppendOptions {
  /**
   * The data key of a subject that has none yet (PhiCodec.freshKey): the
   * events' PHI of that subject is sealed with it, and its `subject_keys`
   * row is inserted in the append's transaction if the append succeeds, so
   * the key is stored exactly when its first events are, without a commit
   * of its own. If the subject has a key by then, the append fails.
   */
  newKey?: FreshKey;
}

interface PreparedEvent {
  eventId: string;
  type: string;
  schemaVersion: number;
  plain: Record<string, unknown>;
  /** canonicalJson of the sealed payload: the stored data, as the hash covers it. */
  dataJson: string;
  /** The event's id, type and schema version as the hash's JSON writes them. */
  head: string;
}

interface Pending {
  streamId: string;
  expected: ExpectedVersion;
  events: PreparedEvent[];
  metadata: EventMetadata;
  /** A new subject key to store if this request's events are appended. */
  newKey: FreshKey | undefined;
  /**
   * The requests that are appended together or not at all (an appendMany's,
   * adjacent in the queue and never split between batches); [itself] alone
   * for a plain append.
   */
  unit: Pending[];
  /** JSON.stringify(streamId) and canonicalJson(metadata), as the hash covers them. */
  streamJson: string;
  metadataJson: string;
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
}

type Outcome = { ok: AppendResult } | { error: Error };

/** A row of `append_events` (migrations 10 and 12): one per request. */
interface AppendRow {
  ok: boolean;
  /** The stream's version after the append, or its current one on a conflict. */
  version: number;
  /** The head hash the request chained from (null for a new stream). */
  prev_hash: string | null;
  hashes: string[] | null;
  positions: (string | number)[] | null;
  txid: string | null;
}

/**
 * Told of each committed group-commit transaction: the types of the events it
 * appended, in order (metrics count them; types only, never data or ids).
 */
export type CommitListener = (types: readonly string[]) => void;

const yieldToCallers = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The default name PostgreSQL gave `unique (stream_id, stream_version)` in migration 1. */
export const STREAM_VERSION_CONSTRAINT = "events_stream_id_stream_version_key";

/** PostgreSQL's integer: stream versions are one. */
const INT_MAX = 2_147_483_647;

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
  /** A #pump loop is forming batches. */
  #pumping = false;
  /** Batches sent and not yet settled. */
  #inFlight = 0;
  readonly #listeners = new Set<CommitListener>();
  readonly #inlineTypes = new Map<string, boolean>();

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
    opts: AppendOptions = {},
  ): Promise<AppendResult> {
    return (await this.appendMany([{ streamId, expected, events }], metadata, opts))[0]!;
  }

  /** See `EventStore.appendMany`. */
  async appendMany(
    requests: readonly AppendRequest[],
    metadata: EventMetadata = {},
    opts: AppendOptions = {},
  ): Promise<AppendResult[]> {
    if (requests.length === 0) {
      throw new ValidationError("nothing to append", [{ path: "requests", message: "empty" }]);
    }
    if (requests.length > 1 && new Set(requests.map((r) => r.streamId)).size !== requests.length) {
      throw new ValidationError("one request per stream", [
        { path: "requests", message: "a stream appears twice" },
      ]);
    }
    for (const { streamId, expected, events } of requests) {
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
    const metadataJson = canonicalJson(meta.data);
    const unit: Pending[] = [];
    const results: Promise<AppendResult>[] = [];
    for (const [k, { streamId, expected, events }] of requests.entries()) {
      const prepared: PreparedEvent[] = [];
      for (const e of events) {
        const def = this.#o.catalog.get(e.type);
        const plain = this.#o.catalog.validate(e.type, e.data);
        const eventId = e.id ?? crypto.randomUUID();
        prepared.push({
          eventId,
          type: e.type,
          schemaVersion: def.version,
          plain,
          dataJson: canonicalJson(await this.#o.codec.sealPayload(def, plain, opts.newKey)),
          head: JSON.stringify(eventId) + "," + JSON.stringify(e.type) + "," + def.version,
        });
      }
      results.push(
        new Promise<AppendResult>((resolve, reject) => {
          unit.push({
            streamId,
            expected,
            events: prepared,
            metadata: meta.data,
            // stored once, with the unit (whose requests commit together or not at all)
            newKey: k === 0 ? opts.newKey : undefined,
            unit,
            streamJson: JSON.stringify(streamId),
            metadataJson,
            resolve,
            reject,
          });
        }),
      );
    }
    this.#queue.push(...unit);
    void this.#pump();
    // a unit is settled as one: every request with the same error, if any
    // (a lone request, the usual append, skips Promise.all: a measurable share of its cost)
    const out = results.length === 1 ? [await results[0]!] : await Promise.all(results);
    // committed with its row: later seals and reads of the subject find it cached
    if (opts.newKey) this.#o.codec.adopt(opts.newKey);
    return out;
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      // Let callers acknowledged by the previous batch queue their next append
      // first (a macrotask runs after their microtasks): batches stay full
      // under steady load instead of alternating between halves of the writers.
      while (
        (await yieldToCallers(), this.#queue.length > 0 && this.#inFlight < this.#o.inFlight)
      ) {
        // whole units only: a unit's requests commit together
        let n = 0, size = 0;
        while (n < this.#queue.length) {
          const unit = this.#queue[n]!.unit;
          const events = unit.length === 1
            ? unit[0]!.events.length
            : unit.reduce((a, p) => a + p.events.length, 0);
          if (n > 0 && size + events > this.#o.maxBatchEvents) break;
          size += events;
          n += unit.length;
        }
        const batch = this.#queue.splice(0, n);
        this.#inFlight++;
        // not awaited: the next batch may go out while this one waits for the
        // append lock or its commit; the positions still follow commit order
        // (the lock is held through COMMIT), whichever of them takes it first
        void this.#commit(batch)
          .catch((err) => {
            // #commit settles every caller itself; this is a last resort so that
            // no caller waits forever and the queue keeps moving
            for (const p of batch) p.reject(err);
          })
          .finally(() => {
            this.#inFlight--;
            if (this.#queue.length > 0) void this.#pump();
          });
      }
    } finally {
      this.#pumping = false;
    }
  }

  async #commit(batch: Pending[]): Promise<void> {
    let outcomes: Outcome[];
    try {
      outcomes = await this.#runBatch(batch);
    } catch (err) {
      const units = unitsOf(batch);
      if (units.length === 1) {
        // a unit of several requests cannot tell whose statement failed: the first answers
        const mapped = await this.#mapError(err, batch[0]!);
        for (const p of batch) p.reject(mapped);
        return;
      }
      // A lost connection leaves the commit in doubt: retrying could append twice.
      if (err instanceof UnavailableError) {
        for (const p of batch) p.reject(err);
        return;
      }
      // One request spoiled the shared transaction (e.g. an inline projection
      // refused it, or a unit partly failed its version checks): retry each
      // unit alone so only its callers see the failure.
      for (const unit of units) await this.#commit(unit);
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
    // AppendOptions.newKey for a subject that has a key by now
    if (pgCode(err) === "23505" && pgConstraint(err) === "subject_keys_pkey") {
      return new ConflictError("the subject has a data key already");
    }
    return err;
  }

  /**
   * One group-commit batch. The `append_events` function (migrations 10, 12)
   * does all of it in one statement: the append lock, the stream heads, each
   * request's version check, the hash chain and the insert. Sent alone it is
   * its own transaction, so a batch is one network round trip. When an
   * inline projection folds any of the batch's events, it must see the rows
   * in the same transaction: on PostgreSQL BEGIN and the call go out
   * together on a reserved connection, then the projections' statements,
   * then COMMIT; PGlite, one session shared by every caller, uses its own
   * transaction API to keep other queries out. A batch that stores new
   * subject keys, or holds a unit of several requests (appendMany), takes
   * the same path: the keys go in with COMMIT, and a unit that was only
   * partly appended rolls the batch back (then each unit is retried alone).
   */
  async #runBatch(batch: Pending[]): Promise<Outcome[]> {
    const db = this.#o.db;
    const recordedAt = this.#o.now();
    const call = this.#call(batch, recordedAt);
    const inline = this.#o.inline.length > 0 &&
      batch.some((p) => p.events.some((e) => this.#inline(e.type)));
    const keyed = batch.some((p) => p.newKey);
    const grouped = batch.some((p) => p.unit.length > 1);
    if (!inline && !keyed && !grouped) {
      // no unit of several requests: never PARTIAL
      return this.#outcomes(batch, await db.query<AppendRow>(call), recordedAt) as Outcome[];
    }
    /** After the call, in its transaction: the outcomes, or why it must roll back. */
    const settle = async (tx: Db, rows: AppendRow[]): Promise<Outcome[] | Undo> => {
      const outcomes = this.#outcomes(batch, rows, recordedAt);
      if (outcomes === PARTIAL) {
        // some of a unit's requests were appended and some not: none may stay
        if (unitsOf(batch).length > 1) throw new SplitBatch();
        return { undo: this.#outcomes(batch, rows, recordedAt, true) as Outcome[] };
      }
      if (inline) await this.#project(tx, batch, recordedAt, rows);
      return outcomes;
    };
    if (db.kind !== "postgres") {
      let undo: Outcome[] | undefined;
      try {
        return await db.transaction(async (tx) => {
          const rows = await tx.query<AppendRow>(call);
          const out = await settle(tx, rows);
          if ("undo" in out) {
            undo = out.undo;
            throw new SplitBatch(); // rolls the transaction back
          }
          const keys = this.#keys(batch, rows);
          if (keys) await tx.query(keys);
          return out;
        });
      } catch (err) {
        if (undo) return undo;
        throw err;
      }
    }
    const conn = await db.reserve();
    try {
      const [, answer] = await conn.batch([sql`begin`, call]);
      const rows = answer as unknown as AppendRow[];
      // write-only projections' statements are held back and sent with COMMIT
      const held: Query[] = [];
      const out = await settle(this.#writeOnly(batch) ? holder(held) : conn, rows);
      if ("undo" in out) {
        await conn.query(sql`rollback`);
        return out.undo;
      }
      // the keys go out with COMMIT too; if a statement fails, the server rolls back at COMMIT
      const keys = this.#keys(batch, rows);
      await conn.batch([...held, ...(keys ? [keys] : []), sql`commit`]);
      return out;
    } catch (err) {
      await conn.query(sql`rollback`).catch(() => {});
      throw err;
    } finally {
      await conn.release();
    }
  }

  /**
   * The insert of the new subject keys of the batch's requests that were
   * appended (null if none), in the batch's transaction: a request that
   * failed its version check leaves no key behind. No ON CONFLICT: a subject
   * that has a key already fails the statement, hence the batch (then each
   * request is retried alone and only that one fails), so nothing is ever
   * stored sealed with a key that is not the subject's stored one. (Which
   * keys go in is decided here, from the append's rows, not by a join in
   * SQL: a cached generic plan of such a join, made while `events` was
   * small, scanned the whole table.)
   */
  #keys(batch: Pending[], rows: readonly AppendRow[]): Query | null {
    const subjects: string[] = [], wrapped: string[] = [];
    batch.forEach((p, i) => {
      if (!p.newKey || !rows[i]!.ok) return;
      subjects.push(p.newKey.subject);
      wrapped.push(p.newKey.wrapped);
    });
    if (subjects.length === 0) return null;
    return sql`insert into subject_keys (subject_id, wrapped_key)
      select * from unnest(${subjects}::text[], ${wrapped}::text[])`;
  }

  /** Whether every inline projection that folds any of the batch's events is write-only. */
  #writeOnly(batch: Pending[]): boolean {
    return this.#o.inline.every((proj) =>
      proj.writeOnly === true || !batch.some((p) => p.events.some((e) => handles(proj, e.type)))
    );
  }

  /** Whether an inline projection folds events of `type` (cached per type). */
  #inline(type: string): boolean {
    let v = this.#inlineTypes.get(type);
    if (v === undefined) {
      v = this.#o.inline.some((proj) => handles(proj, type));
      this.#inlineTypes.set(type, v);
    }
    return v;
  }

  /**
   * The `append_events` call for a batch (`append_event` for a batch of one
   * event, a lone writer's): every JSON text the hash covers, encoded here.
   */
  #call(batch: Pending[], recordedAt: Date): Query {
    const iso = recordedAt.toISOString();
    const at = "," + JSON.stringify(iso);
    const expectedOf = (p: Pending) =>
      // a version beyond integer's range is never a stream's: any unreachable one conflicts alike
      p.expected === "any" ? -1 : p.expected === "no_stream" ? 0 : Math.min(p.expected, INT_MAX);
    if (batch.length === 1 && batch[0]!.events.length === 1) {
      const p = batch[0]!, e = p.events[0]!;
      return sql`select ok, version, prev_hash, hashes, positions, txid from append_event(
        ${p.streamId}, ${p.streamJson}, ${expectedOf(p)}::integer, ${p.metadataJson},
        ${e.eventId}::uuid, ${e.type}, ${e.schemaVersion}::integer, ${e.head + at}, ${e.dataJson},
        ${iso}::text::timestamptz)`;
    }
    const streams: string[] = [], streamJson: string[] = [], expected: number[] = [];
    const counts: number[] = [], metadata: string[] = [];
    const ids: string[] = [], types: string[] = [], versions: number[] = [];
    const heads: string[] = [], data: string[] = [];
    for (const p of batch) {
      streams.push(p.streamId);
      streamJson.push(p.streamJson);
      expected.push(expectedOf(p));
      counts.push(p.events.length);
      metadata.push(p.metadataJson);
      for (const e of p.events) {
        ids.push(e.eventId);
        types.push(e.type);
        versions.push(e.schemaVersion);
        heads.push(e.head + at);
        data.push(e.dataJson);
      }
    }
    return sql`select ok, version, prev_hash, hashes, positions, txid from append_events(
      ${streams}::text[], ${streamJson}::text[], ${expected}::integer[], ${counts}::integer[],
      ${metadata}::text[], ${ids}::uuid[], ${types}::text[], ${versions}::integer[],
      ${heads}::text[], ${data}::text[], ${iso}::text::timestamptz)`;
  }

  /** Each request's outcome from the function's rows (one per request, in order). */
  #outcomes(
    batch: Pending[],
    rows: readonly AppendRow[],
    recordedAt: Date,
    /** A unit partly appended is being rolled back: its requests fail too. */
    undo = false,
  ): Outcome[] | typeof PARTIAL {
    const outcomes: Outcome[] = batch.map((p, i) => {
      const r = rows[i]!;
      const version = Number(r.version);
      if (!r.ok) return { error: new ConcurrencyError(p.streamId, p.expected, version) };
      return {
        ok: {
          streamId: p.streamId,
          version,
          positions: r.positions!.map(Number),
          recordedAt,
          data: p.events.map((e) => e.plain),
        },
      };
    });
    // a unit stands or falls as one: a request whose own check passed fails
    // with the unit's first conflict
    for (let i = 0; i < batch.length; i += batch[i]!.unit.length) {
      const n = batch[i]!.unit.length;
      if (n === 1) continue;
      const mine = outcomes.slice(i, i + n);
      const failed = mine.find((o): o is { error: Error } => "error" in o);
      if (!failed) continue;
      if (!undo && mine.some((o) => "ok" in o)) return PARTIAL;
      for (let k = i; k < i + n; k++) outcomes[k] = failed;
    }
    return outcomes;
  }

  /**
   * Folds the batch's appended events into the inline projections, inside its
   * transaction: event by event through the handlers, except that a
   * projection with a `foldBatch` takes all of its events of the batch in one
   * call (a few set-based statements instead of a statement or more per
   * event, while the append lock is held). Such a projection touches only its
   * own tables (a rebuild folds it alone), so folding it after the others is
   * the same as folding it between them.
   */
  async #project(
    tx: Db,
    batch: Pending[],
    recordedAt: Date,
    rows: readonly AppendRow[],
  ): Promise<void> {
    const stored: StoredEvent[] = [];
    for (const [i, p] of batch.entries()) {
      const r = rows[i]!;
      if (!r.ok) continue;
      const positions = r.positions!.map(Number);
      const first = Number(r.version) - p.events.length;
      for (const [k, e] of p.events.entries()) {
        stored.push({
          globalPosition: positions[k]!,
          streamId: p.streamId,
          streamVersion: first + k + 1,
          eventId: e.eventId,
          type: e.type,
          schemaVersion: e.schemaVersion,
          data: e.plain,
          metadata: p.metadata,
          recordedAt,
          transactionId: r.txid!,
          prevHash: k === 0 ? r.prev_hash : r.hashes![k - 1]!,
          hash: r.hashes![k]!,
          erasedFields: [],
        });
      }
    }
    const batched = new Map<Projection, StoredEvent[]>();
    for (const proj of this.#o.inline) {
      if (!proj.foldBatch) continue;
      const mine = stored.filter((e) => handles(proj, e.type));
      if (mine.length > 1) batched.set(proj, mine);
    }
    for (const e of stored) {
      for (const proj of this.#o.inline) {
        if (!batched.has(proj)) await applyEvent(tx, proj, e);
      }
    }
    for (const [proj, events] of batched) await proj.foldBatch!(tx, events);
  }
}
