// The transparency log's Merkle tree as stored for serving proofs
// (migration 6: `merkle_nodes`). Only a cache: `deno task audit verify`
// recomputes everything from `events` and never trusts these rows.
import { ConflictError, NotFoundError } from "../errors.ts";
import type { Db } from "../store/db.ts";
import { Buffer } from "node:buffer";
import { LOCK_TLOG_BUILD } from "../store/locks.ts";
import { sql } from "../store/sql.ts";
import {
  consistencyRanges,
  EMPTY_ROOT,
  foldRange,
  hashChildren,
  hashChildrenHex,
  inclusionRanges,
  type NodeId,
  type Range,
  rangeNodes,
} from "./merkle.ts";
import { jcs, leafHashHexOfParts, type StoredEventRow, toStoredEvent } from "./stored_event.ts";

const hex = (b: Uint8Array): string =>
  Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "hex"));

/**
 * Levels 1 to 3 are not stored (7 of every 8 interior rows): a node there
 * is recomputed from its 2 to 8 leaves when a proof or the builder needs
 * it, so a proof reads at most 14 more rows, and the builder writes about
 * 1.125 rows per event instead of 2.
 */
const UNSTORED_MAX_LEVEL = 3;
const stored = (level: number) => level === 0 || level > UNSTORED_MAX_LEVEL;

/** Leaves in the stored tree (its size). */
export const treeSize = async (db: Db): Promise<number> => {
  const [r] = await db.query<{ n: string | number | null }>(
    sql`select max(idx) + 1 as n from merkle_nodes where level = 0`,
  );
  return Number(r?.n ?? 0);
};

/**
 * The hashes of the given complete subtrees, in one round trip; those of
 * the unstored levels are folded from their leaves. A node the table lacks
 * (or one of whose leaves it lacks) is absent from the map.
 */
const fetchNodes = async (db: Db, ids: readonly NodeId[]): Promise<Map<string, Uint8Array>> => {
  const out = new Map<string, Uint8Array>();
  if (ids.length === 0) return out;
  const want = new Map<string, NodeId>();
  for (const id of ids) {
    if (stored(id.level)) want.set(`${id.level}/${id.index}`, id);
    else {
      const width = 2 ** id.level;
      for (let j = id.index * width; j < (id.index + 1) * width; j++) {
        want.set(`0/${j}`, { level: 0, index: j });
      }
    }
  }
  const q = [...want.values()];
  const rows = await db.query<{ level: number; idx: string | number; hash: string }>(
    sql`select n.level, n.idx, encode(n.hash, 'hex') as hash
      from unnest(${q.map((i) => String(i.level))}::text[]::smallint[],
        ${q.map((i) => String(i.index))}::text[]::bigint[]) as q(level, idx)
      join merkle_nodes n on n.level = q.level and n.idx = q.idx`,
  );
  for (const r of rows) out.set(`${r.level}/${r.idx}`, unhex(r.hash));
  for (const id of ids) {
    if (stored(id.level)) continue;
    const width = 2 ** id.level;
    let layer: Uint8Array[] = [];
    for (let j = id.index * width; j < (id.index + 1) * width; j++) {
      const h = out.get(`0/${j}`);
      if (!h) break;
      layer.push(h);
    }
    if (layer.length !== width) continue;
    while (layer.length > 1) {
      const up: Uint8Array[] = [];
      for (let j = 0; j < layer.length; j += 2) up.push(hashChildren(layer[j]!, layer[j + 1]!));
      layer = up;
    }
    out.set(`${id.level}/${id.index}`, layer[0]!);
  }
  return out;
};

/** MTH of each range, from O(log n) stored nodes per range (one query for all). */
const rangeHashes = async (db: Db, ranges: readonly Range[]): Promise<Uint8Array[]> => {
  const per = ranges.map(([a, b]) => rangeNodes(a, b));
  const nodes = await fetchNodes(db, per.flat());
  return per.map((ids) =>
    foldRange(ids.map((i) => {
      const h = nodes.get(`${i.level}/${i.index}`);
      if (!h) throw new Error(`merkle_nodes lacks node ${i.level}/${i.index}`);
      return h;
    }))
  );
};

