import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { UploadRejectedError, ValidationError } from "../src/errors.ts";
import {
  NotMultipartError,
  type ParsedUpload,
  parseMultipart,
  sanitizeFilename,
} from "../src/media/multipart.ts";
import { uploadFields } from "../src/media/pipeline.ts";

const BOUNDARY = "----chartlogBoundary7MA4YWxkTrZu0gW";
const CONTENT_TYPE = `multipart/form-data; boundary=${BOUNDARY}`;
const enc = new TextEncoder();
const MB = 1024 * 1024;

type Part = { name: string; value: string | Uint8Array; headers?: string[] };

/** A multipart body by hand: each part's headers, CRLF CRLF, content, delimiter. */
const buildBody = (parts: Part[], close = true, boundary = BOUNDARY): Uint8Array => {
  const pieces: Uint8Array[] = [];
  for (const p of parts) {
    const head = p.headers ?? [`Content-Disposition: form-data; name="${p.name}"`];
    pieces.push(enc.encode(`--${boundary}\r\n${head.join("\r\n")}\r\n\r\n`));
    pieces.push(typeof p.value === "string" ? enc.encode(p.value) : p.value);
    pieces.push(enc.encode("\r\n"));
  }
  if (close) pieces.push(enc.encode(`--${boundary}--\r\n`));
  return concatBytes(pieces);
};

const concatBytes = (pieces: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** Deterministic PRNG (mulberry32) so failures reproduce. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const randomBytes = (n: number): Uint8Array<ArrayBuffer> => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
};

