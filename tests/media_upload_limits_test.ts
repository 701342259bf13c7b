/**
 * Uploads that try to cost more than they are worth, or to slip past a check:
 * form fields refused before anything is stored, one rule for cancelled
 * encounters, the pixel limit before the scan, decode amplification, the
 * decode queue and DICOM deflate bombs. Real bytes through the real pipeline.
 */
import assert from "node:assert/strict";
import { Image } from "imagescript";
import { deflateRawSync } from "node:zlib";
import { buildDicom, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN } from "./support/dicom.ts";
import { form, problemOf, uploadClinic } from "./support/media.ts";

const text = (s: string) => new TextEncoder().encode(s);

/** Pseudo-random RGB noise: compresses like nothing real, and the same on every run. */
const noise = (w: number, h: number) => {
  const img = new Image(w, h);
  const px = new Uint32Array(img.bitmap.buffer, img.bitmap.byteOffset, w * h);
  let s = 7;
  for (let i = 0; i < px.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    px[i] = (s | 0xff000000) >>> 0;
  }
  return img;
};

Deno.test("upload limits: a loosely valid encounterId is a 422 naming it, with no event and no blob", async () => {
  const c = await uploadClinic();
  try {
    await c.encounter(); // the practitioner's relation to the patient
    // matches [0-9a-f-]{36} but is no UUID version the MediaUploaded schema accepts
    const res = await c.request(
      "practitioner",
      "POST",
      c.docUrl,
      form(text("lab values normal"), "lab.txt", {
        category: "lab_results",
        encounterId: "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa",
      }),
    );
    const body = await problemOf(res, 422, "/problems/validation");
    assert.deepEqual(body.errors.map((e: { path: string }) => e.path), ["encounterId"]);
    assert.deepEqual(await c.rejections(), []);
    assert.equal(await c.uploads(), 0);
    assert.equal(await c.blobCount(), 0);
  } finally {
    await c.t.close();
  }
});

Deno.test("upload limits: a document cannot be attached to a cancelled encounter, as a photo cannot", async () => {
  const c = await uploadClinic();
  try {
    const open = await c.encounter();
    const cancelled = await c.encounter();
    const patched = await c.request("admin", "PATCH", `/v1/encounters/${cancelled.id}`, {
      status: "cancelled",
    });
    assert.equal(patched.status, 200, await patched.clone().text());
    const doc = (encounterId: string) =>
      c.request(
        "practitioner",
        "POST",
        c.docUrl,
        form(text("referral letter"), "letter.txt", { category: "documents", encounterId }),
      );
    const refused = await problemOf(await doc(cancelled.id), 409, "/problems/conflict");
    assert.equal(refused.detail, "cannot upload media to a cancelled encounter");
    assert.deepEqual(await c.rejections(), ["encounter_cancelled"]);
    assert.equal(await c.blobCount(), 0);
    // the same document to an encounter that is not cancelled is stored
    const ok = await doc(open.id);
    assert.equal(ok.status, 201, await ok.clone().text());
    assert.equal((await ok.json()).encounterId, open.id);
    assert.equal(await c.uploads(), 1);
  } finally {
    await c.t.close();
  }
});

// ---------------------------------------------------------------------------
// the scanner: header checks before it, its failures recorded

/**
 * A stand-in clamd that counts the files it is sent: it reads one INSTREAM
 * upload (chunks up to the zero-length one) and answers `stream: OK`, or
 * stays silent when `silent`.
 */
const countingClamd = (silent = false) => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const state = { files: 0 };
  const conns: Deno.Conn[] = [];
  const readUpload = async (conn: Deno.Conn) => {
    let buf = new Uint8Array(0);
    const chunk = new Uint8Array(65536);
    let at = 10; // past "zINSTREAM\0"
    for (;;) {
      while (buf.length >= at + 4) {
        const n = new DataView(buf.buffer, buf.byteOffset + at, 4).getUint32(0);
        if (n === 0) return;
        at += 4 + n;
      }
      const n = await conn.read(chunk);
      if (n === null) throw new Error("closed mid-upload");
      buf = new Uint8Array([...buf, ...chunk.subarray(0, n)]);
    }
  };
  const serving = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (async () => {
        await readUpload(conn);
        state.files++;
        if (!silent) await conn.write(text("stream: OK\0"));
      })().catch(() => {});
    }
  })();
  return {
    url: `tcp://127.0.0.1:${listener.addr.port}`,
    state,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await serving.catch(() => {});
    },
  };
};

