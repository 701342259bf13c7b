import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Image } from "imagescript";
import { registerUser } from "../src/auth/accounts.ts";
import { collectGarbage } from "../src/media/gc.ts";
import { shredSubject } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { eicarBytes, startClamd } from "./support/clamd.ts";
import { buildDicom } from "./support/dicom.ts";
import { createTestDatabase, type DriverKind, drivers } from "./support/harness.ts";
import { bearer, createUser, login, PASSWORD } from "./support/users.ts";

const enc = new TextEncoder();
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const contains = (hay: Uint8Array, needle: string | number[]) => {
  const n = typeof needle === "string" ? enc.encode(needle) : Uint8Array.from(needle);
  outer: for (let i = 0; i + n.length <= hay.length; i++) {
    for (let j = 0; j < n.length; j++) if (hay[i + j] !== n[j]) continue outer;
    return true;
  }
  return false;
};

/** A real photo: a gradient with some noise, so it compresses like one. */
const photo = (w: number, h: number) => {
  const img = new Image(w, h);
  for (let y = 1; y <= h; y++) {
    for (let x = 1; x <= w; x++) {
      const n = (x * 7 + y * 13) % 31;
      img.setPixelAt(x, y, Image.rgbaToColor((x * 255 / w) | 0, (y * 255 / h) | 0, 90 + n, 255));
    }
  }
  return img;
};

/** Puts an EXIF (APP1) segment holding GPS tags' names and a position right after SOI. */
const withExif = (jpeg: Uint8Array) => {
  const tiff = enc.encode("MM\0*\0\0\0\x08GPSLatitude 52.5200N GPSLongitude 13.4050E");
  const payload = new Uint8Array([...enc.encode("Exif\0\0"), ...tiff]);
  const seg = new Uint8Array([0xff, 0xe1, (payload.length + 2) >> 8, (payload.length + 2) & 255]);
  return new Uint8Array([...jpeg.subarray(0, 2), ...seg, ...payload, ...jpeg.subarray(2)]);
};

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

const form = (file: Uint8Array | null, name: string, fields: Record<string, string>) => {
  const f = new FormData();
  for (const [k, v] of Object.entries(fields)) f.set(k, v);
  if (file) f.set("file", new Blob([file as Uint8Array<ArrayBuffer>]), name);
  return f;
};

/** Sends a multipart body as a stream, the way a socket delivers it. */
const streamUpload = (
  app: { request: (r: Request) => Response | Promise<Response> },
  path: string,
  token: string,
  { boundary, body }: { boundary: string; body: ReadableStream<Uint8Array> },
) =>
  app.request(
    new Request(`http://localhost${path}`, {
      method: "POST",
      headers: { ...bearer(token), "content-type": `multipart/form-data; boundary=${boundary}` },
      body,
      duplex: "half",
    } as RequestInit),
  );

/**
 * A clinic: users of each role, a patient with an encounter, and a caller;
 * on PGlite in memory, or on a fresh PostgreSQL database dropped at close.
 */