/** Streams `bytes` in chunks of `size()` bytes, each a fresh copy. */
const streamOf = (bytes: Uint8Array, size: () => number): ReadableStream<Uint8Array> => {
  let at = 0;
  return new ReadableStream({
    pull(ctrl) {
      if (at >= bytes.length) return ctrl.close();
      const n = Math.max(1, size());
      ctrl.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  });
};

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

const parse = (body: Uint8Array, size = () => 65536, opts = { maxFileBytes: 10 * MB }) =>
  parseMultipart(streamOf(body, size), CONTENT_TYPE, opts);

/** Everything but timings, for comparing runs. */
const comparable = (u: ParsedUpload) => ({ fields: u.fields, file: u.file });

const filePart = (bytes: Uint8Array, name = "file", filename = "scan.png"): Part => ({
  name,
  value: bytes,
  headers: [
    `Content-Disposition: form-data; name="${name}"; filename="${filename}"`,
    "Content-Type: image/png",
  ],
});

const rejects = async (body: Uint8Array, message: RegExp, opts = { maxFileBytes: 10 * MB }) => {
  await assert.rejects(parse(body, () => 65536, opts), (err: unknown) => {
    assert.ok(err instanceof ValidationError, String(err));
    assert.match(err.message, message);
    return true;
  });
};

Deno.test("multipart: fields and file round trip with exact bytes and sha256", async () => {
  const file = randomBytes(300_000);
  const body = buildBody([
    { name: "category", value: "x-ray" },
    { name: "note", value: "Knie li. – Verlauf ✓" },
    filePart(file),
    { name: "empty", value: "" },
  ]);
  const upload = await parse(body);
  assert.deepEqual(upload.fields, { category: "x-ray", note: "Knie li. – Verlauf ✓", empty: "" });
  assert.ok(upload.file);
  assert.equal(upload.file.field, "file");
  assert.equal(upload.file.filename, "scan.png");
  assert.equal(upload.file.declaredType, "image/png");
  assert.equal(upload.file.size, file.length);
  assert.deepEqual(upload.file.bytes, file);
  assert.equal(upload.file.sha256, sha256(file));
  assert.equal(upload.file.bytes.byteLength, upload.file.bytes.buffer.byteLength);
});

Deno.test("multipart: 1-byte and random chunking give identical results", async () => {
  // Content full of near-delimiters: CRLF, dashes and boundary prefixes that must not match.
  const tricky = enc.encode(
    `\r\n--${BOUNDARY.slice(0, 20)}\r\r\n-\r\n--\r\n--${BOUNDARY.slice(0, -1)}X\r\n`,
  );
  const file = concatBytes([tricky, randomBytes(20_000), tricky]);
  const body = buildBody([
    { name: "a", value: `x\r\n--${BOUNDARY.slice(0, 10)}y` },
    filePart(file),
    { name: "b", value: "\r\n" },
  ]);
  const whole = await parse(body, () => body.length);
  assert.deepEqual(whole.file?.bytes, file);
  assert.equal(whole.fields.a, `x\r\n--${BOUNDARY.slice(0, 10)}y`);
  assert.equal(whole.fields.b, "\r\n");

  const bytewise = await parse(body, () => 1);
  assert.deepEqual(comparable(bytewise), comparable(whole));
  for (const seed of [1, 2, 3, 4, 5]) {
    const rand = prng(seed);
    const chunked = await parse(body, () => 1 + Math.floor(rand() * 97));
    assert.deepEqual(comparable(chunked), comparable(whole), `seed ${seed}`);
  }
});

Deno.test("multipart: preamble and epilogue are tolerated", async () => {
  const inner = new TextDecoder().decode(buildBody([{ name: "a", value: "1" }]));
  const body = enc.encode(`preamble text\r\n${inner}epilogue ignored`);
  const upload = await parse(body, () => 7);
  assert.deepEqual(upload.fields, { a: "1" });
  assert.equal(upload.file, null);
});

Deno.test("multipart: a preamble past 64 KiB is refused before any part", async () => {
  const inner = new TextDecoder().decode(buildBody([{ name: "a", value: "1" }]));
  const body = enc.encode(`${"p".repeat(100 * 1024)}\r\n${inner}`);
  await rejects(body, /no multipart boundary found/);
  const short = await parse(enc.encode(`${"p".repeat(60 * 1024)}\r\n${inner}`));
  assert.deepEqual(short.fields, { a: "1" });
});

Deno.test("multipart: a part busboy skips is refused, not lost", async () => {
  // Transport padding after a delimiter (RFC 2046) makes busboy drop the part that follows.
  const inner = buildBody([{ name: "a", value: "1" }]);
  const text = new TextDecoder().decode(inner).replace(`--${BOUNDARY}\r\n`, `--${BOUNDARY} \t\r\n`);
  await rejects(enc.encode(text), /unreadable part/);
});

Deno.test("multipart: an endless part busboy skips is cut off at the body bound", async () => {
  let pulled = 0;
  let cancelled = false;
  const head = enc.encode(`--${BOUNDARY}\r\nContent-Type: text/plain\r\n\r\n`);
  const chunk = new Uint8Array(64 * 1024).fill(7);
  const body = new ReadableStream<Uint8Array>({
    start(ctrl) {
      ctrl.enqueue(head);
    },
    pull(ctrl) {
      if (pulled >= 64 * MB) return ctrl.close();
      pulled += chunk.length;
      ctrl.enqueue(chunk.slice());
    },
    cancel() {
      cancelled = true;
    },
  });
  await assert.rejects(parseMultipart(body, CONTENT_TYPE, { maxFileBytes: MB }), (err: unknown) => {
    assert.ok(err instanceof UploadRejectedError);
    assert.equal(err.reason, "too_large");
    assert.match(err.message, /^the body exceeds \d+ bytes$/);
    return true;
  });
  assert.ok(cancelled, "producer stream was cancelled");
  assert.ok(pulled < 3 * MB, `pulled ${pulled} bytes`);
});

Deno.test("multipart: a file over the limit is rejected and the body cancelled early", async () => {
  const limit = 10 * MB;
  const total = 11 * MB;
  let pulled = 0;
  let cancelled = false;
  const head = enc.encode(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n`,
  );
  const chunk = new Uint8Array(64 * 1024).fill(7);
  const body = new ReadableStream<Uint8Array>({
    start(ctrl) {
      ctrl.enqueue(head);
    },
    pull(ctrl) {
      if (pulled >= total) return ctrl.close();
      pulled += chunk.length;
      ctrl.enqueue(chunk.slice());
    },
    cancel() {
      cancelled = true;
    },
  });
  await assert.rejects(
    parseMultipart(body, CONTENT_TYPE, { maxFileBytes: limit }),
    (err: unknown) => {
      assert.ok(err instanceof UploadRejectedError);
      assert.equal(err.reason, "too_large");
      assert.equal(err.message, `the file exceeds ${limit} bytes`);
      return true;
    },
  );
  assert.ok(cancelled, "producer stream was cancelled");
  assert.ok(pulled < limit + MB, `pulled ${pulled} bytes`);
});

Deno.test("multipart: a file exactly at the limit is accepted", async () => {
  const file = randomBytes(1000);
  const upload = await parse(buildBody([filePart(file)]), () => 100, { maxFileBytes: 1000 });
  assert.equal(upload.file?.size, 1000);
});

Deno.test("multipart: structural errors are ValidationErrors", async () => {
  const f = randomBytes(10);
  await rejects(buildBody([filePart(f), filePart(f)]), /more than one file part/);
  await rejects(buildBody([filePart(f, "attachment")]), /unexpected file part/);
  await rejects(buildBody([{ name: "a", value: "1" }], false), /no closing boundary/);
  await rejects(buildBody([filePart(f)]).subarray(0, 120), /no closing boundary/);
  await rejects(enc.encode("just some text"), /no multipart boundary/);
  await rejects(buildBody([{ name: "a", value: "1" }, { name: "a", value: "2" }]), /duplicate/);
  await rejects(
    buildBody([{ name: "x", value: "1", headers: ["Content-Disposition form-data"] }]),
    /malformed part header/,
  );
  await rejects(
    buildBody([{ name: "x", value: "1", headers: ["Content-Type: text/plain"] }]),
    /unreadable part/,
  );
  await rejects(
    buildBody([{ name: "x", value: "1", headers: ['Content-Disposition: attachment; name="x"'] }]),
    /unreadable part/,
  );
  await rejects(
    buildBody([{ name: "x", value: "1", headers: ['Content-Disposition: form-data; name="x'] }]),
    /unreadable part/,
  );
  await rejects(
    buildBody([{ name: "x", value: "1", headers: ["Content-Disposition: form-data"] }]),
    /malformed Content-Disposition/,
  );
  await rejects(
    buildBody([{ name: "a", value: new Uint8Array([0xc3, 0x28]) }]),
    /not valid UTF-8/,
  );
  const bad = new TextDecoder().decode(buildBody([{ name: "a", value: "1" }]))
    .replace(`--${BOUNDARY}\r\nContent`, `--${BOUNDARY}junk\r\nContent`);
  await rejects(enc.encode(bad), /unreadable part/);
});

Deno.test("multipart: field count and field size limits", async () => {
  const many = Array.from({ length: 21 }, (_, i) => ({ name: `f${i}`, value: "v" }));
  await rejects(buildBody(many), /more than 20 form fields/);
  const upload = await parse(buildBody(many.slice(0, 20)));
  assert.equal(Object.keys(upload.fields).length, 20);

  const big = "x".repeat(8 * 1024 + 1);
  await rejects(buildBody([{ name: "note", value: big }]), /a form field exceeds 8192 bytes/);
  const ok = await parse(buildBody([{ name: "note", value: big.slice(1) }]));
  assert.equal(ok.fields.note?.length, 8192);
  await assert.rejects(
    parseMultipart(streamOf(buildBody([{ name: "n", value: "12345" }]), () => 3), CONTENT_TYPE, {
      maxFileBytes: 1,
      maxFieldBytes: 4,
    }),
    ValidationError,
  );
});

Deno.test("multipart: part headers past busboy's 16 KiB are refused", async () => {
  const long = `Content-Disposition: form-data; name="a"; x="${"h".repeat(17 * 1024)}"`;
  await rejects(buildBody([{ name: "a", value: "1", headers: [long] }]), /malformed part header/);
  const nul = 'Content-Disposition: form-data; name="a\0"';
  await rejects(buildBody([{ name: "a", value: "1", headers: [nul] }]), /malformed part header/);
});

Deno.test("multipart: a NUL in a text field reaches the upload's field check, which refuses it", async () => {
  const upload = await parse(buildBody([
    { name: "category", value: "before" },
    { name: "notes", value: "knee\0left" },
    filePart(randomBytes(10)),
  ]));
  assert.equal(upload.fields.notes, "knee\0left");
  assert.throws(() => uploadFields("photo", upload), (err: unknown) => {
    assert.ok(err instanceof ValidationError);
    assert.deepEqual(err.issues, [{ path: "notes", message: "must not contain NUL characters" }]);
    return true;
  });
});

Deno.test("multipart: a field named __proto__ stays a plain property", async () => {
  const upload = await parse(buildBody([{ name: "__proto__", value: "x" }]));
  assert.equal(Object.getPrototypeOf(upload.fields), Object.prototype);
  assert.equal(Object.getOwnPropertyDescriptor(upload.fields, "__proto__")?.value, "x");
});

Deno.test("multipart: content type errors", async () => {
  const body = buildBody([{ name: "a", value: "1" }]);
  const run = (ct: string) => parseMultipart(streamOf(body, () => 10), ct, { maxFileBytes: 1 });
  await assert.rejects(run("application/json"), NotMultipartError);
  await assert.rejects(run(""), NotMultipartError);
  const notMultipart = await run("text/plain").catch((e) => e);
  assert.ok(notMultipart instanceof ValidationError);
  await assert.rejects(run("multipart/form-data"), /missing multipart boundary/);
  await assert.rejects(run(`multipart/form-data; boundary=${"b".repeat(71)}`), /invalid/);
  await assert.rejects(run('multipart/form-data; boundary="ends with space "'), /invalid/);
  const quoted = await run(`Multipart/Form-Data; charset=utf-8; boundary="${BOUNDARY}"`);
  assert.deepEqual(quoted.fields, { a: "1" });
});

Deno.test("multipart: filename*, quoted escapes and sanitizing in the parse", async () => {
  const f = randomBytes(3);
  const withExt = buildBody([{
    name: "file",
    value: f,
    headers: [
      `Content-Disposition: form-data; name="file"; filename="fallback.txt"; ` +
      `filename*=UTF-8''%E5%8D%95%E7%99%BD%20r%C3%B6ntgen.jpg`,
    ],
  }]);
  const upload = await parse(withExt, () => 5);
  assert.equal(upload.file?.filename, "单白 röntgen.jpg");
  assert.equal(upload.file?.declaredType, null);

  const latin = buildBody([{
    name: "file",
    value: f,
    headers: [`Content-Disposition: form-data; name="file"; filename*=iso-8859-1'de'M%FCller.pdf`],
  }]);
  assert.equal((await parse(latin)).file?.filename, "Müller.pdf");

  const escaped = buildBody([{
    name: "file",
    value: f,
    headers: [`Content-Disposition: form-data; name="file"; filename="a\\"b\\\\..\\\\c.txt"`],
  }]);
  assert.equal((await parse(escaped)).file?.filename, "c.txt");

  const traversal = buildBody([filePart(f, "file", "../../etc/passwd")]);
  assert.equal((await parse(traversal)).file?.filename, "passwd");

  const badExt = buildBody([{
    name: "file",
    value: f,
    headers: [`Content-Disposition: form-data; name="file"; filename*=UTF-8''%FF.jpg`],
  }]);
  await rejects(badExt, /malformed filename/);
});

