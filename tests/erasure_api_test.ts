/**
 * Erasure as an API (`POST /v1/admin/patients/:id/erase`), end to end: a
 * patient with demographics, encounters, a real uploaded image and an
 * account, read by practitioners, then erased. Afterwards the log still
 * verifies, the audit surface still says who did what when, every PHI field
 * and file reads back as erased, no table of any schema holds the patient's
 * PHI and the blob directory holds none of the image. Also: the auditor
 * role reaches the audit surface only.
 */
import assert from "node:assert/strict";
import { Image } from "imagescript";
import { registerUser } from "../src/auth/accounts.ts";
import type { Db } from "../src/store/db.ts";
import { ident, sql } from "../src/store/sql.ts";
import { verifyChain } from "../src/store/verify_chain.ts";
import { openTestApp } from "./support/app.ts";
import { createTestDatabase, type DriverKind, drivers } from "./support/harness.ts";
import { form, problemOf } from "./support/media.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

/** The patient's PHI: each value distinctive enough that a hit anywhere is a leak. */
const PHI = {
  mrn: "ERA-60417",
  firstName: "Philippa",
  lastName: "Grimsditch",
  dateOfBirth: "1958-03-14",
  email: "p.grimsditch@example.test",
  city: "Quorndon",
  accountEmail: "philippa@grimsditch.test",
  accountName: "Philippa G.",
  reason1: "recurrent grimsditch rash",
  reason2: "follow-up of the quorndon lesion",
  notes: "lesion left of the periwinkle tattoo",
  fileName: "philippa-forearm.jpg",
};

/** A photo with a gradient, so its encoding has long distinctive byte runs. */
const photo = async () => {
  const img = new Image(96, 64);
  for (let y = 1; y <= 64; y++) {
    for (let x = 1; x <= 96; x++) {
      img.setPixelAt(x, y, Image.rgbaToColor((x * 255 / 96) | 0, (y * 255 / 64) | 0, 140, 255));
    }
  }
  return await img.encodeJPEG(92);
};

/** Whether `needle` occurs in `hay`. */
const contains = (hay: Uint8Array, needle: Uint8Array) => {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
};

/** Every file below a directory. */
const filesUnder = async (dir: string): Promise<string[]> => {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await filesUnder(p));
    else if (e.isFile) out.push(p);
  }
  return out;
};

/**
 * Every base table of every non-system schema, each row as text, searched
 * for each value case-insensitively: `schema.table: value` per hit.
 */
const phiInTables = async (db: Db, values: string[]) => {
  const tables = await db.query<{ s: string; t: string }>(sql`select table_schema as s,
      table_name as t from information_schema.tables
    where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')
      and table_schema not like 'pg\\_%' order by 1, 2`);
  assert.ok(tables.some((x) => x.t === "events") && tables.some((x) => x.t === "patients"));
  const hits: string[] = [];
  for (const { s, t } of tables) {
    const rows = await db.query<{ r: string }>(
      sql`select x::text as r from ${ident(`${s}.${t}`)} x`,
    );
    const text = rows.map((r) => r.r.toLowerCase()).join("\n");
    for (const v of values) if (text.includes(v.toLowerCase())) hits.push(`${s}.${t}: ${v}`);
  }
  return hits;
};

interface AuditItem {
  position: number;
  time: string;
  type: string;
  actor: { id: string; role: string | null } | null;
}

const scenario = async (driver: DriverKind) => {
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  const t = await openTestApp({
    CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
    ...(pg ? { DATABASE_URL: pg.url } : {}),
  });
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  for (
    const [who, role] of [
      ["admin", "admin"],
      ["ops", "clinical_ops"],
      ["doc", "practitioner"],
      ["doc2", "practitioner"],
      ["auditor", "auditor"],
    ] as const
  ) {
    const u = await createUser(t.runtime, role, `${who}@clinic.test`);
    ids[who] = u.id;
    tokens[who] = (await login(t.app, u.email)).body.accessToken;
  }
  const call = (who: string, method: string, path: string, body?: FormData | object | string) =>
    t.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[who]!),
        ...(body !== undefined && !(body instanceof FormData)
          ? { "content-type": "application/json" }
          : {}),
      },
      ...(body === undefined ? {} : {
        body: body instanceof FormData || typeof body === "string" ? body : JSON.stringify(body),
      }),
    });
  const ok = async (res: Response, status = 200) => {
    const text = await res.text();
    assert.equal(res.status, status, text);
    return text ? JSON.parse(text) : null;
  };
  const close = async () => {
    await t.close();
    await pg?.drop();
  };
  return { t, pg, tokens, ids, call, ok, close };
};

