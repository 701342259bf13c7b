import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { TokenPair } from "../auth/sessions.ts";
import { requestSignup } from "../auth/accounts.ts";
import { ForbiddenError, UnauthorizedError } from "../errors.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppDeps, AppEnv } from "./env.ts";
import { problemResponses } from "./problem.ts";
import { clientIp, rateLimit } from "./rate_limit.ts";

export const REFRESH_COOKIE = "chartlog_refresh";

const Tokens = z.object({
  accessToken: z.string().openapi({ description: "JWT (HS256), send as `Authorization: Bearer`" }),
  tokenType: z.literal("Bearer"),
  expiresIn: z.number().int().openapi({ description: "seconds" }),
  refreshToken: z.string().openapi({
    description: "opaque, single use; also set as an HttpOnly cookie",
  }),
  mfaEnrolmentRequired: z.boolean().optional().openapi({
    description: "login only: the role must use a second factor and the account has not " +
      "enrolled. Until it does (`POST /v1/me/mfa/totp`, then `POST /v1/me/mfa/totp/confirm`), " +
      "the session may only enrol, read `/v1/me` and log out.",
  }),
}).openapi("Tokens");

const LoginBody = z.strictObject({
  email: z.string().min(3).max(320),
  password: z.string().min(1).max(1024),
  otp: z.string().min(6).max(32).optional().openapi({
    description: "authenticator code or recovery code, when two-factor authentication is on",
  }),
}).openapi("LoginRequest");

const SignupBody = z.strictObject({
  email: z.email().max(320),
  name: z.string().trim().min(1).max(200),
  password: z.string().min(12).max(1024),
}).openapi("SignupRequest");

const SignupReceived = z.object({ status: z.literal("received"), message: z.string() })
  .openapi("SignupReceived");

/** One answer for every accepted sign-up, new email or not. */
const SIGNUP_RECEIVED = {
  status: "received" as const,
  message: "If this email can be registered, the account waits for an administrator's approval.",
};

const RefreshBody = z.strictObject({ refreshToken: z.string().min(1).max(200).optional() })
  .openapi("RefreshRequest");

const withCookie = (c: Context<AppEnv>, tokens: TokenPair) => {
  setCookie(c, REFRESH_COOKIE, tokens.refreshToken, {
    httpOnly: true,
    secure: true,
    sameSite: "Strict",
    path: "/v1/auth",
    maxAge: c.var.deps.config.sessionIdleTimeoutSec,
  });
  c.header("Cache-Control", "no-store");
  return c.json(tokens, 200);
};

/** Login, refresh-token rotation and logout. Rate limited per client address. */
export const authRoutes = (deps: AppDeps) => {
  const limit = rateLimit({
    windowMs: 60_000,
    max: deps.config.loginRatePerMin,
    key: (c) => clientIp(c, { trustProxy: deps.config.trustProxy }),
  });
  const app = new OpenAPIHono<AppEnv>();
  app.use("*", limit);
  return app
    .openapi(
      createRoute({
        method: "post",
        path: "/signup",
        tags: ["auth"],
        summary: "Sign up as a practitioner (pending until an admin approves)",
        description: 'An admin approves with `PATCH /v1/users/{id} {"active": true}`. ' +
          "The answer is the same 202 whether or not the email already has an account (then " +
          "nothing is created), so sign-up tells no one who is registered. Answers 403 when " +
          "sign-up is off (`CHARTLOG_SIGNUP=off`, the default in production).",
        request: {
          body: {
            required: true,
            content: {
              "application/json": {
                schema: SignupBody,
                example: {
                  email: "dr.example@clinic.example",
                  name: "Dr. Alex Example",
                  password: "correct horse battery",
                },
              },
            },
          },
        },
        responses: {
          202: {
            description: "received; a new account waits for an administrator's approval",
            content: { "application/json": { schema: SignupReceived } },
          },
          ...problemResponses("forbidden", "validation", "rate-limited"),
        },
      }),
      async (c) => {
        if (!c.var.deps.config.signup) throw new ForbiddenError("self sign-up is switched off");
        const { store, passwordParams } = c.var.deps.runtime();
        await requestSignup(store, c.req.valid("json"), requestMetadata(c), passwordParams);
        return c.json(SIGNUP_RECEIVED, 202);
      },
    )
    .openapi(
      createRoute({
        method: "post",
        path: "/login",
        tags: ["auth"],
        summary: "Log in with email and password",
        description: "After 5 failed attempts in a row the account is locked for 15 minutes. A " +
          "wrong password, an unknown email and a locked account all get the same 401.",
        request: {
          body: {
            required: true,
            content: {
              "application/json": {
                schema: LoginBody,
                example: { email: "dr.example@clinic.example", password: "correct horse battery" },
              },
            },
          },
        },
        responses: {
          200: {
            description: "a new session",
            content: { "application/json": { schema: Tokens } },
          },
          ...problemResponses("unauthorized", "mfa-required", "validation", "rate-limited"),
        },
      }),
      async (c) => {
        const { email, password, otp } = c.req.valid("json");
        const tokens = await c.var.deps.runtime().sessions.login(
          email,
          password,
          requestMetadata(c),
          otp,
        );
        return withCookie(c, tokens);
      },
    )
    .openapi(
      createRoute({
        method: "post",
        path: "/refresh",
        tags: ["auth"],
        summary: "Rotate the refresh token and get a new access token",
        description: "The refresh token comes in the body or the HttpOnly cookie. Presenting an " +
          "already-rotated token revokes the session. An idle session cannot be refreshed.",
        request: {
          body: { required: false, content: { "application/json": { schema: RefreshBody } } },
        },
        responses: {
          200: { description: "rotated", content: { "application/json": { schema: Tokens } } },
          ...problemResponses("unauthorized", "validation", "rate-limited"),
        },
      }),
      async (c) => {
        const token = c.req.valid("json")?.refreshToken ?? getCookie(c, REFRESH_COOKIE);
        if (!token) throw new UnauthorizedError("no refresh token");
        const tokens = await c.var.deps.runtime().sessions.refresh(token, requestMetadata(c));
        return withCookie(c, tokens);
      },
    )
    .openapi(
      createRoute({
        method: "post",
        path: "/logout",
        tags: ["auth"],
        summary: "End this session",
        security: [{ bearer: [] }],
        middleware: [authenticate(), authorize("session.logout")] as const,
        responses: { 204: { description: "logged out" }, ...problemResponses("unauthorized") },
      }),
      async (c) => {
        await c.var.deps.runtime().sessions.logout(c.get("actor")!, requestMetadata(c));
        deleteCookie(c, REFRESH_COOKIE, { path: "/v1/auth", secure: true });
        return c.body(null, 204);
      },
    )
    .openapi(
      createRoute({
        method: "post",
        path: "/logout-all",
        tags: ["auth"],
        summary: "End every session of this user, on every device",
        security: [{ bearer: [] }],
        middleware: [authenticate(), authorize("session.logout")] as const,
        responses: {
          204: { description: "logged out everywhere" },
          ...problemResponses("unauthorized"),
        },
      }),
      async (c) => {
        await c.var.deps.runtime().sessions.logoutAll(c.get("actor")!, requestMetadata(c));
        deleteCookie(c, REFRESH_COOKIE, { path: "/v1/auth", secure: true });
        return c.body(null, 204);
      },
    );
};
