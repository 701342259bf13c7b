// Verifies the transparency log from the events themselves: streams them in
// global order (pages from the database, or lines of an export), recomputes
// the Merkle root at every checkpoint's size and compares it with the
// signed one. The stored tree (merkle_nodes) is never trusted; when it still
// agrees with a signed checkpoint it serves to name the first leaf that
// changed.
import type { Db } from "../store/db.ts";
import { eventHashOfParts } from "../store/hash_chain.ts";
import { sql } from "../store/sql.ts";
import { originOf, verifyCheckpointNote } from "./checkpoint.ts";
import { readInstallation } from "../store/installation.ts";
import type { BrokenLink } from "../store/verify_chain.ts";
import { adoptedKeys } from "./publisher.ts";
import { b64, CompactRange } from "./merkle.ts";
import {
  jcs,
  leafHashHexOfParts,
  type StoredEvent,
  type StoredEventRow,
  storedEventsAfter,
  toStoredEvent,
} from "./stored_event.ts";
import { eventPage, rootAt, storedLeaves, treeSize } from "./tlog_store.ts";

/** A checkpoint to check the events against. */
export interface CheckpointClaim {
  /** How the report names it (`checkpoint 3 (global position 812)`, `FILE`). */
  label: string;
  treeSize: number;
  /** Base64 root hash. */
  rootHash: string;
}

export interface TlogProblem {
  kind:
    | "checkpoint_root_mismatch"
    | "checkpoint_beyond_log"
    | "checkpoint_signature"
    | "checkpoint_shrinks"
    | "event_altered"
    | "event_missing"
    | "event_unexpected"
    | "chain_broken"
    | "not_in_order"
    | "tree_cache_mismatch";
  message: string;
}

export interface TlogReport {
  ok: boolean;
  /** With `chains`: streams seen, events whose chain link fails, the first of them. */
  chain: { streams: number; brokenCount: number; firstBroken: BrokenLink | null };
  events: number;
  checkpointsVerified: number;
  problems: TlogProblem[];
}

const PAGE = 5000;

/**
 * The log's events in global order, from the database, a page at a time;
 * the next page is asked for while this one is hashed.
 */
export async function* eventPagesFromDb(db: Db): AsyncGenerator<StoredEvent[]> {
  const page = (after: number) => db.query<StoredEventRow>(storedEventsAfter(after, PAGE));
  let next = page(0);
  for (;;) {
    const rows = await next;
    if (rows.length === PAGE) next = page(Number(rows[rows.length - 1]!.global_position));
    if (rows.length > 0) yield rows.map(toStoredEvent);
    if (rows.length < PAGE) return;
  }
}

/** The log's events in global order, from the database (see {@link eventPagesFromDb}). */
export async function* eventsFromDb(db: Db): AsyncGenerator<StoredEvent> {
  for await (const page of eventPagesFromDb(db)) yield* page;
}

/**
 * `Date#toISOString` of a stored `recordedAt` (microseconds, as
 * `2026-11-30T12:00:00.123000Z`): the hash chain covers milliseconds.
 */
const isoMillis = (s: string): string =>
  s.length === 27 && s.endsWith("000Z") && s[4] === "-" && s[7] === "-" && s[10] === "T" &&
    s[13] === ":" && s[16] === ":" && s[19] === "." && s[0] !== "0"
    ? s.slice(0, 23) + "Z"
    : new Date(s).toISOString();

/** The event's chain hash (as appended) from its canonical payloads. */
const chainHashOf = (e: StoredEvent, dataJson: string, metadataJson: string): string =>
  eventHashOfParts(
    e.prevHash ?? null,
    e.streamId,
    e.streamVersion,
    e.eventId,
    e.type,
    e.schemaVersion,
    isoMillis(e.recordedAt),
    dataJson,
    metadataJson,
  );

/**
 * A page of events hashed ahead (on a Worker): the fields the in-order
 * checks need, the leaf hashes (32 bytes each) and whether each event's
 * own chain hash holds (1) or not (0).
 */
export interface HashedPage {
  events: Pick<
    StoredEvent,
    "globalPosition" | "streamId" | "streamVersion" | "prevHash" | "hash"
  >[];
  /** The leaf hashes, 64 lowercase hex digits each, one after another. */
  leaves: string;
  chainOk: Uint8Array;
}

