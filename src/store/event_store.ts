import type { EventMetadata } from "../../events/metadata.ts";
import { Appender, type AppendOptions, type AppendRequest, type CommitListener } from "./append.ts";
import type { Catalog } from "./catalog.ts";
import type { Db } from "./db.ts";
import { follow, followFolded, type FollowOptions } from "./follow.ts";
import type { PhiCodec } from "./phi_codec.ts";
import * as read from "./read.ts";
import type { Query } from "./sql.ts";
import type {
  AppendResult,
  ExpectedVersion,
  FoldedEvent,
  NewEvent,
  Projection,
  StoredEvent,
} from "./types.ts";

export { type AppendOptions, type AppendRequest, STREAM_VERSION_CONSTRAINT } from "./append.ts";
export type { ReadAllOptions } from "./read.ts";

export interface EventStoreOptions {
  db: Db;
  catalog: Catalog;
  codec: PhiCodec;
  /**
   * Destroys a subject's key in the append that records `SubjectKeyDestroyed`
   * (`subjectKeyShredder(codec)` from shred.ts): an inline projection that
   * always runs first. Required, so that no store appends erasures that
   * leave the key in place.
   */
  shredder: Projection;
  /** Inline projections: updated in the same transaction as each append. */
  projections?: readonly Projection[];
  /** Upper bound of events committed in one group-commit transaction. */
  maxBatchEvents?: number;
  /** Group-commit batches in flight at once on PostgreSQL (default 2; PGlite: 1). */
  appendsInFlight?: number;
  now?: () => Date;
}

/**
 * The append-only event log: appends (append.ts, group commit), reads
 * (read.ts) and followers of the whole log (follow.ts) behind one object.
 */
export class EventStore implements read.LogReader {
  readonly db: Db;
  readonly catalog: Catalog;
  readonly codec: PhiCodec;
  readonly #appender: Appender;

  constructor(opts: EventStoreOptions) {
    this.db = opts.db;
    this.catalog = opts.catalog;
    this.codec = opts.codec;
    this.#appender = new Appender({
      db: opts.db,
      catalog: opts.catalog,
      codec: opts.codec,
      inline: [opts.shredder, ...(opts.projections ?? []).filter((p) => p.mode === "inline")],
      maxBatchEvents: opts.maxBatchEvents ?? 1000,
      inFlight: opts.db.kind === "postgres" ? Math.max(1, opts.appendsInFlight ?? 2) : 1,
      now: opts.now ?? (() => new Date()),
    });
  }

  /**
   * Appends events to a stream atomically. Throws {@link ConcurrencyError}
   * when the stream is not at `expected`, a ValidationError for an unknown
   * type or invalid payload; in both cases nothing is written. `opts.newKey`
   * stores a new subject's data key with the events (see AppendOptions).
   */
  append(
    streamId: string,
    expected: ExpectedVersion,
    events: readonly NewEvent[],
    metadata: EventMetadata = {},
    opts: AppendOptions = {},
  ): Promise<AppendResult> {
    return this.#appender.append(streamId, expected, events, metadata, opts);
  }

  /**
   * Appends to several streams (each at most once) in one transaction: all
   * of the requests or none. If a stream is not at its request's expected
   * version, nothing is written and every request fails with the
   * {@link ConcurrencyError} of the first such stream. The requests go in
   * one group-commit batch, so a caller's multi-stream write costs one
   * batch's turn, not one per stream. `opts` as in {@link append}.
   */
  appendMany(
    requests: readonly AppendRequest[],
    metadata: EventMetadata = {},
    opts: AppendOptions = {},
  ): Promise<AppendResult[]> {
    return this.#appender.appendMany(requests, metadata, opts);
  }

  /**
   * Calls `listener` after each committed append transaction with the types
   * of the events it wrote (this process's appends only). Returns an unsubscribe.
   */
  onCommit(listener: CommitListener): () => void {
    return this.#appender.onCommit(listener);
  }

  /** The stream's current version (0 when it has no events). */
  streamVersion(streamId: string): Promise<number> {
    return read.streamVersion(this.db, streamId);
  }

  /** See {@link read.readStream}. */
  readStream(
    streamId: string,
    opts: { asOf?: Date; unseal?: boolean } = {},
  ): Promise<StoredEvent[]> {
    return read.readStream(this, streamId, opts);
  }

  /** See {@link read.readStreams}. */
  readStreams(
    streams: Query,
    opts: { unseal?: boolean } = {},
  ): Promise<Map<string, StoredEvent[]>> {
    return read.readStreams(this, streams, opts);
  }

  /** See {@link read.readAll}. */
  readAll(
    afterPosition: number,
    limit: number,
    opts: read.ReadAllOptions = {},
  ): Promise<StoredEvent[]> {
    return read.readAll(this, afterPosition, limit, opts);
  }

  /** See {@link follow}. */
  follow(
    afterPosition: number,
    limit: number,
    opts: FollowOptions = {},
  ): Promise<{ events: StoredEvent[]; position: number }> {
    return follow(this, afterPosition, limit, opts);
  }

  /** See {@link followFolded}. */
  followFolded(
    afterPosition: number,
    limit: number,
    opts: FollowOptions = {},
  ): Promise<{ events: FoldedEvent[]; position: number }> {
    return followFolded(this, afterPosition, limit, opts);
  }

  /** The highest global position written (committed or not yet visible). */
  headPosition(): Promise<number> {
    return read.headPosition(this.db);
  }
}
