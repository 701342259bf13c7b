import assert from "node:assert/strict";
import { projections } from "../projections/index.ts";
import { latestMigration } from "../src/store/migrations.ts";
import { openTestApp } from "./support/app.ts";
import { PROBLEMS } from "../src/http/problem.ts";

const PROBLEM = "application/problem+json";

const assertProblem = async (res: Response, status: number, type: string) => {
  assert.equal(res.status, status);
  assert.equal(res.headers.get("content-type"), PROBLEM);
  const body = await res.json();
  assert.equal(body.type, type);
  assert.equal(body.status, status);
  assert.equal(typeof body.title, "string");
  assert.equal(body.requestId, res.headers.get("x-request-id"));
  assert.ok(!JSON.stringify(body).includes("    at "), "no stack trace");
  return body;
};

Deno.test("http: health, readiness and request ids", async () => {
  const t = await openTestApp();
  try {
    const res = await t.app.request("/health");
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: "ok" });
    assert.match(res.headers.get("x-request-id")!, /^[0-9a-f-]{36}$/);

    const given = await t.app.request("/health", { headers: { "X-Request-Id": "abc-123" } });
    assert.equal(given.headers.get("x-request-id"), "abc-123");
    const unsafe = await t.app.request("/health", { headers: { "X-Request-Id": "<script>" } });
    assert.notEqual(unsafe.headers.get("x-request-id"), "<script>");

    const ready = await t.app.request("/ready");
    assert.equal(ready.status, 200);
    const body = await ready.json();
    assert.equal(body.status, "ready");
    assert.equal(body.database, "pglite");
    assert.equal(body.migration, latestMigration);
    // every read model the app maintains, in the order they are set up
    assert.deepEqual(
      body.projections.map((p: { name: string }) => p.name),
      projections.map((p) => p.name),
    );
    assert.ok(body.projections.length >= 7);

    t.detach();
    await assertProblem(await t.app.request("/ready"), 503, "/problems/unavailable");
    assert.equal((await t.app.request("/health")).status, 200);
    await t.runtime.close();
    await t.close(); // detached: what is left is its temporary blob directory
  } catch (err) {
    await t.close();
    throw err;
  }
});

Deno.test("http: every error is problem+json: 404, 405, 413, 422, 500", async () => {
  const t = await openTestApp({ CHARTLOG_MAX_BODY_BYTES: "1024" });
  t.app.get("/boom", () => {
    throw new Error("Secret Marmalade 1970-01-01");
  });
  try {
    const nf = await assertProblem(await t.app.request("/v1/nothing"), 404, "/problems/not-found");
    assert.equal(nf.instance, "/v1/nothing");

    const mna = await t.app.request("/health", { method: "DELETE" });
    await assertProblem(mna, 405, "/problems/method-not-allowed");
    assert.equal(mna.headers.get("allow"), "GET, HEAD");

    const big = await t.app.request("/health", { method: "POST", body: "x".repeat(4096) });
    await assertProblem(big, 413, "/problems/payload-too-large");

    const invalid = await t.app.request(`/problems/${"x".repeat(100)}`);
    const body = await assertProblem(invalid, 422, "/problems/validation");
    assert.equal(body.errors[0].path, "slug");

    const known = await t.app.request("/problems/validation");
    assert.deepEqual(await known.json(), {
      type: "/problems/validation",
      title: "Request validation failed",
      status: 422,
      about: PROBLEMS.validation.about,
    });

    // an unexpected failure: 500 without cause, message or stack; the log keeps
    // the request id and frames but not the message (it could quote input)
    const boom = await t.app.request("/boom");
    const b = await assertProblem(boom, 500, "/problems/internal");
    assert.ok(!JSON.stringify(b).includes("Marmalade"));
    const logged = t.logs.lines.find((l) => l.msg === "unhandled error")!;
    assert.equal(logged.requestId, b.requestId);
    assert.ok(!t.logs.text().includes("Marmalade"));
  } finally {
    await t.close();
  }
});

