import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { CONTENT_TYPES, MEDIA_KINDS, type MediaKind, SCAN_STATUSES } from "../../events/media.ts";
import { encounterPatient } from "../clinical/encounters.ts";
import { auditRead } from "../clinical/patients.ts";
import {
  deleteMedia,
  listMedia,
  loadMedia,
  type MediaRecord,
  mediaStats,
  restoreMedia,
  userName,
} from "../clinical/media.ts";
import {
  ConflictError,
  NotFoundError,
  RequestTimeoutError,
  UploadRejectedError,
  ValidationError,
} from "../errors.ts";
import { ALLOW_LISTS, DOCUMENT_CATEGORIES, PHOTO_CATEGORIES } from "../media/categories.ts";
import { parseMultipart, sanitizeFilename } from "../media/multipart.ts";
import { ingest, recordRejection, type StepTimings, uploadFields } from "../media/pipeline.ts";
import { sniff } from "../media/sniff.ts";
import { sql } from "../store/sql.ts";
import { allowed, authenticate, authorize, deny, requestMetadata } from "./auth_middleware.ts";
import {
  byEncounter,
  byMedia,
  byPatient,
  livePatient,
  patientInPath,
  patientOfEncounter,
  patientOfMedia,
  resourceOf,
} from "./patient_scope.ts";
import type { AppEnv } from "./env.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

/** Room for the multipart envelope and the text fields around the file. */
const ENVELOPE_BYTES = 256 * 1024;

