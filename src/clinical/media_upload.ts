import type { EventMetadata } from "../../events/metadata.ts";
import type { CONTENT_TYPES, MediaKind } from "../../events/media.ts";
import type { Actor } from "../auth/policy.ts";
import {
  ConflictError,
  NotFoundError,
  RequestTimeoutError,
  UploadRejectedError,
  ValidationError,
} from "../errors.ts";
import { parseMultipart } from "../media/multipart.ts";
import {
  ingest,
  type PipelineDeps,
  recordRejection,
  type StepTimings,
  uploadFields,
} from "../media/pipeline.ts";
import { sniff } from "../media/sniff.ts";
import type { Db } from "../store/db.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { loadMedia, type MediaRecord } from "./media.ts";

/** Room for the multipart envelope and the text fields around the file. */
const ENVELOPE_BYTES = 256 * 1024;

/** What an upload runs with: the pipeline's dependencies and the body's deadline. */
export interface UploadDeps extends PipelineDeps {
  store: EventStore;
  /** Seconds the whole body may take to arrive. */
  timeoutSec: number;
}

/** One upload as the route read it: where it goes, who sends it, and the raw body. */
export interface UploadRequest {
  kind: MediaKind;
  /** The encounter (photos) or the patient (documents) in the path, a UUID. */
  targetId: string;
  actor: Actor;
  metadata: EventMetadata;
  /** The `Content-Type` header ("" when absent). */
  contentType: string;
  /** The `Content-Length` header, when sent. */
  contentLength: string | undefined;
  body: ReadableStream<Uint8Array> | null;
}

/**
 * The caller's access decision for the upload: whether the actor may upload
 * to the patient (undefined: no such target), and the refusal (403 and its
 * event) when not.
 */
export interface UploadPolicy {
  allows(patientId: string | undefined): Promise<boolean>;
  deny(): Promise<never>;
}

export interface Uploaded {
  media: MediaRecord;
  timings: StepTimings;
}

/** An encounter's patient and status, or null when there is none. */
const encounterOf = async (db: Db, id: string) => {
  const [e] = await db.query<{ patient_id: string; status: string }>(
    sql`select patient_id::text as patient_id, status from encounters where id = ${id}::uuid`,
  );
  return e ? { patientId: e.patient_id, status: e.status } : null;
};

/** One rule for photos and documents: a cancelled encounter takes no media. */
const cancelledEncounter = (status: string | null) =>
  status === "cancelled"
    ? new UploadRejectedError("encounter_cancelled", "cannot upload media to a cancelled encounter")
    : null;

/** Where an upload is going (the patient, and the encounter of a photo), or null. */
const resolveTarget = async (db: Db, kind: MediaKind, id: string) => {
  let patientId = id;
  let encounterStatus: string | null = null;
  if (kind === "photo") {
    const e = await encounterOf(db, id);
    if (!e) return null;
    patientId = e.patientId;
    encounterStatus = e.status;
  }
  const [p] = await db.query<{ mrn: string; deleted: boolean }>(
    sql`select mrn, deleted from patients where id = ${patientId}::uuid`,
  );
  if (!p) return null;
  return {
    kind,
    patientId,
    encounterId: kind === "photo" ? id : null,
    mrn: p.mrn,
    patientDeleted: p.deleted,
    encounterStatus,
  };
};

/**
 * The upload behind both upload routes: policy, target checks, the streamed
 * body (size-limited while it arrives, under a deadline), the form fields,
 * then {@link ingest}. Every refusal past authentication is an
 * `UploadRejected` event; a bad field is a 422 and no event.
 */
export const uploadMedia = async (
  deps: UploadDeps,
  req: UploadRequest,
  policy: UploadPolicy,
): Promise<Uploaded> => {
  const { kind, actor, metadata } = req;
  const target = await resolveTarget(deps.store.db, kind, req.targetId);
  let bytesRead = 0;
  let category: string | null = null;
  let encounterId = target?.encounterId ?? null;
  let detectedType: (typeof CONTENT_TYPES)[number] | null = null;
  /** Records a refusal with what is known of the upload so far. */
  const record = (reason: UploadRejectedError["reason"]) =>
    recordRejection(deps.store, actor, {
      patientId: target?.patientId ?? null,
      encounterId,
      kind,
      category,
      reason,
      detectedType,
      bytesRead,
    }, metadata);
  const reject = async (err: UploadRejectedError): Promise<never> => {
    await record(err.reason);
    throw err;
  };
  // the policy first: who may not upload here learns nothing about what exists
  if (!(await policy.allows(target?.patientId))) {
    await record("forbidden");
    await policy.deny();
  }
  if (!target) throw new NotFoundError(kind === "photo" ? "no such encounter" : "no such patient");

  if (target.patientDeleted) throw new ConflictError("the patient is deleted");
  const cancelled = cancelledEncounter(target.encounterStatus);
  if (cancelled) await reject(cancelled);
  const { contentType, body } = req;
  if (!/^multipart\/form-data\s*;/i.test(contentType) || !body) {
    throw new ValidationError("the body must be multipart/form-data", [{
      path: "content-type",
      message: "expected multipart/form-data with a `file` part",
    }]);
  }
  const declared = Number(req.contentLength ?? NaN);
  if (declared > deps.maxBytes + ENVELOPE_BYTES) {
    await reject(new UploadRejectedError("too_large", `the file exceeds ${deps.maxBytes} bytes`));
  }
  // a deadline for the body: a client that trickles bytes cannot hold an upload open for ever
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), deps.timeoutSec * 1000);
  try {
    const parsed = await parseMultipart(body, contentType, {
      maxFileBytes: deps.maxBytes,
      signal: deadline.signal,
    }).catch((err) => {
      throw deadline.signal.aborted
        ? new RequestTimeoutError(`the upload took longer than ${deps.timeoutSec} s`)
        : err;
    });
    clearTimeout(timer);
    bytesRead = parsed.file?.size ?? 0;
    // every field is checked before anything is stored: a bad one is a 422 and no event
    const fields = uploadFields(kind, parsed);
    category = fields.category;
    if (parsed.file) detectedType = sniff(parsed.file.bytes);
    // a document may name one of the patient's encounters, under the photos' rule
    if (kind === "document" && fields.encounterId) {
      const e = await encounterOf(deps.store.db, fields.encounterId);
      if (e?.patientId !== target.patientId) {
        throw new ValidationError("no such encounter for this patient", [{
          path: "encounterId",
          message: "not an encounter of this patient",
        }]);
      }
      encounterId = fields.encounterId;
      const refused = cancelledEncounter(e.status);
      if (refused) throw refused; // recorded below, with the other refusals
    }
    const done = await ingest(deps, target, parsed, fields, actor, metadata);
    const media = (await loadMedia(deps.store, done.mediaId))!;
    return { media, timings: done.timings };
  } catch (err) {
    if (err instanceof UploadRejectedError) {
      if (err.reason === "too_large" && bytesRead === 0) bytesRead = deps.maxBytes;
      await reject(err);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
};
