import assert from "node:assert/strict";
import { Image } from "imagescript";
import { UploadRejectedError } from "../src/errors.ts";
import {
  checkImageHeader,
  decodeJpeg,
  imageDimensions,
  jpegOrientation,
  processImage,
  thumbnailDimensions,
} from "../src/media/image.ts";
import { isPolyglot, sniff } from "../src/media/sniff.ts";

// ---------------------------------------------------------------------------
// Real images, made here

const gradient = (width: number, height: number, alpha = 255): Image => {
  const img = new Image(width, height);
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i += 4) {
      img.bitmap[i] = (x * 255) / width;
      img.bitmap[i + 1] = (y * 255) / height;
      img.bitmap[i + 2] = 128;
      img.bitmap[i + 3] = alpha;
    }
  }
  return img;
};

const GRADIENT = gradient(640, 480);
const JPEG = await GRADIENT.encodeJPEG(90);
const PNG = await GRADIENT.encode();
const WEBP = await GRADIENT.encodeWEBP(80);
const WEBP_LOSSLESS = await GRADIENT.encodeWEBP(null);
const WEBP_ALPHA = await gradient(320, 200, 128).encodeWEBP(80);

const enc = new TextEncoder();
const latin1 = (b: Uint8Array) => new TextDecoder("latin1").decode(b);
const concat = (...parts: (Uint8Array | string)[]) => {
  const bytes = parts.map((p) => typeof p === "string" ? enc.encode(p) : p);
  const out = new Uint8Array(bytes.reduce((n, p) => n + p.length, 0));
  bytes.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};