/** Hashes a page of events (leaf and chain hash of each), for {@link HashedPage}. */
export const hashPage = (rows: readonly StoredEventRow[]): HashedPage => {
  let leaves = "";
  const chainOk = new Uint8Array(rows.length);
  const events: HashedPage["events"] = [];
  for (let i = 0; i < rows.length; i++) {
    const e = toStoredEvent(rows[i]!);
    const dataJson = jcs(e.data), metadataJson = jcs(e.metadata);
    leaves += leafHashHexOfParts(e, dataJson, metadataJson);
    chainOk[i] = chainHashOf(e, dataJson, metadataJson) === e.hash ? 1 : 0;
    events.push({
      globalPosition: e.globalPosition,
      streamId: e.streamId,
      streamVersion: e.streamVersion,
      prevHash: e.prevHash,
      hash: e.hash,
    });
  }
  return { events, leaves, chainOk };
};

const isHashedPage = (x: unknown): x is HashedPage =>
  typeof x === "object" && x !== null && !Array.isArray(x) && "chainOk" in x;

/**
 * The log's events in global order from the database, hashed on `workers`
 * Worker threads (src/audit/tlog_worker.ts) a page each, several pages in
 * flight, yielded in order.
 */
export async function* hashedPagesFromDb(db: Db, workers = 1): AsyncGenerator<HashedPage> {
  const pool = Array.from(
    { length: Math.max(1, workers) },
    () => new Worker(new URL("./tlog_worker.ts", import.meta.url), { type: "module" }),
  );
  const waiting = new Map<number, { resolve(p: HashedPage): void; reject(e: Error): void }>();
  const fail = (err: Error) => {
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  for (const w of pool) {
    w.onmessage = (ev: MessageEvent<{ id: number; page?: HashedPage; error?: string }>) => {
      const p = waiting.get(ev.data.id);
      if (!p) return;
      waiting.delete(ev.data.id);
      if (ev.data.page) p.resolve(ev.data.page);
      else p.reject(new Error(`the verify hasher failed: ${ev.data.error}`));
    };
    w.onerror = (ev) => {
      ev.preventDefault();
      fail(new Error("a verify hasher worker crashed"));
    };
  }
  let id = 0;
  const hashOn = (json: string): Promise<HashedPage> => {
    const n = id++;
    const done = new Promise<HashedPage>((resolve, reject) => waiting.set(n, { resolve, reject }));
    pool[n % pool.length]!.postMessage({ id: n, kind: "verify", json });
    return done;
  };
  // Pages are fetched one after another (each starts after the last one's
  // last position) by a loop that runs beside the hashing and beside the
  // caller's work on the pages already yielded, up to `ahead` pages ahead:
  // fetched only when asked for, the Worker sat idle during each fetch.
  const inFlight: Promise<HashedPage>[] = [];
  const ahead = pool.length + 2;
  let after = 0;
  let more = true;
  let failure: { err: unknown } | null = null;
  let filling: Promise<void> | null = null;
  const fill = () => {
    if (filling || !more || inFlight.length >= ahead) return;
    filling = (async () => {
      try {
        while (more && inFlight.length < ahead) {
          const page = await eventPage(db, after, PAGE);
          if (page.n > 0) {
            inFlight.push(hashOn(page.json));
            after = page.last;
          }
          if (page.n < PAGE) more = false;
        }
      } catch (err) {
        failure = { err };
        more = false;
      } finally {
        filling = null;
      }
    })();
  };
  try {
    for (;;) {
      fill();
      if (inFlight.length === 0) {
        if (filling) await filling;
        if (failure) throw (failure as { err: unknown }).err;
        if (inFlight.length === 0 && !more) break;
        continue;
      }
      const page = await inFlight.shift()!;
      fill();
      yield page;
    }
  } finally {
    more = false;
    await filling;
    for (const p of inFlight) p.catch(() => {});
    for (const w of pool) w.terminate();
    fail(new Error("verify ended"));
  }
}

/** The events of a JSONL export (one StoredEvent a line), read as a stream. */
export async function* eventsFromExport(path: string): AsyncGenerator<StoredEvent> {
  const file = await Deno.open(path, { read: true });
  const decoder = new TextDecoder();
  let rest = "";
  let line = 0;
  const parse = (text: string): StoredEvent => {
    line++;
    try {
      return JSON.parse(text) as StoredEvent;
    } catch {
      throw new Error(`${path}: line ${line} is not JSON`);
    }
  };
  for await (const chunk of file.readable) {
    rest += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = rest.indexOf("\n")) !== -1) {
      const text = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (text.trim()) yield parse(text);
    }
  }
  rest += decoder.decode();
  if (rest.trim()) yield parse(rest);
}