const checkSize = (size: number, built: number) => {
  if (size > built) {
    throw new ConflictError(`the tree has ${built} leaves so far; treeSize ${size} is beyond it`);
  }
};

/** The root of the tree of the first `size` leaves (size ≤ the stored tree). */
export const rootAt = async (db: Db, size: number): Promise<Uint8Array> => {
  if (size === 0) return EMPTY_ROOT;
  const [h] = await rangeHashes(db, [[0, size]]);
  return h!;
};

/** The leaf index (rank in global order) of the event at `position`, if the tree holds it. */
export const leafIndexOf = async (db: Db, position: number): Promise<number | null> => {
  const [r] = await db.query<{ idx: string | number }>(
    sql`select idx from merkle_nodes where level = 0 and global_position = ${position}`,
  );
  return r ? Number(r.idx) : null;
};

export interface InclusionProof {
  leafIndex: number;
  treeSize: number;
  hashes: Uint8Array[];
}

/**
 * RFC 9162 inclusion proof of the event at `position` in the tree of
 * `size` leaves (default: the whole stored tree). NotFoundError when the
 * tree holds no such event (none, or not yet built); ConflictError when
 * `size` is beyond the stored tree or does not cover the event.
 */
export const inclusionProof = async (
  db: Db,
  position: number,
  size?: number,
): Promise<InclusionProof> => {
  const built = await treeSize(db);
  const n = size ?? built;
  checkSize(n, built);
  const leafIndex = await leafIndexOf(db, position);
  if (leafIndex === null) {
    throw new NotFoundError("no event at that position in the tree (none, or not yet added)");
  }
  if (leafIndex >= n) {
    throw new ConflictError(
      `the event is leaf ${leafIndex}: a tree of ${n} leaves does not hold it`,
    );
  }
  return { leafIndex, treeSize: n, hashes: await rangeHashes(db, inclusionRanges(leafIndex, n)) };
};

/** RFC 9162 consistency proof between the trees of `from` and `to` leaves. */
export const consistencyProof = async (
  db: Db,
  from: number,
  to: number,
): Promise<{ from: number; to: number; hashes: Uint8Array[] }> => {
  if (from > to) throw new ConflictError("`from` is larger than `to`");
  checkSize(to, await treeSize(db));
  return { from, to, hashes: await rangeHashes(db, consistencyRanges(from, to)) };
};

/** A stored-tree node as the builder carries it. */
export interface EdgeNode {
  level: number;
  index: number;
  hash: Uint8Array;
}

/**
 * The rows to insert into merkle_nodes, as PostgreSQL array literals
 * (`{4,0,…}`; positions `NULL` above the leaves), written where they are
 * hashed: four strings cross from the Worker and go out as four parameters,
 * instead of arrays of a hundred thousand strings serialized twice.
 */
export interface NodeRows {
  levels: string;
  idxs: string;
  hashes: string;
  positions: string;
}

/**
 * The nodes that leaves `size`, `size + 1`, … (the events, in order) add to
 * a tree whose right edge is `edge` (its complete subtrees, largest first):
 * pure computation, run in the builder's Worker or inline.
 */
export const nodeRowsOf = (
  size: number,
  edge: readonly EdgeNode[],
  events: readonly StoredEventRow[],
): NodeRows => {
  // hashes as hex throughout (see merkle.ts): the rows carry them so too
  type Node = { level: number; index: number; hash: string };
  const stack: Node[] = edge.map((n) => ({ level: n.level, index: n.index, hash: hex(n.hash) }));
  const levels: string[] = [], idxs: string[] = [], hashes: string[] = [];
  const positions: string[] = [];
  const add = (level: number, index: number, hash: string, position: number | null) => {
    if (!stored(level)) return;
    levels.push(String(level));
    idxs.push(String(index));
    hashes.push(hash);
    positions.push(position === null ? "NULL" : String(position));
  };
  let i = size;
  for (const r of events) {
    const e = toStoredEvent(r);
    const h = leafHashHexOfParts(e, jcs(e.data), jcs(e.metadata));
    add(0, i, h, e.globalPosition);
    let node: Node = { level: 0, index: i, hash: h };
    while (stack.length > 0 && stack[stack.length - 1]!.level === node.level) {
      const left = stack.pop()!;
      node = {
        level: node.level + 1,
        index: left.index / 2,
        hash: hashChildrenHex(left.hash, node.hash),
      };
      add(node.level, node.index, node.hash, null);
    }
    stack.push(node);
    i++;
  }
  const literal = (xs: string[]) => `{${xs.join(",")}}`;
  return {
    levels: literal(levels),
    idxs: literal(idxs),
    hashes: literal(hashes),
    positions: literal(positions),
  };
};