const u32be = (n: number) => new Uint8Array([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
const crc32 = (b: Uint8Array) => {
  let c = 0xffffffff;
  for (const x of b) c = CRC_TABLE[(c ^ x) & 255]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
};
const pngChunk = (type: string, data: Uint8Array) => {
  const body = concat(type, data);
  return concat(u32be(data.length), body, u32be(crc32(body)));
};
/** A PNG with one extra chunk right after IHDR (8 + 25 bytes). */
const pngWithChunk = (png: Uint8Array, chunk: Uint8Array) =>
  concat(png.subarray(0, 33), chunk, png.subarray(33));

/** A JPEG with an APP1 Exif segment right after SOI, holding a GPS-looking TIFF block. */
const jpegWithExif = (jpeg: Uint8Array) => {
  const tiff = concat(
    new Uint8Array([0x49, 0x49, 0x2a, 0, 8, 0, 0, 0]), // "II*\0", IFD0 at 8
    new Uint8Array([1, 0, 0x25, 0x88, 4, 0, 1, 0, 0, 0, 26, 0, 0, 0]), // GPS IFD pointer
    new Uint8Array([0, 0, 0, 0]),
    "GPSLatitude 48.858370 N GPSLongitude 2.294481 E",
  );
  const payload = concat("Exif\0\0", tiff);
  const length = payload.length + 2;
  return concat(
    jpeg.subarray(0, 2),
    new Uint8Array([0xff, 0xe1, length >> 8, length & 255]),
    payload,
    jpeg.subarray(2),
  );
};

const rejects = async (f: () => Promise<unknown>, reason: string) => {
  await assert.rejects(f, (e: unknown) => {
    assert.ok(e instanceof UploadRejectedError, String(e));
    assert.equal(e.reason, reason);
    return true;
  });
};

const LIMIT = { maxPixels: 50_000_000 };

// ---------------------------------------------------------------------------
// sniff

Deno.test("sniff: images made by imagescript", () => {
  assert.equal(sniff(JPEG), "image/jpeg");
  assert.equal(sniff(PNG), "image/png");
  assert.equal(sniff(WEBP), "image/webp");
  assert.equal(sniff(WEBP_LOSSLESS), "image/webp");
});

Deno.test("sniff: PDF, DICOM and text by their magic", () => {
  assert.equal(sniff(enc.encode("%PDF-1.7\n%âãÏÓ\n1 0 obj\n")), "application/pdf");
  const dicom = concat(new Uint8Array(128), "DICM", new Uint8Array([2, 0, 0, 0]));
  assert.equal(sniff(dicom), "application/dicom");
  assert.equal(sniff(enc.encode("BP 120/80 mmHg\r\nNext review\tin 2 weeks\f\n")), "text/plain");
  assert.equal(sniff(enc.encode("Blutdruck gemessen — unauffällig ✓")), "text/plain");
});

Deno.test("sniff: not text, not anything", () => {
  assert.equal(sniff(new Uint8Array()), null);
  assert.equal(sniff(enc.encode("a\0b")), null);
  assert.equal(sniff(enc.encode("\x1b[31mred")), null);
  assert.equal(sniff(new Uint8Array([0x61, 0xc3, 0x28])), null); // invalid UTF-8
  assert.equal(sniff(new Uint8Array([0xff, 0xd8])), null); // too short for JPEG
  assert.equal(sniff(enc.encode("RIFF\0\0\0\0WAVE")), null);
});

// ---------------------------------------------------------------------------
// isPolyglot

Deno.test("isPolyglot: normal images and text are not", () => {
  assert.equal(isPolyglot(JPEG, "image/jpeg"), false);
  assert.equal(isPolyglot(jpegWithExif(JPEG), "image/jpeg"), false);
  assert.equal(isPolyglot(PNG, "image/png"), false);
  assert.equal(isPolyglot(WEBP, "image/webp"), false);
  assert.equal(isPolyglot(enc.encode("Wound healing well; x < 3 cm."), "text/plain"), false);
  const dicom = concat(new Uint8Array(128), "DICM", new Uint8Array(64));
  assert.equal(isPolyglot(dicom, "application/dicom"), false);
});

Deno.test("isPolyglot: a second JPEG appended (MPF gain map, preview) is fine", () => {
  assert.equal(isPolyglot(concat(JPEG, JPEG), "image/jpeg"), false);
  assert.equal(isPolyglot(concat(JPEG, new Uint8Array(16), JPEG), "image/jpeg"), false);
});

Deno.test("isPolyglot: PDF or ZIP appended after the image", () => {
  assert.equal(isPolyglot(concat(JPEG, "%PDF-1.4\n1 0 obj"), "image/jpeg"), true);
  assert.equal(isPolyglot(concat(JPEG, "PK\x03\x04\x14\0\0\0"), "image/jpeg"), true);
  assert.equal(isPolyglot(concat(JPEG, JPEG, "PK\x05\x06"), "image/jpeg"), true);
  assert.equal(isPolyglot(concat(PNG, "PK\x03\x04\x14\0\0\0"), "image/png"), true);
  assert.equal(isPolyglot(concat(PNG, "%PDF-1.4"), "image/png"), true);
  const webp = concat(WEBP, "PK\x03\x04");
  assert.equal(sniff(webp), "image/webp");
  assert.equal(isPolyglot(webp, "image/webp"), true);
});

Deno.test("isPolyglot: a PDF header inside the first KB of a PNG", () => {
  const png = pngWithChunk(PNG, pngChunk("tEXt", enc.encode("Comment\0%PDF-1.5 trailer")));
  assert.equal(sniff(png), "image/png");
  assert.equal(isPolyglot(png, "image/png"), true);
});

Deno.test("isPolyglot: markup in text or at the start of an image", () => {
  assert.equal(isPolyglot(enc.encode("note\n<script>alert(1)</script>"), "text/plain"), true);
  assert.equal(isPolyglot(enc.encode("<SVG onload=x>"), "text/plain"), true);
  assert.equal(isPolyglot(enc.encode("x".repeat(5000) + "<Html>"), "text/plain"), true);
  const png = pngWithChunk(PNG, pngChunk("tEXt", enc.encode("Comment\0<script src=x>")));
  assert.equal(isPolyglot(png, "image/png"), true);
});

Deno.test("isPolyglot: %PDF- in the first KB of text; executable magic in a DICOM preamble", () => {
  assert.equal(isPolyglot(enc.encode("hello\n%PDF-1.4\n"), "text/plain"), true);
  const pe = concat("MZ", new Uint8Array(126), "DICM", new Uint8Array(64));
  assert.equal(sniff(pe), "application/dicom");
  assert.equal(isPolyglot(pe, "application/dicom"), true);
});

// ---------------------------------------------------------------------------
// imageDimensions

Deno.test("imageDimensions: from headers of JPEG, PNG and WebP (VP8, VP8L, VP8X)", () => {
  const size = { width: 640, height: 480 };
  assert.deepEqual(imageDimensions(JPEG, "image/jpeg"), size);
  assert.deepEqual(imageDimensions(jpegWithExif(JPEG), "image/jpeg"), size);
  assert.deepEqual(imageDimensions(PNG, "image/png"), size);
  assert.equal(latin1(WEBP.subarray(12, 16)), "VP8 ");
  assert.deepEqual(imageDimensions(WEBP, "image/webp"), size);
  assert.equal(latin1(WEBP_LOSSLESS.subarray(12, 16)), "VP8L");
  assert.deepEqual(imageDimensions(WEBP_LOSSLESS, "image/webp"), size);
  assert.equal(latin1(WEBP_ALPHA.subarray(12, 16)), "VP8X");
  assert.deepEqual(imageDimensions(WEBP_ALPHA, "image/webp"), { width: 320, height: 200 });
});

Deno.test("imageDimensions: unreadable headers are corrupt", () => {
  const corrupt = (f: () => unknown) =>
    assert.throws(f, (e: unknown) => e instanceof UploadRejectedError && e.reason === "corrupt");
  corrupt(() => imageDimensions(JPEG.subarray(0, 10), "image/jpeg"));
  corrupt(() => imageDimensions(PNG.subarray(0, 20), "image/png"));
  corrupt(() => imageDimensions(WEBP.subarray(0, 24), "image/webp"));
  corrupt(() => imageDimensions(new Uint8Array([0xff, 0xd8, 0xff, 0xd9]), "image/jpeg"));
});

// ---------------------------------------------------------------------------
// processImage

/** A PNG of only a signature and an IHDR claiming the given size. */
const pngHeaderOnly = (width: number, height: number) =>
  concat(
    PNG.subarray(0, 8),
    pngChunk("IHDR", concat(u32be(width), u32be(height), new Uint8Array([8, 6, 0, 0, 0]))),
  );

Deno.test("processImage: the pixel limit is enforced from the header, before decoding", async () => {
  const huge = pngHeaderOnly(100_000, 100_000);
  assert.deepEqual(imageDimensions(huge, "image/png"), { width: 100_000, height: 100_000 });
  await rejects(() => processImage(huge, "image/png", LIMIT), "too_many_pixels");
  // A real JPEG whose SOF0 is patched to 60000×60000.
  const jpeg = JPEG.slice();
  const sof = latin1(jpeg).indexOf("\xff\xc0");
  jpeg.set([0xea, 0x60, 0xea, 0x60], sof + 5);
  await rejects(() => processImage(jpeg, "image/jpeg", LIMIT), "too_many_pixels");
  await rejects(
    () => processImage(JPEG, "image/jpeg", { maxPixels: 640 * 480 - 1 }),
    "too_many_pixels",
  );
});

Deno.test("processImage: truncated or garbled images are corrupt", async () => {
  await rejects(
    () => processImage(JPEG.subarray(0, JPEG.length >> 1), "image/jpeg", LIMIT),
    "corrupt",
  );
  await rejects(
    () => processImage(PNG.subarray(0, PNG.length - 12), "image/png", LIMIT),
    "corrupt",
  );
  await rejects(
    () => processImage(WEBP.subarray(0, WEBP.length - 100), "image/webp", LIMIT),
    "corrupt",
  );
  const garbled = WEBP.slice();
  garbled.fill(0x55, 40, 400);
  await rejects(() => processImage(garbled, "image/webp", LIMIT), "corrupt");
  // The decoder still works after a failure.
  assert.equal((await processImage(WEBP, "image/webp", LIMIT)).width, 640);
});

Deno.test("processImage: bytes that are not the claimed type, or not an image", async () => {
  await rejects(() => processImage(PNG, "image/jpeg", LIMIT), "type_mismatch");
  await rejects(() => processImage(enc.encode("hello"), "text/plain", LIMIT), "type_not_allowed");
});

Deno.test("processImage: EXIF with GPS is gone, size kept", async () => {
  const input = jpegWithExif(JPEG);
  assert.ok(latin1(input).includes("GPSLatitude"));
  const out = await processImage(input, "image/jpeg", LIMIT);
  assert.equal(out.contentType, "image/jpeg");
  assert.equal(sniff(out.bytes), "image/jpeg");
  const text = latin1(out.bytes);
  assert.ok(!text.includes("Exif"));
  assert.ok(!text.includes("GPSLatitude"));
  const decoded = await Image.decode(out.bytes);
  assert.deepEqual([decoded.width, decoded.height], [640, 480]);
  assert.deepEqual([out.width, out.height], [640, 480]);
});

Deno.test("processImage: PNG text chunks and trailers are gone", async () => {
  const input = concat(
    pngWithChunk(PNG, pngChunk("tEXt", enc.encode("Author\0Dr Example"))),
    "PK\x03\x04",
  );
  const out = await processImage(input, "image/png", LIMIT);
  const text = latin1(out.bytes);
  for (const s of ["tEXt", "Dr Example", "ImageScript", "Creation Time", "PK\x03\x04"]) {
    assert.ok(!text.includes(s), s);
  }
  const decoded = await Image.decode(out.bytes);
  assert.deepEqual([decoded.width, decoded.height], [640, 480]);
  assert.deepEqual(decoded.bitmap, GRADIENT.bitmap); // PNG stays lossless
});

Deno.test("processImage: thumbnail is a JPEG, longest side 256, aspect kept", async () => {
  const out = await processImage(JPEG, "image/jpeg", LIMIT);
  assert.equal(sniff(out.thumbnail), "image/jpeg");
  const thumb = await Image.decode(out.thumbnail);
  assert.deepEqual([thumb.width, thumb.height], [256, 192]);
  assert.deepEqual(imageDimensions(out.thumbnail, "image/jpeg"), { width: 256, height: 192 });
  for (const t of Object.values(out.timings)) assert.ok(t >= 0);

  const portrait = await processImage(await gradient(300, 600).encode(), "image/png", LIMIT);
  assert.deepEqual(imageDimensions(portrait.thumbnail, "image/jpeg"), { width: 128, height: 256 });
  const small = await processImage(await gradient(100, 50).encode(), "image/png", LIMIT);
  assert.deepEqual(imageDimensions(small.thumbnail, "image/jpeg"), { width: 100, height: 50 });
  assert.deepEqual(thumbnailDimensions(4000, 3000, 256), { width: 256, height: 192 });
  assert.deepEqual(thumbnailDimensions(5000, 1, 256), { width: 256, height: 1 });
});

Deno.test("processImage: a transparent image's thumbnail is flattened onto white", async () => {
  const clear = new Image(64, 64);
  clear.fill(0x00000000);
  const out = await processImage(await clear.encode(), "image/png", LIMIT);
  const [r, g, b] = (await Image.decode(out.thumbnail)).getRGBAAt(32, 32);
  assert.ok(r! > 245 && g! > 245 && b! > 245, `${r},${g},${b}`);
});

Deno.test("processImage: WebP round trip, lossy stays lossy, lossless stays lossless", async () => {
  for (const [input, chunk] of [[WEBP, "VP8 "], [WEBP_LOSSLESS, "VP8L"]] as const) {
    const out = await processImage(input, "image/webp", LIMIT);
    assert.equal(out.contentType, "image/webp");
    assert.equal(sniff(out.bytes), "image/webp");
    assert.equal(latin1(out.bytes.subarray(12, 16)), chunk);
    assert.deepEqual(imageDimensions(out.bytes, "image/webp"), { width: 640, height: 480 });
    assert.deepEqual([out.width, out.height], [640, 480]);
    const again = await processImage(out.bytes, "image/webp", LIMIT);
    assert.deepEqual([again.width, again.height], [640, 480]);
    assert.deepEqual(imageDimensions(out.thumbnail, "image/jpeg"), { width: 256, height: 192 });
  }
  const alpha = await processImage(WEBP_ALPHA, "image/webp", LIMIT);
  assert.deepEqual([alpha.width, alpha.height], [320, 200]);
});

Deno.test("processImage: a VP8X canvas cannot hide a bigger frame from the pixel limit", async () => {
  // VP8X canvas 1×1 wrapping the 640×480 VP8 bitstream.
  const vp8 = WEBP.subarray(12);
  const vp8x = concat(
    "VP8X",
    new Uint8Array([10, 0, 0, 0]),
    new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // flags, reserved, canvas 1×1
    vp8,
  );
  const size = vp8x.length + 4;
  const file = concat("RIFF", u32be(size).reverse(), "WEBP", vp8x);
  assert.equal(sniff(file), "image/webp");
  await rejects(() => processImage(file, "image/webp", { maxPixels: 100 }), "corrupt");
});

/** A JPEG with an APP1 EXIF block holding only an orientation tag. */
const withOrientation = (jpeg: Uint8Array, orientation: number, littleEndian: boolean) => {
  const tiff = new Uint8Array(26);
  const v = new DataView(tiff.buffer);
  tiff.set(littleEndian ? [0x49, 0x49] : [0x4d, 0x4d]);
  v.setUint16(2, 42, littleEndian);
  v.setUint32(4, 8, littleEndian); // IFD0 right after the header
  v.setUint16(8, 1, littleEndian); // one entry
  v.setUint16(10, 0x0112, littleEndian); // Orientation
  v.setUint16(12, 3, littleEndian); // SHORT
  v.setUint32(14, 1, littleEndian);
  v.setUint16(18, orientation, littleEndian);
  const payload = new Uint8Array([0x45, 0x78, 0x69, 0x66, 0, 0, ...tiff]);
  const len = payload.length + 2;
  return new Uint8Array([
    0xff,
    0xd8,
    0xff,
    0xe1,
    len >> 8,
    len & 255,
    ...payload,
    ...jpeg.slice(2),
  ]);
};

Deno.test("image: EXIF orientation is applied before the metadata goes", async () => {
  // stored sideways: red on the left half, blue on the right
  const img = new Image(40, 20);
  for (let y = 1; y <= 20; y++) {
    for (let x = 1; x <= 40; x++) img.setPixelAt(x, y, x <= 20 ? 0xff0000ff : 0x0000ffff);
  }
  const jpeg = await img.encodeJPEG(95);
  const isRed = (c: number) => Image.colorToRGBA(c)[0]! > 200 && Image.colorToRGBA(c)[2]! < 60;
  const isBlue = (c: number) => Image.colorToRGBA(c)[2]! > 200 && Image.colorToRGBA(c)[0]! < 60;
  for (const le of [true, false]) {
    assert.equal(jpegOrientation(withOrientation(jpeg, 6, le)), 6);
    // 6: turn 90° clockwise: the left (red) comes out on top
    const cw = await processImage(withOrientation(jpeg, 6, le), "image/jpeg", { maxPixels: 1e6 });
    assert.deepEqual([cw.width, cw.height], [20, 40]);
    const up = await Image.decode(cw.bytes);
    assert.deepEqual([up.width, up.height], [20, 40]);
    assert.ok(isRed(up.getPixelAt(10, 5)) && isBlue(up.getPixelAt(10, 35)));
    // 8: 90° counter-clockwise: red at the bottom
    const ccw = await Image.decode(
      (await processImage(withOrientation(jpeg, 8, le), "image/jpeg", { maxPixels: 1e6 })).bytes,
    );
    assert.ok(isBlue(ccw.getPixelAt(10, 5)) && isRed(ccw.getPixelAt(10, 35)));
    // 2: mirrored: blue on the left
    const mirrored = await Image.decode(
      (await processImage(withOrientation(jpeg, 2, le), "image/jpeg", { maxPixels: 1e6 })).bytes,
    );
    assert.ok(isBlue(mirrored.getPixelAt(5, 10)) && isRed(mirrored.getPixelAt(35, 10)));
  }
  assert.equal(jpegOrientation(jpeg), 1);
});

Deno.test("image: the fast JPEG path decodes to exactly what imagescript's Image.decode gives", async () => {
  const img = new Image(123, 77);
  img.fill((x, y) => Image.rgbaToColor((x * 7) % 256, (y * 13) % 256, (x * y) % 256, 255));
  const jpeg = await img.encodeJPEG(88);
  const ours = await decodeJpeg(jpeg);
  const theirs = await Image.decode(jpeg);
  assert.deepEqual([ours.width, ours.height], [123, 77]);
  assert.deepEqual(ours.bitmap, theirs.bitmap);
});

Deno.test("checkImageHeader: blank scans pass; a small file claiming a big frame is suspicious", async () => {
  // blank white pages are the most compressible real uploads (README has the 12 MP figures)
  const page = new Image(1600, 1200);
  page.fill(0xffffffff);
  for (
    const [type, bytes] of [
      ["image/jpeg", await page.encodeJPEG(90)],
      ["image/png", await page.encode()],
      ["image/webp", await page.encodeWEBP(90)],
      ["image/webp", await page.encodeWEBP(null)],
    ] as const
  ) {
    assert.deepEqual(checkImageHeader(bytes, type, 50_000_000), { width: 1600, height: 1200 });
  }
  // the same frame header on a 16×16 image's data: about 2 bytes for every 1,000 pixels
  const small = await gradient(16, 16, 255).encodeJPEG(90);
  const claimed = small.slice();
  const sof = claimed.findIndex((b, i) => b === 0xff && claimed[i + 1] === 0xc0);
  new DataView(claimed.buffer).setUint16(sof + 5, 1200);
  new DataView(claimed.buffer).setUint16(sof + 7, 1600);
  assert.throws(
    () => checkImageHeader(claimed, "image/jpeg", 50_000_000),
    (e) => e instanceof UploadRejectedError && e.reason === "suspicious_compression",
  );
  // the pixel limit is judged first
  assert.throws(
    () => checkImageHeader(claimed, "image/jpeg", 1_000_000),
    (e) => e instanceof UploadRejectedError && e.reason === "too_many_pixels",
  );
});