const clinic = async (env: Record<string, string> = {}, driver: DriverKind = "pglite") => {
  const pg = driver === "postgres" ? await createTestDatabase({ app: true }) : null;
  const opened = await openTestApp({
    CHARTLOG_LOGIN_RATE_PER_MIN: "10000",
    ...(pg ? { DATABASE_URL: pg.url } : {}),
    ...env,
  });
  const t = {
    ...opened,
    close: async () => {
      await opened.close();
      await pg?.drop();
    },
  };
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  for (const role of ["admin", "clinical_ops", "practitioner", "reception"] as const) {
    const u = await createUser(t.runtime, role);
    ids[role] = u.id;
    tokens[role] = (await login(t.app, u.email)).body.accessToken;
  }
  const other = await createUser(t.runtime, "practitioner", "other.doc@clinic.test");
  tokens.other = (await login(t.app, other.email)).body.accessToken;
  const request = (who: string, method: string, path: string, body?: BodyInit | object) => {
    const raw = body instanceof FormData || body instanceof ReadableStream;
    return t.app.request(path, {
      method,
      headers: {
        ...bearer(tokens[who]!),
        "user-agent": `tests/${who}`,
        ...(body && !raw ? { "content-type": "application/json" } : {}),
      },
      ...(body ? { body: raw ? body as BodyInit : JSON.stringify(body) } : {}),
    }, { remoteAddr: { hostname: "10.0.0.9", port: 1, transport: "tcp" } });
  };
  const patient = await (await request("admin", "POST", "/v1/patients", {
    mrn: "MED-77",
    firstName: "Mira",
    lastName: "Mediafile",
    dateOfBirth: "1966-06-06",
    gender: "F",
  })).json();
  const enc = await (await request("admin", "POST", `/v1/patients/${patient.id}/encounters`, {
    practitionerId: ids.practitioner,
    startsAt: "2026-12-01T09:00:00Z",
    reason: "wound check",
  })).json();
  const patientUser = await registerUser(
    t.runtime.store,
    {
      email: "mira@home.test",
      name: "Mira",
      role: "patient",
      password: PASSWORD,
      patientId: patient.id,
    },
    { actorId: "test-setup" },
    t.runtime.passwordParams,
  );
  tokens.patient = (await login(t.app, patientUser.email)).body.accessToken;
  const count = async (type: string) =>
    Number(
      (await t.runtime.db.query<{ n: string }>(
        sql`select count(*)::text as n from events where type = ${type}`,
      ))[0]!.n,
    );
  const rejections = async () =>
    (await t.runtime.db.query<{ reason: string }>(
      sql`select data->>'reason' as reason from events where type = 'UploadRejected'
        order by global_position`,
    )).map((r) => r.reason);
  const blobFiles = async () => {
    const out: Uint8Array[] = [];
    for await (const f of t.runtime.blobs.list()) out.push(await Deno.readFile(f.path));
    return out;
  };
  return { t, request, patient, enc, ids, count, rejections, blobFiles };
};

for (const driver of await drivers()) {
  Deno.test(`media [${driver}]: a photo goes through the real pipeline; metadata stripped, thumbnail made, blob encrypted`, async () => {
    const { t, request, patient, enc: encounter, count, blobFiles } = await clinic({}, driver);
    try {
      const jpeg = withExif(await photo(640, 480).encodeJPEG(92));
      assert.ok(contains(jpeg, "GPSLatitude") && contains(jpeg, "Exif"), "the upload carries EXIF");
      const res = await request(
        "practitioner",
        "POST",
        `/v1/encounters/${encounter.id}/media`,
        form(jpeg, "../../wound\u202Egpj.exe.jpg", {
          category: "before",
          notes: "left heel ulcer",
        }),
      );
      assert.equal(res.status, 201, await res.clone().text());
      const m = await res.json();
      assert.equal(res.headers.get("location"), `/v1/media/${m.id}`);
      assert.match(res.headers.get("server-timing") ?? "", /decode;dur=.*append;dur=/);
      assert.equal(m.kind, "photo");
      assert.equal(m.category, "before");
      assert.equal(m.contentType, "image/jpeg");
      assert.equal(m.width, 640);
      assert.equal(m.height, 480);
      assert.equal(m.hasThumbnail, true);
      assert.equal(m.scanStatus, "not_scanned"); // no scanner configured: never a false "clean"
      assert.equal(m.notes, "left heel ulcer");
      assert.equal(m.filename.includes("/") || m.filename.includes("\u202E"), false);
      assert.equal(m.uploader.name, "Test practitioner");
      assert.equal(m.encounterId, encounter.id);

      // the download: metadata gone, hash matches, the headers a browser needs
      const dl = await request("practitioner", "GET", `/v1/media/${m.id}/content`);
      assert.equal(dl.status, 200);
      const bytes = new Uint8Array(await dl.arrayBuffer());
      assert.deepEqual([...bytes.subarray(0, 3)], [0xff, 0xd8, 0xff]);
      assert.equal(contains(bytes, "GPSLatitude"), false);
      assert.equal(contains(bytes, "Exif"), false);
      assert.equal(sha(bytes), m.sha256);
      assert.equal(dl.headers.get("etag"), `"${m.sha256}"`);
      assert.equal(dl.headers.get("content-type"), "image/jpeg");
      assert.equal(dl.headers.get("cache-control"), "no-store");
      assert.equal(dl.headers.get("x-content-type-options"), "nosniff");
      assert.match(dl.headers.get("content-disposition")!, /^inline; filename="[^"/\\]+"/);
      const decoded = await Image.decode(bytes);
      assert.equal(decoded.width, 640);

      const th = await request("practitioner", "GET", `/v1/media/${m.id}/thumbnail`);
      assert.equal(th.status, 200);
      const thumb = await Image.decode(new Uint8Array(await th.arrayBuffer()));
      assert.equal(Math.max(thumb.width, thumb.height), 256);
      assert.equal(thumb.width, 256);
      assert.equal(thumb.height, 192);

      // on disk: sealed, no JPEG, no EXIF; the store opens it to the same bytes
      const files = await blobFiles();
      assert.equal(files.length, 2); // the image and its thumbnail
      for (const f of files) {
        assert.deepEqual([...f.subarray(0, 4)], [...enc.encode("CLB1")]);
        assert.equal(contains(f.subarray(0, 16), [0xff, 0xd8, 0xff]), false);
        for (const s of ["Exif", "GPSLatitude", "JFIF"]) assert.equal(contains(f, s), false, s);
      }
      const row = (await t.runtime.db.query<{ blob: string }>(sql`select blob from media`))[0]!;
      assert.deepEqual(await t.runtime.blobs.get(patient.id, row.blob), bytes);

      // PNG and WebP are photos too
      for (
        const [name, data] of [
          ["a.png", await photo(300, 200).encode()],
          ["b.webp", await photo(300, 200).encodeWEBP(80)],
        ] as const
      ) {
        const r = await request(
          "practitioner",
          "POST",
          `/v1/encounters/${encounter.id}/media`,
          form(data, name, { category: "progress" }),
        );
        assert.equal(r.status, 201, `${name}: ${await r.clone().text()}`);
        const body = await r.json();
        assert.equal(body.contentType, name.endsWith("png") ? "image/png" : "image/webp");
        assert.equal(body.width, 300);
      }
      assert.equal(await count("MediaUploaded"), 3);

      // no PHI in the log lines or in the events' plaintext
      const logs = t.logs.text();
      for (const s of ["left heel ulcer", "wound", "GPSLatitude", "Mira"]) {
        assert.equal(logs.includes(s), false, `log mentions ${s}`);
      }
      const data = (await t.runtime.db.query<{ d: string }>(
        sql`select data::text as d from events where type = 'MediaUploaded'`,
      )).map((r) => r.d).join("");
      assert.equal(data.includes("left heel ulcer") || data.includes("wound"), false);

      // crypto-shredding the patient shreds their files too: the blobs stay on disk, unreadable
      await shredSubject(t.runtime.store, `patient-${patient.id}`, "erasure request", {
        actorId: "test",
      });
      assert.equal(await t.runtime.blobs.get(patient.id, row.blob), null);
      // and the erased patient's media are gone to everyone (tests/erasure_test.ts)
      for (const path of [`/v1/media/${m.id}/content`, `/v1/media/${m.id}`]) {
        const gone = await request("practitioner", "GET", path);
        assert.equal(gone.status, 410);
        assert.equal((await gone.json()).type, "/problems/erased");
      }
      const [left] = await t.runtime.db.query<{ sha256: string }>(
        sql`select sha256 from media where id = ${m.id}::uuid`,
      );
      assert.equal(left?.sha256, m.sha256); // the facts stay
    } finally {
      await t.close();
    }
  });
}

