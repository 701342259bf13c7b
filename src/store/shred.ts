import type { EventMetadata } from "../../events/metadata.ts";
import type { EventStore } from "./event_store.ts";
import type { PhiCodec } from "./phi_codec.ts";
import type { AppendResult, ExpectedVersion, Projection } from "./types.ts";

/**
 * Destroys a data subject's key when `SubjectKeyDestroyed` is appended, in
 * the append's own transaction: the key is gone if and only if the log says
 * so. Every event store takes one (its `shredder` option) and runs it first
 * among its inline projections.
 */
export const subjectKeyShredder = (codec: PhiCodec): Projection => ({
  name: "subject_key_shredder",
  version: 1,
  mode: "inline",
  tables: [],
  setup: "",
  handlers: {
    SubjectKeyDestroyed: async (db, e) => {
      await codec.destroy(e.data.subjectId as string, db);
    },
  },
});

/**
 * Crypto-shreds a data subject: records `SubjectKeyDestroyed` (with who and
 * why in the metadata) and destroys the key. Every PHI field sealed for the
 * subject then reads as erased; the log and its hash chain are untouched.
 */
export const shredSubject = async (
  store: EventStore,
  subjectId: string,
  reason: string,
  metadata: EventMetadata,
  /** "no_stream": only the first of concurrent erasures records one (others: ConcurrencyError). */
  expected: ExpectedVersion = "any",
): Promise<AppendResult> => {
  const result = await store.append(`subject-${subjectId}`, expected, [
    { type: "SubjectKeyDestroyed", data: { subjectId, reason } },
  ], { ...metadata, reason });
  store.codec.forget(subjectId);
  return result;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The id of the erased record when a `SubjectKeyDestroyed` names a subject
 * of this kind (`patient-<uuid>`, `user-<uuid>`), else null. Projections use
 * it to reach the rows that hold the subject's PHI; anything else (a subject
 * of another kind, or not a uuid) is not theirs, and must not fail the append.
 */
export const erasedId = (
  subjectId: unknown,
  kind: "patient" | "user",
): string | null => {
  if (typeof subjectId !== "string" || !subjectId.startsWith(`${kind}-`)) return null;
  const id = subjectId.slice(kind.length + 1);
  return UUID.test(id) ? id : null;
};
