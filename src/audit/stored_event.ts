import { hash } from "node:crypto";
import { type Query, sql } from "../store/sql.ts";
import { unhex32 } from "./merkle.ts";

/**
 * One event exactly as the log stores it: sealed fields stay sealed, so
 * whoever holds these rows (an export, a verifier outside the database) needs
 * no keys. It is the unit of the audit export (one JSON line each) and the
 * leaf of the transparency log's Merkle tree.
 */
export interface StoredEvent {
  globalPosition: number;
  streamId: string;
  streamVersion: number;
  eventId: string;
  type: string;
  schemaVersion: number;
  data: unknown;
  metadata: unknown;
  /** UTC, microsecond precision, as `2026-11-30T12:00:00.123000Z`. */
  recordedAt: string;
  prevHash: string | null;
  hash: string;
}

/** The select list that yields a {@link StoredEvent}'s fields (snake case, as row columns). */
export const STORED_EVENT_COLUMNS = sql`global_position, stream_id, stream_version,
  event_id::text as event_id, type, schema_version, data, metadata,
  to_char(recorded_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as recorded_at,
  prev_hash, hash`;

export interface StoredEventRow {
  global_position: number | string | bigint;
  stream_id: string;
  stream_version: number;
  event_id: string;
  type: string;
  schema_version: number;
  data: unknown;
  metadata: unknown;
  recorded_at: string;
  prev_hash: string | null;
  hash: string;
}

export const toStoredEvent = (r: StoredEventRow): StoredEvent => ({
  globalPosition: Number(r.global_position),
  streamId: r.stream_id,
  streamVersion: Number(r.stream_version),
  eventId: r.event_id,
  type: r.type,
  schemaVersion: Number(r.schema_version),
  data: r.data,
  metadata: r.metadata,
  recordedAt: r.recorded_at,
  prevHash: r.prev_hash,
  hash: r.hash,
});

/** Events in global order after `afterPosition`, at most `limit` of them. */
export const storedEventsAfter = (afterPosition: number, limit: number): Query =>
  sql`select ${STORED_EVENT_COLUMNS} from events where global_position > ${afterPosition}
    order by global_position limit ${limit}`;

/**
 * RFC 8785 (JSON Canonicalization Scheme) of a value that came from
 * `JSON.parse` or a jsonb column: object keys sorted by UTF-16 code units,
 * no whitespace, strings and numbers as ECMAScript serializes them. The
 * same output as the `canonicalize` package (tests/stored_event_test.ts
 * holds it to it) at about 2.5 times its speed: the Merkle leaves of every
 * event are computed with it, by the tree builder and by `audit verify`.
 */
export const jcs = (v: unknown): string => {
  if (v === null || typeof v !== "object") return JSON.stringify(v) ?? "null";
  if (Array.isArray(v)) {
    let s = "[";
    for (let i = 0; i < v.length; i++) s += (i === 0 ? "" : ",") + jcs(v[i] ?? null);
    return s + "]";
  }
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  let s = "{";
  let first = true;
  for (const k of keys) {
    const x = o[k];
    if (x === undefined) continue;
    s += (first ? "" : ",") + JSON.stringify(k) + ":" + jcs(x);
    first = false;
  }
  return s + "}";
};

/**
 * The event's canonical bytes: RFC 8785 (JSON Canonicalization Scheme) of the
 * {@link StoredEvent}. Any change to a stored column, the global position
 * included, changes them.
 */
export const canonicalEventBytes = (e: StoredEvent): Uint8Array => new TextEncoder().encode(jcs(e));

/** RFC 9162 leaf hash: SHA-256(0x00 ‖ canonical bytes). */
export const leafHash = (e: StoredEvent): Uint8Array =>
  // "\0" is the one byte 0x00 in UTF-8; a one-shot hash of the string skips a copy
  new Uint8Array(hash("sha256", "\0" + jcs(e), "buffer"));

const STORED_EVENT_KEYS = 11;

/**
 * The same bytes' leaf hash as {@link leafHash}, with `data` and `metadata`
 * already written by {@link jcs} (the verifier needs them for the hash chain
 * too) and the top-level object written without sorting its keys. Falls
 * back to {@link leafHash} for anything but an event of exactly the
 * StoredEvent fields with their usual types (an export line may carry more).
 */
export const leafHashOfParts = (
  e: StoredEvent,
  dataJson: string,
  metadataJson: string,
): Uint8Array => unhex32(leafHashHexOfParts(e, dataJson, metadataJson));

/** {@link leafHashOfParts} as 64 lowercase hex digits (the builder's and verifier's form). */
export const leafHashHexOfParts = (
  e: StoredEvent,
  dataJson: string,
  metadataJson: string,
): string => {
  if (
    typeof e.globalPosition !== "number" || typeof e.streamVersion !== "number" ||
    typeof e.schemaVersion !== "number" || typeof e.streamId !== "string" ||
    typeof e.eventId !== "string" || typeof e.type !== "string" ||
    typeof e.recordedAt !== "string" || typeof e.hash !== "string" ||
    (e.prevHash !== null && typeof e.prevHash !== "string") ||
    e.data === undefined || e.metadata === undefined ||
    Object.keys(e).length !== STORED_EVENT_KEYS
  ) return hash("sha256", "\0" + jcs(e), "hex");
  // keys in RFC 8785 order (UTF-16 code units)
  const s = '\0{"data":' + dataJson + ',"eventId":' + JSON.stringify(e.eventId) +
    ',"globalPosition":' + JSON.stringify(e.globalPosition) + ',"hash":' +
    JSON.stringify(e.hash) + ',"metadata":' + metadataJson + ',"prevHash":' +
    JSON.stringify(e.prevHash) + ',"recordedAt":' + JSON.stringify(e.recordedAt) +
    ',"schemaVersion":' + JSON.stringify(e.schemaVersion) + ',"streamId":' +
    JSON.stringify(e.streamId) + ',"streamVersion":' + JSON.stringify(e.streamVersion) +
    ',"type":' + JSON.stringify(e.type) + "}";
  return hash("sha256", s, "hex");
};
