import assert from "node:assert/strict";
import { noneMatch } from "../src/http/etag.ts";
import { sql } from "../src/store/sql.ts";
import { form, uploadClinic } from "./support/media.ts";
import { bearer, login } from "./support/users.ts";

Deno.test("If-None-Match: weak comparison, `*`, lists; garbage matches nothing", () => {
  assert.equal(noneMatch(undefined, '"3"'), false);
  assert.equal(noneMatch('"3"', '"3"'), true);
  assert.equal(noneMatch('W/"3"', '"3"'), true);
  assert.equal(noneMatch("*", '"3"'), true);
  assert.equal(noneMatch('  "1", W/"3" ,"7"', '"3"'), true);
  assert.equal(noneMatch('"1", , "3",', '"3"'), true);
  assert.equal(noneMatch('"2"', '"3"'), false);
  assert.equal(noneMatch('"1", "2"', '"3"'), false);
  assert.equal(noneMatch('"30"', '"3"'), false);
  for (const garbage of ["3", '"3', 'w/"3"', '"3" junk', '"3";"3"', "**", '""', "", "\t"]) {
    assert.equal(noneMatch(garbage, '"3"'), false, garbage);
  }
  // one malformed element spoils the list: the header is not one we can read
  assert.equal(noneMatch('"3", bogus', '"3"'), false);
});

Deno.test("If-None-Match on single-resource GETs: 304 with the ETag, audited like a 200", async () => {
  const { t, request, patient, encounter } = await uploadClinic();
  try {
    // the clinic's admin, in a session of this test's own (its helper sends no extra headers)
    const token = (await login(t.app, "admin@clinic.test")).body.accessToken as string;
    const call = (path: string, inm?: string) =>
      t.app.request(path, {
        headers: { ...bearer(token), ...(inm !== undefined ? { "if-none-match": inm } : {}) },
      });
    const viewed = async (type: string) =>
      Number(
        (await t.runtime.db.query<{ n: string }>(
          sql`select count(*)::text as n from events where type = ${type}`,
        ))[0]!.n,
      );

    const enc = await encounter();
    const doc = await request(
      "admin",
      "POST",
      `/v1/patients/${patient.id}/documents`,
      form(new TextEncoder().encode("a note\n"), "note.txt", { category: "lab_results" }),
    );
    assert.equal(doc.status, 201, await doc.clone().text());
    const media = await doc.json();
    const clinic = await request("admin", "POST", "/v1/clinics", {
      name: "Etag Clinic",
      licenseNumber: "LIC-ETAG-1",
    });
    assert.equal(clinic.status, 201, await clinic.clone().text());
    const clinicId = (await clinic.json()).id;

    const meId = (await (await call("/v1/me")).json()).id as string;
    const routes: { path: string; audit: string | null }[] = [
      { path: `/v1/patients/${patient.id}`, audit: "PatientViewed" },
      { path: `/v1/encounters/${enc.id}`, audit: "EncounterViewed" },
      { path: `/v1/media/${media.id}/content`, audit: "MediaDownloaded" },
      { path: `/v1/clinics/${clinicId}`, audit: null },
      { path: "/v1/me", audit: null },
      { path: `/v1/users/${meId}`, audit: null },
    ];
    for (const { path, audit } of routes) {
      const first = await call(path);
      assert.equal(first.status, 200, path);
      const tag = first.headers.get("etag");
      assert.ok(tag, `${path} sends an ETag`);
      await first.body?.cancel();
      const before = audit ? await viewed(audit) : 0;

      for (const inm of [tag, `W/${tag}`, "*", `"nope", ${tag}`]) {
        const res = await call(path, inm);
        assert.equal(res.status, 304, `${path} ${inm}`);
        assert.equal(res.headers.get("etag"), tag);
        assert.equal(await res.text(), "", "a 304 has no body");
      }
      // a 304 on PHI is an audited read: one access event each, as for a 200
      if (audit) assert.equal(await viewed(audit), before + 4, `${path}: ${audit} per 304`);

      for (const inm of ['"stale"', '"0"', "garbage", 'W/"x", junk', "\u00ff"]) {
        const res = await call(path, inm);
        assert.equal(res.status, 200, `${path} ${inm}`);
        await res.body?.cancel();
      }
    }

    // a stale tag after a write: the patient moved on, the old ETag gets the full record
    const old = (await call(`/v1/patients/${patient.id}`)).headers.get("etag")!;
    const patched = await request("admin", "PATCH", `/v1/patients/${patient.id}`, {
      phone: "+15550000009",
    });
    assert.equal(patched.status, 200, await patched.clone().text());
    const fresh = patched.headers.get("etag")!;
    assert.notEqual(fresh, old);
    const stale = await call(`/v1/patients/${patient.id}`, old);
    assert.equal(stale.status, 200);
    assert.equal(stale.headers.get("etag"), fresh);
    assert.equal((await stale.json()).phone, "+15550000009");

    // a 304 is no way around authorization: unknown ids are still 404
    const unknown = await call(`/v1/patients/${crypto.randomUUID()}`, "*");
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();

    // the OpenAPI document declares the header and the 304
    const doc31 = await (await t.app.request("/openapi.json")).json();
    const op = doc31.paths["/v1/patients/{id}"].get;
    assert.ok(op.responses["304"]);
    assert.ok(
      op.parameters.some((p: { in: string; name: string }) =>
        p.in === "header" && p.name === "if-none-match"
      ),
    );
  } finally {
    await t.close();
  }
});
