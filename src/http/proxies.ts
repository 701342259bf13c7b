import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { PROXY_LEVELS } from "../../events/proxy.ts";
import { addProxy, listProxies, proxiesOf, removeProxy } from "../clinical/proxies.ts";
import { auditRead, patientStream } from "../clinical/patients.ts";
import { NotFoundError } from "../errors.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { byPatient, livePatient, patientInPath } from "./patient_scope.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json, LOCATION_HEADERS } from "./route_kit.ts";

const IdParam = z.object({ id: z.uuid() });

const ProxySchema = z.object({
  userId: z.uuid(),
  name: z.string().nullable().openapi({ description: "the family member's account name" }),
  level: z.enum(PROXY_LEVELS),
  proxyId: z.uuid().openapi({
    description: "this relation's id: events written through it carry it as `grantId`",
  }),
  addedAt: z.string(),
  addedBy: z.uuid().nullable(),
}).openapi("Proxy");

const AddProxyBody = z.strictObject({
  userId: z.uuid(),
  level: z.enum(PROXY_LEVELS),
}).openapi("AddProxyRequest");

const WHO = "The patient's own user or an admin; a proxy never manages proxies.";

/** Family access, mounted under `/v1/patients`: a patient's proxies. */
export const proxies = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/proxies",
      tags: ["proxies"],
      summary: "Make a user a proxy of the patient (family access), or change their level",
      description: `${WHO} \`userId\` must be an active user of role \`patient\` (a family ` +
        "member needs no record of their own) and not the patient's own account (422 naming " +
        "`userId` otherwise; an unknown user is 404). A `read_only` proxy reads what the patient " +
        "reads and never writes; a `full` one also uploads documents, shares codes and revokes " +
        "grants. 201 for a new proxy; 200 when an existing proxy's level changes (the old " +
        "relation ends and a new one, with a new `proxyId`, starts in one append); 409 when " +
        "they are a proxy at that level already: of concurrent identical adds one is 201.",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("proxy.manage", byPatient),
        livePatient(patientInPath),
      ] as const,
      request: { params: IdParam, body: { required: true, content: json(AddProxyBody) } },
      responses: {
        201: { description: "added", headers: LOCATION_HEADERS, content: json(ProxySchema) },
        200: { description: "the level changed", content: json(ProxySchema) },
        ...problemResponses(
          "unauthorized",
          "forbidden",
          "not-found",
          "erased",
          "validation",
          "conflict",
          "unavailable",
        ),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { userId, level } = c.req.valid("json");
      const { proxy, changed } = await addProxy(
        c.var.deps.runtime().store,
        id,
        userId,
        level,
        requestMetadata(c),
      );
      c.header("Cache-Control", "no-store");
      if (changed) return c.json(proxy, 200);
      c.header("Location", `/v1/patients/${id}/proxies`);
      return c.json(proxy, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/proxies",
      tags: ["proxies"],
      summary: "Who acts for the patient, at which level, added when and by whom (audited)",
      description: "The patient's own user, their full proxies, or an admin. Audited as a read " +
        "(`ProxiesViewed`).",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("proxy.list", byPatient),
        livePatient(patientInPath),
      ] as const,
      request: { params: IdParam },
      responses: {
        200: {
          description: "the proxies, in the order they were added",
          content: json(z.object({ items: z.array(ProxySchema) })),
        },
        ...problemResponses(
          "unauthorized",
          "forbidden",
          "not-found",
          "erased",
          "validation",
          "unavailable",
        ),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const runtime = c.var.deps.runtime();
      if ((await runtime.store.streamVersion(patientStream(id))) === 0) {
        throw new NotFoundError("no such patient");
      }
      const items = await listProxies(runtime.store, id);
      await auditRead(runtime, c.get("actor")!, {
        type: "ProxiesViewed",
        data: { patientId: id, userIds: items.map((p) => p.userId) },
      }, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json({ items }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/{id}/proxies/{userId}",
      tags: ["proxies"],
      summary: "End a user's proxy access to the patient",
      description: `${WHO} Access ends at once. 404 when the user is no proxy of the patient.`,
      security: bearer,
      middleware: [
        authenticate(),
        authorize("proxy.manage", byPatient),
        livePatient(patientInPath),
      ] as const,
      request: { params: z.object({ id: z.uuid(), userId: z.uuid() }) },
      responses: {
        204: { description: "no longer a proxy" },
        ...problemResponses(
          "unauthorized",
          "forbidden",
          "not-found",
          "erased",
          "validation",
          "unavailable",
        ),
      },
    }),
    async (c) => {
      const { id, userId } = c.req.valid("param");
      await removeProxy(c.var.deps.runtime().store, id, userId, requestMetadata(c));
      return c.body(null, 204);
    },
  );

/** The caller's own proxy relations, mounted under `/v1/me/proxies`. */
export const myProxies = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["proxies"],
      summary: "The patients the caller is a proxy of, and at which level",
      description: "How a family member finds the records they may open (`patientId` for " +
        "`/v1/patients/{id}`). Ids and levels only; soft-deleted and erased patients are left " +
        "out. Empty for anyone who is no proxy.",
      security: bearer,
      middleware: [authenticate(), authorize("me.read")] as const,
      responses: {
        200: {
          description: "in the order they were added",
          content: json(z.object({
            items: z.array(z.object({
              patientId: z.uuid(),
              level: z.enum(PROXY_LEVELS),
              proxyId: z.uuid(),
              addedAt: z.string(),
            })),
          })),
        },
        ...problemResponses("unauthorized", "forbidden"),
      },
    }),
    async (c) => {
      const items = await proxiesOf(c.var.deps.runtime().store, c.get("actor")!.userId);
      c.header("Cache-Control", "no-store");
      return c.json({ items }, 200);
    },
  );
