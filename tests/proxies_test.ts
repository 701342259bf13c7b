/**
 * Family access (issue 12): proxies. The decider alone, then the HTTP flow
 * on PGlite and on PostgreSQL: add, list, change and remove; what a
 * read-only and a full proxy may do (a document through the real upload
 * pipeline, never a photo); removal ending access at once; a family member
 * who is no proxy seeing nothing; 20 concurrent adds; bad input; erasure.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { registerUser } from "../src/auth/accounts.ts";
import { proxyDecider } from "../src/domain/proxy.ts";
import { ConflictError, NotFoundError } from "../src/errors.ts";
import { shredSubject } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { spec } from "./support/decider.ts";
import { createTestDatabase, type DriverKind, drivers } from "./support/harness.ts";
import { form, problemOf } from "./support/media.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const P = "00000000-0000-4000-8000-0000000000a1";
const U = "00000000-0000-4000-8000-0000000000b1";
const X1 = "00000000-0000-4000-8000-0000000000c1";
const X2 = "00000000-0000-4000-8000-0000000000c2";

const added = (proxyId: string, level: "full" | "read_only") => ({
  type: "ProxyAdded" as const,
  data: { proxyId, patientId: P, userId: U, level },
});
const removed = (proxyId: string) => ({
  type: "ProxyRemoved" as const,
  data: { proxyId, patientId: P, userId: U },
});

Deno.test("proxy decider: add, same level 409, other level is a change, remove, not a proxy 404", () => {
  const add = (level: "full" | "read_only", proxyId = X2) => ({
    type: "AddProxy" as const,
    patientId: P,
    userId: U,
    level,
    proxyId,
  });
  const remove = { type: "RemoveProxy" as const, patientId: P, userId: U };
  spec(proxyDecider).given([]).when(add("read_only", X1)).then([added(X1, "read_only")]);
  spec(proxyDecider).given([added(X1, "read_only")]).when(add("read_only"))
    .thenThrows(ConflictError);
  // a new level is a new relation: the old id ends in the same append
  spec(proxyDecider).given([added(X1, "read_only")]).when(add("full"))
    .then([removed(X1), added(X2, "full")]);
  spec(proxyDecider).given([added(X1, "full")]).when(remove).then([removed(X1)]);
  spec(proxyDecider).given([]).when(remove).thenThrows(NotFoundError);
  spec(proxyDecider).given([added(X1, "full"), removed(X1)]).when(remove)
    .thenThrows(NotFoundError);
  spec(proxyDecider).given([added(X1, "full"), removed(X1)]).when(add("full"))
    .then([added(X2, "full")]);
});

const enc = new TextEncoder();
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A small, valid one-page PDF. */
const pdf = () => {
  const objs = [
    "<< /Type /Catalog /Pages 2 0 R >>",
    "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
  ];
  let body = "%PDF-1.4\n";
  const offsets: number[] = [];
  objs.forEach((o, i) => {
    offsets.push(body.length);
    body += `${i + 1} 0 obj\n${o}\nendobj\n`;
  });
  const xref = body.length;
  body += `xref\n0 ${objs.length + 1}\n0000000000 65535 f \n` +
    offsets.map((o) => `${String(o).padStart(10, "0")} 00000 n \n`).join("") +
    `trailer\n<< /Size ${objs.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return enc.encode(body);
};

/**
 * A patient with an encounter and a document, the patient's own user, three
 * family members (patient users without a record of their own), an admin
 * and a practitioner; on PGlite in memory or a fresh PostgreSQL database.
 */
const household = async (driver: DriverKind) => {
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  const opened = await openTestApp({
    CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
    ...(pg ? { DATABASE_URL: pg.url } : {}),
  });
  const t = {
    ...opened,
    close: async () => {
      await opened.close();
      await pg?.drop();
    },
  };
  try {
    const tokens: Record<string, string> = {};
    const ids: Record<string, string> = {};
    const signIn = async (who: string, email: string) => {
      tokens[who] = (await login(t.app, email)).body.accessToken;
    };
    for (const role of ["admin", "practitioner"] as const) {
      const u = await createUser(t.runtime, role);
      ids[role] = u.id;
      await signIn(role, u.email);
    }
    const request = (who: string, method: string, path: string, body?: FormData | object) =>
      t.app.request(path, {
        method,
        headers: {
          ...bearer(tokens[who]!),
          ...(body && !(body instanceof FormData) ? { "content-type": "application/json" } : {}),
        },
        ...(body ? { body: body instanceof FormData ? body : JSON.stringify(body) } : {}),
      });
    const created = async (res: Response) => {
      assert.ok(res.status < 300, `${res.status} ${await res.clone().text()}`);
      return await res.json();
    };
    const newPatient = async (mrn: string) =>
      await created(
        await request("admin", "POST", "/v1/patients", {
          mrn,
          firstName: "Hal",
          lastName: "Household",
          dateOfBirth: "1950-03-03",
          gender: "M",
        }),
      );
    const patient = await newPatient("FAM-1");
    const other = await newPatient("FAM-2");
    const encounter = await created(
      await request("admin", "POST", `/v1/patients/${patient.id}/encounters`, {
        practitionerId: ids.practitioner,
        startsAt: "2026-12-01T09:00:00Z",
        reason: "review",
      }),
    );
    const doc = await created(
      await request(
        "admin",
        "POST",
        `/v1/patients/${patient.id}/documents`,
        form(enc.encode("discharge letter\n"), "letter.txt", { category: "documents" }),
      ),
    );
    const account = async (who: string, email: string, patientId: string | null = null) => {
      const u = await registerUser(
        t.runtime.store,
        {
          email,
          name: `Family ${who}`,
          role: "patient",
          password: PASSWORD,
          patientId,
        },
        { actorId: "test-setup" },
        t.runtime.passwordParams,
      );
      ids[who] = u.id;
      await signIn(who, email);
    };
    await account("self", "hal@home.test", patient.id);
    await account("daughter", "daughter@home.test");
    await account("son", "son@home.test");
    await account("cousin", "cousin@home.test");
    const count = async (type: string) =>
      Number(
        (await t.runtime.db.query<{ n: string }>(
          sql`select count(*)::text as n from events where type = ${type}`,
        ))[0]!.n,
      );
    const denials = async (userId: string) =>
      (await t.runtime.db.query<{ action: string }>(
        sql`select data->>'action' as action from events
          where type = 'AccessDenied' and data->>'actorId' = ${userId} order by global_position`,
      )).map((r) => r.action);
    const proxiesUrl = `/v1/patients/${patient.id}/proxies`;
    return {
      t,
      request,
      tokens,
      ids,
      patient,
      other,
      encounter,
      doc,
      count,
      denials,
      proxiesUrl,
    };
  } catch (err) {
    await t.close();
    throw err;
  }
};

for (const driver of await drivers()) {
  Deno.test(`proxies [${driver}]: HTTP end to end`, async (tt) => {
    const h = await household(driver);
    const { t, request, ids, patient, other, encounter, doc, count, denials, proxiesUrl } = h;
    try {
      await tt.step("a family member without a record sees only themselves", async () => {
        const me = await request("cousin", "GET", "/v1/me");
        assert.equal(me.status, 200);
        const body = await me.json();
        assert.equal(body.role, "patient");
        assert.equal(body.patientId, null);
        const mine = await request("cousin", "GET", "/v1/me/proxies");
        assert.equal(mine.status, 200);
        assert.deepEqual((await mine.json()).items, []);
        for (
          const [method, path] of [
            ["GET", "/v1/patients"],
            ["GET", `/v1/patients/${patient.id}`],
            ["GET", `/v1/patients/${patient.id}/encounters`],
            ["GET", `/v1/encounters/${encounter.id}`],
            ["GET", `/v1/patients/${patient.id}/media`],
            ["GET", `/v1/media/${doc.id}`],
            ["GET", `/v1/media/${doc.id}/content`],
            ["GET", proxiesUrl],
          ] as const
        ) {
          const res = await request("cousin", method, path);
          await problemOf(res, 403, "/problems/forbidden");
        }
        assert.equal((await denials(ids.cousin!)).length, 8);
      });

      await tt.step("the patient adds proxies, lists and changes them; admins too", async () => {
        const res = await request("self", "POST", proxiesUrl, {
          userId: ids.daughter,
          level: "read_only",
        });
        assert.equal(res.status, 201, await res.clone().text());
        assert.equal(res.headers.get("location"), proxiesUrl);
        const p = await res.json();
        assert.equal(p.userId, ids.daughter);
        assert.equal(p.level, "read_only");
        assert.equal(p.name, "Family daughter");
        assert.equal(p.addedBy, ids.self);
        assert.ok(!Number.isNaN(Date.parse(p.addedAt)));
        // same level again: 409, nothing appended
        const before = await count("ProxyAdded");
        await problemOf(
          await request("self", "POST", proxiesUrl, { userId: ids.daughter, level: "read_only" }),
          409,
          "/problems/conflict",
        );
        assert.equal(await count("ProxyAdded"), before);
        // the admin adds the son at full
        const son = await request("admin", "POST", proxiesUrl, { userId: ids.son, level: "full" });
        assert.equal(son.status, 201);
        // a level change: a new relation in one append
        const up = await request("self", "POST", proxiesUrl, {
          userId: ids.daughter,
          level: "full",
        });
        assert.equal(up.status, 200);
        const upBody = await up.json();
        assert.equal(upBody.level, "full");
        assert.notEqual(upBody.proxyId, p.proxyId);
        const stream = await t.runtime.store.readStream(`proxies-${patient.id}`, {
          unseal: false,
        });
        assert.deepEqual(stream.map((e) => [e.type, e.streamVersion]), [
          ["ProxyAdded", 1],
          ["ProxyAdded", 2],
          ["ProxyRemoved", 3],
          ["ProxyAdded", 4],
        ]);
        const down = await request("self", "POST", proxiesUrl, {
          userId: ids.daughter,
          level: "read_only",
        });
        assert.equal(down.status, 200);

        const list = await request("self", "GET", proxiesUrl);
        assert.equal(list.status, 200);
        assert.equal(list.headers.get("cache-control"), "no-store");
        const items = (await list.json()).items;
        assert.deepEqual(
          items.map((i: { userId: string; level: string; addedBy: string }) => [
            i.userId,
            i.level,
            i.addedBy,
          ]),
          [[ids.son, "full", ids.admin], [ids.daughter, "read_only", ids.self]],
        );
        const viewed = await t.runtime.db.query<{ data: { userIds: string[] } }>(
          sql`select data from events where type = 'ProxiesViewed' order by global_position`,
        );
        assert.deepEqual(viewed.at(-1)!.data.userIds, [ids.son, ids.daughter]);
        // the admin reads it too; the full proxy (son) may list, the read-only one may not
        assert.equal((await request("admin", "GET", proxiesUrl)).status, 200);
        assert.equal((await request("son", "GET", proxiesUrl)).status, 200);
        const sonOf = (await (await request("son", "GET", "/v1/me/proxies")).json()).items;
        assert.deepEqual(
          sonOf.map((i: { patientId: string; level: string }) => [i.patientId, i.level]),
          [[patient.id, "full"]],
        );
        await problemOf(await request("daughter", "GET", proxiesUrl), 403, "/problems/forbidden");
        // a practitioner manages no proxies, even of a patient they treat
        await problemOf(
          await request("practitioner", "POST", proxiesUrl, { userId: ids.cousin, level: "full" }),
          403,
          "/problems/forbidden",
        );
      });

      await tt.step(
        "who may be a proxy: an active patient user, not the patient's own",
        async () => {
          const refused = async (userId: string, message: RegExp) => {
            const body = await problemOf(
              await request("admin", "POST", proxiesUrl, { userId, level: "full" }),
              422,
              "/problems/validation",
            );
            assert.equal(body.errors[0].path, "userId");
            assert.match(body.errors[0].message, message);
          };
          await refused(ids.practitioner!, /role patient/);
          await refused(ids.self!, /own account/);
          // a family member an admin creates over HTTP, then deactivates
          const aunt = await request("admin", "POST", "/v1/users", {
            email: "aunt@home.test",
            name: "Aunt",
            role: "patient",
            password: PASSWORD,
          });
          assert.equal(aunt.status, 201);
          const auntId = (await aunt.json()).id;
          const off = await request("admin", "PATCH", `/v1/users/${auntId}`, { active: false });
          assert.equal(off.status, 200);
          await refused(auntId, /active/);
          await problemOf(
            await request("admin", "POST", proxiesUrl, {
              userId: crypto.randomUUID(),
              level: "full",
            }),
            404,
            "/problems/not-found",
          );
          // an unknown patient is 404 (for whoever may manage proxies at all)
          await problemOf(
            await request("admin", "POST", `/v1/patients/${crypto.randomUUID()}/proxies`, {
              userId: ids.cousin,
              level: "full",
            }),
            404,
            "/problems/not-found",
          );
          await problemOf(
            await request("admin", "GET", `/v1/patients/${crypto.randomUUID()}/proxies`),
            404,
            "/problems/not-found",
          );
          await problemOf(
            await request(
              "admin",
              "DELETE",
              `/v1/patients/${crypto.randomUUID()}/proxies/${ids.son}`,
            ),
            404,
            "/problems/not-found",
          );
          // the patient's own user has no say over another patient's proxies
          await problemOf(
            await request("self", "POST", `/v1/patients/${other.id}/proxies`, {
              userId: ids.cousin,
              level: "full",
            }),
            403,
            "/problems/forbidden",
          );
        },
      );

      await tt.step("a read-only proxy reads the record but every write is 403", async () => {
        for (
          const path of [
            `/v1/patients/${patient.id}`,
            `/v1/patients/${patient.id}/care-team`,
            `/v1/patients/${patient.id}/encounters`,
            `/v1/encounters/${encounter.id}`,
            `/v1/patients/${patient.id}/media`,
            `/v1/encounters/${encounter.id}/media`,
            `/v1/media/${doc.id}`,
            `/v1/media/${doc.id}/content`,
          ]
        ) {
          const res = await request("daughter", "GET", path);
          assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
          await res.body?.cancel();
        }
        const before = await denials(ids.daughter!);
        const uploadsBefore = await count("MediaUploaded");
        const writes: [string, string, FormData | object, string][] = [
          ["PATCH", `/v1/patients/${patient.id}`, { phone: "+15555550100" }, "patient.update"],
          [
            "POST",
            `/v1/patients/${patient.id}/documents`,
            form(pdf(), "scan.pdf", { category: "documents" }),
            "media.upload_document",
          ],
          [
            "POST",
            `/v1/encounters/${encounter.id}/media`,
            form(pdf(), "scan.pdf", { category: "before" }),
            "media.upload",
          ],
          ["POST", proxiesUrl, { userId: ids.cousin, level: "read_only" }, "proxy.manage"],
          ["DELETE", `${proxiesUrl}/${ids.son}`, {}, "proxy.manage"],
          ["PATCH", `/v1/encounters/${encounter.id}`, { status: "cancelled" }, "encounter.update"],
          ["DELETE", `/v1/media/${doc.id}`, { reason: "mine" }, "media.delete"],
        ];
        for (const [method, path, body] of writes) {
          await problemOf(
            await request("daughter", method, path, body),
            403,
            "/problems/forbidden",
          );
        }
        assert.deepEqual(
          (await denials(ids.daughter!)).slice(before.length),
          writes.map((w) => w[3]),
        );
        assert.equal(await count("MediaUploaded"), uploadsBefore);
        assert.equal(await count("PatientUpdated"), 0);
      });

      await tt.step(
        "a full proxy uploads a document through the pipeline, never a photo",
        async () => {
          const bytes = pdf();
          const res = await request(
            "son",
            "POST",
            `/v1/patients/${patient.id}/documents`,
            form(bytes, "insurance-card.pdf", { category: "insurance", description: "card" }),
          );
          assert.equal(res.status, 201, await res.clone().text());
          const m = await res.json();
          assert.equal(m.kind, "document");
          assert.equal(m.contentType, "application/pdf");
          assert.equal(m.uploader.id, ids.son);
          assert.equal(m.uploader.name, "Family son");
          assert.equal(m.sha256, sha(bytes));
          // the stored blob is encrypted; the download gives the bytes back
          const dl = await request("son", "GET", `/v1/media/${m.id}/content`);
          assert.equal(dl.status, 200);
          assert.equal(sha(new Uint8Array(await dl.arrayBuffer())), sha(bytes));
          const [row] = await t.runtime.db.query<{ uploader_id: string; kind: string }>(
            sql`select uploader_id::text as uploader_id, kind from media where id = ${m.id}::uuid`,
          );
          assert.deepEqual(row, { uploader_id: ids.son, kind: "document" });
          // the patient themselves may too
          const own = await request(
            "self",
            "POST",
            `/v1/patients/${patient.id}/documents`,
            form(enc.encode("my notes\n"), "notes.txt", { category: "patient_records" }),
          );
          assert.equal(own.status, 201);
          // a photo to an encounter is the clinicians' record: refused, and recorded
          const before = await count("MediaUploaded");
          await problemOf(
            await request(
              "son",
              "POST",
              `/v1/encounters/${encounter.id}/media`,
              form(pdf(), "x.pdf", { category: "before" }),
            ),
            403,
            "/problems/forbidden",
          );
          assert.deepEqual((await denials(ids.son!)).at(-1), "media.upload");
          assert.equal(await count("MediaUploaded"), before);
          // no write beyond documents: the record's demographics stay the staff's
          await problemOf(
            await request("son", "PATCH", `/v1/patients/${patient.id}`, { phone: "+15555550100" }),
            403,
            "/problems/forbidden",
          );
          // a full proxy of one patient is nobody to another
          await problemOf(
            await request(
              "son",
              "POST",
              `/v1/patients/${other.id}/documents`,
              form(pdf(), "x.pdf", { category: "documents" }),
            ),
            403,
            "/problems/forbidden",
          );
          await problemOf(
            await request("son", "GET", `/v1/patients/${other.id}`),
            403,
            "/problems/forbidden",
          );
          // and a proxy makes no proxies
          await problemOf(
            await request("son", "POST", proxiesUrl, { userId: ids.cousin, level: "read_only" }),
            403,
            "/problems/forbidden",
          );
        },
      );

      await tt.step("removal ends access at once; removing a non-proxy is 404", async () => {
        assert.equal((await request("daughter", "GET", `/v1/patients/${patient.id}`)).status, 200);
        const del = await request("self", "DELETE", `${proxiesUrl}/${ids.daughter}`);
        assert.equal(del.status, 204);
        // the same access token, the very next request
        await problemOf(
          await request("daughter", "GET", `/v1/patients/${patient.id}`),
          403,
          "/problems/forbidden",
        );
        await problemOf(
          await request("daughter", "GET", `/v1/media/${doc.id}/content`),
          403,
          "/problems/forbidden",
        );
        await problemOf(
          await request("self", "DELETE", `${proxiesUrl}/${ids.daughter}`),
          404,
          "/problems/not-found",
        );
        await problemOf(
          await request("admin", "DELETE", `${proxiesUrl}/${crypto.randomUUID()}`),
          404,
          "/problems/not-found",
        );
        const items = (await (await request("admin", "GET", proxiesUrl)).json()).items;
        assert.deepEqual(items.map((i: { userId: string }) => i.userId), [ids.son]);
        assert.deepEqual(
          (await (await request("daughter", "GET", "/v1/me/proxies")).json()).items,
          [],
        );
      });

      await tt.step("20 concurrent adds of one proxy: one 201, one ProxyAdded", async () => {
        const before = await count("ProxyAdded");
        const answers = await Promise.all(
          Array.from(
            { length: 20 },
            () => request("self", "POST", proxiesUrl, { userId: ids.cousin, level: "read_only" }),
          ),
        );
        const statuses = answers.map((r) => r.status).sort();
        await Promise.all(answers.map((r) => r.body?.cancel()));
        assert.deepEqual(statuses, [201, ...Array(19).fill(409)]);
        assert.equal(await count("ProxyAdded"), before + 1);
        const [n] = await t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from patient_proxies where user_id = ${ids.cousin}::uuid`,
        );
        assert.equal(n!.n, 1);
      });

      await tt.step("bad input: 422 naming every field; no event", async () => {
        const before = await count("ProxyAdded") + await count("ProxyRemoved");
        const fields = async (res: Response) =>
          (await problemOf(res, 422, "/problems/validation")).errors
            .map((e: { path: string }) => e.path).sort();
        assert.deepEqual(
          await fields(await request("admin", "POST", proxiesUrl, { userId: 7, level: "owner" })),
          ["level", "userId"],
        );
        assert.deepEqual(
          await fields(await request("admin", "POST", proxiesUrl, { userId: "not-a-uuid" })),
          ["level", "userId"],
        );
        const extra = await fields(
          await request("admin", "POST", proxiesUrl, {
            userId: ids.cousin,
            level: "full",
            note: "x",
          }),
        );
        assert.equal(extra.length, 1);
        // a NUL byte anywhere in the body is refused before it is parsed
        const nul = await t.app.request(proxiesUrl, {
          method: "POST",
          headers: { ...bearer(h.tokens.admin!), "content-type": "application/json" },
          body: `{"userId":"${ids.cousin}","level":"full\\u0000"}`,
        });
        assert.equal(nul.status, 422, await nul.clone().text());
        await nul.body?.cancel();
        await problemOf(
          await request("admin", "POST", proxiesUrl, [] as unknown as object),
          422,
          "/problems/validation",
        );
        await problemOf(
          await request("admin", "POST", "/v1/patients/nope/proxies", { userId: "x", level: 1 }),
          422,
          "/problems/validation",
        );
        assert.deepEqual(
          await fields(await request("admin", "DELETE", "/v1/patients/nope/proxies/nope")),
          ["id", "userId"],
        );
        assert.deepEqual(
          await fields(await request("admin", "GET", "/v1/patients/nope/proxies")),
          ["id"],
        );
        assert.equal(await count("ProxyAdded") + await count("ProxyRemoved"), before);
      });

      await tt.step("erasing a proxy's account ends all their proxy relations", async () => {
        const again = await request("admin", "POST", `/v1/patients/${other.id}/proxies`, {
          userId: ids.cousin,
          level: "full",
        });
        assert.equal(again.status, 201, await again.clone().text());
        await shredSubject(t.runtime.store, `user-${ids.cousin}`, "test erasure", {
          actorId: ids.admin,
        });
        const [n] = await t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from patient_proxies where user_id = ${ids.cousin}::uuid`,
        );
        assert.equal(n!.n, 0);
      });

      await tt.step("erasing the patient removes their proxies; the record is 410", async () => {
        const res = await request("admin", "POST", `/v1/patients/${patient.id}/erasure`, {
          reason: "right to erasure",
        });
        assert.equal(res.status, 200, await res.clone().text());
        const [n] = await t.runtime.db.query<{ n: number }>(
          sql`select count(*)::int as n from patient_proxies where patient_id = ${patient.id}::uuid`,
        );
        assert.equal(n!.n, 0);
        await problemOf(await request("admin", "GET", proxiesUrl), 410, "/problems/erased");
        await problemOf(
          await request("admin", "POST", proxiesUrl, { userId: ids.daughter, level: "full" }),
          410,
          "/problems/erased",
        );
        await problemOf(
          await request("son", "GET", `/v1/patients/${patient.id}`),
          410,
          "/problems/erased",
        );
      });
    } finally {
      await t.close();
    }
  });
}
