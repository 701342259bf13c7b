import { hash } from "node:crypto";

/** The fields of an event the hash covers. */
export interface HashInput {
  streamId: string;
  streamVersion: number;
  eventId: string;
  type: string;
  schemaVersion: number;
  data: unknown;
  metadata: unknown;
  recordedAt: Date;
  prevHash: string | null;
}

/**
 * JSON with object keys sorted at every level, so a payload hashes the same
 * after a round trip through jsonb (which reorders keys).
 */
export const canonicalJson = (value: unknown): string => {
  // loops rather than map/filter/join: `audit verify` runs this for every event
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) {
    let s = "[";
    for (let i = 0; i < value.length; i++) s += (i === 0 ? "" : ",") + canonicalJson(value[i]);
    return s + "]";
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let s = "{";
  let first = true;
  for (const k of keys) {
    const x = obj[k];
    if (x === undefined) continue;
    s += (first ? "" : ",") + JSON.stringify(k) + ":" + canonicalJson(x);
    first = false;
  }
  return s + "}";
};

/**
 * SHA-256 over the event's content and the previous event's hash in the same
 * stream: altering, removing or reordering any event breaks the chain from
 * that event on.
 */
export const eventHash = (e: HashInput): string =>
  hash(
    "sha256",
    canonicalJson([
      e.prevHash ?? "",
      e.streamId,
      e.streamVersion,
      e.eventId,
      e.type,
      e.schemaVersion,
      e.recordedAt.toISOString(),
      e.data,
      e.metadata,
    ]),
    "hex",
  );

/**
 * {@link eventHash} from parts already at hand: `recordedAtIso` as
 * `Date#toISOString` writes it, `dataJson` and `metadataJson` as
 * {@link canonicalJson} writes them (for JSON values the same text as
 * RFC 8785's `jcs`, so a verifier canonicalizes each payload once for both
 * the chain and the Merkle leaf).
 */
export const eventHashOfParts = (
  prevHash: string | null,
  streamId: string,
  streamVersion: number,
  eventId: string,
  type: string,
  schemaVersion: number,
  recordedAtIso: string,
  dataJson: string,
  metadataJson: string,
): string =>
  hash(
    "sha256",
    "[" + JSON.stringify(prevHash ?? "") + "," + JSON.stringify(streamId) + "," +
      JSON.stringify(streamVersion) + "," + JSON.stringify(eventId) + "," +
      JSON.stringify(type) + "," + JSON.stringify(schemaVersion) + "," +
      JSON.stringify(recordedAtIso) + "," + dataJson + "," + metadataJson + "]",
    "hex",
  );