for (const driver of await drivers()) {
  Deno.test(`erasure api [${driver}]: log verifies, audit facts stay, no PHI in any table or blob`, async () => {
    const s = await scenario(driver);
    const { t, ids, call, ok } = s;
    try {
      const patient = await ok(
        await call("admin", "POST", "/v1/patients", {
          mrn: PHI.mrn,
          firstName: PHI.firstName,
          lastName: PHI.lastName,
          dateOfBirth: PHI.dateOfBirth,
          gender: "F",
          email: PHI.email,
          address: { line1: "3 Mill Row", line2: null, city: PHI.city, state: "OR", zip: "97001" },
        }),
        201,
      );
      const p = patient.id as string;
      const account = await registerUser(
        t.runtime.store,
        {
          email: PHI.accountEmail,
          name: PHI.accountName,
          role: "patient",
          password: PASSWORD,
          patientId: p,
        },
        { actorId: "test-setup" },
        t.runtime.passwordParams,
      );
      s.tokens.patient = (await login(t.app, PHI.accountEmail)).body.accessToken;
      await ok(await call("patient", "GET", `/v1/patients/${p}`));
      const e1 = await ok(
        await call("admin", "POST", `/v1/patients/${p}/encounters`, {
          practitionerId: ids.doc,
          startsAt: "2026-12-01T09:00:00Z",
          reason: PHI.reason1,
        }),
        201,
      );
      const e2 = await ok(
        await call("admin", "POST", `/v1/patients/${p}/encounters`, {
          practitionerId: ids.doc2,
          startsAt: "2026-12-02T09:00:00Z",
          reason: PHI.reason2,
        }),
        201,
      );
      const jpeg = await photo();
      const media = await ok(
        await call(
          "doc",
          "POST",
          `/v1/encounters/${e1.id}/media`,
          form(jpeg, PHI.fileName, { category: "before", notes: PHI.notes }),
        ),
        201,
      );
      // the practitioners read what they treat: the record, the encounters, the image
      await ok(await call("doc", "GET", `/v1/patients/${p}`));
      await ok(await call("doc", "GET", `/v1/encounters/${e1.id}`));
      await ok(await call("doc2", "GET", `/v1/encounters/${e2.id}`));
      const content = await call("doc", "GET", `/v1/media/${media.id}/content`);
      assert.equal(content.status, 200);
      const stored = new Uint8Array(await content.arrayBuffer());
      await ok(await call("doc", "GET", `/v1/media/${media.id}`));

      // the auditor's view of the record before erasure, and the searches find the PHI today
      const audit = async () => {
        const items: AuditItem[] = [];
        let cursor: string | null = null;
        do {
          const q: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
          const page = await ok(
            await call("auditor", "GET", `/v1/audit/events?patientId=${p}&limit=500${q}`),
          );
          items.push(...page.items);
          cursor = page.nextCursor;
        } while (cursor);
        return items.map((i) => ({
          position: i.position,
          time: i.time,
          type: i.type,
          actor: i.actor ? { id: i.actor.id, role: i.actor.role } : null,
        }));
      };
      const seen = await audit();
      for (
        const type of [
          "PatientRegistered",
          "EncounterPlanned",
          "MediaUploaded",
          "PatientViewed",
          "EncounterViewed",
          "MediaDownloaded",
        ]
      ) assert.ok(seen.some((i) => i.type === type), type);
      assert.ok(seen.some((i) => i.type === "MediaDownloaded" && i.actor?.id === ids.doc));
      assert.ok(seen.some((i) => i.type === "EncounterViewed" && i.actor?.id === ids.doc2));
      const values = Object.values(PHI);
      const before = await phiInTables(t.runtime.db, values);
      for (const hit of ["public.patients: Grimsditch", "public.users: philippa@grimsditch.test"]) {
        assert.ok(before.includes(hit), `${hit} before erasure: ${before}`);
      }
      const blobRows = await t.runtime.db.query<{ blob: string; thumb_blob: string | null }>(
        sql`select blob, thumb_blob from media where patient_id = ${p}::uuid`,
      );
      const addresses = blobRows.flatMap((r) => [r.blob, r.thumb_blob]).filter((a) => a !== null);
      assert.equal(addresses.length, 2, "the image and its thumbnail");
      assert.deepEqual(await t.runtime.blobs.get(p, blobRows[0]!.blob), stored);

      // refusals first: they change nothing but their AccessDenied
      const url = `/v1/admin/patients/${p}/erase`;
      assert.equal((await call("ops", "POST", url, { reason: "asked" })).status, 403);
      assert.equal((await call("auditor", "POST", url, { reason: "asked" })).status, 403);
      for (
        const body of [
          {},
          { reason: "" },
          { reason: "   " },
          { reason: "x".repeat(501) },
          { reason: "asked", extra: true },
          { reason: 42 },
        ]
      ) await problemOf(await call("admin", "POST", url, body), 422, "/problems/validation");
      // NUL never reaches the database: the guard in front of every route refuses it (4xx)
      await problemOf(
        await call("admin", "POST", url, '{"reason":"asked\\u0000"}'),
        422,
        "/problems/validation",
      );
      const broken = await call("admin", "POST", url, "{not json");
      assert.ok(broken.status >= 400 && broken.status < 500, `${broken.status}`);
      await broken.body?.cancel();
      await problemOf(
        await call("admin", "POST", `/v1/admin/patients/${crypto.randomUUID()}/erase`, {
          reason: "asked",
        }),
        404,
        "/problems/not-found",
      );
      await problemOf(
        await call("admin", "POST", "/v1/admin/patients/not-a-uuid/erase", { reason: "x" }),
        422,
        "/problems/validation",
      );
      assert.deepEqual(await t.runtime.blobs.get(p, blobRows[0]!.blob), stored);

      const head = await t.runtime.store.headPosition();
      const summary = await ok(
        await call("admin", "POST", url, { reason: "erasure request ER-7, legal review done" }),
      );
      // the summary: keys, events, files, rows
      assert.equal(summary.patientId, p);
      assert.deepEqual(summary.userIds, [account.id]);
      const sealedIn = async (subject: string) =>
        (await t.runtime.db.query<{ n: number }>(sql`select count(*)::int as n from events
          where strpos(data::text, ${`"s": "${subject}"`}) > 0`))[0]!.n;
      const keys = [`patient-${p}`, `user-${account.id}`];
      assert.deepEqual(
        summary.subjectKeys,
        await Promise.all(
          keys.map(async (k) => ({ subjectId: k, sealedEvents: await sealedIn(k) })),
        ),
      );
      assert.ok(summary.subjectKeys[0].sealedEvents >= 4, "registered, two encounters, upload");
      assert.ok(summary.subjectKeys[1].sealedEvents >= 1, "the account's registration");
      assert.equal(
        summary.sealedEvents,
        summary.subjectKeys[0].sealedEvents + summary.subjectKeys[1].sealedEvents,
      );
      assert.deepEqual(summary.media, { items: 1, blobs: 2, blobsDeleted: 2 });
      const [destroyed] = await t.runtime.db.query<{ recorded_at: Date | string }>(sql`select
        recorded_at from events where stream_id = ${`subject-patient-${p}`}`);
      assert.equal(summary.erasedAt, new Date(destroyed!.recorded_at).toISOString());
      const table = (name: string) =>
        summary.readModels.find((r: { table: string }) => r.table === name);
      assert.deepEqual(table("patients"), {
        table: "patients",
        rowsBefore: 1,
        rowsAfter: 1,
        rowsDeleted: 0,
        rowsRewritten: 1,
      });
      assert.equal(table("users").rowsRewritten, 1);
      assert.equal(table("user_credentials").rowsDeleted, 1);
      assert.equal(table("care_team")?.rowsBefore ?? 0, 0);
      assert.equal(table("encounters").rowsBefore, 2);
      assert.equal(table("media").rowsBefore, 1);
      // the erasure's own events: the account deactivated, its session ended, two keys destroyed
      const written = await t.runtime.db.query<{ type: string }>(
        sql`select type from events where global_position > ${head} order by global_position`,
      );
      assert.deepEqual(written.map((r) => r.type), [
        "UserDeactivated",
        "SessionEnded",
        "SubjectKeyDestroyed",
        "SubjectKeyDestroyed",
      ]);

      // again: 410, on both spellings of the route
      await problemOf(
        await call("admin", "POST", url, { reason: "again" }),
        410,
        "/problems/erased",
      );
      await problemOf(
        await call("admin", "POST", `/v1/patients/${p}/erasure`, { reason: "again" }),
        410,
        "/problems/erased",
      );

      // the log verifies, and the audit trail says what it said, erasure or not
      const report = await verifyChain(t.runtime.db);
      assert.equal(report.ok, true);
      assert.equal(report.brokenCount, 0);
      const after = await audit();
      assert.deepEqual(after.slice(0, seen.length), seen);
      // and the refused erasures after it: who tried, when
      assert.deepEqual(
        after.slice(seen.length).filter((i) => i.type === "AccessDenied").map((i) => i.actor?.id),
        [ids.ops, ids.auditor],
      );
      const erasure = await ok(
        await call("auditor", "GET", `/v1/audit/events?streamId=subject-patient-${p}`),
      );
      assert.equal(erasure.items.length, 1);
      assert.equal(erasure.items[0].type, "SubjectKeyDestroyed");
      assert.equal(erasure.items[0].actor.id, ids.admin);
      assert.equal(erasure.items[0].reason, "erasure request ER-7, legal review done");
      const past = await ok(await call("auditor", "GET", `/v1/audit/streams/patient-${p}`));
      assert.deepEqual([past.state, past.erased], [null, true]);
      assert.ok(past.items.some((i: { type: string }) => i.type === "PatientRegistered"));

      // every PHI field and file reads back as erased
      for (
        const [who, path] of [
          ["admin", `/v1/patients/${p}`],
          ["doc", `/v1/patients/${p}`],
          ["admin", `/v1/patients/${p}/encounters`],
          ["admin", `/v1/encounters/${e1.id}`],
          ["doc2", `/v1/encounters/${e2.id}`],
          ["admin", `/v1/patients/${p}/media`],
          ["admin", `/v1/media/${media.id}`],
          ["doc", `/v1/media/${media.id}/content`],
          ["admin", `/v1/media/${media.id}/content`],
          ["admin", `/v1/media/${media.id}/thumbnail`],
        ] as const
      ) {
        await problemOf(await call(who, "GET", path), 410, "/problems/erased").catch((err) => {
          throw new Error(`${who} GET ${path}: ${err.message}`);
        });
      }
      assert.equal((await call("patient", "GET", "/v1/me")).status, 401);
      const events = await t.runtime.store.readStream(`patient-${p}`);
      assert.ok(events.length > 0);
      for (const e of events) {
        for (const v of values) assert.ok(!JSON.stringify(e.data).includes(v), `${e.type}: ${v}`);
      }

      // no PHI of the patient in any table of any schema
      assert.deepEqual(await phiInTables(t.runtime.db, values), []);

      // the blob directory: the patient's files are gone, and no file holds the image
      const files = await filesUnder(t.config.blobDir);
      for (const a of addresses) assert.ok(!files.some((f) => f.endsWith(`/${a}`)), a);
      const runs = [
        jpeg.subarray(jpeg.length >> 1, (jpeg.length >> 1) + 48),
        stored.subarray(stored.length >> 1, (stored.length >> 1) + 48),
      ];
      for (const f of files) {
        const bytes = await Deno.readFile(f);
        for (const run of runs) assert.ok(!contains(bytes, run), f);
        const name = f.slice(f.lastIndexOf("/") + 1);
        if (/^[0-9a-f]{64}$/.test(name)) {
          // no key opens it as the patient's: the key is gone
          assert.equal(await t.runtime.blobs.get(p, name).catch(() => null), null);
        }
      }
    } finally {
      await s.close();
    }
  });
}

