import assert from "node:assert/strict";
import { decide, fold } from "../src/domain/encounter.ts";
import { ConflictError, ValidationError } from "../src/errors.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { bearer, createUser, login } from "./support/users.ts";

const E = "7d1c7a0e-0b8e-4c53-9a8e-2d6c1f0a9b01";
const P = "3a0f6c2e-5b1d-4e7f-8a9b-0c1d2e3f4a5b";
const planned = [{
  type: "EncounterPlanned",
  data: {
    encounterId: E,
    patientId: P,
    practitionerId: P,
    startsAt: "2026-12-01T09:00:00Z",
    reason: "r",
  },
}];
const at = (...to: string[]) =>
  fold([
    ...planned,
    ...to.map((t, i) => ({
      type: "EncounterStatusChanged",
      data: { to: t, from: i ? to[i - 1] : "planned" },
    })),
  ]);

Deno.test("encounter decider: the allowed transitions and no others", () => {
  const ok: [string[], string][] = [
    [[], "in_progress"],
    [[], "cancelled"],
    [["in_progress"], "finished"],
    [["in_progress"], "cancelled"],
  ];
  for (const [path, to] of ok) {
    assert.equal(
      decide({ type: "ChangeStatus", to: to as never }, at(...path)).length,
      1,
      `${path} → ${to}`,
    );
  }
  const bad: [string[], string][] = [
    [[], "finished"],
    [["in_progress"], "planned"],
    [["in_progress", "finished"], "cancelled"],
    [["in_progress", "finished"], "in_progress"],
    [["cancelled"], "planned"],
    [["cancelled"], "in_progress"],
  ];
  for (const [path, to] of bad) {
    assert.throws(
      () => decide({ type: "ChangeStatus", to: to as never }, at(...path)),
      ConflictError,
      `${path} → ${to}`,
    );
  }
  assert.deepEqual(decide({ type: "ChangeStatus", to: "planned" }, at()), []);
  assert.throws(
    () =>
      decide({
        type: "PlanEncounter",
        encounterId: E,
        patientId: P,
        practitionerId: P,
        startsAt: "x",
        reason: " ",
      }, fold([])),
    ValidationError,
  );
});

Deno.test("encounters: plan, read (audited), move through statuses; the practitioner gains a relation", async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000" });
  try {
    const tokens: Record<string, string> = {};
    const ids: Record<string, string> = {};
    for (const role of ["admin", "practitioner", "reception"] as const) {
      const u = await createUser(t.runtime, role);
      ids[role] = u.id;
      tokens[role] = (await login(t.app, u.email)).body.accessToken;
    }
    const other = await createUser(t.runtime, "practitioner", "other.doc@clinic.test");
    tokens.other = (await login(t.app, other.email)).body.accessToken;
    const call = (
      who: string,
      method: string,
      path: string,
      body?: unknown,
      headers: Record<string, string> = {},
    ) =>
      t.app.request(path, {
        method,
        headers: {
          ...bearer(tokens[who]!),
          "user-agent": `tests/${who}`,
          ...(body ? { "content-type": "application/json" } : {}),
          ...headers,
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      }, { remoteAddr: { hostname: "10.0.0.5", port: 1, transport: "tcp" } });

    const patient = await (await call("admin", "POST", "/v1/patients", {
      mrn: "E-1",
      firstName: "Eve",
      lastName: "Encounter",
      dateOfBirth: "1970-05-05",
      gender: "F",
    })).json();
    const base = `/v1/patients/${patient.id}/encounters`;
    const plan = {
      practitionerId: ids.practitioner,
      startsAt: "2026-12-01T09:00:00Z",
      reason: "itchy rash on left forearm",
    };
    assert.equal((await call("admin", "POST", base, { ...plan, reason: "" })).status, 422);
    assert.equal(
      (await call("admin", "POST", base, { ...plan, practitionerId: ids.reception })).status,
      404,
    );
    assert.equal((await call("practitioner", "POST", base, plan)).status, 403); // no relation yet
    assert.equal((await call("reception", "POST", base, plan)).status, 403);
    const created = await call("admin", "POST", base, plan);
    assert.equal(created.status, 201);
    const enc = await created.json();
    assert.equal(enc.status, "planned");
    assert.equal(created.headers.get("location"), `/v1/encounters/${enc.id}`);

    // the encounter's practitioner now relates to the patient; another does not
    assert.equal((await call("practitioner", "GET", `/v1/patients/${patient.id}`)).status, 200);
    assert.equal((await call("other", "GET", `/v1/patients/${patient.id}`)).status, 403);
    assert.equal((await call("other", "GET", `/v1/encounters/${enc.id}`)).status, 403);
    assert.equal((await call("reception", "GET", `/v1/encounters/${enc.id}`)).status, 403);
    const read = await call("practitioner", "GET", `/v1/encounters/${enc.id}`);
    assert.equal(read.status, 200);
    assert.equal((await read.json()).reason, "itchy rash on left forearm");
    const list = await (await call("practitioner", "GET", base)).json();
    assert.deepEqual(list.items.map((e: { id: string }) => e.id), [enc.id]);

    const patch = (status: string, headers: Record<string, string> = {}) =>
      call("practitioner", "PATCH", `/v1/encounters/${enc.id}`, { status }, headers);
    assert.equal((await patch("finished")).status, 409);
    assert.equal((await patch("in_progress", { "if-match": '"7"' })).status, 412);
    const started = await patch("in_progress", { "if-match": '"1"' });
    assert.equal(started.status, 200);
    assert.equal(started.headers.get("etag"), '"2"');
    assert.equal((await patch("finished")).status, 200);
    const late = await patch("cancelled");
    assert.equal(late.status, 409);
    assert.match((await late.json()).detail, /cannot go from finished to cancelled/);

    // reads are audited; the reason is sealed in the log
    const viewed = await t.runtime.db.query<
      { m: Record<string, string>; d: Record<string, string> }
    >(
      sql`select metadata as m, data as d from events where type = 'EncounterViewed'`,
    );
    assert.equal(viewed.length, 1);
    assert.deepEqual([viewed[0]!.m.actorId, viewed[0]!.m.ip, viewed[0]!.m.userAgent], [
      ids.practitioner,
      "10.0.0.5",
      "tests/practitioner",
    ]);
    assert.equal(viewed[0]!.d.encounterId, enc.id);
    const [listed] = await t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where type = 'EncountersListed'`,
    );
    assert.equal(listed!.n, 1);
    const [dump] = await t.runtime.db.query<{ d: string }>(
      sql`select string_agg(data::text, ' ') as d from events`,
    );
    assert.ok(!dump!.d.includes("itchy"));
  } finally {
    await t.close();
  }
});