Deno.test("multipart: the file part without a filename is refused, not read as text", async () => {
  // busboy tells files from fields by the filename; such a part's bytes would arrive decoded.
  await rejects(buildBody([{ name: "file", value: "raw" }]), /the file part has no filename/);
  const octets = await parse(buildBody([{
    name: "file",
    value: "raw",
    headers: [
      'Content-Disposition: form-data; name="file"',
      "Content-Type: application/octet-stream",
    ],
  }]));
  assert.equal(octets.file?.filename, null);
  assert.equal(new TextDecoder().decode(octets.file?.bytes), "raw");
  assert.deepEqual(octets.fields, {});
});

Deno.test("sanitizeFilename", () => {
  assert.equal(sanitizeFilename("../../etc/passwd"), "passwd");
  assert.equal(sanitizeFilename("C:\\x\\evil.jpg"), "evil.jpg");
  assert.equal(sanitizeFilename("\u202Egpj.exe"), "gpj.exe");
  assert.equal(sanitizeFilename("a\u2066b\u2069.png"), "ab.png");
  assert.equal(sanitizeFilename(".."), "file");
  assert.equal(sanitizeFilename(""), "file");
  assert.equal(sanitizeFilename("dir/"), "file");
  assert.equal(sanitizeFilename("...hidden"), "hidden");
  assert.equal(sanitizeFilename("  a \t\u00a0  b  .pdf "), "a b .pdf");
  assert.equal(sanitizeFilename("bad\0name\x07.txt"), "badname.txt");
  assert.equal(sanitizeFilename('x<y>:"z"|?*.txt'), "x_y___z____.txt");
  assert.equal(sanitizeFilename("Röntgen (2) – 单白_v1.jpg"), "Röntgen (2) _ 单白_v1.jpg");
  assert.equal(sanitizeFilename("Mu\u0308ller.jpg"), "Müller.jpg");

  const long = sanitizeFilename(`${"a".repeat(500)}.jpeg`);
  assert.equal(long.length, 200);
  assert.ok(long.endsWith("a.jpeg"));
  const astral = sanitizeFilename(`${"𝒜".repeat(300)}.pdf`);
  assert.equal(Array.from(astral).length, 200);
  assert.ok(astral.endsWith("𝒜.pdf"));
  assert.equal(sanitizeFilename("x".repeat(300)).length, 200);
});