Deno.test("erasure api: 20 concurrent erasures of one patient, one 200 with the whole summary", async () => {
  const driver = (await drivers())[0]!;
  const s = await scenario(driver);
  const { t, call, ok } = s;
  try {
    const patient = await ok(
      await call("admin", "POST", "/v1/patients", {
        mrn: "RACE-1",
        firstName: "Race",
        lastName: "Twenty",
        dateOfBirth: "1980-02-02",
        gender: "U",
      }),
      201,
    );
    const account = await registerUser(
      t.runtime.store,
      {
        email: "race@home.test",
        name: "Race",
        role: "patient",
        password: PASSWORD,
        patientId: patient.id,
      },
      { actorId: "test-setup" },
      t.runtime.passwordParams,
    );
    const raced = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) =>
          call("admin", "POST", `/v1/admin/patients/${patient.id}/erase`, { reason: `race ${i}` }),
      ),
    );
    assert.deepEqual(raced.map((r) => r.status).sort(), [200, ...Array(19).fill(410)]);
    const winner = raced.find((r) => r.status === 200)!;
    const summary = await winner.json();
    for (const r of raced) if (r !== winner) await problemOf(r, 410, "/problems/erased");
    assert.deepEqual(summary.userIds, [account.id]);
    assert.deepEqual(
      summary.subjectKeys.map((k: { subjectId: string }) => k.subjectId),
      [`patient-${patient.id}`, `user-${account.id}`],
    );
    const shreds = await t.runtime.db.query<{ stream_id: string }>(sql`select stream_id
      from events where type = 'SubjectKeyDestroyed' order by stream_id`);
    assert.deepEqual(shreds.map((r) => r.stream_id), [
      `subject-patient-${patient.id}`,
      `subject-user-${account.id}`,
    ]);
  } finally {
    await s.close();
  }
});