/** The stored tree's leaves, a page at a time (the next one asked for ahead), to name what changed. */
const cachedLeaves = (db: Db) => {
  type Leaf = { index: number; position: number; hash: string };
  let page: Leaf[] = [];
  let start = 0;
  let ahead: { start: number; rows: Promise<Leaf[]> } | null = null;
  return {
    /** Loads the page holding leaf `i` unless it is at hand (null then: nothing to await). */
    load(i: number): Promise<void> | null {
      if (i >= start && i < start + page.length) return null;
      const rows = ahead?.start === i ? ahead.rows : storedLeaves(db, i, PAGE);
      return rows.then((p) => {
        page = p;
        start = i;
        ahead = p.length === PAGE
          ? { start: i + PAGE, rows: storedLeaves(db, i + PAGE, PAGE) }
          : null;
        // a failed read ahead surfaces when (if) that page is loaded
        ahead?.rows.catch(() => {});
      });
    },
    /** Leaf `i`, after {@link load}. */
    get: (i: number) => page[i - start] ?? null,
  };
};

/**
 * Recomputes the tree over `events` and checks each claim. With `cache`
 * (the database), the first leaf that differs from the stored tree is
 * named, provided the stored tree agrees with a signed checkpoint it
 * covers (it is what was signed then). `chains`: also check each stream's
 * hash chain in the same pass (a stream's versions follow global order).
 * `events` may come one at a time or in pages (fewer awaits).
 */
