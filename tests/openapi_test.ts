import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import { createConfig, lintFromString } from "@redocly/openapi-core";
import { PROBLEMS, type ProblemSlug } from "../src/http/problem.ts";
import { openTestApp } from "./support/app.ts";
import { createUser, login } from "./support/users.ts";
import { uploadClinic } from "./support/media.ts";

type Op = {
  operationId?: string;
  summary?: string;
  tags?: string[];
  security?: unknown[];
  parameters?: { name: string; in: string }[];
  requestBody?: { content: Record<string, unknown> };
  responses: Record<string, {
    headers?: Record<string, unknown>;
    content?: Record<string, { examples?: Record<string, Example> }>;
  }>;
};
type Example = { $ref?: string; value?: { type: string } };
type Doc = { paths: Record<string, Record<string, Op>>; [k: string]: unknown };

/** One app and its document for the whole file: the document does not depend on data. */
const withDoc = async (fn: (doc: Doc, t: Awaited<ReturnType<typeof openTestApp>>) => unknown) => {
  const t = await openTestApp();
  try {
    const res = await t.app.request("/openapi.json");
    assert.equal(res.status, 200);
    await fn(await res.json(), t);
  } finally {
    await t.close();
  }
};

const operations = (doc: Doc) =>
  Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops).map(([method, op]) => ({ method, path, op, name: `${method} ${path}` }))
  );

Deno.test("openapi: the document is valid OpenAPI 3.1 (@seriousme/openapi-schema-validator)", async () => {
  await withDoc(async (doc) => {
    const validator = new Validator();
    const result = await validator.validate(doc);
    assert.equal(validator.version, "3.1");
    assert.deepEqual(result.errors ?? [], []);
    assert.equal(result.valid, true);
  });
});

/**
 * Warnings of the recommended ruleset we accept, with the reason. Errors are
 * never accepted; no rule is turned off.
 */
const ACCEPTED_WARNINGS: Record<string, string> = {
  // the project has not chosen a licence for its API; inventing one would be wrong
  "info-license": "no licence chosen",
  // `/`, `/health`, `/ready`, `/docs`, `/openapi.json` and the audit public key take no input
  // and have no 4xx to give (the test checks that each of them takes none)
  "operation-4xx-response": "operations without input",
};

Deno.test("openapi: @redocly/openapi-core's recommended ruleset finds no error", async () => {
  await withDoc(async (doc) => {
    const config = await createConfig({ extends: ["recommended"] });
    const problems = await lintFromString({
      source: JSON.stringify(doc),
      absoluteRef: "openapi.json",
      config,
    });
    const show = (p: (typeof problems)[number]) =>
      `${p.severity} ${p.ruleId}: ${p.message} at ${p.location[0]?.pointer}`;
    const errors = problems.filter((p) => p.severity === "error").map(show);
    assert.deepEqual(errors, []);
    const unexpected = problems
      .filter((p) => p.severity !== "error" && !Object.hasOwn(ACCEPTED_WARNINGS, p.ruleId))
      .map(show);
    assert.deepEqual(unexpected, []);
    // the accepted ones stay few: one licence, and only operations that take no input
    const noFourXx = problems.filter((p) => p.ruleId === "operation-4xx-response");
    for (const p of noFourXx) {
      const [, path, method] = /^#\/paths\/(.+)\/(\w+)\/responses$/.exec(
        p.location[0]?.pointer ?? "",
      ) ?? [];
      const op = doc.paths[decodeURIComponent(path!.replaceAll("~1", "/"))]?.[method!];
      assert.ok(op, String(p.location[0]?.pointer));
      assert.equal(op.requestBody, undefined, `${method} ${path} takes a body and has no 4xx`);
      assert.deepEqual(op.parameters ?? [], [], `${method} ${path} takes input and has no 4xx`);
    }
  });
});

Deno.test("openapi: every mounted route is documented with its method and path template, and nothing else", async () => {
  await withDoc((doc, t) => {
    const documented = new Set(operations(doc).map((o) => `${o.method.toUpperCase()} ${o.path}`));
    const mounted = new Set(
      t.app.routes
        .filter((r) => r.method !== "ALL") // middleware
        .map((r) => `${r.method} ${r.path.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, "{$1}")}`),
    );
    assert.ok(mounted.size >= 120, `only ${mounted.size} routes`);
    for (const known of ["GET /metrics", "GET /health", "GET /ready", "GET /docs"]) {
      assert.ok(mounted.has(known), known);
    }
    assert.ok(mounted.has("GET /v1/media/{id}/content"));
    assert.deepEqual([...mounted].filter((r) => !documented.has(r)), [], "routes not documented");
    assert.deepEqual([...documented].filter((r) => !mounted.has(r)), [], "documented, not routed");
  });
});