Deno.test("http: secure headers and configurable CORS", async () => {
  const t = await openTestApp({ CHARTLOG_CORS_ORIGINS: "https://app.clinic.example" });
  try {
    const res = await t.app.request("/health");
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.equal(res.headers.get("x-frame-options"), "SAMEORIGIN");
    assert.match(res.headers.get("content-security-policy")!, /default-src 'self'/);
    assert.match(res.headers.get("strict-transport-security")!, /max-age=/);

    const pre = await t.app.request("/health", {
      method: "OPTIONS",
      headers: {
        Origin: "https://app.clinic.example",
        "Access-Control-Request-Method": "GET",
      },
    });
    assert.equal(pre.headers.get("access-control-allow-origin"), "https://app.clinic.example");
    const other = await t.app.request("/health", { headers: { Origin: "https://evil.example" } });
    assert.equal(other.headers.get("access-control-allow-origin"), null);
  } finally {
    await t.close();
  }
  const closed = await openTestApp();
  try {
    const res = await closed.app.request("/health", { headers: { Origin: "https://x.example" } });
    assert.equal(res.headers.get("access-control-allow-origin"), null);
  } finally {
    await closed.close();
  }
});

Deno.test("http: access logs carry ids and the route pattern, never the URL or query", async () => {
  const t = await openTestApp();
  try {
    await t.app.request("/problems/not-found?name=Quentin%20Zebrafish&dob=1970-01-01", {
      headers: { Authorization: "Bearer sekrit-token-value" },
    });
    const line = t.logs.lines.find((l) => l.msg === "request")!;
    assert.equal(line.route, "/problems/:slug");
    assert.equal(line.status, 200);
    assert.equal(typeof line.requestId, "string");
    const text = t.logs.text();
    for (const leak of ["Zebrafish", "1970-01-01", "sekrit", "?name"]) {
      assert.ok(!text.includes(leak), leak);
    }
  } finally {
    await t.close();
  }
});

Deno.test("http: the OpenAPI document covers every mounted route", async () => {
  const t = await openTestApp();
  try {
    const res = await t.app.request("/openapi.json");
    assert.equal(res.status, 200);
    const doc = await res.json();
    assert.equal(doc.openapi, "3.1.0");
    const documented = new Set(
      Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) =>
        Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)
      ),
    );
    const mounted = t.app.routes
      .filter((r) => r.method !== "ALL")
      .map((r) => `${r.method} ${r.path.replace(/:([A-Za-z0-9_]+)/g, "{$1}")}`);
    assert.ok(mounted.length >= 6);
    const missing = mounted.filter((r) => !documented.has(r));
    assert.deepEqual(missing, [], `routes missing from /openapi.json: ${missing.join(", ")}`);
    // and the other way: routers mounted by prefix document exactly the paths they route
    const routed = new Set(mounted);
    const unrouted = [...documented].filter((r) => !routed.has(r));
    assert.deepEqual(unrouted, [], `documented but not routed: ${unrouted.join(", ")}`);
    // every operation documents its responses, problems included where it can fail
    for (
      const [path, ops] of Object.entries(
        doc.paths as Record<string, Record<string, { responses: object }>>,
      )
    ) {
      for (const [method, op] of Object.entries(ops)) {
        assert.ok(Object.keys(op.responses).length > 0, `${method} ${path}`);
      }
    }
    assert.ok(doc.components.schemas.Problem);

    const docs = await t.app.request("/docs");
    assert.equal(docs.status, 200);
    assert.match(await docs.text(), /swagger-ui-bundle\.js/);
    const asset = await t.app.request("/docs/assets/swagger-ui-bundle.js");
    assert.equal(asset.status, 200);
    assert.ok((await asset.arrayBuffer()).byteLength > 100_000);
    assert.equal((await t.app.request("/docs/assets/..%2Fpackage.json")).status, 404);
  } finally {
    await t.close();
  }
});

Deno.test("http: GET / points to the documentation", async () => {
  const t = await openTestApp();
  try {
    const res = await t.app.request("/");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    const body = await res.json();
    assert.equal(body.docs, "/docs");
    assert.equal(body.openapi, "/openapi.json");
    // and both answer
    assert.equal((await t.app.request(body.docs)).status, 200);
    const doc = await (await t.app.request(body.openapi)).json();
    assert.ok(doc.paths["/"]?.get, "GET / is in the OpenAPI document");
  } finally {
    await t.close();
  }
});