export const verifyTree = async (
  events: AsyncIterable<StoredEvent | readonly StoredEvent[] | HashedPage>,
  claims: readonly CheckpointClaim[],
  opts: { cache?: Db; chains?: boolean; onProgress?: (n: number) => void } = {},
): Promise<TlogReport> => {
  const problems: TlogProblem[] = [];
  const sorted = [...claims].sort((a, b) => a.treeSize - b.treeSize);
  const tree = new CompactRange();
  let next = 0;
  let verified = 0;
  const check = () => {
    while (next < sorted.length && sorted[next]!.treeSize === tree.size) {
      const c = sorted[next++]!;
      if (b64(tree.root()) === c.rootHash) verified++;
      else {
        problems.push({
          kind: "checkpoint_root_mismatch",
          message: `${c.label} (tree size ${c.treeSize}): the first ${c.treeSize} events ` +
            `no longer give its root: an event it covers was altered, removed, added or reordered`,
        });
      }
    }
  };
  const cachedSize = opts.cache ? await treeSize(opts.cache) : 0;
  const cached = opts.cache ? cachedLeaves(opts.cache) : null;
  let firstDiff: TlogProblem | null = null;
  let lastPosition = 0;
  const streams = new Map<string, { version: number; hash: string }>();
  let streamCount = 0, brokenCount = 0;
  let firstBroken: BrokenLink | null = null;
  check();
  /** `pre`: the leaf and whether the chain hash holds, computed ahead. */
  const visit = (e: StoredEvent, pre?: { leaf: string; chainOk: boolean }) => {
    if (e.globalPosition <= lastPosition) {
      problems.push({
        kind: "not_in_order",
        message: `event at global position ${e.globalPosition} comes after ${lastPosition}`,
      });
    }
    lastPosition = e.globalPosition;
    // each payload canonicalized once, for the leaf and for the chain
    const dataJson = pre ? "" : jcs(e.data), metadataJson = pre ? "" : jcs(e.metadata);
    const leaf = pre ? pre.leaf : leafHashHexOfParts(e, dataJson, metadataJson);
    if (cached && !firstDiff && tree.size < cachedSize) {
      const c = cached.get(tree.size);
      if (c && c.position === e.globalPosition && c.hash !== leaf) {
        firstDiff = {
          kind: "event_altered",
          message: `event at global position ${e.globalPosition} (stream ${e.streamId} ` +
            `version ${e.streamVersion}) is not the one the tree took in: altered or reordered`,
        };
      } else if (c && c.position < e.globalPosition) {
        firstDiff = {
          kind: "event_missing",
          message: `the event at global position ${c.position} is missing (removed or moved); ` +
            `the log goes on at ${e.globalPosition}`,
        };
      } else if (c && c.position > e.globalPosition) {
        firstDiff = {
          kind: "event_unexpected",
          message: `event at global position ${e.globalPosition} (stream ${e.streamId} version ` +
            `${e.streamVersion}) was not in the log there when the tree took it in: inserted or moved`,
        };
      }
    }
    if (opts.chains) {
      const prev = streams.get(e.streamId);
      if (!prev) streamCount++;
      const problem = e.streamVersion !== (prev ? prev.version + 1 : 1)
        ? "version_gap"
        : (e.prevHash ?? null) !== (prev?.hash ?? null)
        ? "prev_hash_mismatch"
        : !(pre ? pre.chainOk : chainHashOf(e, dataJson, metadataJson) === e.hash)
        ? "hash_mismatch"
        : null;
      if (problem) {
        brokenCount++;
        firstBroken ??= {
          streamId: e.streamId,
          streamVersion: e.streamVersion,
          globalPosition: e.globalPosition,
          problem,
        };
      }
      // go on from the stored hash so that one edit is reported once
      streams.set(e.streamId, { version: e.streamVersion, hash: e.hash });
    }
    tree.appendHex(leaf);
    check();
    if (tree.size % 50_000 === 0) opts.onProgress?.(tree.size);
  };
  const one = async (e: StoredEvent) => {
    if (cached && !firstDiff && tree.size < cachedSize) await cached.load(tree.size);
    visit(e);
  };
  for await (const item of events) {
    if (isHashedPage(item)) {
      for (let i = 0; i < item.events.length; i++) {
        if (cached && !firstDiff && tree.size < cachedSize) {
          const loading = cached.load(tree.size);
          if (loading) await loading;
        }
        visit(item.events[i] as StoredEvent, {
          leaf: item.leaves.slice(64 * i, 64 * i + 64),
          chainOk: item.chainOk[i] === 1,
        });
      }
    } else if (!Array.isArray(item)) await one(item as StoredEvent);
    else {
      for (const e of item as readonly StoredEvent[]) {
        // awaits only when a page of the stored tree is to be fetched
        if (cached && !firstDiff && tree.size < cachedSize) {
          const loading = cached.load(tree.size);
          if (loading) await loading;
        }
        visit(e);
      }
    }
  }
  if (cached && !firstDiff && tree.size < cachedSize) {
    await cached.load(tree.size);
    const c = cached.get(tree.size);
    firstDiff = {
      kind: "event_missing",
      message: `the events from global position ${c?.position} on are missing (removed)`,
    };
  }
  for (const c of sorted.slice(next)) {
    problems.push({
      kind: "checkpoint_beyond_log",
      message: `${c.label} covers ${c.treeSize} events but the log has only ${tree.size}: ` +
        `events it covers were removed`,
    });
  }
  if (firstDiff) {
    // the stored tree names the change when it agrees with what was signed
    let trusted = false;
    for (const c of sorted) {
      if (c.treeSize > cachedSize) break;
      if (b64(await rootAt(opts.cache!, c.treeSize)) === c.rootHash) trusted = true;
    }
    if (trusted) problems.unshift(firstDiff);
    else {
      problems.push({
        kind: "tree_cache_mismatch",
        message: `the stored tree (merkle_nodes) disagrees with the events: ${firstDiff.message}`,
      });
    }
  }
  return {
    ok: problems.length === 0 && brokenCount === 0,
    events: tree.size,
    checkpointsVerified: verified,
    problems,
    chain: { streams: streamCount, brokenCount, firstBroken },
  };
};

/** A checkpoint as stored in the log (CheckpointPublished), with its signature checked. */
export interface StoredCheckpoint {
  position: number;
  sequence: number;
  treeSize: number;
  rootHash: string;
  note: string;
  keyId: string;
}

/**
 * Checks each stored checkpoint's signature with the key it names (from
 * the adopted keys), that its note says what its event says, and that the
 * tree never shrinks from one checkpoint to the next. Returns the problems
 * and the claims to check the events against.
 */
export const checkStoredCheckpoints = (
  checkpoints: readonly StoredCheckpoint[],
  verifierKeys: ReadonlyMap<string, string>,
  origin: string,
): { problems: TlogProblem[]; claims: CheckpointClaim[] } => {
  const problems: TlogProblem[] = [];
  const claims: CheckpointClaim[] = [];
  let prev: StoredCheckpoint | null = null;
  for (const c of checkpoints) {
    const label = `checkpoint ${c.sequence} (global position ${c.position})`;
    const key = verifierKeys.get(c.keyId);
    try {
      if (!key) throw new Error(`its key ${c.keyId} was never adopted`);
      const parsed = verifyCheckpointNote(c.note, key);
      if (parsed.origin !== origin) throw new Error(`its origin is not ${origin}`);
      if (parsed.treeSize !== c.treeSize || b64(parsed.rootHash) !== c.rootHash) {
        throw new Error("its note and its event disagree");
      }
    } catch (err) {
      problems.push({
        kind: "checkpoint_signature",
        message: `${label}: ${(err as Error).message}`,
      });
    }
    if (prev && c.treeSize < prev.treeSize) {
      problems.push({
        kind: "checkpoint_shrinks",
        message: `${label} (tree size ${c.treeSize}) is smaller than the one before it ` +
          `(${prev.treeSize}): they cannot both be of this log`,
      });
    }
    claims.push({ label, treeSize: c.treeSize, rootHash: c.rootHash });
    prev = c;
  }
  return { problems, claims };
};

