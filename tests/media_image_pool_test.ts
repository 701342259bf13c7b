import assert from "node:assert/strict";
import { Image } from "imagescript";
import { UploadRejectedError } from "../src/errors.ts";
import { BUSY_RETRY_AFTER_SEC, ImagePool } from "../src/media/image_pool.ts";
import { buildDicom } from "./support/dicom.ts";

const jpeg = async (w: number, h: number) => {
  const img = new Image(w, h);
  img.fill((x, y) => Image.rgbaToColor(x % 256, y % 256, 128, 255));
  return await img.encodeJPEG(85);
};

Deno.test("image pool: jobs queue behind one worker and each gets its own image back", async () => {
  const pool = new ImagePool(1);
  try {
    const sizes = [[64, 48], [300, 200], [20, 90]] as const;
    const inputs = await Promise.all(sizes.map(([w, h]) => jpeg(w, h)));
    const results = await Promise.all(
      inputs.map((b) => pool.process(b, "image/jpeg", { maxPixels: 1_000_000 })),
    );
    assert.deepEqual(results.map((r) => [r.width, r.height]), sizes.map(([w, h]) => [w, h]));
    for (const r of results) {
      const back = await Image.decode(r.bytes);
      assert.equal(back.width * back.height, r.width * r.height);
    }
    // the inputs were handed over to the worker, not copied
    assert.ok(inputs.every((b) => b.byteLength === 0));
  } finally {
    pool.close();
  }
});

Deno.test("image pool: a refusal in the worker arrives as the same UploadRejectedError", async () => {
  const pool = new ImagePool(2);
  try {
    const whole = await jpeg(100, 100);
    await assert.rejects(
      pool.process(whole.slice(0, 400), "image/jpeg", { maxPixels: 1_000_000 }),
      (e) => e instanceof UploadRejectedError && e.reason === "corrupt",
    );
    await assert.rejects(
      pool.process(whole, "image/jpeg", { maxPixels: 100 }),
      (e) => e instanceof UploadRejectedError && e.reason === "too_many_pixels",
    );
  } finally {
    pool.close();
  }
});

Deno.test("image pool: closing fails what is queued, and later calls", async () => {
  const pool = new ImagePool(1);
  const jobs = [await jpeg(200, 200), await jpeg(200, 200)].map((b) =>
    pool.process(b, "image/jpeg", { maxPixels: 1_000_000 })
  );
  pool.close();
  for (const j of jobs) await assert.rejects(j, /closed/);
  await assert.rejects(pool.process(new Uint8Array(4), "image/jpeg", { maxPixels: 1 }), /closed/);
});

Deno.test("image pool: past the queue bound a job is refused at once as busy, with a retry delay", async () => {
  const pool = new ImagePool(1, { maxQueue: 1 });
  try {
    const opts = { maxPixels: 1_000_000 };
    const running = pool.process(await jpeg(64, 64), "image/jpeg", opts);
    const queued = pool.process(await jpeg(64, 64), "image/jpeg", opts);
    await assert.rejects(pool.process(await jpeg(64, 64), "image/jpeg", opts), (e) => {
      assert.ok(e instanceof UploadRejectedError);
      assert.equal(e.reason, "busy");
      assert.equal(e.retryAfterSec, BUSY_RETRY_AFTER_SEC);
      return true;
    });
    await assert.rejects(pool.dicom(buildDicom({ modality: "OT" }), 1024), /try again/);
    assert.deepEqual((await Promise.all([running, queued])).map((r) => r.width), [64, 64]);
    // once the queue drains, jobs are taken again
    assert.equal((await pool.process(await jpeg(8, 8), "image/jpeg", opts)).width, 8);
  } finally {
    pool.close();
  }
});

Deno.test("image pool: DICOM headers are read in a worker; the caller keeps its bytes", async () => {
  const pool = new ImagePool(1);
  try {
    const bytes = buildDicom({ modality: "CT", patientId: "MRN-9" }, { deflate: true });
    const summary = await pool.dicom(bytes, 1024 * 1024);
    assert.equal(summary.modality, "CT");
    assert.equal(summary.patientId, "MRN-9");
    assert.ok(bytes.byteLength > 0);
    await assert.rejects(
      pool.dicom(bytes, 16),
      (e) => e instanceof UploadRejectedError && e.reason === "too_large",
    );
  } finally {
    pool.close();
  }
});

Deno.test("image pool: no worker before the first job, and an idle one ends; the next job starts another", async () => {
  const pool = new ImagePool(2, { idleMs: 50 });
  try {
    assert.equal(pool.workers, 0);
    const r = await pool.process(await jpeg(32, 32), "image/jpeg", { maxPixels: 1_000_000 });
    assert.equal(r.width, 32);
    assert.equal(pool.workers, 1);
    // bounded wait for the idle worker to end (a guard against a hang, not a timing assertion)
    for (let i = 0; i < 200 && pool.workers > 0; i++) await new Promise((x) => setTimeout(x, 25));
    assert.equal(pool.workers, 0);
    const again = await pool.process(await jpeg(16, 8), "image/jpeg", { maxPixels: 1_000_000 });
    assert.deepEqual([again.width, again.height], [16, 8]);
  } finally {
    pool.close();
  }
});
