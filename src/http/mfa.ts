import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { getUser } from "../auth/accounts.ts";
import { confirmEnrollment, disableMfa, startEnrollment } from "../auth/mfa.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

const Code = z.strictObject({ code: z.string().min(6).max(32) }).openapi("MfaCode");

/** TOTP enrolment, confirmation and removal for the caller's own account. */
export const mfa = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post",
      path: "/totp",
      tags: ["auth"],
      summary: "Start TOTP enrolment: returns the otpauth URI once",
      security: bearer,
      middleware: [authenticate(), authorize("mfa.manage")] as const,
      responses: {
        201: {
          description: "scan the URI into an authenticator app, then confirm with a code",
          content: json(z.object({ otpauthUri: z.string(), secret: z.string() })),
        },
        ...problemResponses("unauthorized", "conflict"),
      },
    }),
    async (c) => {
      const { store } = c.var.deps.runtime();
      const user = (await getUser(store, c.get("actor")!.userId))!;
      const out = await startEnrollment(store, user, requestMetadata(c));
      c.header("Cache-Control", "no-store");
      return c.json(out, 201);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/totp/confirm",
      tags: ["auth"],
      summary: "Confirm enrolment with a first code: returns ten recovery codes once",
      security: bearer,
      middleware: [authenticate(), authorize("mfa.manage")] as const,
      request: { body: { required: true, content: json(Code) } },
      responses: {
        200: {
          description: "two-factor authentication is on",
          content: json(z.object({ recoveryCodes: z.array(z.string()) })),
        },
        ...problemResponses("unauthorized", "not-found", "conflict", "validation"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      const recoveryCodes = await confirmEnrollment(
        runtime.store,
        runtime.sessions.settings.recoveryCodeKey,
        c.get("actor")!.userId,
        c.get("actor")!.sessionId,
        c.req.valid("json").code,
        runtime.sessions.now(),
        requestMetadata(c),
      );
      c.header("Cache-Control", "no-store");
      return c.json({ recoveryCodes }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/totp",
      tags: ["auth"],
      summary: "Turn two-factor authentication off (needs a current or recovery code)",
      security: bearer,
      middleware: [authenticate(), authorize("mfa.manage")] as const,
      request: { body: { required: true, content: json(Code) } },
      responses: {
        204: { description: "off" },
        ...problemResponses("unauthorized", "not-found", "validation"),
      },
    }),
    async (c) => {
      const runtime = c.var.deps.runtime();
      await disableMfa(
        runtime.store,
        runtime.sessions.settings.recoveryCodeKey,
        c.get("actor")!.userId,
        c.req.valid("json").code,
        runtime.sessions.now(),
        requestMetadata(c),
      );
      return c.body(null, 204);
    },
  );
