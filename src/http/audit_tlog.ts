import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { publicJwk } from "../audit/checkpoint.ts";
import { b64 } from "../audit/merkle.ts";
import {
  adoptedKeys,
  type Checkpoint,
  latestCheckpoint,
  listCheckpoints,
} from "../audit/publisher.ts";
import { consistencyProof, inclusionProof } from "../audit/tlog_store.ts";
import { auditRead } from "../clinical/patients.ts";
import { NotFoundError } from "../errors.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

const MAX_LIMIT = 500;

/** A whole number in a query string: digits only (no sign, exponent, spaces or empty). */
const count = (description: string) =>
  z.string().regex(/^(0|[1-9][0-9]{0,14})$/, "must be a whole number")
    .transform(Number).openapi({ type: "integer", description });

const CheckpointSchema = z.object({
  treeSize: z.number().int().openapi({
    description: "leaves covered: the first treeSize events in global order",
  }),
  rootHash: z.string().openapi({ description: "RFC 9162 Merkle tree hash, base64" }),
  note: z.string().openapi({
    description: "the C2SP tlog-checkpoint signed note (origin `chartlog/<installation id>`, " +
      "tree size, base64 root, blank line, Ed25519 signature line)",
  }),
  keyId: z.string().openapi({ description: "signed-note key id of the signing key (hex)" }),
  position: z.number().int().openapi({
    description: "global position of its CheckpointPublished event",
  }),
  publishedAt: z.string(),
}).openapi("Checkpoint");

const view = (c: Checkpoint) => ({
  treeSize: c.treeSize,
  rootHash: c.rootHash,
  note: c.note,
  keyId: c.keyId,
  position: c.position,
  publishedAt: c.publishedAt,
});

const ProofSchema = z.array(z.string()).openapi({ description: "hashes, base64, leaf to root" });

const PROBLEMS = ["unauthorized", "forbidden", "validation", "unavailable"] as const;

type TlogQuery = "checkpoints" | "latest-checkpoint" | "inclusion" | "consistency";

/** Appends the TransparencyLogRead of this use to the auditor's access stream (fail-closed). */
const audited = async (
  c: Context<AppEnv>,
  query: TlogQuery,
  data: { position?: number; treeSize?: number; from?: number; to?: number; returned?: number },
) => {
  await auditRead(c.var.deps.runtime(), c.get("actor")!, {
    type: "TransparencyLogRead",
    data: { query, ...data },
  }, requestMetadata(c));
  c.header("Cache-Control", "no-store");
};