Deno.test("media: each refusal has its status, problem type and event, and stores nothing", async () => {
  const { t, request, patient, enc: encounter, ids, count, rejections, blobFiles } = await clinic({
    CHARTLOG_MEDIA_MAX_PIXELS: "1000000",
  });
  try {
    const photoUrl = `/v1/encounters/${encounter.id}/media`;
    const docUrl = `/v1/patients/${patient.id}/documents`;
    const jpeg = await photo(200, 100).encodeJPEG(85);
    const expect = async (res: Response, status: number, type: string) => {
      const body = await res.json();
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal(body.type, type);
      assert.equal(res.headers.get("content-type"), "application/problem+json");
      return body;
    };
    // reception may not upload; neither may a practitioner without a relation, nor a patient
    // a photo (they may add documents to their own record: tests/proxies_test.ts)
    await expect(
      await request("reception", "POST", photoUrl, form(jpeg, "a.jpg", { category: "before" })),
      403,
      "/problems/forbidden",
    );
    await expect(
      await request("other", "POST", photoUrl, form(jpeg, "a.jpg", { category: "before" })),
      403,
      "/problems/forbidden",
    );
    await expect(
      await request("patient", "POST", photoUrl, form(jpeg, "a.jpg", { category: "before" })),
      403,
      "/problems/forbidden",
    );
    // a PDF is no photo; a PDF named .jpg is a mismatch; a JPEG with a PDF behind it a polyglot
    await expect(
      await request(
        "practitioner",
        "POST",
        photoUrl,
        form(pdf(), "scan.pdf", { category: "before" }),
      ),
      415,
      "/problems/unsupported-media-type",
    );
    await expect(
      await request(
        "practitioner",
        "POST",
        docUrl,
        form(pdf(), "photo.jpg", { category: "documents" }),
      ),
      415,
      "/problems/unsupported-media-type",
    );
    const polyglot = new Uint8Array([...jpeg, ...pdf()]);
    await expect(
      await request(
        "practitioner",
        "POST",
        photoUrl,
        form(polyglot, "a.jpg", { category: "before" }),
      ),
      415,
      "/problems/unsupported-media-type",
    );
    // a truncated JPEG, and one over the pixel limit (judged from its header)
    await expect(
      await request(
        "practitioner",
        "POST",
        photoUrl,
        form(jpeg.subarray(0, jpeg.length >> 1), "half.jpg", { category: "before" }),
      ),
      422,
      "/problems/corrupt-media",
    );
    const huge = await photo(1200, 1000).encodeJPEG(50);
    await expect(
      await request(
        "practitioner",
        "POST",
        photoUrl,
        form(huge, "huge.jpg", { category: "after" }),
      ),
      422,
      "/problems/corrupt-media",
    );
    // bad fields are a 422 naming them, with no rejection event (the file was never judged)
    const bad = await expect(
      await request("practitioner", "POST", photoUrl, form(jpeg, "a.jpg", { category: "selfie" })),
      422,
      "/problems/validation",
    );
    assert.equal(bad.errors[0].path, "category");
    await expect(
      await request("practitioner", "POST", photoUrl, form(null, "", { category: "before" })),
      422,
      "/problems/validation",
    );
    // a cancelled encounter takes no media (and relates nobody: the care team keeps the relation)
    await request("admin", "POST", `/v1/patients/${patient.id}/care-team`, {
      practitionerId: ids.practitioner,
    });
    await request("admin", "PATCH", `/v1/encounters/${encounter.id}`, { status: "cancelled" });
    const cancelled = await expect(
      await request("practitioner", "POST", photoUrl, form(jpeg, "a.jpg", { category: "before" })),
      409,
      "/problems/conflict",
    );
    assert.equal(cancelled.detail, "cannot upload media to a cancelled encounter");

    assert.deepEqual(await rejections(), [
      "forbidden",
      "forbidden",
      "forbidden",
      "type_not_allowed",
      "type_mismatch",
      "type_mismatch",
      "corrupt",
      "too_many_pixels",
      "encounter_cancelled",
    ]);
    assert.equal(await count("MediaUploaded"), 0);
    assert.deepEqual(await blobFiles(), []);
    // refusals carry who, from where, and never content
    const [ev] = await t.runtime.db.query<
      { data: Record<string, unknown>; m: Record<string, unknown> }
    >(
      sql`select data, metadata as m from events where type = 'UploadRejected'
        and data->>'reason' = 'type_mismatch' limit 1`,
    );
    assert.deepEqual(Object.keys(ev!.data).sort(), [
      "bytesRead",
      "category",
      "detectedType",
      "encounterId",
      "kind",
      "patientId",
      "reason",
    ]);
    assert.equal(ev!.data.detectedType, "application/pdf");
    assert.equal(ev!.m.ip, "10.0.0.9");
    assert.equal(ev!.m.actorRole, "practitioner");
    assert.equal(ev!.m.userAgent, "tests/practitioner");
  } finally {
    await t.close();
  }
});

