import assert from "node:assert/strict";
import { openTestApp } from "./support/app.ts";
import { bearer, createUser, login } from "./support/users.ts";

/** The one timestamp form of the API: ISO 8601, UTC, milliseconds. */
const ISO_UTC_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

const setup = async () => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000" });
  const admin = await createUser(t.runtime, "admin");
  const practitioner = await createUser(t.runtime, "practitioner");
  const token = (await login(t.app, admin.email)).body.accessToken;
  const call = async (method: string, path: string, body?: object | FormData) => {
    const res = await t.app.request(path, {
      method,
      headers: {
        ...bearer(token),
        ...(body && !(body instanceof FormData) ? { "content-type": "application/json" } : {}),
      },
      ...(body ? { body: body instanceof FormData ? body : JSON.stringify(body) } : {}),
    });
    const json = await res.json();
    assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const patient = await call("POST", "/v1/patients", {
    mrn: "L-1",
    firstName: "Lia",
    lastName: "Lister",
    dateOfBirth: "1980-01-01",
    gender: "F",
  });
  return { t, call, patient, practitioner };
};

Deno.test("lists: media lists carry total across pages, and list and item show one timestamp form", async () => {
  const { t, call, patient } = await setup();
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const f = new FormData();
      f.set("category", "documents");
      f.set("file", new Blob([`visit note ${i}\n`]), `note-${i}.txt`);
      ids.push((await call("POST", `/v1/patients/${patient.id}/documents`, f)).id);
    }
    const base = `/v1/patients/${patient.id}/media`;
    for (const m of (await call("GET", base)).items) {
      const item = await call("GET", `/v1/media/${m.id}`);
      assert.match(item.createdAt, ISO_UTC_MS);
      assert.match(item.updatedAt, ISO_UTC_MS);
      assert.equal(m.createdAt, item.createdAt, "the list and the item disagree");
      assert.match(m.createdAt, ISO_UTC_MS);
    }
    const first = await call("GET", `${base}?limit=2`);
    assert.equal(first.items.length, 2);
    assert.equal(first.total, 3);
    assert.notEqual(first.nextCursor, null);
    const second = await call(
      "GET",
      `${base}?limit=2&cursor=${encodeURIComponent(first.nextCursor)}`,
    );
    assert.equal(second.items.length, 1);
    assert.equal(second.total, 3);
    assert.equal(second.nextCursor, null);
    assert.deepEqual(
      [...first.items, ...second.items].map((m: { id: string }) => m.id).sort(),
      [...ids].sort(),
    );
    // filters count too
    assert.equal((await call("GET", `${base}?kind=photo`)).total, 0);
  } finally {
    await t.close();
  }
});

Deno.test("lists: encounter lists carry total, and list and item show one timestamp form", async () => {
  const { t, call, patient, practitioner } = await setup();
  try {
    const base = `/v1/patients/${patient.id}/encounters`;
    // an offset in the request; UTC in every answer
    await call("POST", base, {
      practitionerId: practitioner.id,
      startsAt: "2026-12-01T10:00:00+01:00",
      reason: "follow-up",
    });
    await call("POST", base, {
      practitionerId: practitioner.id,
      startsAt: "2026-12-02T09:30:00Z",
      reason: "review",
    });
    const list = await call("GET", base);
    assert.equal(list.total, 2);
    assert.equal(list.items.length, 2);
    assert.equal(list.nextCursor, null);
    assert.equal(list.items[0].startsAt, "2026-12-01T09:00:00.000Z");
    for (const e of list.items) {
      const item = await call("GET", `/v1/encounters/${e.id}`);
      for (const k of ["startsAt", "createdAt", "updatedAt"]) {
        assert.match(e[k], ISO_UTC_MS);
        assert.equal(e[k], item[k], k);
      }
    }
  } finally {
    await t.close();
  }
});
