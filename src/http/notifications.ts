import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { NOTIFICATION_CHANNELS } from "../../events/notification.ts";
import { listInbox, listOutbox, NOTIFICATION_STATUSES } from "../outbox/notifications.ts";
import { authenticate, authorize } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { problem, problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

const Paging = {
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().max(500).optional(),
};

const InboxItem = z.object({
  id: z.uuid(),
  kind: z.literal("access_code"),
  createdAt: z.string(),
  requestId: z.uuid(),
  patientId: z.uuid(),
  practitioner: z.object({ id: z.uuid(), name: z.string().nullable() }),
  clinic: z.object({ id: z.uuid(), name: z.string().nullable() }).nullable(),
  code: z.string().nullable().openapi({
    description: "the one-time code to give the practitioner; null once it has expired",
  }),
  expiresAt: z.string(),
  expired: z.boolean(),
}).openapi("Notification");

const InboxList = z.object({
  items: z.array(InboxItem),
  nextCursor: z.string().nullable(),
  total: z.number().int(),
}).openapi("NotificationList");

const OutboxItem = z.object({
  id: z.uuid(),
  kind: z.literal("access_code"),
  channel: z.enum(NOTIFICATION_CHANNELS),
  status: z.enum(NOTIFICATION_STATUSES).openapi({
    description: "pending (not delivered yet, retrying after a failure included), " +
      "delivered, or failed (given up)",
  }),
  attempts: z.number().int(),
  lastError: z.string().nullable(),
  retryAt: z.string().nullable(),
  createdAt: z.string(),
  deliveredAt: z.string().nullable(),
  userId: z.uuid(),
  patientId: z.uuid(),
  requestId: z.uuid(),
  expiresAt: z.string(),
  code: z.string().nullable().optional().openapi({
    description: "only under CHARTLOG_ENV development or test",
  }),
}).openapi("OutboxNotification");

const OutboxList = z.object({
  items: z.array(OutboxItem),
  nextCursor: z.string().nullable(),
  total: z.number().int(),
}).openapi("OutboxList");

/** The signed-in user's notifications, mounted under `/v1/me/notifications`. */
export const myNotifications = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "get",
    path: "/",
    tags: ["notifications"],
    summary: "The caller's in-app notifications (access codes), newest first",
    description: "A patient user (or a full proxy) reads the one-time codes practitioners " +
      "asked for here. The code is shown while it is valid.",
    security: bearer,
    middleware: [authenticate(), authorize("notification.read_own")] as const,
    request: { query: z.object(Paging) },
    responses: {
      200: { description: "a page of notifications", content: json(InboxList) },
      ...problemResponses("unauthorized", "forbidden", "validation", "invalid-cursor"),
    },
  }),
  async (c) => {
    const { store, sessions } = c.var.deps.runtime();
    const page = await listInbox(
      store,
      c.get("actor")!.userId,
      c.req.valid("query"),
      sessions.now(),
    );
    c.header("Cache-Control", "no-store");
    return c.json(page, 200);
  },
);

/** Outside development and test the outbox route does not exist (404, before any auth). */
const notInProduction: MiddlewareHandler<AppEnv> = async function notInProduction(c, next) {
  if (c.var.deps.config.env === "production") return problem(c, "not-found", "no such route");
  return await next();
};

/** The development outbox (admins), mounted under `/v1/admin/outbox`. */
export const adminOutbox = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "get",
    path: "/",
    tags: ["notifications"],
    summary: "Every notification and its delivery state (not in production)",
    description: "So the flow can be tried without a mail server: under CHARTLOG_ENV " +
      "development or test the codes are shown too. Under production this route is a 404.",
    security: bearer,
    middleware: [notInProduction, authenticate(), authorize("outbox.read")] as const,
    request: {
      query: z.object({
        ...Paging,
        status: z.enum(NOTIFICATION_STATUSES).optional(),
        channel: z.enum(NOTIFICATION_CHANNELS).optional(),
      }),
    },
    responses: {
      200: { description: "a page of notifications", content: json(OutboxList) },
      ...problemResponses("unauthorized", "forbidden", "not-found", "validation", "invalid-cursor"),
    },
  }),
  async (c) => {
    const { store } = c.var.deps.runtime();
    const env = c.var.deps.config.env;
    const page = await listOutbox(store, {
      ...c.req.valid("query"),
      withCodes: env === "development" || env === "test",
    });
    c.header("Cache-Control", "no-store");
    return c.json(page, 200);
  },
);