Deno.test("openapi: operations describe their parameters, headers, security and problems", async () => {
  await withDoc((doc) => {
    const ids = new Set<string>();
    const examples = (doc.components as { examples: Record<string, Example> }).examples;
    const located: string[] = [];
    const described = new Set(
      (doc.tags as { name: string; description?: string }[])
        .filter((t) => t.description).map((t) => t.name),
    );
    const schemes = Object.keys(
      (doc.components as { securitySchemes: Record<string, unknown> }).securitySchemes,
    );
    assert.deepEqual(schemes.sort(), ["bearer", "metricsToken"]);
    for (const { name, op } of operations(doc)) {
      assert.ok(op.operationId && !ids.has(op.operationId), `${name}: operationId`);
      ids.add(op.operationId);
      assert.ok(op.summary, `${name}: summary`);
      for (const tag of op.tags ?? []) {
        assert.ok(described.has(tag), `${name}: tag ${tag} has no description`);
      }
      assert.ok(Array.isArray(op.security), `${name}: security stated (public is [])`);
      const header = (h: string) => op.parameters?.some((p) => p.in === "header" && p.name === h);
      const statuses = Object.keys(op.responses);
      if (statuses.includes("412")) assert.ok(header("If-Match"), `${name}: If-Match`);
      if (header("If-Match")) assert.ok(statuses.includes("412"), `${name}: 412`);
      if (statuses.includes("304")) {
        assert.ok(header("if-none-match"), `${name}: If-None-Match`);
        assert.ok(op.responses["200"]?.headers?.ETag, `${name}: ETag on 200`);
      }
      if (op.responses["201"]?.headers?.Location) located.push(name);
      if (op.requestBody?.content["application/json"]) {
        for (const s of ["400", "413", "422"]) assert.ok(op.responses[s], `${name}: ${s}`);
      }
      if (op.parameters?.some((p) => p.in === "query" && p.name === "cursor")) {
        assert.ok(op.parameters.some((p) => p.name === "limit"), `${name}: limit with cursor`);
        const kinds = Object.keys(
          op.responses["422"]?.content?.["application/problem+json"]?.examples ?? {},
        );
        assert.ok(kinds.includes("invalid-cursor"), `${name}: invalid-cursor`);
      }
      for (const s of ["500", "503"]) assert.ok(op.responses[s], `${name}: ${s}`);
      for (const h of ["429", "503"]) {
        if (op.responses[h]) assert.ok(op.responses[h].headers?.["Retry-After"], `${name}: ${h}`);
      }
      // every problem answer names its kinds, each a registered one with the right status
      for (const [status, res] of Object.entries(op.responses)) {
        assert.ok(res.headers?.["X-Request-Id"], `${name} ${status}: X-Request-Id`);
        const problem = res.content?.["application/problem+json"];
        if (!problem) continue;
        const kinds = Object.entries(problem.examples ?? {});
        assert.ok(kinds.length > 0, `${name} ${status}: which problems`);
        for (const [slug, example] of kinds) {
          const known = Object.hasOwn(PROBLEMS, slug) ? PROBLEMS[slug as ProblemSlug] : null;
          assert.ok(known, `${name} ${status}: unknown problem ${slug}`);
          assert.equal(String(known.status), status, `${name}: ${slug} under ${status}`);
          const shared = /^#\/components\/examples\/(.+)$/.exec(example.$ref ?? "")?.[1];
          const value = shared ? examples[shared]?.value : example.value;
          assert.equal(value?.type, `/problems/${slug}`, `${name} ${status}: ${slug} example`);
        }
      }
    }
    // the creations that answer with `Location` (src: `c.header("Location", …)`)
    const chart = ["visits", "prescriptions", "lab-tests", "allergies", "vaccinations"]
      .map((k) => `post /v1/patients/{id}/chart/${k}`);
    assert.deepEqual(
      located.sort(),
      [
        "post /v1/users",
        "post /v1/patients",
        "post /v1/patients/{id}/encounters",
        "post /v1/patients/{id}/documents",
        "post /v1/patients/{id}/proxies",
        "post /v1/encounters/{id}/media",
        "post /v1/clinics",
        "post /v1/clinics/{id}/practitioners",
        "post /v1/clinics/{id}/owners",
        ...chart,
      ].sort(),
    );
    // the downloads say what they are
    const content = doc.paths["/v1/media/{id}/content"]!.get!.responses["200"]!;
    assert.ok(content.content?.["image/jpeg"] && content.content["application/dicom"]);
    assert.ok(!content.content["application/octet-stream"]);
    assert.ok(content.headers?.["Content-Disposition"]);
    assert.ok(
      doc.paths["/v1/audit/export"]!.get!.responses["200"]!.headers?.["Content-Disposition"],
    );
    assert.deepEqual(doc.paths["/metrics"]!.get!.security, [{ metricsToken: [] }]);
    assert.deepEqual(doc.paths["/v1/patients"]!.get!.security, [{ bearer: [] }]);
    // request examples where a client starts (redocly checks each against its schema)
    for (const path of ["/v1/auth/login", "/v1/auth/signup", "/v1/patients"]) {
      const body = doc.paths[path]!.post!.requestBody?.content["application/json"] as {
        example?: unknown;
      };
      assert.ok(body?.example, `${path}: request example`);
    }
    const upload = doc.paths["/v1/encounters/{id}/media"]!.post!;
    assert.ok(upload.requestBody?.content["multipart/form-data"]);
  });
});