Deno.test("auditor: the audit surface only, no clinical reads or writes", async () => {
  // the policy is the same on either database: PGlite keeps it quick
  const s = await scenario("pglite");
  const { t, ids, call, ok } = s;
  try {
    const patient = await ok(
      await call("admin", "POST", "/v1/patients", {
        mrn: "AUD-1",
        firstName: "Audra",
        lastName: "Seen",
        dateOfBirth: "1977-07-07",
        gender: "F",
      }),
      201,
    );
    const p = patient.id as string;
    const encounter = await ok(
      await call("admin", "POST", `/v1/patients/${p}/encounters`, {
        practitionerId: ids.doc,
        startsAt: "2026-12-01T09:00:00Z",
        reason: "check",
      }),
      201,
    );
    const media = await ok(
      await call(
        "doc",
        "POST",
        `/v1/encounters/${encounter.id}/media`,
        form(await photo(), "a.jpg", { category: "before" }),
      ),
      201,
    );
    const forbidden = async (method: string, path: string, body?: FormData | object) =>
      await problemOf(await call("auditor", method, path, body), 403, "/problems/forbidden")
        .catch((err) => {
          throw new Error(`auditor ${method} ${path}: ${err.message}`);
        });
    // clinical writes
    await forbidden("POST", "/v1/patients", {
      mrn: "AUD-2",
      firstName: "No",
      lastName: "Write",
      dateOfBirth: "1970-01-01",
      gender: "M",
    });
    await forbidden("PATCH", `/v1/patients/${p}`, { lastName: "Changed" });
    await forbidden("POST", `/v1/patients/${p}/encounters`, {
      practitionerId: ids.doc,
      startsAt: "2026-12-03T09:00:00Z",
      reason: "no",
    });
    await forbidden(
      "POST",
      `/v1/encounters/${encounter.id}/media`,
      form(await photo(), "b.jpg", { category: "before" }),
    );
    await forbidden(
      "POST",
      `/v1/patients/${p}/documents`,
      form(new TextEncoder().encode("note\n"), "n.txt", { category: "patient_records" }),
    );
    await forbidden("POST", `/v1/admin/patients/${p}/erase`, { reason: "no" });
    // clinical reads outside /v1/audit
    await forbidden("GET", `/v1/patients/${p}`);
    await forbidden("GET", "/v1/patients");
    await forbidden("GET", `/v1/patients/${p}/history`);
    await forbidden("GET", `/v1/encounters/${encounter.id}`);
    await forbidden("GET", `/v1/media/${media.id}`);
    await forbidden("GET", `/v1/media/${media.id}/content`);
    // the audit surface: 200, each use audited
    const head = await t.runtime.store.headPosition();
    for (
      const path of [
        `/v1/audit/events?patientId=${p}`,
        `/v1/audit/actors/${ids.doc}/activity`,
        `/v1/audit/streams/patient-${p}`,
        "/v1/audit/break-glass",
      ]
    ) {
      const res = await call("auditor", "GET", path);
      assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
      await res.body?.cancel();
    }
    const uses = await t.runtime.db.query<{ type: string; actor: string }>(sql`select type,
      metadata->>'actorId' as actor from events where global_position > ${head}
      order by global_position`);
    assert.ok(uses.length >= 3);
    assert.ok(uses.every((u) => u.actor === ids.auditor));
    assert.ok(uses.some((u) => u.type === "AuditQueried"));
    assert.ok(uses.some((u) => u.type === "AuditStreamViewed"));
  } finally {
    await s.close();
  }
});