Deno.test("media: an 11 MB body is refused with 413 while it streams, not after", async () => {
  const { t, patient, rejections } = await clinic();
  try {
    const token = (await login(t.app, "admin@clinic.test")).body.accessToken;
    const boundary = "----chartlog-test-boundary";
    const head = enc.encode(
      `--${boundary}\r\nContent-Disposition: form-data; name="category"\r\n\r\nother\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n` +
        `Content-Type: application/pdf\r\n\r\n%PDF-1.4\n`,
    );
    const total = 11 * 1024 * 1024;
    let pulled = 0;
    let cancelled = false;
    const chunk = new Uint8Array(64 * 1024).fill(0x41);
    const body = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (pulled === 0) {
          ctl.enqueue(head);
          pulled += head.length;
        } else if (pulled < total) {
          ctl.enqueue(chunk);
          pulled += chunk.length;
        } else ctl.close();
      },
      cancel() {
        cancelled = true;
      },
    });
    const res = await streamUpload(t.app, `/v1/patients/${patient.id}/documents`, token, {
      boundary,
      body,
    });
    assert.equal(res.status, 413);
    assert.equal((await res.json()).type, "/problems/payload-too-large");
    assert.ok(cancelled, "the body stream was cancelled");
    assert.ok(pulled < 10 * 1024 * 1024 + 1024 * 1024, `read ${pulled} bytes`);
    assert.deepEqual(await rejections(), ["too_large"]);
  } finally {
    await t.close();
  }
});