Deno.test("openapi: what the document says of malformed JSON is what the API answers", async () => {
  await withDoc(async (doc, t) => {
    const login = doc.paths["/v1/auth/login"]!.post!;
    const kinds = Object.keys(
      login.responses["400"]?.content?.["application/problem+json"]
        ?.examples ?? {},
    );
    assert.deepEqual(kinds, ["malformed-request"]);
    const res = await t.app.request("/v1/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"email": ',
    });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).type, "/problems/malformed-request");
  });
});

/** The headers a response documents as always present that `res` lacks. */
const missingHeaders = (doc: Doc, documented: Op["responses"][string], res: Response) => {
  const shared = (doc.components as { headers?: Record<string, { required?: boolean }> }).headers;
  return Object.entries(documented.headers ?? {}).filter(([name, h]) => {
    const ref = /^#\/components\/headers\/(.+)$/.exec((h as { $ref?: string }).$ref ?? "")?.[1];
    const header = (ref ? shared?.[ref] : h) as { required?: boolean } | undefined;
    return header?.required === true && !res.headers.has(name);
  }).map(([name]) => name);
};

/** Every problem slug the source names: type URIs, `problem(c, "…")` and `slug: "…"`. */
const slugsInSource = async (): Promise<Set<string>> => {
  const found = new Set<string>();
  const walk = async (dir: URL) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) await walk(new URL(`${e.name}/`, dir));
      else if (e.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(new URL(e.name, dir));
        const patterns = [
          /\/problems\/([a-z][a-z0-9-]*)/g,
          /\bproblem\(\s*c\s*,\s*"([a-z-]+)"/g,
          /\bslug:\s*"([a-z-]+)"/g,
        ];
        for (const re of patterns) for (const m of text.matchAll(re)) found.add(m[1]!);
      }
    }
  };
  await walk(new URL("../src/", import.meta.url));
  return found;
};

Deno.test("openapi: every problem type used in src/ has a page, in words and as JSON", async () => {
  const used = await slugsInSource();
  assert.ok(used.size >= 15, `only ${used.size} slugs found: the patterns no longer match`);
  const unknown = [...used].filter((s) => !Object.hasOwn(PROBLEMS, s));
  assert.deepEqual(unknown, [], "slugs used in src/ without a registry entry");
  const t = await openTestApp();
  try {
    for (const [slug, p] of Object.entries(PROBLEMS)) {
      assert.ok(p.about.length >= 40, `${slug}: explain it in words`);
      const page = await t.app.request(`/problems/${slug}`, {
        headers: { accept: "text/html,application/xhtml+xml,*/*;q=0.8" },
      });
      assert.equal(page.status, 200, slug);
      assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
      const html = await page.text();
      assert.ok(html.includes(`<h1>${p.title.replaceAll("'", "&#39;")}</h1>`), slug);
      assert.ok(html.includes(String(p.status)), slug);
      const data = await t.app.request(`/problems/${slug}`, {
        headers: { accept: "application/json" },
      });
      assert.match(data.headers.get("content-type") ?? "", /^application\/json/);
      assert.deepEqual(await data.json(), {
        type: `/problems/${slug}`,
        title: p.title,
        status: p.status,
        about: p.about,
      });
    }
    const missing = await t.app.request("/problems/no-such-problem", {
      headers: { accept: "text/html" },
    });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get("content-type"), "application/problem+json");
    assert.equal((await missing.json()).type, "/problems/not-found");
  } finally {
    await t.close();
  }
});

