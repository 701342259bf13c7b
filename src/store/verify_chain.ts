import type { Db } from "./db.ts";
import { eventHash } from "./hash_chain.ts";
import { sql } from "./sql.ts";

export interface BrokenLink {
  streamId: string;
  streamVersion: number;
  globalPosition: number;
  problem: "hash_mismatch" | "prev_hash_mismatch" | "version_gap";
}

export interface VerifyReport {
  ok: boolean;
  events: number;
  streams: number;
  /** The altered event with the lowest global position, if any. */
  firstBroken: BrokenLink | null;
  brokenCount: number;
}

const PAGE = 5000;

interface ChainRow {
  global_position: string | number;
  stream_id: string;
  stream_version: number;
  event_id: string;
  type: string;
  schema_version: number;
  data: unknown;
  metadata: unknown;
  recorded_at: Date | string;
  prev_hash: string | null;
  hash: string;
}

/**
 * Recomputes every stream's hash chain from the stored rows (as written:
 * sealed payloads, original schema versions). Reads in (stream, version)
 * order by keyset pages, so memory stays flat on a large log.
 */
export const verifyChain = async (
  db: Db,
  onProgress?: (done: number) => void,
): Promise<VerifyReport> => {
  let events = 0, streams = 0, brokenCount = 0;
  let firstBroken = null as BrokenLink | null;
  let cursor: { s: string; v: number } | null = null;
  let prev = null as { stream: string; version: number; hash: string } | null;
  const broken = (b: BrokenLink) => {
    brokenCount++;
    if (!firstBroken || b.globalPosition < firstBroken.globalPosition) firstBroken = b;
  };
  for (;;) {
    const c: { s: string; v: number } | null = cursor;
    const rows: ChainRow[] = await db.query<ChainRow>(
      sql`select global_position, stream_id, stream_version, event_id::text as event_id, type,
        schema_version, data, metadata, recorded_at, prev_hash, hash
      from events
      ${c ? sql`where (stream_id, stream_version) > (${c.s}, ${c.v})` : sql``}
      order by stream_id, stream_version limit ${PAGE}`,
    );
    if (rows.length === 0) break;
    for (const r of rows) {
      const version = Number(r.stream_version);
      const position = Number(r.global_position);
      const sameStream: boolean = prev?.stream === r.stream_id;
      if (!sameStream) streams++;
      const expectedPrev = sameStream ? prev!.hash : null;
      const link = { streamId: r.stream_id, streamVersion: version, globalPosition: position };
      if (version !== (sameStream ? prev!.version + 1 : 1)) {
        broken({ ...link, problem: "version_gap" });
      } else if ((r.prev_hash ?? null) !== expectedPrev) {
        broken({ ...link, problem: "prev_hash_mismatch" });
      } else {
        const recomputed = eventHash({
          streamId: r.stream_id,
          streamVersion: version,
          eventId: r.event_id,
          type: r.type,
          schemaVersion: Number(r.schema_version),
          data: r.data,
          metadata: r.metadata,
          recordedAt: new Date(r.recorded_at),
          prevHash: r.prev_hash,
        });
        if (recomputed !== r.hash) broken({ ...link, problem: "hash_mismatch" });
      }
      // continue the chain from the stored hash so one edit is reported once
      prev = { stream: r.stream_id, version, hash: r.hash };
      events++;
    }
    const last: ChainRow = rows[rows.length - 1]!;
    cursor = { s: last.stream_id, v: Number(last.stream_version) };
    onProgress?.(events);
  }
  return { ok: brokenCount === 0, events, streams, firstBroken, brokenCount };
};
