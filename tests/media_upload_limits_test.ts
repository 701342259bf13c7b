/**
 * Uploads that try to cost more than they are worth, or to slip past a check:
 * form fields refused before anything is stored, one rule for cancelled
 * encounters, the pixel limit before the scan, decode amplification, the
 * decode queue and DICOM deflate bombs. Real bytes through the real pipeline.
 */
import assert from "node:assert/strict";
import { form, problemOf, uploadClinic } from "./support/media.ts";

const text = (s: string) => new TextEncoder().encode(s);

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
