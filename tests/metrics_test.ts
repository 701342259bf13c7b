import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { openTestApp } from "./support/app.ts";
import { form, uploadClinic } from "./support/media.ts";
import { bearer, createUser, login } from "./support/users.ts";

type App = Awaited<ReturnType<typeof openTestApp>>;

const TOKEN = "metrics-token-0123456789abcdef";

const patient = {
  mrn: "MRN-METRICS-1",
  firstName: "Zebedee",
  lastName: "Quillfeather",
  dateOfBirth: "1980-02-03",
  gender: "M",
  phone: "+15557770001",
  email: "zebedee@example.org",
  address: { line1: "9 Lantern Row", city: "Springfield", state: "IL", zip: "62701" },
};

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const LABEL = `([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\\\n]|\\\\.)*)"`;
const VALUE = "([-+]?(?:[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf)|NaN|Nan)";
const LABELS = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*"`; // LABEL without groups
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABELS},?)*)\\})? ${VALUE}(?: -?[0-9]+)?$`);
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/**
 * Parses Prometheus text exposition (format 0.0.4) strictly: every line is
 * blank, `# HELP name text`, `# TYPE name type` or a sample `name{labels} value`;
 * a sample's family has a TYPE line before it. Throws on anything else.
 */
const parseExposition = (text: string): Sample[] => {
  const typed = new Map<string, string>();
  const samples: Sample[] = [];
  for (const [i, line] of text.split("\n").entries()) {
    if (line.trim() === "") continue;
    if (line.startsWith("#")) {
      const m = new RegExp(`^# (HELP|TYPE) (${NAME}) ?(.*)$`).exec(line);
      assert.ok(m, `line ${i + 1}: a comment that is neither HELP nor TYPE: ${line}`);
      if (m[1] === "TYPE") {
        assert.ok(TYPES.has(m[3]!), `line ${i + 1}: unknown type ${m[3]}`);
        assert.ok(!typed.has(m[2]!), `line ${i + 1}: ${m[2]} typed twice`);
        typed.set(m[2]!, m[3]!);
      }
      continue;
    }
    const m = SAMPLE.exec(line);
    assert.ok(m, `line ${i + 1}: not a sample: ${line}`);
    const name = m[1]!;
    const family = [...typed.keys()].find((f) =>
      name === f || (/_(bucket|sum|count|total|created)$/.test(name) && name.startsWith(f))
    );
    assert.ok(family, `line ${i + 1}: ${name} has no TYPE line`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(new RegExp(LABEL, "g"))) labels[l[1]!] = l[2]!;
    const v = m[3]!;
    samples.push({
      name,
      labels,
      value: /^nan$/i.test(v)
        ? NaN
        : v.endsWith("Inf")
        ? (v[0] === "-" ? -Infinity : Infinity)
        : Number(v),
    });
  }
  return samples;
};

const sum = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  ).reduce((a, s) => a + s.value, 0);

const scrape = async (t: App, token: string | null = TOKEN) => {
  const res = await t.app.request("/metrics", { headers: token ? bearer(token) : {} });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { text, samples: parseExposition(text) };
};

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;

