import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { PractitionerProfileFields } from "../../events/practitioner.ts";
import { ownProfile } from "../auth/policy.ts";
import { getProfile, setProfile } from "../clinical/practitioners.ts";
import { NotFoundError } from "../errors.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { ifMatchVersion } from "./etag.ts";
import { problemResponses } from "./problem.ts";
import {
  bearer,
  IF_NONE_MATCH,
  json,
  NOT_MODIFIED,
  sendVersioned,
  versioned,
  VERSIONED_WRITE_PROBLEMS,
} from "./route_kit.ts";

const IdParam = z.object({ id: z.uuid() });

const ProfileSchema = z.object({
  userId: z.uuid(),
  licenseNumber: z.string(),
  specialization: z.string().nullable(),
  yearsOfExperience: z.number().int().nullable(),
  qualifications: z.array(z.string()),
  bio: z.string().nullable().openapi({ description: "null once the user is erased" }),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("PractitionerProfile");

const ProfilePatch = PractitionerProfileFields.partial().openapi("PractitionerProfilePatch");

/** The profile in the path is the actor's own (`self`) or someone else's. */
const profileInPath = (c: Context<AppEnv>) =>
  Promise.resolve(ownProfile(c.get("actor")!, c.req.param("id") ?? ""));

/**
 * Practitioner profiles, mounted under `/v1/practitioners`: any signed-in user
 * reads them (the directory); a practitioner edits their own, an admin any.
 */
export const practitioners = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/profile",
      tags: ["practitioners"],
      summary: "Read a practitioner's profile",
      description: "404 when the user is not a practitioner or has no profile yet.",
      security: bearer,
      middleware: [authenticate(), authorize("practitioner_profile.read")] as const,
      request: { params: IdParam, headers: IF_NONE_MATCH },
      responses: {
        200: { description: "the profile", content: json(ProfileSchema) },
        ...NOT_MODIFIED,
        ...problemResponses("unauthorized", "forbidden", "not-found", "validation"),
      },
    }),
    async (c) => {
      const p = await getProfile(c.var.deps.runtime().store, c.req.valid("param").id);
      if (!p) throw new NotFoundError("no such practitioner profile");
      return sendVersioned(c, p);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}/profile",
      tags: ["practitioners"],
      summary: "Set or change a practitioner's profile (If-Match honoured)",
      description: "A practitioner edits their own profile, an admin anyone's. The first " +
        "PATCH creates the profile and needs `licenseNumber`. The license number is unique " +
        "among practitioners (trimmed, case-insensitive; 409 when another holds it). Only " +
        "users with the practitioner role have a profile (404 otherwise).",
      security: bearer,
      middleware: [
        authenticate(),
        authorize("practitioner_profile.update", profileInPath),
      ] as const,
      request: { params: IdParam, body: { required: true, content: json(ProfilePatch) } },
      responses: {
        200: { description: "the profile", content: json(ProfileSchema) },
        ...problemResponses(...VERSIONED_WRITE_PROBLEMS),
      },
    }),
    async (c) => {
      const p = await setProfile(
        c.var.deps.runtime().store,
        c.req.valid("param").id,
        c.req.valid("json"),
        requestMetadata(c),
        ifMatchVersion(c),
      );
      return c.json(versioned(c, p), 200);
    },
  );