/** The transparency log (mounted under `/v1/audit`): checkpoints, keys and proofs. */
export const auditTlog = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/checkpoints",
      tags: ["audit"],
      summary: "Signed checkpoints of the transparency log, newest first",
      description: "Each checkpoint signs the RFC 9162 Merkle root of the first `treeSize` " +
        "events in global order. Keep copies outside the database: `deno task audit verify " +
        "--checkpoint FILE --public-key KEY` proves against them. Audited (`TransparencyLogRead`).",
      security: bearer,
      middleware: [authenticate(), authorize("audit.checkpoints")] as const,
      request: {
        query: z.object({
          limit: z.coerce.number().int().min(1).max(MAX_LIMIT).default(50),
          cursor: z.string().regex(/^[1-9][0-9]{0,14}$/, "not a cursor this list issued")
            .optional(),
        }),
      },
      responses: {
        200: {
          description: "a page",
          content: json(
            z.object({ items: z.array(CheckpointSchema), nextCursor: z.string().nullable() }),
          ),
        },
        ...problemResponses(...PROBLEMS),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const page = await listCheckpoints(c.var.deps.runtime().db, {
        limit: q.limit + 1,
        ...(q.cursor ? { before: Number(q.cursor) } : {}),
      });
      const items = page.slice(0, q.limit);
      const nextCursor = page.length > q.limit ? String(items.at(-1)!.sequence) : null;
      await audited(c, "checkpoints", { returned: items.length });
      return c.json({ items: items.map(view), nextCursor }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/checkpoints/latest",
      tags: ["audit"],
      summary: "The newest signed checkpoint",
      description: "404 before the first checkpoint. Audited (`TransparencyLogRead`).",
      security: bearer,
      middleware: [authenticate(), authorize("audit.checkpoints")] as const,
      responses: {
        200: { description: "the newest checkpoint", content: json(CheckpointSchema) },
        ...problemResponses(...PROBLEMS, "not-found"),
      },
    }),
    async (c) => {
      const latest = await latestCheckpoint(c.var.deps.runtime().db);
      await audited(c, "latest-checkpoint", { returned: latest ? 1 : 0 });
      if (!latest) throw new NotFoundError("no checkpoint was published yet");
      return c.json(view(latest), 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/public-key",
      tags: ["audit"],
      summary: "The checkpoint signing keys (public, no authentication)",
      description: "Every Ed25519 key checkpoints were ever signed with (recorded in the log " +
        "as `CheckpointKeyAdopted` before its first use) and the current one, as a JWK set " +
        "(`kid`: the signed-note key id, hex) and as signed-note verifier key strings " +
        "(`<name>+<key id>+<base64 key>`, what `deno task audit verify --public-key` and Go's " +
        "`note.NewVerifier` take). Old keys stay listed, so old checkpoints keep verifying.",
      responses: {
        200: {
          description: "the keys",
          content: json(
            z.object({
              keys: z.array(z.object({
                kty: z.literal("OKP"),
                crv: z.literal("Ed25519"),
                x: z.string(),
                kid: z.string(),
                alg: z.literal("EdDSA"),
                use: z.literal("sig"),
              })),
              verifierKeys: z.array(z.string()),
              current: z.string().openapi({
                description: "the verifier key new checkpoints are signed with",
              }),
            }).openapi("CheckpointKeys"),
          ),
        },
        ...problemResponses("unavailable"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const adopted = await adoptedKeys(runtime.db);
      const signer = (await runtime.tlog()).signer;
      const all: { keyId: string; publicKey: Uint8Array; verifierKey: string }[] = adopted.map((
        k,
      ) => ({
        keyId: k.keyId,
        publicKey: Uint8Array.from(atob(k.publicKey), (ch) => ch.charCodeAt(0)),
        verifierKey: k.verifierKey,
      }));
      if (!all.some((k) => k.keyId === signer.keyIdHex)) {
        all.push({
          keyId: signer.keyIdHex,
          publicKey: signer.publicKey,
          verifierKey: signer.verifierKey,
        });
      }
      return c.json({
        keys: all.map((k) => publicJwk(k.keyId, k.publicKey)),
        verifierKeys: all.map((k) => k.verifierKey),
        current: signer.verifierKey,
      }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/proofs/inclusion",
      tags: ["audit"],
      summary: "RFC 9162 inclusion proof of one event in a tree size",
      description: "The audit path of the event at global `position` in the tree of the first " +
        "`treeSize` events (default: the whole tree built so far; use a checkpoint's). Verify " +
        "it against that checkpoint's root (RFC 9162 §2.1.3.2) with the leaf hash " +
        "SHA-256(0x00 ‖ the event's RFC 8785 canonical JSON as stored). 404: no event at that " +
        "position in the tree (none, or not yet added); 409: `treeSize` is beyond the tree " +
        "built so far, or does not cover the event. Audited (`TransparencyLogRead`).",
      security: bearer,
      middleware: [authenticate(), authorize("audit.proofs")] as const,
      request: {
        query: z.object({
          position: count("global position of the event"),
          treeSize: count("tree size to prove in (default: the whole tree)").optional(),
        }),
      },
      responses: {
        200: {
          description: "the proof",
          content: json(
            z.object({
              leafIndex: z.number().int(),
              treeSize: z.number().int(),
              hashes: ProofSchema,
            }).openapi("InclusionProof"),
          ),
        },
        ...problemResponses(...PROBLEMS, "not-found", "conflict"),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const p = await inclusionProof(c.var.deps.runtime().db, q.position, q.treeSize);
      await audited(c, "inclusion", { position: q.position, treeSize: p.treeSize });
      return c.json(
        { leafIndex: p.leafIndex, treeSize: p.treeSize, hashes: p.hashes.map(b64) },
        200,
      );
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/proofs/consistency",
      tags: ["audit"],
      summary: "RFC 9162 consistency proof between two tree sizes",
      description: "Proves that the tree of `from` events is a prefix of the tree of `to` " +
        "(RFC 9162 §2.1.4): nothing before `from` was altered, removed or reordered. Empty " +
        "when `from` is 0 or equals `to`. 409: `to` is beyond the tree built so far, or " +
        "`from` > `to`. Audited (`TransparencyLogRead`).",
      security: bearer,
      middleware: [authenticate(), authorize("audit.proofs")] as const,
      request: {
        query: z.object({ from: count("the older tree size"), to: count("the newer tree size") }),
      },
      responses: {
        200: {
          description: "the proof",
          content: json(
            z.object({
              from: z.number().int(),
              to: z.number().int(),
              hashes: ProofSchema,
            }).openapi("ConsistencyProof"),
          ),
        },
        ...problemResponses(...PROBLEMS, "conflict"),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const p = await consistencyProof(c.var.deps.runtime().db, q.from, q.to);
      await audited(c, "consistency", { from: q.from, to: q.to });
      return c.json({ from: p.from, to: p.to, hashes: p.hashes.map(b64) }, 200);
    },
  );