/**
 * Computes {@link nodeRowsOf} off the calling thread, over the events of
 * an {@link EventPage}'s JSON (parsed where they are hashed).
 */
export interface TreeHasher {
  nodeRows(size: number, edge: readonly EdgeNode[], pageJson: string): Promise<NodeRows>;
}

/**
 * A {@link TreeHasher} on a Worker thread (src/audit/tlog_worker.ts),
 * started on first use; `close` ends it. A crashed worker fails the
 * calls in flight and is started again on the next.
 */
export class WorkerTreeHasher implements TreeHasher {
  #worker: Worker | null = null;
  #pending = new Map<number, { resolve(r: NodeRows): void; reject(e: Error): void }>();
  #next = 0;

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL("./tlog_worker.ts", import.meta.url), { type: "module" });
    w.onmessage = (ev: MessageEvent<{ id: number; rows?: NodeRows; error?: string }>) => {
      const p = this.#pending.get(ev.data.id);
      if (!p) return;
      this.#pending.delete(ev.data.id);
      if (ev.data.rows) p.resolve(ev.data.rows);
      else p.reject(new Error(`the tree hasher failed: ${ev.data.error}`));
    };
    w.onerror = (ev) => {
      ev.preventDefault();
      this.#stop(new Error("the tree hasher worker crashed"));
    };
    this.#worker = w;
    return w;
  }

  #stop(err: Error) {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    this.#worker?.terminate();
    this.#worker = null;
  }

  nodeRows(size: number, edge: readonly EdgeNode[], pageJson: string): Promise<NodeRows> {
    const w = this.#start();
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      w.postMessage({ id, kind: "nodes", size, edge: [...edge], json: pageJson });
    });
  }

  close(): void {
    this.#stop(new Error("the tree hasher was closed"));
  }
}

/** A page of events as one JSON text, for a Worker to parse (see {@link eventPage}). */
export interface EventPage {
  /** How many events. */
  n: number;
  /** The last one's global position (0 when none). */
  last: number;
  /**
   * `[[global_position, stream_id, stream_version, event_id, type,
   * schema_version, data, metadata, recorded_at, prev_hash, hash], …]`,
   * in global order, recorded_at as STORED_EVENT_COLUMNS writes it (stored_event.ts).
   */
  json: string;
}

/**
 * Events after `after` in global order, at most `limit`, as one JSON text
 * that PostgreSQL writes: the thread that asks receives one string a page
 * and hands it to a Worker, which parses it (instead of the driver parsing
 * eleven columns an event on the thread that serves requests and appends).
 * `belowHorizon`: only the events before the first one whose transaction is
 * not older than the oldest in flight (the tree builder's gap safety).
 */
export const eventPage = async (
  db: Db,
  after: number,
  limit: number,
  belowHorizon = false,
): Promise<EventPage> => {
  const page = sql`select * from events where global_position > ${after}
    order by global_position limit ${limit}`;
  const from = belowHorizon
    ? sql`(select *, bool_and(transaction_id < pg_snapshot_xmin(pg_current_snapshot()))
        over (order by global_position) as safe from (${page}) as p) as e where safe`
    : sql`(${page}) as e`;
  const [r] = await db.query<{ n: number; last: string | number | null; json: string }>(
    sql`select count(*)::int as n, max(global_position) as last,
      coalesce(json_agg(json_build_array(global_position, stream_id, stream_version, event_id,
        type, schema_version, data, metadata,
        to_char(recorded_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        prev_hash, hash) order by global_position), '[]')::text as json
      from ${from}`,
  );
  return { n: r?.n ?? 0, last: Number(r?.last ?? 0), json: r?.json ?? "[]" };
};