Deno.test("metrics: Prometheus exposition with requests by route pattern, appends by type, no PHI", async () => {
  const t = await openTestApp({ CHARTLOG_METRICS_TOKEN: TOKEN });
  try {
    const admin = await createUser(t.runtime, "admin");
    const token = (await login(t.app, admin.email)).body.accessToken as string;
    const before = await scrape(t);
    const created = await t.app.request("/v1/patients", {
      method: "POST",
      headers: { ...bearer(token), "content-type": "application/json" },
      body: JSON.stringify(patient),
    });
    assert.equal(created.status, 201);
    const { id } = await created.json();
    for (let i = 0; i < 3; i++) {
      const res = await t.app.request(`/v1/patients/${id}`, { headers: bearer(token) });
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
    const missing = await t.app.request(`/v1/patients/${crypto.randomUUID()}`, {
      headers: bearer(token),
    });
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    // no route at all: labelled by the catch-all, not by the path
    const nowhere = await t.app.request(`/nowhere/${crypto.randomUUID()}`);
    assert.equal(nowhere.status, 404);
    await nowhere.body?.cancel();

    const { text, samples } = await scrape(t);
    // requests: the route pattern and status, never the URL
    const reads = { method: "GET", route: "/v1/patients/:id", status: "200" };
    assert.equal(sum(samples, "chartlog_http_requests_total", reads), 3);
    assert.equal(
      sum(samples, "chartlog_http_requests_total", { route: "/v1/patients/:id", status: "404" }),
      1,
    );
    assert.equal(sum(samples, "chartlog_http_request_duration_seconds_count", reads), 3);
    assert.ok(
      samples.some((s) =>
        s.name === "chartlog_http_request_duration_seconds_bucket" && s.labels.le === "+Inf"
      ),
    );
    // appends: by type, moving with the registration and the audited reads
    const appended = (s: Sample[], type: string) =>
      sum(s, "chartlog_events_appended_total", { type });
    assert.equal(
      appended(samples, "PatientRegistered") - appended(before.samples, "PatientRegistered"),
      1,
    );
    assert.equal(appended(samples, "PatientViewed") - appended(before.samples, "PatientViewed"), 3);
    assert.ok(
      sum(samples, "chartlog_append_batch_events_count") >
        sum(before.samples, "chartlog_append_batch_events_count"),
    );
    // async projections report their lag (no workers run here: they are behind)
    assert.ok(
      samples.some((s) => s.name === "chartlog_projection_lag_events" && s.value > 0),
      "a lagging async projection",
    );
    // process metrics
    assert.ok(sum(samples, "chartlog_process_resident_memory_bytes") > 0);
    // no PHI, no ids
    for (const phi of ["Zebedee", "Quillfeather", "MRN-METRICS", "1980-02-03", "Lantern", id]) {
      assert.ok(!text.includes(phi), `metrics carry ${phi}`);
    }
    assert.doesNotMatch(text, UUID);
    assert.ok(!text.includes(TOKEN));
  } finally {
    await t.close();
  }
});

Deno.test("metrics: the token is required when set (401 problem+json); off in production without one", async () => {
  const t = await openTestApp({ CHARTLOG_METRICS_TOKEN: TOKEN });
  try {
    for (
      const headers of [
        {},
        bearer("metrics-token-0123456789abcdeX"),
        bearer(TOKEN + "x"),
        bearer(""),
        { authorization: TOKEN },
        { authorization: `Basic ${btoa(`x:${TOKEN}`)}` },
      ]
    ) {
      const res = await t.app.request("/metrics", { headers });
      assert.equal(res.status, 401, JSON.stringify(headers));
      assert.equal(res.headers.get("content-type"), "application/problem+json");
      assert.equal((await res.json()).type, "/problems/unauthorized");
    }
    await scrape(t, TOKEN);
    // the token never reaches the logs
    assert.ok(!t.logs.text().includes(TOKEN));
    // while the database is not open the app's and the process's metrics still answer
    const runtime = t.runtime;
    t.detach(); // t.close() no longer closes it: this test does
    try {
      const early = await scrape(t, TOKEN);
      assert.ok(early.samples.some((s) => s.name === "chartlog_http_requests_total"));
      assert.ok(!early.samples.some((s) => s.name === "chartlog_events_appended_total"));
      const ready = await t.app.request("/ready");
      assert.equal(ready.status, 503);
      await ready.body?.cancel();
    } finally {
      await runtime.close();
    }
  } finally {
    await t.close();
  }

  // no token: open outside production
  const open = await openTestApp();
  try {
    await scrape(open, null);
  } finally {
    await open.close();
  }

  // production without a token: off; with one: on
  assert.equal(loadConfig({}).metricsToken, null);
  assert.equal(loadConfig({ CHARTLOG_METRICS_TOKEN: TOKEN }).metricsToken, TOKEN);
  assert.throws(() => loadConfig({ CHARTLOG_METRICS_TOKEN: "short" }), /CHARTLOG_METRICS_TOKEN/);
  assert.throws(
    () => loadConfig({ CHARTLOG_METRICS_TOKEN: "has a space in it here" }),
    (e: Error) => /CHARTLOG_METRICS_TOKEN/.test(e.message) && !e.message.includes("space in"),
  );
  const prod = await openTestApp({ CHARTLOG_ENV: "production" });
  try {
    const res = await prod.app.request("/metrics");
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    await res.body?.cancel();
  } finally {
    await prod.close();
  }
});

Deno.test("metrics: the upload pipeline's steps of a stored upload, by kind and step", async () => {
  const { t, request, patient } = await uploadClinic({ CHARTLOG_METRICS_TOKEN: TOKEN });
  try {
    const before = await scrape(t);
    const res = await request(
      "admin",
      "POST",
      `/v1/patients/${patient.id}/documents`,
      form(new TextEncoder().encode("a note\n"), "note.txt", { category: "lab_results" }),
    );
    assert.equal(res.status, 201, await res.clone().text());
    await res.body?.cancel();
    const { samples } = await scrape(t);
    const steps = (s: Sample[], step: string) =>
      sum(s, "chartlog_upload_step_duration_seconds_count", { kind: "document", step });
    for (const step of ["sniff", "write", "append"]) {
      assert.equal(steps(samples, step) - steps(before.samples, step), 1, step);
    }
  } finally {
    await t.close();
  }
});
