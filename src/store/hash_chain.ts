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
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(",")}}`;
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
