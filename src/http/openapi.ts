import {
  problemDescription,
  problemExample,
  problemHeaders,
  PROBLEMS,
  type ProblemSlug,
} from "./problem.ts";

/** The parts of an OpenAPI 3.1 document this module reads and completes. */
interface Parameter {
  name: string;
  in: string;
  [k: string]: unknown;
}
interface MediaType {
  schema?: unknown;
  examples?: Record<string, unknown>;
  [k: string]: unknown;
}
interface Response {
  description: string;
  headers?: Record<string, unknown>;
  content?: Record<string, MediaType>;
  [k: string]: unknown;
}
interface Operation {
  operationId?: string;
  security?: Record<string, string[]>[];
  parameters?: Parameter[];
  requestBody?: { content?: Record<string, unknown> };
  responses: Record<string, Response>;
  tags?: string[];
  [k: string]: unknown;
}
export interface OpenApiDocument {
  openapi: string;
  components?: {
    headers?: Record<string, unknown>;
    examples?: Record<string, unknown>;
    [k: string]: unknown;
  };
  servers?: { url: string; description?: string }[];
  tags?: { name: string; description?: string }[];
  paths?: Record<string, Record<string, Operation>>;
  [k: string]: unknown;
}

/** What each tag groups, in the order the documentation lists them. */
const TAGS: Record<string, string> = {
  system: "Where to start, health and readiness, metrics, this description and the problem pages",
  auth: "Sign-up, login with an optional second factor, token refresh, logout",
  users: "Accounts, roles and the signed-in user's own profile and two-factor enrolment",
  patients: "Patient records (PHI: every read is audited), care teams and erasure",
  encounters: "Visits planned and held with a practitioner",
  chart: "Clinical entries: visits, prescriptions, lab tests, allergies, vaccinations",
  media: "Clinical photos and documents: streamed, sniffed, scanned and encrypted uploads",
  clinics: "The clinic directory, memberships and owners",
  practitioners: "Practitioner profiles",
  proxies: "Family members who act for a patient",
  access: "Access requests and one-time codes by which a patient lets someone in",
  grants: "Time-limited access to a patient's record",
  "break-glass": "Emergency access, and its review",
  notifications: "In-app notifications and the e-mail outbox",
  audit: "The audit trail: queries, disclosures, exports, checkpoints and proofs",
  dashboard: "The clinician's dashboard",
  analytics: "De-identified aggregates for analysts (HIPAA Safe Harbor)",
};

const METHODS = new Set(["get", "put", "post", "delete", "patch", "head", "options", "trace"]);

/** An operation id from its method and path: `GET /v1/patients/{id}` → `getPatientsById`. */
export const operationIdOf = (method: string, path: string): string => {
  const words = path.split("/").filter((s) => s && s !== "v1").map((s) => {
    const param = /^\{(.+)\}$/.exec(s);
    const word = (param ? `by-${param[1]}` : s).replace(
      /[^A-Za-z0-9]+(.)?/g,
      (_, ch?: string) => ch ? ch.toUpperCase() : "",
    );
    return word.charAt(0).toUpperCase() + word.slice(1);
  });
  return method + (words.length > 0 ? words.join("") : "Root");
};

const IF_MATCH: Parameter = {
  name: "If-Match",
  in: "header",
  required: false,
  description: 'The `ETag` the change is based on (`"3"` or `W/"3"`): when the resource has ' +
    "moved on since, the answer is 412 and nothing changes. Without it the write is " +
    "unconditional. `*` matches any version.",
  schema: { type: "string", example: '"3"' },
};

/** Every response carries the request id (request_id.ts): one shared header object. */
const REQUEST_ID = "X-Request-Id";
const REQUEST_ID_HEADER = {
  required: true,
  description: "The request's id: the client's own `X-Request-Id` when it is a safe token, " +
    "else a new UUID. Quote it when reporting a problem; problem bodies repeat it as `requestId`.",
  schema: { type: "string", example: "0f8a3c2e-5b1d-4e7a-9c61-2d4f8b7e1a90" },
};

const ETAG_HEADER = {
  required: true,
  description: "The resource's version, for `If-Match` and `If-None-Match`",
  schema: { type: "string", example: '"3"' },
};

/** Adds problem kinds to an operation's responses, merging with what the route declared. */
const addProblems = (op: Operation, slugs: readonly ProblemSlug[]) => {
  for (const slug of slugs) {
    const status = String(PROBLEMS[slug].status);
    const existing = op.responses[status];
    const media = existing?.content?.["application/problem+json"];
    if (existing && !media) continue; // a route that answers this status with something else
    if (existing && media) {
      const examples = (media.examples ??= {});
      if (Object.hasOwn(examples, slug)) continue;
      examples[slug] = problemExample(slug);
      existing.description = problemDescription(Object.keys(examples) as ProblemSlug[]);
      continue;
    }
    const headers = problemHeaders(PROBLEMS[slug].status);
    op.responses[status] = {
      description: problemDescription([slug]),
      ...(headers ? { headers } : {}),
      content: {
        "application/problem+json": {
          schema: { $ref: "#/components/schemas/Problem" },
          examples: { [slug]: problemExample(slug) },
        },
      },
    };
  }
};