Deno.test("openapi: what the API answers to hostile and unauthorized calls is what the document says", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000" });
  try {
    const tokens: Record<string, string> = {};
    for (const role of ["admin", "practitioner", "patient"] as const) {
      await createUser(t.runtime, role);
      tokens[role] = (await login(t.app, `${role}@clinic.test`)).body.accessToken;
      assert.ok(tokens[role], role);
    }
    const doc: Doc = await (await t.app.request("/openapi.json")).json();
    const wrong: string[] = [];
    const seen = new Map<number, number>();
    const check = async (
      o: ReturnType<typeof operations>[number],
      url: string,
      init: RequestInit,
      who = "anonymous",
    ) => {
      const res = await t.app.request(url, { method: o.method.toUpperCase(), ...init });
      seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
      const documented = o.op.responses[String(res.status)];
      const type = res.headers.get("content-type")?.split(";")[0]?.trim() ?? "";
      const kind = type === "application/problem+json" ? (await res.json()).type : null;
      if (kind === null) await res.body?.cancel();
      const body = typeof init.body === "string" ? ` ${init.body}` : "";
      const call = `${o.name} (${who}: ${url}${body})`;
      if (!documented) return void wrong.push(`${call}: ${res.status} ${kind ?? ""} undocumented`);
      const missing = missingHeaders(doc, documented, res);
      if (missing.length) wrong.push(`${call}: ${res.status} without ${missing}`);
      if (kind && !Object.hasOwn(documented.content?.[type]?.examples ?? {}, kind.slice(10))) {
        wrong.push(`${call}: ${res.status} ${kind} not among the documented kinds`);
      }
      if (res.status < 300 && res.status !== 204) {
        const types = Object.keys(documented.content ?? {}).map((c) => c.split(";")[0]);
        if (!types.includes(type)) wrong.push(`${call}: ${res.status} as ${type}, not in ${types}`);
      }
    };
    // logging out would end the sessions the other calls use
    for (const o of operations(doc).filter((o) => !o.path.startsWith("/v1/auth/logout"))) {
      const url = o.path.replace(/\{[^}]+\}/g, () => crypto.randomUUID());
      const json = o.op.requestBody?.content["application/json"] !== undefined;
      const has = (n: string) => o.op.parameters?.some((p) => p.name === n);
      await check(o, url, {});
      for (const [who, token] of Object.entries(tokens)) {
        const auth = { authorization: `Bearer ${token}` };
        const withBody = (body: string, h: Record<string, string> = {}) => ({
          headers: { ...auth, "content-type": "application/json", ...h },
          body,
        });
        await check(o, url, { headers: auth }, who);
        await check(o, o.path.replace(/\{[^}]+\}/g, "not-an-id"), { headers: auth }, who);
        if (json) {
          await check(o, url, withBody("{"), who);
          await check(o, url, withBody("{}"), who);
        }
        if (has("If-Match")) {
          const h = { headers: { ...auth, "if-match": "x" } };
          await check(o, url, json ? withBody("{}", { "if-match": "x" }) : h, `${who}, If-Match`);
        }
        if (has("cursor")) await check(o, `${url}?cursor=forged`, { headers: auth }, who);
      }
    }
    // and a session that must enrol a second factor before anything else
    const mfa = await openTestApp({ CHARTLOG_MFA_REQUIRED_ROLES: "admin" });
    try {
      await createUser(mfa.runtime, "admin");
      const pending = await login(mfa.app, "admin@clinic.test");
      assert.equal(pending.body.mfaEnrolmentRequired, true);
      const auth = { authorization: `Bearer ${pending.body.accessToken}` };
      for (const o of operations(doc).filter((o) => !o.path.startsWith("/v1/auth/logout"))) {
        const url = o.path.replace(/\{[^}]+\}/g, () => crypto.randomUUID());
        const res = await mfa.app.request(url, { method: o.method.toUpperCase(), headers: auth });
        const kind = res.headers.get("content-type") === "application/problem+json"
          ? (await res.json()).type
          : (await res.body?.cancel(), null);
        const documented = o.op.responses[String(res.status)]?.content?.["application/problem+json"]
          ?.examples ?? {};
        if (kind && !Object.hasOwn(documented, kind.slice(10))) {
          wrong.push(`${o.name} (enrolment pending): ${res.status} ${kind} undocumented`);
        }
      }
    } finally {
      await mfa.close();
    }
    assert.deepEqual(wrong, []);
    // the probe reached past authentication and into validation and the handlers
    for (const status of [200, 400, 401, 403, 404, 422]) {
      assert.ok((seen.get(status) ?? 0) > 0, `no ${status} seen`);
    }
  } finally {
    await t.close();
  }
});