const MediaSchema = z.object({
  id: z.uuid(),
  patientId: z.uuid(),
  encounterId: z.uuid().nullable(),
  kind: z.enum(MEDIA_KINDS),
  category: z.string(),
  contentType: z.enum(CONTENT_TYPES),
  size: z.number().int().openapi({ description: "bytes served by /content" }),
  sha256: z.string().openapi({ description: "SHA-256 (hex) of the bytes /content serves" }),
  width: z.number().int().nullable(),
  height: z.number().int().nullable(),
  hasThumbnail: z.boolean(),
  filename: z.string().nullable().openapi({ description: "sanitised; metadata only" }),
  notes: z.string().nullable(),
  uploader: z.object({ id: z.uuid(), name: z.string().nullable() }),
  scanStatus: z.enum(SCAN_STATUSES).openapi({
    description: "`not_scanned` when no scanner is configured; never a false `clean`",
  }),
  dicom: z.record(z.string(), z.string().nullable()).nullable(),
  dicomPatientMismatch: z.boolean().openapi({
    description: "the DICOM header's patient id differs from the patient's MRN",
  }),
  deleted: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Media");

const MediaListItem = MediaSchema.pick({
  id: true,
  patientId: true,
  encounterId: true,
  kind: true,
  category: true,
  contentType: true,
  size: true,
  sha256: true,
  scanStatus: true,
  deleted: true,
  createdAt: true,
}).extend({
  uploaderId: z.uuid(),
  dicom: z.object({ modality: z.string().nullable(), studyDate: z.string().nullable() })
    .nullable().openapi({ description: "DICOM only: the rest of the header is in /v1/media/{id}" }),
}).openapi("MediaListItem");

const ListQuery = z.object({
  category: z.string().max(50).optional(),
  kind: z.enum(MEDIA_KINDS).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().max(500).optional(),
  include_deleted: z.enum(["true", "false"]).default("false"),
});

const IdParam = z.object({ id: z.uuid() });

const view = async (c: Context<AppEnv>, m: MediaRecord) => ({
  id: m.id,
  patientId: m.patientId,
  encounterId: m.encounterId,
  kind: m.kind,
  category: m.category,
  contentType: m.contentType as (typeof CONTENT_TYPES)[number],
  size: m.size,
  sha256: m.sha256,
  width: m.width,
  height: m.height,
  hasThumbnail: m.thumbnail !== null,
  filename: m.filename,
  notes: m.notes,
  uploader: { id: m.uploaderId, name: await userName(c.var.deps.runtime().store, m.uploaderId) },
  scanStatus: m.scanStatus,
  dicom: m.dicom,
  dicomPatientMismatch: m.dicomPatientMismatch,
  deleted: m.deleted,
  createdAt: m.createdAt,
  updatedAt: m.updatedAt,
});

/** A media item the actor may see: deleted ones are 404 to everyone but admins. */
const visible = async (c: Context<AppEnv>, id: string, unseal = true): Promise<MediaRecord> => {
  const m = await loadMedia(c.var.deps.runtime().store, id, { unseal });
  if (!m || (m.deleted && !(await allowed(c, "media.see_deleted")))) {
    throw new NotFoundError("no such media");
  }
  return m;
};

const serverTiming = (t: StepTimings) =>
  Object.entries(t).map(([k, v]) => `${k};dur=${v!.toFixed(1)}`).join(", ");

/** An encounter's patient and status, or null when there is none. */
const encounterOf = async (c: Context<AppEnv>, id: string) => {
  const [e] = await c.var.deps.runtime().store.db.query<{ patient_id: string; status: string }>(
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
const resolveTarget = async (c: Context<AppEnv>, kind: MediaKind) => {
  const store = c.var.deps.runtime().store;
  const id = c.req.param("id")!;
  let patientId = id;
  let encounterStatus: string | null = null;
  if (kind === "photo") {
    const e = await encounterOf(c, id);
    if (!e) return null;
    patientId = e.patientId;
    encounterStatus = e.status;
  }
  const [p] = await store.db.query<{ mrn: string; deleted: boolean }>(
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
 * The upload pipeline behind both upload routes: policy, target checks,
 * the streamed body (size-limited while it arrives), then {@link ingest}.
 * Every refusal past authentication is an `UploadRejected` event.
 */
const upload = (kind: MediaKind) => async (c: Context<AppEnv>) => {
  const runtime = c.var.deps.runtime();
  const config = c.var.deps.config;
  const actor = c.get("actor")!;
  const id = c.req.param("id")!;
  if (!z.uuid().safeParse(id).success) {
    throw new ValidationError("bad id", [{ path: "id", message: "must be a UUID" }]);
  }
  const target = await resolveTarget(c, kind);
  const metadata = requestMetadata(c);
  let bytesRead = 0;
  let category: string | null = null;
  let encounterId = target?.encounterId ?? null;
  let detectedType: (typeof CONTENT_TYPES)[number] | null = null;
  /** Records a refusal with what is known of the upload so far. */
  const record = (reason: UploadRejectedError["reason"]) =>
    recordRejection(runtime.store, actor, {
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
  const resource = target ? await resourceOf(c, target.patientId) : undefined;
  if (!(await allowed(c, "media.upload", () => Promise.resolve(resource)))) {
    await record("forbidden");
    await deny(c, "media.upload");
  }
  if (!target) throw new NotFoundError(kind === "photo" ? "no such encounter" : "no such patient");

  if (target.patientDeleted) throw new ConflictError("the patient is deleted");
  const cancelled = cancelledEncounter(target.encounterStatus);
  if (cancelled) await reject(cancelled);
  const contentType = c.req.header("content-type") ?? "";
  if (!/^multipart\/form-data\s*;/i.test(contentType) || !c.req.raw.body) {
    throw new ValidationError("the body must be multipart/form-data", [{
      path: "content-type",
      message: "expected multipart/form-data with a `file` part",
    }]);
  }
  const declared = Number(c.req.header("content-length") ?? NaN);
  if (declared > config.mediaMaxBytes + ENVELOPE_BYTES) {
    await reject(
      new UploadRejectedError("too_large", `the file exceeds ${config.mediaMaxBytes} bytes`),
    );
  }
  // a deadline for the body: a client that trickles bytes cannot hold an upload open for ever
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), config.uploadTimeoutSec * 1000);
  try {
    const parsed = await parseMultipart(c.req.raw.body, contentType, {
      maxFileBytes: config.mediaMaxBytes,
      signal: deadline.signal,
    }).catch((err) => {
      throw deadline.signal.aborted
        ? new RequestTimeoutError(`the upload took longer than ${config.uploadTimeoutSec} s`)
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
      const e = await encounterOf(c, fields.encounterId);
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
    const done = await ingest(
      {
        store: runtime.store,
        blobs: runtime.blobs,
        scanner: runtime.scanner,
        maxPixels: config.mediaMaxPixels,
        maxBytes: config.mediaMaxBytes,
        images: runtime.images,
      },
      target,
      parsed,
      fields,
      actor,
      metadata,
    );
    const m = (await loadMedia(runtime.store, done.mediaId))!;
    c.header("Location", `/v1/media/${m.id}`);
    c.header("Server-Timing", serverTiming(done.timings));
    return c.json(await view(c, m), 201);
  } catch (err) {
    if (err instanceof UploadRejectedError) {
      if (err.reason === "too_large" && bytesRead === 0) bytesRead = config.mediaMaxBytes;
      await reject(err);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
};

const uploadDoc = (kind: MediaKind) => {
  const categories = kind === "photo" ? PHOTO_CATEGORIES : DOCUMENT_CATEGORIES;
  const fields = {
    file: z.string().openapi({ type: "string", format: "binary" }),
    category: z.enum(categories),
    ...(kind === "photo" ? { notes: z.string().max(2000).optional() } : {
      description: z.string().max(2000).optional(),
      encounterId: z.uuid().optional(),
    }),
  };
  return createRoute({
    method: "post",
    path: kind === "photo" ? "/v1/encounters/{id}/media" : "/v1/patients/{id}/documents",
    tags: ["media"],
    summary: kind === "photo"
      ? "Upload a clinical photo to an encounter"
      : "Upload a document or image to a patient's record",
    description: "multipart/form-data. The type is decided from the bytes (JPEG, PNG, WebP, " +
      "PDF, DICOM, plain text), never from the name; a name or declared type that disagrees, or " +
      "a polyglot, is 415, as is a type the category does not accept. Images are decoded and " +
      "re-encoded without their metadata (EXIF, GPS, XMP) and get a 256-px thumbnail; DICOM " +
      "headers are read. Files are scanned for malware when a scanner is configured, encrypted " +
      "with the patient's key, and the `MediaUploaded` event is appended last. The size limit " +
      "is enforced while the body streams in (413). An image whose header claims more pixels " +
      "than the limit or than its data could hold is 422 before it is scanned or decoded; a " +
      "scan that fails or times out is 503; a full decode queue is 503 with `Retry-After`. " +
      "`Server-Timing` reports each step.",
    security: bearer,
    request: {
      params: IdParam,
      body: {
        required: true,
        content: { "multipart/form-data": { schema: z.object(fields) } },
      },
    },
    responses: {
      201: { description: "stored", content: json(MediaSchema) },
      ...problemResponses(
        "unauthorized",
        "forbidden",
        "not-found",
        "conflict",
        "payload-too-large",
        "request-timeout",
        "unsupported-media-type",
        "validation",
        "corrupt-media",
        "malware-detected",
        "unavailable",
      ),
    },
  });
};

const listRoute = (by: "patient" | "encounter") =>
  createRoute({
    method: "get",
    path: by === "patient" ? "/v1/patients/{id}/media" : "/v1/encounters/{id}/media",
    tags: ["media"],
    summary: by === "patient"
      ? "A patient's photos and documents, newest first (audited)"
      : "An encounter's photos and documents, newest first (audited)",
    security: bearer,
    middleware: [
      authenticate(),
      authorize("media.list", by === "patient" ? byPatient : byEncounter),
      livePatient(by === "patient" ? patientInPath : patientOfEncounter),
    ] as const,
    request: { params: IdParam, query: ListQuery },
    responses: {
      200: {
        description: "a page; pass `nextCursor` as `cursor` for the next",
        content: json(z.object({
          items: z.array(MediaListItem),
          nextCursor: z.string().nullable(),
          total: z.number().int().openapi({ description: "items matching, on every page" }),
        })),
      },
      ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
    },
  });

const list = (by: "patient" | "encounter") => async (c: Context<AppEnv>) => {
  const runtime = c.var.deps.runtime();
  const id = c.req.param("id")!;
  const q = ListQuery.parse(c.req.query());
  const includeDeleted = q.include_deleted === "true";
  if (includeDeleted && !(await allowed(c, "media.see_deleted"))) {
    await deny(c, "media.see_deleted");
  }
  let patientId = id;
  if (by === "encounter") {
    const owner = await encounterPatient(runtime.store, id);
    if (!owner) throw new NotFoundError("no such encounter");
    patientId = owner;
  }
  const page = await listMedia(runtime.store, {
    patientId,
    ...(by === "encounter" ? { encounterId: id } : {}),
    ...(q.category ? { category: q.category } : {}),
    ...(q.kind ? { kind: q.kind } : {}),
    includeDeleted,
    limit: q.limit,
    ...(q.cursor ? { cursor: q.cursor } : {}),
  });
  await auditRead(runtime, c.get("actor")!, {
    type: "MediaListed",
    data: {
      patientId,
      encounterId: by === "encounter" ? id : null,
      mediaIds: page.items.map((m) => m.id),
    },
  }, requestMetadata(c));
  c.header("Cache-Control", "no-store");
  return c.json(page, 200);
};

/** `Content-Disposition` with a sanitised name, ASCII fallback plus RFC 8187 UTF-8. */
const disposition = (type: "inline" | "attachment", name: string) => {
  const safe = sanitizeFilename(name);
  const ascii = safe.replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_");
  return `${type}; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(safe)}`;
};

const sendBytes = (
  c: Context<AppEnv>,
  bytes: Uint8Array<ArrayBuffer>,
  contentType: string,
  sha256: string,
  disp: string,
) =>
  c.body(bytes, 200, {
    "Content-Type": contentType === "text/plain" ? "text/plain; charset=utf-8" : contentType,
    "Content-Disposition": disp,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    ETag: `"${sha256}"`,
    "Content-Length": String(bytes.length),
  });

const STATS_ROW = z.object({
  count: z.number().int(),
  bytes: z.number().int(),
  deletedCount: z.number().int(),
  deletedBytes: z.number().int(),
});

/** Clinical photos and documents: upload, list, read, download, delete, restore, statistics. */
export const media = new OpenAPIHono<AppEnv>();

// uploads read the raw body as a stream: documented here, mounted without a body validator
for (const kind of ["photo", "document"] as const) {
  media.openAPIRegistry.registerPath(uploadDoc(kind));
  media.post(
    kind === "photo" ? "/v1/encounters/:id/media" : "/v1/patients/:id/documents",
    authenticate(),
    upload(kind),
  );
}

media
  .openapi(listRoute("patient"), list("patient") as never)
  .openapi(listRoute("encounter"), list("encounter") as never)
  .openapi(
    createRoute({
      method: "get",
      path: "/v1/media/categories",
      tags: ["media"],
      summary: "Upload categories and the types each accepts",
      security: bearer,
      middleware: [authenticate(), authorize("media.categories")] as const,
      responses: {
        200: {
          description: "per kind, per category, the accepted content types",
          content: json(z.record(z.string(), z.record(z.string(), z.array(z.string())))),
        },
        ...problemResponses("unauthorized", "forbidden"),
      },
    }),
    (c) => c.json(ALLOW_LISTS as Record<string, Record<string, string[]>>, 200),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/v1/media/stats",
      tags: ["media"],
      summary: "Storage statistics: count and bytes by kind and category",
      security: bearer,
      middleware: [authenticate(), authorize("media.stats")] as const,
      responses: {
        200: {
          description: "deleted items are counted apart; their blobs stay on disk",
          content: json(z.object({
            categories: z.array(
              STATS_ROW.extend({ kind: z.enum(MEDIA_KINDS), category: z.string() }),
            ),
            total: STATS_ROW,
          })),
        },
        ...problemResponses("unauthorized", "forbidden"),
      },
    }),
    async (c) => c.json(await mediaStats(c.var.deps.runtime().store), 200),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/v1/media/{id}",
      tags: ["media"],
      summary: "A photo's or document's metadata (audited)",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("media.read", byMedia),
        livePatient(patientOfMedia),
      ] as const,
      request: { params: IdParam },
      responses: {
        200: { description: "the metadata", content: json(MediaSchema) },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const m = await visible(c, c.req.valid("param").id);
      await auditRead(runtime, c.get("actor")!, {
        type: "MediaViewed",
        data: { mediaId: m.id, patientId: m.patientId },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json(await view(c, m), 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/v1/media/{id}/content",
      tags: ["media"],
      summary: "Download the file (audited)",
      description: "The stored bytes (images re-encoded without metadata) with the sniffed " +
        "Content-Type, `ETag` = SHA-256, `Cache-Control: no-store` and `nosniff`.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("media.read", byMedia),
        livePatient(patientOfMedia),
      ] as const,
      request: { params: IdParam },
      responses: {
        200: {
          description: "the bytes",
          content: {
            "application/octet-stream": { schema: z.string().openapi({ format: "binary" }) },
          },
        },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const m = await visible(c, c.req.valid("param").id);
      const bytes = await runtime.blobs.get(m.patientId, m.blob);
      if (!bytes) throw new NotFoundError("the file was erased");
      await auditRead(runtime, c.get("actor")!, {
        type: "MediaDownloaded",
        data: { mediaId: m.id, patientId: m.patientId },
      }, requestMetadata(c));
      const inline = m.contentType.startsWith("image/");
      return sendBytes(
        c,
        bytes,
        m.contentType,
        m.sha256,
        disposition(inline ? "inline" : "attachment", m.filename ?? "file"),
      ) as never;
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/v1/media/{id}/thumbnail",
      tags: ["media"],
      summary: "A 256-px JPEG thumbnail of an image (audited)",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("media.read", byMedia),
        livePatient(patientOfMedia),
      ] as const,
      request: { params: IdParam },
      responses: {
        200: {
          description: "JPEG",
          content: { "image/jpeg": { schema: z.string().openapi({ format: "binary" }) } },
        },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const m = await visible(c, c.req.valid("param").id);
      if (!m.thumbnail) throw new NotFoundError("this media item has no thumbnail");
      const bytes = await runtime.blobs.get(m.patientId, m.thumbnail.blob);
      if (!bytes) throw new NotFoundError("the file was erased");
      await auditRead(runtime, c.get("actor")!, {
        type: "MediaThumbnailViewed",
        data: { mediaId: m.id, patientId: m.patientId },
      }, requestMetadata(c));
      return sendBytes(c, bytes, "image/jpeg", m.thumbnail.sha256, "inline") as never;
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/v1/media/{id}",
      tags: ["media"],
      summary: "Soft-delete a photo or document; `reason` (JSON body or query) is required",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("media.delete", byMedia),
        livePatient(patientOfMedia),
      ] as const,
      request: {
        params: IdParam,
        query: z.object({ reason: z.string().max(1000).optional() }),
        body: { required: false, content: json(z.strictObject({ reason: z.string().max(1000) })) },
      },
      responses: {
        204: { description: "deleted: hidden from lists, the file kept" },
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "conflict"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const reason = (c.req.valid("json")?.reason ?? c.req.valid("query").reason ?? "").trim();
      if (!reason) {
        throw new ValidationError("a reason is required", [{
          path: "reason",
          message: "required",
        }]);
      }
      await visible(c, id, false);
      await deleteMedia(c.var.deps.runtime().store, id, reason, requestMetadata(c));
      return c.body(null, 204);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/v1/media/{id}/restore",
      tags: ["media"],
      summary: "Restore a soft-deleted photo or document (admin)",
      security: bearer,
      middleware: [authenticate(), authorize("media.restore")] as const,
      request: { params: IdParam },
      responses: {
        200: { description: "restored (audited as a read)", content: json(MediaSchema) },
        ...problemResponses(
          "unauthorized",
          "forbidden",
          "not-found",
          "validation",
          "conflict",
          "unavailable",
        ),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const { id } = c.req.valid("param");
      await restoreMedia(runtime.store, id, requestMetadata(c));
      const m = (await loadMedia(runtime.store, id))!;
      // the answer shows the sealed fields: that is a read like any other
      await auditRead(runtime, c.get("actor")!, {
        type: "MediaViewed",
        data: { mediaId: m.id, patientId: m.patientId },
      }, requestMetadata(c));
      return c.json(await view(c, m), 200);
    },
  );