/** A PNG that is only its signature, an IHDR chunk and IEND: `width` × `height`, no pixels. */
const headerOnlyPng = (width: number, height: number) => {
  const b = new Uint8Array(8 + 25 + 12);
  b.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const v = new DataView(b.buffer);
  v.setUint32(8, 13);
  b.set(text("IHDR"), 12);
  v.setUint32(16, width);
  v.setUint32(20, height);
  b.set([8, 6, 0, 0, 0], 24); // 8-bit RGBA
  b.set(text("IEND"), 37);
  return b;
};

Deno.test("upload limits: a 20000×20000 PNG is refused from its header, and clamd never sees it", async () => {
  const clamd = countingClamd();
  const c = await uploadClinic({ CHARTLOG_CLAMD_URL: clamd.url });
  try {
    const enc = await c.encounter();
    const res = await c.request(
      "practitioner",
      "POST",
      c.photoUrl(enc.id),
      form(headerOnlyPng(20000, 20000), "big.png", { category: "before" }),
    );
    await problemOf(res, 422, "/problems/corrupt-media");
    assert.deepEqual(await c.rejections(), ["too_many_pixels"]);
    assert.equal(clamd.state.files, 0);
    // the same stand-in does get a real photo: the count above means something
    const ok = await c.request(
      "practitioner",
      "POST",
      c.photoUrl(enc.id),
      form(await noise(32, 32).encode(1), "small.png", { category: "before" }),
    );
    assert.equal(ok.status, 201, await ok.clone().text());
    assert.equal((await ok.json()).scanStatus, "clean");
    assert.equal(clamd.state.files, 1);
  } finally {
    await c.t.close();
    await clamd.close();
  }
});

Deno.test("upload limits: a scanner that times out is a recorded refusal (scan_failed), storing nothing", async () => {
  const clamd = countingClamd(true);
  const c = await uploadClinic({ CHARTLOG_CLAMD_URL: clamd.url, CHARTLOG_CLAMD_TIMEOUT_MS: "200" });
  try {
    await c.encounter();
    const res = await c.request(
      "practitioner",
      "POST",
      c.docUrl,
      form(text("discharge summary"), "summary.txt", { category: "documents" }),
    );
    await problemOf(res, 503, "/problems/unavailable");
    assert.deepEqual(await c.rejections(), ["scan_failed"]);
    assert.equal(await c.uploads(), 0);
    assert.equal(await c.blobCount(), 0);
  } finally {
    await c.t.close();
    await clamd.close();
  }
});

// ---------------------------------------------------------------------------
// decode amplification

/** A real JPEG whose frame header is rewritten to claim `width` × `height`. */
const claimingJpeg = async (width: number, height: number) => {
  const b = await noise(16, 16).encodeJPEG(80);
  for (let pos = 2; pos < b.length;) {
    const marker = b[pos + 1]!;
    if (marker === 0xc0 || marker === 0xc2) {
      new DataView(b.buffer, b.byteOffset).setUint16(pos + 5, height);
      new DataView(b.buffer, b.byteOffset).setUint16(pos + 7, width);
      return b;
    }
    pos += 2 + ((b[pos + 2]! << 8) | b[pos + 3]!);
  }
  throw new Error("no frame header");
};

Deno.test("upload limits: a tiny JPEG claiming 7000×7000 is suspicious_compression, never decoded", async () => {
  const clamd = countingClamd();
  const c = await uploadClinic({ CHARTLOG_CLAMD_URL: clamd.url });
  try {
    const enc = await c.encounter();
    const bomb = await claimingJpeg(7000, 7000); // under the 50 MP limit, ~40,000 px per byte
    assert.ok(bomb.length < 2000);
    const res = await c.request(
      "practitioner",
      "POST",
      c.photoUrl(enc.id),
      form(bomb, "bomb.jpg", { category: "before" }),
    );
    const body = await problemOf(res, 422, "/problems/corrupt-media");
    assert.match(body.detail, /more pixels than its data can hold/);
    assert.deepEqual(await c.rejections(), ["suspicious_compression"]);
    assert.equal(clamd.state.files, 0);
    assert.equal(await c.blobCount(), 0);
  } finally {
    await c.t.close();
    await clamd.close();
  }
});