/** The problems of routes for which the route itself says nothing, in the order they apply. */
const crossCutting = (method: string, path: string, op: Operation): ProblemSlug[] => {
  const slugs: ProblemSlug[] = [];
  const body = op.requestBody?.content ?? {};
  if ("application/json" in body) {
    // the body limit and deadline (request_body.ts), then JSON that does not parse
    slugs.push("malformed-request", "payload-too-large", "request-timeout");
  }
  const validated = (op.parameters ?? []).some((p) => p.name.toLowerCase() !== "if-none-match");
  if (validated || Object.keys(body).length > 0) slugs.push("validation");
  if (op.parameters?.some((p) => p.in === "query" && p.name === "cursor")) {
    slugs.push("invalid-cursor");
  }
  if (op.security?.some((s) => "bearer" in s)) slugs.push("unauthorized");
  // a session that must enrol a second factor first may only do that, read `/v1/me` and log out
  // (policy.ts MFA_ENROLMENT); anything else is its own kind of 403
  const enrolment = path.startsWith("/v1/me/mfa") || path.startsWith("/v1/auth/logout") ||
    (path === "/v1/me" && method === "get");
  if (op.security?.some((s) => "bearer" in s) && !enrolment) slugs.push("mfa-enrolment-required");
  // an erased patient's record, and everything under it, is gone for everyone (erasure.ts);
  // the accounting of disclosures is the exception: it still answers for them
  if (/^\/v1\/(patients|encounters|media)\/\{id\}/.test(path)) slugs.push("erased");
  // a write appends with an expected version; a race it keeps losing ends as a 409
  if (method !== "get") slugs.push("concurrency-conflict");
  // while the server drains (app.ts) any request is a 503 with Retry-After; anything unforeseen
  // is a 500 that says nothing of its cause
  slugs.push("unavailable", "internal");
  return slugs;
};

/**
 * Completes the document generated from the routes with what holds across
 * them, so that no route can forget it: the problems every request can meet
 * (malformed JSON, body limits, draining, 500), `If-Match` wherever a route
 * answers 412, `ETag` on the 200 of conditional reads and versioned writes,
 * `X-Request-Id` on every response, explicit `security: []` on public
 * operations, operation ids and servers.
 * Mutates and returns `doc`.
 */
export const completeDocument = <T extends object>(generated: T): T => {
  // the generator's types are wider than what it emits for zod routes
  const doc = generated as unknown as OpenApiDocument;
  doc.servers ??= [{ url: "/", description: "this server" }];
  doc.components = { ...doc.components };
  doc.components.headers = { ...doc.components.headers, [REQUEST_ID]: REQUEST_ID_HEADER };
  const requestIdRef = { $ref: `#/components/headers/${REQUEST_ID}` };
  const ids = new Set<string>();
  const tags = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!METHODS.has(method)) continue;
      op.operationId ??= operationIdOf(method, path);
      if (ids.has(op.operationId)) throw new Error(`duplicate operationId ${op.operationId}`);
      ids.add(op.operationId);
      op.security ??= []; // public: no token needed
      for (const tag of op.tags ?? []) tags.add(tag);
      const conditionalWrite = "412" in op.responses;
      if (
        conditionalWrite && !op.parameters?.some((p) => p.name.toLowerCase() === "if-match")
      ) {
        op.parameters = [...(op.parameters ?? []), IF_MATCH];
      }
      const ok = op.responses["200"];
      if (ok && (conditionalWrite || "304" in op.responses)) {
        ok.headers = { ETag: ETAG_HEADER, ...ok.headers };
      }
      addProblems(op, crossCutting(method, path, op));
      for (const res of Object.values(op.responses)) {
        res.headers = { ...res.headers, [REQUEST_ID]: requestIdRef };
        // one example body per kind, shared: inline they would be most of the document
        const examples = res.content?.["application/problem+json"]?.examples ?? {};
        for (const slug of Object.keys(examples)) {
          const name = `problem-${slug}`;
          (doc.components.examples ??= {})[name] = problemExample(slug as ProblemSlug);
          examples[slug] = { $ref: `#/components/examples/${name}` };
        }
      }
    }
  }
  const order = Object.keys(TAGS);
  const rank = (t: string) => (order.includes(t) ? order.indexOf(t) : order.length);
  doc.tags = [...tags].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
    .map((name) => (TAGS[name] ? { name, description: TAGS[name] } : { name }));
  return generated;
};
