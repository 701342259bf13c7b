import type { EventMetadata } from "../../events/metadata.ts";
import type { Db } from "./db.ts";

/** Where a stream must be for an append to succeed. */
export type ExpectedVersion = number | "no_stream" | "any";

/** An event to append: its type, payload and, optionally, its id. */
export interface NewEvent {
  type: string;
  data: unknown;
  id?: string;
}

/** An event as read back: upcast to its current schema, PHI unsealed. */
export interface StoredEvent<D = Record<string, unknown>> {
  globalPosition: number;
  streamId: string;
  streamVersion: number;
  eventId: string;
  type: string;
  schemaVersion: number;
  data: D;
  metadata: EventMetadata;
  recordedAt: Date;
  transactionId: string;
  prevHash: string | null;
  hash: string;
  /** PHI fields whose subject key was destroyed: they read as null. */
  erasedFields: string[];
}

/**
 * What a {@link Projection.foldBatch} is given of each event: where it sits in
 * the log and in its stream, its type and its payload (upcast, PHI unsealed).
 * Builds read only these columns from the log for a projection with a
 * `foldBatch`, so metadata, ids and hashes are neither read nor parsed (a
 * tenth of a patients rebuild).
 */
export type FoldedEvent = Pick<
  StoredEvent,
  | "globalPosition"
  | "streamId"
  | "streamVersion"
  | "type"
  | "schemaVersion"
  | "data"
  | "recordedAt"
  | "erasedFields"
>;

export interface AppendResult {
  streamId: string;
  /** The stream's version after the append (its last event's version). */
  version: number;
  /** Global positions of the appended events, in order. */
  positions: number[];
  /** The events' `recordedAt`. */
  recordedAt: Date;
  /** The events' payloads as stored once unsealed (validated by the catalogue), in order. */
  data: Record<string, unknown>[];
}

/**
 * A read model: a name, a version, the tables it owns, the DDL that creates
 * them and a handler per event type it folds. Its tables belong to its
 * version: bump the version when the tables or the handlers change, and the
 * new version is built from the log in a schema of its own (where `setup`
 * runs, with plain `create table`), beside the tables in use, and switched
 * in when it has caught up. `tables` must list every table `setup` makes.
 * Inline projections run in the append's transaction; async ones follow the
 * log from a checkpoint.
 */
export interface Projection {
  readonly name: string;
  readonly version: number;
  readonly mode: "inline" | "async";
  readonly tables: readonly string[];
  readonly setup: string;
  readonly handlers: Readonly<Record<string, ProjectionHandler>>;
  /** Folds every event type that has no handler of its own. */
  readonly anyEvent?: ProjectionHandler;
  /**
   * Folds a page of events (in log order, only the types it handles) at
   * once. Must leave the same rows as its handlers applied one by one, and
   * touch only the projection's own tables. Builds and rebuilds use it, and
   * an inline projection's append batch of two or more of its events (a
   * lone event still goes through its handler).
   */
  readonly foldBatch?: (db: Db, events: readonly FoldedEvent[]) => Promise<void>;
  /**
   * Its handlers and `foldBatch` only send statements: they never use the
   * rows a statement returns (each resolves to none) nor what happened to
   * one to decide the next. Inline on PostgreSQL, its statements then go
   * out with the append's COMMIT, in one round trip, instead of one round
   * trip each while the append lock is held; a failure still rolls the
   * append back.
   */
  readonly writeOnly?: boolean;
  /**
   * Views in schema `analytics` over this projection's tables (which the
   * SQL names as `public.<table>`): dropped and made again in the
   * transaction that switches a new version in, so their names never break.
   */
  readonly views?: readonly ProjectionView[];
}

/** A view a projection keeps in schema `analytics` (see {@link Projection.views}). */
export interface ProjectionView {
  /** Its name in schema `analytics`. */
  readonly name: string;
  /** The `select` it shows. */
  readonly select: string;
}

export type ProjectionHandler = (db: Db, event: StoredEvent) => Promise<void>;