/** The checkpoint events in the log, oldest first (for the verifier: any type, by sequence). */
export const storedCheckpoints = async (db: Db): Promise<StoredCheckpoint[]> =>
  (await db.query<
    { global_position: string | number; stream_version: number; data: StoredCheckpoint }
  >(
    sql`select global_position, stream_version, data from events
      where stream_id = 'audit-checkpoints' and type = 'CheckpointPublished'
      order by stream_version`,
  )).map((r) => ({
    position: Number(r.global_position),
    sequence: Number(r.stream_version),
    treeSize: Number(r.data.treeSize),
    rootHash: r.data.rootHash,
    note: r.data.note,
    keyId: r.data.keyId,
  }));

/**
 * Everything `deno task audit verify` checks in the database: every stream's
 * hash chain, every stored checkpoint (signature, root recomputed from the
 * events, consistency with the one before) and, when given, a checkpoint
 * kept outside. Returns the report's lines (what failed named) and whether
 * all holds.
 */
export const verifyLog = async (
  db: Db,
  opts: {
    outside?: CheckpointClaim & { origin: string };
    onProgress?: (n: number) => void;
    /** Worker threads hashing pages ahead (default: one fewer than the cores, 1 to 4). */
    workers?: number;
  } = {},
): Promise<{ ok: boolean; lines: string[] }> => {
  const lines: string[] = [];
  let ok = true;
  const origin = originOf((await readInstallation(db)).id);
  const keys = new Map((await adoptedKeys(db)).map((k) => [k.keyId, k.verifierKey]));
  const stored = await storedCheckpoints(db);
  const { problems, claims } = checkStoredCheckpoints(stored, keys, origin);
  const outside = opts.outside;
  if (outside) {
    if (outside.origin !== origin) {
      problems.push({
        kind: "checkpoint_signature",
        message: `${outside.label} is of log ${outside.origin}, not of this one (${origin})`,
      });
    }
    claims.push(outside);
  }
  const workers = opts.workers ??
    Math.max(1, Math.min(4, (navigator.hardwareConcurrency ?? 2) - 1));
  const r = await verifyTree(hashedPagesFromDb(db, workers), claims, {
    cache: db,
    chains: true,
    onProgress: opts.onProgress,
  });
  lines.push(...chainLines(r));
  if (r.chain.brokenCount > 0) ok = false;
  const all = [...problems, ...r.problems];
  if (all.length === 0) {
    const newest = stored.at(-1);
    lines.push(
      stored.length === 0
        ? `OK: no checkpoints yet (${r.events} events)`
        : `OK: ${stored.length} checkpoints verify (signatures, roots recomputed from the ` +
          `events, each consistent with the one before); the newest covers ` +
          `${newest!.treeSize} of ${r.events} events`,
    );
    if (outside) {
      lines.push(
        `OK: ${outside.label} (tree size ${outside.treeSize}) verifies: the first ` +
          `${outside.treeSize} events are as signed`,
      );
    }
  } else {
    for (const p of all.slice(0, 20)) lines.push(`FAILED: ${p.message}`);
    if (all.length > 20) lines.push(`… and ${all.length - 20} more`);
    ok = false;
  }
  return { ok, lines };
};

/** The hash chains' verdict, as `deno task audit verify` has always printed it. */
export const chainLines = (r: TlogReport): string[] => {
  const c = r.chain;
  if (c.brokenCount === 0) {
    return [`OK: ${r.events} events in ${c.streams} streams; every hash chain verifies`];
  }
  const b = c.firstBroken!;
  return [
    `ALTERED: stream ${b.streamId} version ${b.streamVersion} (global position ${b.globalPosition}): ${b.problem}`,
    `${c.brokenCount} of ${r.events} events in ${c.streams} streams fail verification`,
  ];
};