Deno.test("upload limits: a re-encode over the media limit is redone at lower quality, or refused", async () => {
  // a q30 JPEG of noise is 8,205 bytes; decoded and re-encoded it is 19,720
  // bytes at q90, 13,224 at q75 and 8,796 at q45 (imagescript is deterministic)
  const input = await noise(128, 128).encodeJPEG(30);
  assert.equal(input.length, 8205);
  for (const [limit, status] of [[14_000, 201], [8_500, 413]] as const) {
    const c = await uploadClinic({ CHARTLOG_MEDIA_MAX_BYTES: String(limit) });
    try {
      const enc = await c.encounter();
      const res = await c.request(
        "practitioner",
        "POST",
        c.photoUrl(enc.id),
        form(input, "noisy.jpg", { category: "before" }),
      );
      if (status === 201) {
        assert.equal(res.status, 201, await res.clone().text());
        const m = await res.json();
        assert.ok(m.size <= limit && m.size > 8_796, `stored ${m.size} bytes`);
      } else {
        await problemOf(res, 413, "/problems/payload-too-large");
        assert.deepEqual(await c.rejections(), ["too_large"]);
        assert.equal(await c.blobCount(), 0);
      }
    } finally {
      await c.t.close();
    }
  }
});

Deno.test("upload limits: a full decode queue answers 503 with Retry-After, and records it", async () => {
  const c = await uploadClinic({ CHARTLOG_IMAGE_WORKERS: "1", CHARTLOG_IMAGE_QUEUE: "1" });
  try {
    const enc = await c.encounter();
    const jpeg = await noise(96, 96).encodeJPEG(80);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        c.request(
          "practitioner",
          "POST",
          c.photoUrl(enc.id),
          form(jpeg, "p.jpg", { category: "progress" }),
        )),
    );
    const statuses = answers.map((r) => r.status);
    const busy = answers.filter((r) => r.status === 503);
    assert.ok(busy.length >= 1, `statuses: ${statuses}`);
    assert.ok(statuses.every((s) => s === 201 || s === 503), `statuses: ${statuses}`);
    for (const r of busy) {
      assert.equal(r.headers.get("retry-after"), "5");
      await problemOf(r, 503, "/problems/unavailable");
    }
    for (const r of answers) if (r.status === 201) await r.body?.cancel();
    const stored = 20 - busy.length;
    assert.equal(await c.uploads(), stored);
    assert.deepEqual(await c.rejections(), busy.map(() => "busy"));
    // the same bytes each time: one content-addressed blob and one thumbnail
    assert.equal(await c.blobCount(), stored > 0 ? 2 : 0);
  } finally {
    await c.t.close();
  }
});

// ---------------------------------------------------------------------------
// DICOM deflate bomb

/**
 * A Part 10 file in the deflated transfer syntax whose dataset ends with a
 * (FFFC,FFFC) Data Set Trailing Padding of `padding` zero bytes: a few
 * dozen KB that inflate to `padding`.
 */
const deflateBomb = (padding: number) => {
  const plain = buildDicom({
    patientId: "LIM-1",
    modality: "OT",
    transferSyntax: DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
  });
  const metaEnd = 144 + new DataView(plain.buffer).getUint32(140, true);
  const dataset = plain.subarray(metaEnd);
  const inflated = new Uint8Array(dataset.length + 12 + padding);
  inflated.set(dataset);
  const head = new DataView(inflated.buffer, dataset.length, 12);
  head.setUint16(0, 0xfffc, true);
  head.setUint16(2, 0xfffc, true);
  inflated.set(text("OB"), dataset.length + 4);
  head.setUint32(8, padding, true);
  const deflated = deflateRawSync(inflated);
  const out = new Uint8Array(metaEnd + deflated.length);
  out.set(plain.subarray(0, metaEnd));
  out.set(deflated, metaEnd);
  return out;
};

Deno.test("upload limits: a DICOM deflate bomb is inflated off the event loop and refused (413)", async () => {
  // the default 10 MiB media limit allows 40 MiB inflated; this inflates to 48 MiB
  const c = await uploadClinic();
  try {
    await c.encounter();
    const bomb = deflateBomb(48 * 1024 * 1024);
    assert.ok(bomb.length < 100_000, `${bomb.length} bytes`);
    let settled = false;
    const upload = Promise.resolve(c.request(
      "practitioner",
      "POST",
      c.docUrl,
      form(bomb, "ct.dcm", { category: "medical_images" }),
    )).finally(() => (settled = true));
    // wait for the dataset to reach a decode worker, then ask the server something else
    for (let i = 0; i < 5000 && !settled && c.t.runtime.images.running === 0; i++) {
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(c.t.runtime.images.running, 1, "the DICOM job is in a worker");
    const health = await c.t.app.request("/health");
    assert.equal(health.status, 200);
    assert.equal(settled, false, "/health was answered while the bomb was being inflated");
    const res = await upload;
    const body = await problemOf(res, 413, "/problems/payload-too-large");
    assert.equal(body.detail, "the DICOM dataset inflates beyond the limit");
    assert.deepEqual(await c.rejections(), ["too_large"]);
    assert.equal(await c.uploads(), 0);
    assert.equal(await c.blobCount(), 0);
  } finally {
    await c.t.close();
  }
});