Deno.test("multipart: parses the platform's own FormData encoding", async () => {
  const file = randomBytes(200_000);
  const form = new FormData();
  form.append("category", "photo");
  form.append("note", 'line1\r\nline2 "quoted" ✓');
  form.append("file", new Blob([file], { type: "image/jpeg" }), "wound photo.jpg");
  const req = new Request("http://localhost/upload", { method: "POST", body: form });
  const upload = await parseMultipart(req.body!, req.headers.get("content-type") ?? "", {
    maxFileBytes: MB,
  });
  assert.deepEqual(upload.fields, { category: "photo", note: 'line1\r\nline2 "quoted" ✓' });
  assert.equal(upload.file?.filename, "wound photo.jpg");
  assert.equal(upload.file?.declaredType, "image/jpeg");
  assert.deepEqual(upload.file?.bytes, file);
  assert.equal(upload.file?.sha256, sha256(file));
});

// How fast this goes is tests/bench/multipart_bench.ts (BENCH_ONLY=multipart deno task bench):
// a test never passes or fails on wall-clock time.
Deno.test("multipart: a 10 MB body in 64 KB chunks comes out whole", async () => {
  const file = randomBytes(10 * MB);
  const body = buildBody([{ name: "category", value: "scan" }, filePart(file)]);
  const upload = await parse(body, () => 64 * 1024, { maxFileBytes: 16 * MB });
  assert.deepEqual(upload.fields, { category: "scan" });
  assert.equal(upload.file?.bytes.length, file.length);
  assert.equal(upload.file?.sha256, sha256(file));
});