Deno.test("media: a client that stops sending gets 408 when the upload deadline passes", async () => {
  const { t, patient, count } = await clinic({ CHARTLOG_UPLOAD_TIMEOUT_S: "1" });
  try {
    const token = (await login(t.app, "admin@clinic.test")).body.accessToken;
    const boundary = "----stalled";
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      start(ctl) {
        ctl.enqueue(enc.encode(
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF-1.4\n`,
        ));
        // and then nothing more, ever
      },
      cancel() {
        cancelled = true;
      },
    });
    const res = await streamUpload(t.app, `/v1/patients/${patient.id}/documents`, token, {
      boundary,
      body,
    });
    assert.equal(res.status, 408);
    assert.equal((await res.json()).type, "/problems/request-timeout");
    assert.ok(cancelled, "the stalled body was cancelled");
    assert.equal(await count("MediaUploaded"), 0);
  } finally {
    await t.close();
  }
});

for (const driver of await drivers()) {
  Deno.test(`media [${driver}]: documents — PDF, text and DICOM (summary sealed, mismatch flagged), lists, filters, paging`, async () => {
    const { t, request, patient, enc: encounter, count } = await clinic({}, driver);
    try {
      const docUrl = `/v1/patients/${patient.id}/documents`;
      const upload = async (file: Uint8Array, name: string, fields: Record<string, string>) => {
        const r = await request("clinical_ops", "POST", docUrl, form(file, name, fields));
        assert.equal(r.status, 201, await r.clone().text());
        return await r.json();
      };
      const report = await upload(pdf(), "lab report.pdf", {
        category: "lab_results",
        description: "HbA1c 6.1%",
        encounterId: encounter.id,
      });
      assert.equal(report.contentType, "application/pdf");
      assert.equal(report.sha256, sha(pdf())); // not images: the bytes are kept as sent
      assert.equal(report.encounterId, encounter.id);
      assert.equal(report.hasThumbnail, false);
      const note = await upload(enc.encode("Allergies: penicillin\n"), "note.txt", {
        category: "patient_records",
      });
      assert.equal(note.contentType, "text/plain");
      const tags = {
        patientName: "MEDIAFILE^MIRA",
        patientId: "MED-77",
        patientBirthDate: "19660606",
        patientSex: "F",
        studyDate: "20261120",
        studyDescription: "CHEST PA",
        accessionNumber: "ACC-1",
        modality: "CR",
        bodyPart: "CHEST",
        seriesDescription: "PA",
        studyInstanceUid: "1.2.3.4",
        seriesInstanceUid: "1.2.3.4.5",
        sopInstanceUid: "1.2.3.4.5.6",
      };
      const ct = await upload(buildDicom(tags, { pixels: { rows: 4, cols: 4 } }), "chest.dcm", {
        category: "medical_images",
      });
      assert.equal(ct.contentType, "application/dicom");
      assert.equal(ct.dicomPatientMismatch, false);
      assert.equal(ct.dicom.patientName, "MEDIAFILE^MIRA");
      assert.equal(ct.dicom.modality, "CR");
      assert.equal(ct.dicom.studyDate, "2026-11-20");
      const stranger = await upload(
        buildDicom({ ...tags, patientId: "SOMEONE-ELSE", sopInstanceUid: "1.2.3.9" }, {
          deflate: true,
        }),
        "other.dcm",
        { category: "medical_images" },
      );
      assert.equal(stranger.dicomPatientMismatch, true);
      // the DICOM header is sealed in the log
      const logged = (await t.runtime.db.query<{ d: string }>(
        sql`select data::text as d from events where type = 'MediaUploaded'`,
      )).map((r) => r.d).join("");
      for (const s of ["MEDIAFILE", "HbA1c", "penicillin", "CHEST PA"]) {
        assert.equal(logged.includes(s), false, s);
      }

      // lists: newest first, modality and study date only, filters, keyset pages
      const list = async (who: string, query = "") => {
        const r = await request(who, "GET", `/v1/patients/${patient.id}/media${query}`);
        assert.equal(r.status, 200);
        return await r.json();
      };
      const all = await list("practitioner");
      assert.deepEqual(all.items.map((m: { id: string }) => m.id), [
        stranger.id,
        ct.id,
        note.id,
        report.id,
      ]);
      assert.deepEqual(all.items[1].dicom, { modality: "CR", studyDate: "2026-11-20" });
      assert.equal(all.items[1].filename, undefined);
      assert.equal((await list("practitioner", "?category=medical_images")).items.length, 2);
      assert.equal((await list("practitioner", "?kind=photo")).items.length, 0);
      const p1 = await list("practitioner", "?limit=3");
      assert.equal(p1.items.length, 3);
      const p2 = await list("practitioner", `?limit=3&cursor=${encodeURIComponent(p1.nextCursor)}`);
      assert.deepEqual(p2.items.map((m: { id: string }) => m.id), [report.id]);
      assert.equal(p2.nextCursor, null);
      const byEncounter = await request(
        "practitioner",
        "GET",
        `/v1/encounters/${encounter.id}/media`,
      );
      assert.deepEqual((await byEncounter.json()).items.map((m: { id: string }) => m.id), [
        report.id,
      ]);
      // the patient reads their own, the other practitioner and reception do not
      assert.equal((await list("patient")).items.length, 4);
      const mine = await request("patient", "GET", `/v1/media/${note.id}/content`);
      assert.equal(await mine.text(), "Allergies: penicillin\n");
      assert.match(mine.headers.get("content-disposition")!, /^attachment; filename="note.txt"/);
      assert.equal(
        (await request("other", "GET", `/v1/patients/${patient.id}/media`)).status,
        403,
      );
      assert.equal((await request("reception", "GET", `/v1/media/${note.id}`)).status, 403);
      assert.equal(
        (await request("patient", "DELETE", `/v1/media/${note.id}`, { reason: "x" })).status,
        403,
      );

      // soft delete: a reason is required; hidden from lists; the blob stays; admins restore
      assert.equal((await request("practitioner", "DELETE", `/v1/media/${note.id}`)).status, 422);
      assert.equal(
        (await request("practitioner", "DELETE", `/v1/media/${note.id}`, {
          reason: "wrong patient",
        }))
          .status,
        204,
      );
      assert.equal((await list("practitioner")).items.length, 3);
      assert.equal((await request("practitioner", "GET", `/v1/media/${note.id}`)).status, 404);
      assert.equal(
        (await request("practitioner", "GET", `/v1/media/${note.id}/content`)).status,
        404,
      );
      const seen = await request("admin", "GET", `/v1/media/${note.id}`);
      assert.equal((await seen.json()).deleted, true);
      assert.equal((await list("admin", "?include_deleted=true")).items.length, 4);
      assert.equal(
        (await request(
          "clinical_ops",
          "GET",
          `/v1/patients/${patient.id}/media?include_deleted=true`,
        ))
          .status,
        403,
      );
      const stats = await (await request("clinical_ops", "GET", "/v1/media/stats")).json();
      assert.equal(stats.total.count, 3);
      assert.equal(stats.total.deletedCount, 1);
      assert.equal(stats.total.deletedBytes, note.size);
      assert.equal((await request("practitioner", "GET", "/v1/media/stats")).status, 403);
      const stored = await t.runtime.db.query<{ blob: string }>(
        sql`select blob from media where id = ${note.id}::uuid`,
      );
      assert.ok(await t.runtime.blobs.get(patient.id, stored[0]!.blob), "the blob stays");
      assert.equal(
        (await request("clinical_ops", "POST", `/v1/media/${note.id}/restore`)).status,
        403,
      );
      const viewsBefore = await count("MediaViewed");
      const restored = await request("admin", "POST", `/v1/media/${note.id}/restore`);
      assert.equal(restored.status, 200);
      const back = await restored.json();
      assert.equal(back.deleted, false);
      assert.equal(back.filename, "note.txt"); // sealed fields in the answer: audited as a read
      assert.equal(await count("MediaViewed"), viewsBefore + 1);
      assert.equal((await list("practitioner")).items.length, 4);

      const cats = await (await request("reception", "GET", "/v1/media/categories")).json();
      assert.deepEqual(cats.photo.before, ["image/jpeg", "image/png", "image/webp"]);

      // every read was audited, with actor, role, address and agent
      assert.ok((await count("MediaListed")) >= 8);
      const [viewed] = await t.runtime.db.query<{ stream_id: string; m: Record<string, unknown> }>(
        sql`select stream_id, metadata as m from events where type = 'MediaDownloaded'`,
      );
      assert.equal(viewed!.m.actorRole, "patient");
      assert.equal(viewed!.m.ip, "10.0.0.9");
      assert.equal(viewed!.m.userAgent, "tests/patient");
      assert.match(viewed!.stream_id, /^access-/);
      assert.equal(await count("MediaViewed"), 2); // the admin's look at the deleted item, the restore
      assert.equal(await count("MediaDeleted"), 1);
      assert.equal(await count("MediaRestored"), 1);
    } finally {
      await t.close();
    }
  });
}

Deno.test("media: a configured scanner that cannot be reached fails the upload closed (503), storing nothing", async () => {
  const { t, request, patient, count, rejections, blobFiles } = await clinic({
    CHARTLOG_CLAMD_URL: "tcp://127.0.0.1:1", // nothing listens there
  });
  try {
    const res = await request(
      "admin",
      "POST",
      `/v1/patients/${patient.id}/documents`,
      form(pdf(), "fine.pdf", { category: "other" }),
    );
    assert.equal(res.status, 503);
    assert.equal((await res.json()).type, "/problems/unavailable");
    assert.equal(await count("MediaUploaded"), 0);
    assert.deepEqual(await rejections(), ["scan_failed"]); // refused unscanned, and recorded
    assert.deepEqual(await blobFiles(), []);
  } finally {
    await t.close();
  }
});

Deno.test("media: EICAR is refused by a real clamd; clean files are marked clean", async () => {
  const clamd = await startClamd();
  if (!clamd) return; // clamd not installed here (CI fails instead of skipping)
  const { t, request, patient, count, rejections, blobFiles } = await clinic({
    CHARTLOG_CLAMD_URL: clamd.url,
  });
  try {
    const url = `/v1/patients/${patient.id}/documents`;
    const bad = await request(
      "admin",
      "POST",
      url,
      form(eicarBytes(), "eicar.txt", { category: "other" }),
    );
    assert.equal(bad.status, 422);
    assert.equal((await bad.json()).type, "/problems/malware-detected");
    assert.deepEqual(await rejections(), ["malware"]);
    assert.equal(await count("MediaUploaded"), 0);
    assert.deepEqual(await blobFiles(), []);
    const ok = await request("admin", "POST", url, form(pdf(), "fine.pdf", { category: "other" }));
    assert.equal(ok.status, 201);
    assert.equal((await ok.json()).scanStatus, "clean");
  } finally {
    await t.close();
    await clamd.stop();
  }
});

for (const driver of await drivers()) {
  Deno.test(`media [${driver}]: an upload whose event fails leaves no event; gc collects the orphan blob only`, async () => {
    const { t, request, enc: encounter, count } = await clinic({}, driver);
    try {
      const url = `/v1/encounters/${encounter.id}/media`;
      const kept = await request(
        "admin",
        "POST",
        url,
        form(await photo(64, 64).encodeJPEG(80), "a.jpg", { category: "other" }),
      );
      assert.equal(kept.status, 201);
      await request("admin", "DELETE", `/v1/media/${(await kept.json()).id}`, { reason: "dupe" });
      // the database now refuses the MediaUploaded insert: the upload fails after its blobs are written
      await t.runtime.db.exec(`create function no_media() returns trigger language plpgsql as $$
      begin if new.type = 'MediaUploaded' then raise exception 'refused'; end if; return new; end $$;
      create trigger no_media before insert on events for each row execute function no_media();`);
      const failed = await request(
        "admin",
        "POST",
        url,
        form(await photo(80, 80).encodeJPEG(80), "b.jpg", { category: "other" }),
      );
      assert.equal(failed.status, 500);
      assert.equal(await count("MediaUploaded"), 1);
      const before = await Array.fromAsync(t.runtime.blobs.list());
      assert.equal(before.length, 4); // two live (image, thumbnail), two orphaned
      // young orphans are left alone: their upload may still be under way
      assert.equal((await collectGarbage(t.runtime.db, t.runtime.blobs)).removed, 0);
      const r = await collectGarbage(t.runtime.db, t.runtime.blobs, { graceMs: 0 });
      assert.equal(r.removed, 2);
      assert.equal(r.referenced, 2); // the deleted photo's blobs stay
      assert.equal((await Array.fromAsync(t.runtime.blobs.list())).length, 2);
    } finally {
      await t.close();
    }
  });
}

Deno.test("media: a blob an upload reuses is young again, so gc cannot take it before the event", async () => {
  const t = await openTestApp();
  try {
    const patientId = crypto.randomUUID();
    const bytes = enc.encode("the same report, uploaded twice");
    const first = await t.runtime.blobs.put(patientId, sha(bytes), bytes);
    const old = new Date(Date.now() - 3 * 60 * 60_000);
    await Deno.utime(t.runtime.blobs.path(first.address), old, old);
    // an orphan three hours old: gc would take it ...
    const dry = await collectGarbage(t.runtime.db, t.runtime.blobs, { dryRun: true });
    assert.equal(dry.orphans.length, 1);
    // ... until an upload of the same bytes for the same patient reuses it
    const again = await t.runtime.blobs.put(patientId, sha(bytes), bytes);
    assert.equal(again.address, first.address);
    assert.equal(again.encryptMs, 0); // stored once
    assert.equal((await collectGarbage(t.runtime.db, t.runtime.blobs)).removed, 0);
    assert.deepEqual(await t.runtime.blobs.get(patientId, first.address), bytes);
  } finally {
    await t.close();
  }
});

Deno.test("media: a soft-deleted patient's sub-resources are 404 for everyone but admins", async () => {
  const { t, request, patient, enc, ids } = await clinic();
  try {
    const up = await request(
      "practitioner",
      "POST",
      `/v1/encounters/${enc.id}/media`,
      form(await photo(64, 48).encodeJPEG(90), "wound.jpg", { category: "before" }),
    );
    assert.equal(up.status, 201, await up.clone().text());
    const m = await up.json();
    const p = `/v1/patients/${patient.id}`;
    const routes: [string, string, unknown?][] = [
      ["GET", `${p}/history`],
      ["GET", `${p}/care-team`],
      ["POST", `${p}/care-team`, { practitionerId: ids.practitioner }],
      ["DELETE", `${p}/care-team/${ids.practitioner}`],
      ["GET", `${p}/encounters`],
      ["GET", `/v1/encounters/${enc.id}`],
      ["PATCH", `/v1/encounters/${enc.id}`, { status: "planned" }],
      ["GET", `${p}/media`],
      ["GET", `/v1/encounters/${enc.id}/media`],
      ["GET", `/v1/media/${m.id}`],
      ["GET", `/v1/media/${m.id}/content`],
      ["GET", `/v1/media/${m.id}/thumbnail`],
    ];
    const status = async (who: string, [method, path, body]: [string, string, unknown?]) => {
      const res = await request(who, method, path, body as object | undefined);
      await res.body?.cancel();
      return res.status;
    };
    // before: each route works for a non-admin that may use it
    for (const r of routes) assert.ok((await status("clinical_ops", r)) < 300, r.join(" "));
    assert.equal(await status("practitioner", routes[5]!), 200);
    assert.equal(await status("patient", routes[9]!), 200);

    assert.equal((await request("clinical_ops", "DELETE", `${p}?reason=duplicate`)).status, 204);
    assert.equal((await request("clinical_ops", "GET", p)).status, 404);
    const reads = await t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where stream_id like 'access-%'`,
    );
    // after: 404 to everyone who could use the route, but admins
    for (const who of ["clinical_ops", "practitioner", "patient"]) {
      for (const r of routes) {
        const s = await status(who, r);
        // roles the matrix never lets in keep their 403; nobody else learns anything
        assert.ok(s === 404 || s === 403, `${who} ${r.join(" ")}: ${s}`);
        if (who === "clinical_ops") assert.equal(s, 404, r.join(" "));
      }
    }
    for (const i of [4, 5, 6, 7, 8, 9, 10, 11]) {
      assert.equal(await status("practitioner", routes[i]!), 404, routes[i]!.join(" "));
    }
    for (const i of [4, 5, 7, 8, 9, 10, 11]) {
      assert.equal(await status("patient", routes[i]!), 404, routes[i]!.join(" "));
    }
    assert.equal(await status("practitioner", ["DELETE", `/v1/media/${m.id}?reason=x`]), 404);
    // no PHI read happened through any of those
    const after = await t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where stream_id like 'access-%'`,
    );
    assert.equal(after[0]!.n, reads[0]!.n);
    // admins still see everything (as they see the patient)
    for (const r of routes) assert.ok((await status("admin", r)) < 300, `admin ${r.join(" ")}`);
  } finally {
    await t.close();
  }
});