Deno.test("openapi: calls on a real record, live and then erased, answer only what is documented", async () => {
  const c = await uploadClinic();
  try {
    const { t, request, patient } = c;
    const encounter = await c.encounter();
    const file = new FormData();
    file.set("category", "patient_records");
    file.set("file", new Blob(["a note\n"]), "note.txt");
    const media = await (await request("admin", "POST", c.docUrl, file)).json();
    const bodies: Record<string, object> = {
      allergies: { allergen: "peanut", type: "food", severity: "mild" },
      prescriptions: {
        medication: "aspirin",
        dosage: "1 tablet",
        frequency: "daily",
        route: "oral",
        startDate: "2026-01-01",
      },
      vaccinations: {
        vaccineName: "tetanus",
        vaccineType: "inactivated",
        administeredAt: "2026-01-01T09:00:00Z",
      },
      visits: { visitDate: "2026-01-01", visitType: "routine_checkup" },
      "lab-tests": { testName: "ferritin" },
    };
    const entries: Record<string, string> = {};
    for (const [kind, body] of Object.entries(bodies)) {
      const res = await request(
        "practitioner",
        "POST",
        `${patientUrl(patient.id)}/chart/${kind}`,
        body,
      );
      entries[kind] = (await res.json()).id;
      assert.equal(res.status, 201, kind);
    }
    assert.ok(media.id && encounter.id);
    const doc: Doc = await (await t.app.request("/openapi.json")).json();
    const urlOf = (path: string) => {
      const kind = /\/chart\/([a-z-]+)\/\{entryId\}/.exec(path)?.[1];
      return path
        .replace("{entryId}", kind ? entries[kind]! : crypto.randomUUID())
        .replace(
          /^\/v1\/(patients|admin\/patients|audit\/patients)\/\{id\}/,
          (_, p) => `/v1/${p}/${patient.id}`,
        )
        .replace(/^\/v1\/encounters\/\{id\}/, `/v1/encounters/${encounter.id}`)
        .replace(/^\/v1\/media\/\{id\}/, `/v1/media/${media.id}`)
        .replace(/\{[^}]+\}/g, () => crypto.randomUUID());
    };
    const wrong: string[] = [];
    const seen = new Set<string>();
    const probe = async (phase: string) => {
      // while live, erasure waits for its own step below
      const ops = operations(doc).filter((o) =>
        o.path.includes("{") && (phase === "erased" || !/\/eras(e|ure)$/.test(o.path))
      );
      for (const o of ops) {
        const json = o.op.requestBody?.content["application/json"] !== undefined;
        for (const who of ["practitioner", "admin"]) {
          for (const body of json ? [{}, { reason: "asked" }] : [undefined]) {
            const res = await request(who, o.method.toUpperCase(), urlOf(o.path), body);
            const type = res.headers.get("content-type")?.split(";")[0] ?? "";
            const kind = type === "application/problem+json" ? (await res.json()).type : null;
            if (kind === null) await res.body?.cancel();
            seen.add(`${phase} ${res.status}`);
            const documented = o.op.responses[String(res.status)];
            const call = `${phase}: ${o.name} as ${who} ${JSON.stringify(body ?? null)}`;
            if (!documented) {
              wrong.push(`${call}: ${res.status} ${kind ?? type} undocumented`);
              continue;
            }
            const missing = missingHeaders(doc, documented, res);
            if (missing.length) wrong.push(`${call}: ${res.status} without ${missing}`);
            if (
              kind && !Object.hasOwn(documented.content?.[type]?.examples ?? {}, kind.slice(10))
            ) {
              wrong.push(`${call}: ${res.status} ${kind} not among the documented kinds`);
            }
          }
        }
      }
    };
    await probe("live");
    const erased = await request("admin", "POST", `/v1/admin/patients/${patient.id}/erase`, {
      reason: "asked",
    });
    assert.equal(erased.status, 200);
    await erased.body?.cancel();
    await probe("erased");
    assert.deepEqual(wrong, []);
    for (const s of ["live 200", "live 403", "live 422", "erased 410"]) assert.ok(seen.has(s), s);
  } finally {
    await c.t.close();
  }
});

const patientUrl = (id: string) => `/v1/patients/${id}`;