/** The rows of an {@link EventPage}'s JSON, `data` and `metadata` parsed. */
export const eventPageRows = (json: string): StoredEventRow[] =>
  (JSON.parse(json) as unknown[][]).map((a) => ({
    global_position: a[0] as number,
    stream_id: a[1] as string,
    stream_version: a[2] as number,
    event_id: a[3] as string,
    type: a[4] as string,
    schema_version: a[5] as number,
    data: a[6],
    metadata: a[7],
    recorded_at: a[8] as string,
    prev_hash: a[9] as string | null,
    hash: a[10] as string,
  }));

/**
 * Adds up to `batch` events to the stored tree in one transaction, in
 * global order. Gap safety: positions are handed out at insert but commit
 * in another order, so the tree only takes events of transactions older
 * than the oldest one still in flight (the horizon the projection
 * followers use, src/store/read.ts) and stops at the first event past it:
 * a prefix never later gains an event with a lower position. Returns how
 * many leaves it added (0: nothing below the horizon). With `hasher`, the
 * hashing runs there (a Worker: the publisher keeps it off the thread that
 * serves requests and appends).
 */
export const extendTreeOnce = async (
  db: Db,
  batch = 5000,
  hasher?: TreeHasher,
): Promise<number> =>
  await db.transaction(async (tx) => {
    // one builder at a time (the publisher, `deno task audit checkpoint`)
    await tx.query(sql`select pg_advisory_xact_lock(${LOCK_TLOG_BUILD})`);
    // The tree is a cache, so its commit need not wait for its WAL flush (nor
    // make appends wait behind it). Nothing signed can get ahead of it: a
    // checkpoint is appended later with a synchronous commit, and flushing
    // the WAL up to that commit flushes these rows too.
    await tx.query(sql`set local synchronous_commit = off`);
    const [last] = await tx.query<{ idx: string | number; global_position: string | number }>(
      sql`select idx, global_position from merkle_nodes where level = 0
        order by idx desc limit 1`,
    );
    const size = last ? Number(last.idx) + 1 : 0;
    const after = last ? Number(last.global_position) : 0;
    const page = await eventPage(tx, after, batch, true);
    if (page.n === 0) return 0;
    // the right edge of the stored tree: its complete subtrees, largest first
    const edge = rangeNodes(0, size);
    const edgeHashes = await fetchNodes(tx, edge);
    const stack: EdgeNode[] = edge.map((id) => ({
      ...id,
      hash: edgeHashes.get(`${id.level}/${id.index}`)!,
    }));
    const { levels, idxs, hashes, positions } = hasher
      ? await hasher.nodeRows(size, stack, page.json)
      : nodeRowsOf(size, stack, eventPageRows(page.json));
    await tx.query(sql`insert into merkle_nodes (level, idx, hash, global_position)
      select l, i, decode(h, 'hex'), p from unnest(${levels}::text::smallint[],
        ${idxs}::text::bigint[], ${hashes}::text::text[], ${positions}::text::bigint[])
        as t(l, i, h, p)`);
    return page.n;
  });

/** Extends the stored tree as far as the horizon allows; returns its new size. */
export const extendTree = async (
  db: Db,
  opts: { batch?: number; signal?: AbortSignal; hasher?: TreeHasher } = {},
): Promise<number> => {
  for (;;) {
    const added = await extendTreeOnce(db, opts.batch ?? 5000, opts.hasher);
    if (added < (opts.batch ?? 5000) || opts.signal?.aborted) break;
  }
  return await treeSize(db);
};

/** The global position of leaf `index` of the stored tree. */
export const positionOfLeaf = async (db: Db, index: number): Promise<number | null> => {
  const [r] = await db.query<{ p: string | number }>(
    sql`select global_position as p from merkle_nodes where level = 0 and idx = ${index}`,
  );
  return r ? Number(r.p) : null;
};

/** Stored leaves [from, from + limit): index, position and hash as hex (for naming what changed). */
export const storedLeaves = async (
  db: Db,
  from: number,
  limit: number,
): Promise<{ index: number; position: number; hash: string }[]> =>
  (await db.query<{ idx: string | number; p: string | number; hash: string }>(
    sql`select idx, global_position as p, encode(hash, 'hex') as hash from merkle_nodes
      where level = 0 and idx >= ${from} order by idx limit ${limit}`,
  )).map((r) => ({ index: Number(r.idx), position: Number(r.p), hash: r.hash }));
