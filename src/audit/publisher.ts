// The checkpoint publisher: extends the stored Merkle tree and appends
// signed checkpoints (CheckpointPublished) to the `audit-checkpoints`
// stream, recording each new signing key first (CheckpointKeyAdopted).
import type { EventMetadata } from "../../events/metadata.ts";
import { CHECKPOINT_STREAM } from "../../events/audit.ts";
import { ConcurrencyError, UnavailableError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { Db, ReservedDb } from "../store/db.ts";
import type { EventStore } from "../store/event_store.ts";
import { CHECKPOINT_PUBLISHER_LOCK } from "../store/locks.ts";
import { streamVersion } from "../store/read.ts";
import { sql } from "../store/sql.ts";
import { type CheckpointSigner, originOf } from "./checkpoint.ts";
import { b64 } from "./merkle.ts";
import {
  extendTree,
  positionOfLeaf,
  rootAt,
  type TreeHasher,
  treeSize,
  WorkerTreeHasher,
} from "./tlog_store.ts";

const PUBLISHER_METADATA: EventMetadata = {
  actorId: "system:checkpoint-publisher",
  actorRole: "system",
};

/** A published checkpoint as the routes and the verifier read it. */
export interface Checkpoint {
  /** The CheckpointPublished event's global position. */
  position: number;
  /** Its version in the `audit-checkpoints` stream (the list's cursor). */
  sequence: number;
  publishedAt: string;
  treeSize: number;
  rootHash: string;
  note: string;
  keyId: string;
}

interface CheckpointRow {
  global_position: string | number;
  stream_version: number;
  recorded_at: string;
  data: { treeSize: number; rootHash: string; note: string; keyId: string };
}

const toCheckpoint = (r: CheckpointRow): Checkpoint => ({
  position: Number(r.global_position),
  sequence: Number(r.stream_version),
  publishedAt: r.recorded_at,
  treeSize: Number(r.data.treeSize),
  rootHash: r.data.rootHash,
  note: r.data.note,
  keyId: r.data.keyId,
});

const CHECKPOINT_COLUMNS = sql`global_position, stream_version, data,
  to_char(recorded_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as recorded_at`;

/** Checkpoints newest first; `before`: a sequence from the previous page. */
export const listCheckpoints = async (
  db: Db,
  opts: { before?: number; limit: number },
): Promise<Checkpoint[]> =>
  (await db.query<CheckpointRow>(
    sql`select ${CHECKPOINT_COLUMNS} from events
      where stream_id = ${CHECKPOINT_STREAM} and type = 'CheckpointPublished'
        ${opts.before !== undefined ? sql`and stream_version < ${opts.before}` : sql``}
      order by stream_version desc limit ${opts.limit}`,
  )).map(toCheckpoint);

/** Every checkpoint, oldest first (the verifier's list). */
export const allCheckpoints = async (db: Db): Promise<Checkpoint[]> =>
  (await db.query<CheckpointRow>(
    sql`select ${CHECKPOINT_COLUMNS} from events
      where stream_id = ${CHECKPOINT_STREAM} and type = 'CheckpointPublished'
      order by stream_version`,
  )).map(toCheckpoint);

export const latestCheckpoint = async (db: Db): Promise<Checkpoint | null> =>
  (await listCheckpoints(db, { limit: 1 }))[0] ?? null;

export interface AdoptedKey {
  keyId: string;
  keyName: string;
  publicKey: string;
  verifierKey: string;
  adoptedAt: string;
}

/** Every key checkpoints were ever signed with, oldest first. */
export const adoptedKeys = async (db: Db): Promise<AdoptedKey[]> =>
  (await db.query<{ data: Omit<AdoptedKey, "adoptedAt">; recorded_at: string }>(
    sql`select data, to_char(recorded_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        as recorded_at
      from events where stream_id = ${CHECKPOINT_STREAM} and type = 'CheckpointKeyAdopted'
      order by stream_version`,
  )).map((r) => ({ ...r.data, adoptedAt: r.recorded_at }));

/** What publishing needs: the store, the signer and this installation's id. */
export interface TlogContext {
  store: EventStore;
  signer: CheckpointSigner;
  installationId: string;
}

/**
 * Extends the tree and appends a checkpoint of it, recording the signing
 * key first if it is new. `when` decides from the log's growth since the
 * last checkpoint (events other than checkpoints) whether to publish;
 * without it, publishes. Returns the checkpoint, or null when it did not
 * publish (nothing new, or another publisher got there first).
 */
export const publishCheckpoint = async (
  ctx: TlogContext,
  when?: {
    events: number;
    seconds: number;
    now: Date;
    /** Before the first checkpoint, time counts from here (the publisher's start). */
    since?: Date;
  },
  hasher?: TreeHasher,
): Promise<Checkpoint | null> => {
  const db = ctx.store.db;
  if (when) {
    const last = await latestCheckpoint(db);
    // merkle_nodes is unlogged (migration 9): a crash of the server empties
    // it, and proofs wait for it, so it is built again at once, due or not
    if (last && await treeSize(db) < last.treeSize) await extendTree(db, { hasher });
    // not due yet: leave the tree alone (it is extended in larger steps, less often)
    const from = last && last.treeSize > 0 ? await positionOfLeaf(db, last.treeSize - 1) : 0;
    const [r] = await db.query<{ n: string | number }>(
      sql`select count(*) as n from (select 1 from events
        where global_position > ${from ?? 0} and stream_id <> ${CHECKPOINT_STREAM}
        limit ${when.events}) as grown`,
    );
    const grown = Number(r?.n ?? 0);
    const from0 = last ? Date.parse(last.publishedAt) : when.since?.getTime() ?? -Infinity;
    const age = (when.now.getTime() - from0) / 1000;
    if (grown === 0 || (grown < when.events && age < when.seconds)) return null;
  }
  const size = await extendTree(db, { hasher });
  const last = await latestCheckpoint(db);
  if (when) {
    if (last && last.treeSize >= size) return null;
    const from = last && last.treeSize > 0 ? await positionOfLeaf(db, last.treeSize - 1) : 0;
    const to = size > 0 ? await positionOfLeaf(db, size - 1) : 0;
    const [r] = await db.query<{ n: string | number }>(
      sql`select count(*) as n from (select 1 from events
        where global_position > ${from ?? 0} and global_position <= ${to ?? 0}
          and stream_id <> ${CHECKPOINT_STREAM} limit ${when.events}) as grown`,
    );
    const grown = Number(r?.n ?? 0);
    const from0 = last ? Date.parse(last.publishedAt) : when.since?.getTime() ?? -Infinity;
    const age = (when.now.getTime() - from0) / 1000;
    if (grown === 0 || (grown < when.events && age < when.seconds)) return null;
  }
  let version = await streamVersion(db, CHECKPOINT_STREAM);
  const expect = (v: number) => (v === 0 ? "no_stream" as const : v);
  try {
    const keys = await adoptedKeys(db);
    if (!keys.some((k) => k.keyId === ctx.signer.keyIdHex)) {
      const r = await ctx.store.append(CHECKPOINT_STREAM, expect(version), [{
        type: "CheckpointKeyAdopted",
        data: {
          keyId: ctx.signer.keyIdHex,
          keyName: ctx.signer.keyName,
          publicKey: b64(ctx.signer.publicKey),
          verifierKey: ctx.signer.verifierKey,
        },
      }], PUBLISHER_METADATA);
      version = r.version;
    }
    const root = await rootAt(db, size);
    const note = ctx.signer.sign(originOf(ctx.installationId), size, root);
    const data = { treeSize: size, rootHash: b64(root), note, keyId: ctx.signer.keyIdHex };
    const r = await ctx.store.append(CHECKPOINT_STREAM, expect(version), [{
      type: "CheckpointPublished",
      data,
    }], PUBLISHER_METADATA);
    const [c] = await db.query<CheckpointRow>(
      sql`select ${CHECKPOINT_COLUMNS} from events where global_position = ${r.positions[0]!}`,
    );
    return toCheckpoint(c!);
  } catch (err) {
    if (err instanceof ConcurrencyError) return null; // another publisher appended first
    throw err;
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

/** PGlite is one session, where advisory locks are re-entrant: the guard is in process. */
const heldOnPglite = new WeakSet<object>();

/**
 * Publishes checkpoints in the background: every `events` new events, or
 * after `seconds` when the log grew by anything but checkpoints. One
 * publisher is active across instances (a session advisory lock on a
 * reserved connection, as the grant sweeper does); when the database goes
 * away it logs that (codes only), backs off and takes the lock again.
 */
export class CheckpointPublisher {
  readonly #abort = new AbortController();
  #done: Promise<void> | null = null;

  constructor(
    readonly ctx: TlogContext,
    readonly log: Logger,
    readonly opts: {
      events: number;
      seconds: number;
      now?: () => Date;
      pollMs?: number;
      lockRetryMs?: number;
      retryMs?: number;
      maxRetryMs?: number;
    },
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
    const since = (this.opts.now ?? (() => new Date()))();
    // the tree's hashing runs on a Worker, beside the appends rather than among them
    const hasher = new WorkerTreeHasher();
    try {
      await this.#loop(hasher, since);
    } finally {
      hasher.close();
    }
  }

  async #loop(hasher: TreeHasher, since: Date): Promise<void> {
    const { lockRetryMs = 10_000, retryMs = 500, maxRetryMs = 30_000, pollMs = 1000 } = this.opts;
    const now = this.opts.now ?? (() => new Date());
    const signal = this.#abort.signal;
    const db = this.ctx.store.db;
    const lock = sql`hashtext(${CHECKPOINT_PUBLISHER_LOCK})`;
    let failures = 0;
    while (!signal.aborted) {
      let reserved: ReservedDb | null = null;
      let locked = false;
      try {
        reserved = await db.reserve();
        const [r] = await reserved.query<{ ok: boolean }>(
          sql`select pg_try_advisory_lock(${lock}) as ok`,
        );
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
        this.log.info({ worker: "checkpoint-publisher" }, "checkpoint publisher active");
        failures = 0;
        while (!signal.aborted) {
          const c = await publishCheckpoint(this.ctx, {
            events: this.opts.events,
            seconds: this.opts.seconds,
            now: now(),
            since,
          }, hasher);
          if (c) {
            this.log.info(
              { worker: "checkpoint-publisher", treeSize: c.treeSize },
              "checkpoint published",
            );
          }
          // the lock lives with this session: a lost connection must show here
          await reserved.query(sql`select 1`);
          await sleep(pollMs, signal);
        }
      } catch (err) {
        const e = err as { name?: string; code?: string };
        const delay = Math.min(maxRetryMs, retryMs * 2 ** failures++);
        // names and codes only: a database error message may quote row values
        const fields = { worker: "checkpoint-publisher", err: { name: e.name, code: e.code } };
        if (err instanceof UnavailableError) {
          this.log.warn(
            { ...fields, retryInMs: delay },
            "checkpoint publisher cannot reach the database",
          );
        } else {
          this.log.error({ ...fields, retryInMs: delay }, "checkpoint publisher failed");
        }
        await sleep(delay, signal);
      } finally {
        if (locked) {
          if (reserved?.kind === "pglite") heldOnPglite.delete(db);
          await reserved?.query(sql`select pg_advisory_unlock(${lock})`).catch(() => {});
        }
        await reserved?.release().catch(() => {});
      }
    }
  }
}
