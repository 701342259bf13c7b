import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Uses of the audit surface, each appended to the auditor's own
 * `access-<actorId>` stream as every read is: auditors are audited too.
 * Filters are ids, event type names and times only, never PHI.
 */
const uuid = z.uuid();
const at = z.iso.datetime({ offset: true });

/** The filters an audit query was given, as given. */
export const AuditFilters = z.strictObject({
  patientId: uuid.optional(),
  actorId: uuid.optional(),
  types: z.array(z.string().max(100)).max(50).optional(),
  from: at.optional(),
  to: at.optional(),
  streamId: z.string().max(200).optional(),
  grantId: uuid.optional(),
  cursor: z.boolean().optional(),
});
export type AuditFilters = z.infer<typeof AuditFilters>;

/**
 * A page of `GET /v1/audit/events` or `/v1/audit/actors/:id/activity`, a
 * patient's accounting of disclosures (`disclosures`: `returned` counts its
 * groups) or a record's timeline printed by `deno task audit replay`
 * (`replay`: a read of the record's PHI, by the operator named in the metadata).
 */
export const AuditQueried = defineEvent({
  type: "AuditQueried",
  version: 1,
  schema: z.strictObject({
    query: z.enum(["events", "activity", "disclosures", "replay"]),
    filters: AuditFilters,
    returned: z.number().int().min(0),
  }),
});

/**
 * A stream's past read through `GET /v1/audit/streams/:streamId`: for a
 * patient stream this shows the record's PHI as it stood `asOf`, so the
 * patient is named.
 */
export const AuditStreamViewed = defineEvent({
  type: "AuditStreamViewed",
  version: 1,
  schema: z.strictObject({
    streamId: z.string().max(200),
    asOf: at,
    patientId: uuid.nullable(),
    returned: z.number().int().min(0),
  }),
});

export const EXPORT_FORMATS = ["jsonl", "csv", "fhir"] as const;

/**
 * An export of the log (`GET /v1/audit/export` or `deno task audit export`),
 * appended before the first byte is sent. `upTo` is the last global position
 * the export covers (it holds no event appended after it started).
 */
export const AuditExported = defineEvent({
  type: "AuditExported",
  version: 1,
  schema: z.strictObject({
    format: z.enum(EXPORT_FORMATS),
    filters: z.strictObject({ patientId: uuid.optional(), from: at.optional(), to: at.optional() }),
    upTo: z.number().int().min(0),
    events: z.number().int().min(0),
  }),
});

/** The stream the transparency log's checkpoints and adopted keys are appended to. */
export const CHECKPOINT_STREAM = "audit-checkpoints";

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/).max(200);
const keyIdHex = z.string().regex(/^[0-9a-f]{8}$/);

/**
 * A signed checkpoint of the transparency log: the first `treeSize` events
 * in global order have the RFC 9162 root `rootHash` (base64); `note` is the
 * C2SP tlog-checkpoint signed note, `keyId` the signing key's id (hex).
 */
export const CheckpointPublished = defineEvent({
  type: "CheckpointPublished",
  version: 1,
  schema: z.strictObject({
    treeSize: z.number().int().min(0),
    rootHash: b64,
    note: z.string().max(2000),
    keyId: keyIdHex,
  }),
});

/**
 * A checkpoint signing key first used: recorded before its first
 * checkpoint, so old checkpoints keep verifying after a rotation.
 * `publicKey` is the raw Ed25519 key (base64); `verifierKey` the signed-note
 * verifier key string.
 */
export const CheckpointKeyAdopted = defineEvent({
  type: "CheckpointKeyAdopted",
  version: 1,
  schema: z.strictObject({
    keyId: keyIdHex,
    keyName: z.string().max(200),
    publicKey: b64,
    verifierKey: z.string().max(400),
  }),
});

/** A use of the transparency-log routes (checkpoints, proofs): auditors are audited. */
export const TransparencyLogRead = defineEvent({
  type: "TransparencyLogRead",
  version: 1,
  schema: z.strictObject({
    query: z.enum(["checkpoints", "latest-checkpoint", "inclusion", "consistency"]),
    position: z.number().int().optional(),
    treeSize: z.number().int().optional(),
    from: z.number().int().optional(),
    to: z.number().int().optional(),
    returned: z.number().int().min(0).optional(),
  }),
});

export const auditEvents = [
  AuditQueried,
  AuditStreamViewed,
  CheckpointPublished,
  CheckpointKeyAdopted,
  TransparencyLogRead,
  AuditExported,
];
