import assert from "node:assert/strict";
import { type DicomSummary, isoDate, parseDicom } from "../src/media/dicom.ts";
import { type RejectionReason, UploadRejectedError } from "../src/errors.ts";
import {
  buildDicom,
  DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
  EXPLICIT_VR_LITTLE_ENDIAN,
} from "./support/dicom.ts";

const TAGS = {
  patientName: "TESTPATIENT^ALEX^Q",
  patientId: "MRN-000123",
  patientBirthDate: "19800229",
  patientSex: "O",
  studyDate: "20240131",
  studyDescription: "CHEST PA AND LATERAL",
  accessionNumber: "ACC123",
  studyInstanceUid: "2.25.1001",
  seriesInstanceUid: "2.25.1001.1",
  sopInstanceUid: "2.25.1001.1.1",
  modality: "CR",
  bodyPart: "CHEST",
  seriesDescription: "PA",
};

const EXPECTED: DicomSummary = {
  ...TAGS,
  patientBirthDate: "1980-02-29",
  studyDate: "2024-01-31",
  transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN,
};

const NULLS: DicomSummary = {
  patientName: null,
  patientId: null,
  patientBirthDate: null,
  patientSex: null,
  studyDate: null,
  studyDescription: null,
  accessionNumber: null,
  studyInstanceUid: null,
  seriesInstanceUid: null,
  sopInstanceUid: null,
  modality: null,
  bodyPart: null,
  seriesDescription: null,
  transferSyntax: null,
};

const MESSAGE = "the DICOM file could not be parsed";

const assertRejected = (bytes: Uint8Array, reason: RejectionReason = "corrupt") =>
  assert.throws(() => parseDicom(bytes), (err: unknown) => {
    assert.ok(err instanceof UploadRejectedError);
    assert.equal(err.reason, reason);
    assert.equal(err.cause, undefined); // dicom-parser's error can hold the whole dataset
    return true;
  });

const indexOf = (bytes: Uint8Array, ascii: string): number => {
  const needle = new TextEncoder().encode(ascii);
  for (let i = 0; i + needle.length <= bytes.length; i++) {
    if (needle.every((b, j) => bytes[i + j] === b)) return i;
  }
  throw new Error("needle not found");
};

Deno.test("dicom: every summary attribute round-trips, dates as ISO", () => {
  assert.deepEqual(parseDicom(buildDicom(TAGS, { pixels: { rows: 8, cols: 6 } })), EXPECTED);
  assert.deepEqual(parseDicom(buildDicom(TAGS)), EXPECTED);
});

Deno.test("dicom: the deflated transfer syntax gives the same summary", () => {
  const bytes = buildDicom(TAGS, { deflate: true, pixels: { rows: 8, cols: 6 } });
  assert.deepEqual(parseDicom(bytes), {
    ...EXPECTED,
    transferSyntax: DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
  });
});

Deno.test("dicom: a deflated file with a non-zero preamble still parses", () => {
  // dicom-parser walks the inflated array from offset 0; this preamble reads
  // as an OB element ~16 MB long. The module's inflater makes it skip instead.
  const bytes = buildDicom(TAGS, { deflate: true });
  bytes.set([0x08, 0x00, 0x20, 0x00, 0x4f, 0x42, 0x00, 0x00, 0xff, 0xff, 0xff, 0x00], 0);
  assert.equal(parseDicom(bytes).patientId, TAGS.patientId);
});

Deno.test("dicom: absent, empty and blank attributes are null", () => {
  const bytes = buildDicom({ sopInstanceUid: "2.25.7", modality: "  MR ", studyDescription: "" });
  assert.deepEqual(parseDicom(bytes), {
    ...NULLS,
    sopInstanceUid: "2.25.7",
    modality: "MR",
    transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN,
  });
  const blank = parseDicom(buildDicom({ modality: "OT", patientName: "   " }));
  assert.equal(blank.patientName, null);
});

Deno.test("dicom: dates are ISO when valid, null otherwise", () => {
  const read = (studyDate: string) =>
    parseDicom(buildDicom({ modality: "OT", studyDate })).studyDate;
  assert.equal(read("20240131"), "2024-01-31");
  assert.equal(read("2024.01.31"), "2024-01-31"); // retired ACR-NEMA form
  assert.equal(read("20240230"), null);
  assert.equal(read("00000000"), null);
  assert.equal(read("2024-01-31"), null);
  assert.equal(read("202401"), null);
  assert.equal(isoDate(null), null);
});

Deno.test("dicom: text follows Specific Character Set, Latin-1 when none", () => {
  const utf8 = parseDicom(buildDicom({ modality: "OT", patientName: "MÜLLER^ZOË" }));
  assert.equal(utf8.patientName, "MÜLLER^ZOË");

  const latin1 = buildDicom({ modality: "OT", patientName: "MULLER^ZOE" });
  latin1[indexOf(latin1, "MULLER") + 1] = 0xdc; // Ü in ISO 8859-1
  assert.equal(parseDicom(latin1).patientName, "MÜLLER^ZOE");
});

Deno.test("dicom: not DICOM at all is corrupt", () => {
  assertRejected(new Uint8Array());
  assertRejected(new Uint8Array(132));
  assertRejected(new TextEncoder().encode("%PDF-1.7 ".repeat(40)));
});

Deno.test("dicom: garbage after DICM is corrupt", () => {
  const bytes = new Uint8Array(400);
  bytes.set(new TextEncoder().encode("DICM"), 128);
  for (let i = 132; i < bytes.length; i++) bytes[i] = (i * 7919 + 13) & 0xff;
  assertRejected(bytes);
  const text = buildDicom(TAGS);
  text.set(new TextEncoder().encode("this is not a meta group"), 132);
  assertRejected(text);
});

Deno.test("dicom: truncation inside an element or its pixels is corrupt", () => {
  const plain = buildDicom(TAGS);
  assertRejected(plain.subarray(0, plain.length - 1)); // last value one byte short
  assertRejected(plain.subarray(0, indexOf(plain, "CHEST") - 3)); // inside a header
  const image = buildDicom(TAGS, { pixels: { rows: 8, cols: 6 } });
  assertRejected(image.subarray(0, image.length - 10)); // inside Pixel Data
  const deflated = buildDicom(TAGS, { deflate: true, pixels: { rows: 8, cols: 6 } });
  assertRejected(deflated.subarray(0, deflated.length - 4)); // deflate stream cut short
});

Deno.test("dicom: a file with only its meta group is corrupt", () => {
  const bytes = buildDicom({ modality: "OT" });
  const groupLength = new DataView(bytes.buffer).getUint32(140, true); // (0002,0000) value
  assertRejected(bytes.subarray(0, 144 + groupLength));
  const unknown = buildDicom({});
  assertRejected(unknown); // only SOP Class UID: nothing to summarise
});

Deno.test("dicom: a cut at an element boundary cannot be detected; the summary is partial", () => {
  // DICOM has no end marker, so a file cut cleanly between elements parses.
  const bytes = buildDicom(TAGS);
  const cut = indexOf(bytes, TAGS.patientName) + TAGS.patientName.length;
  assert.deepEqual(parseDicom(bytes.subarray(0, cut)), {
    ...EXPECTED,
    patientId: null,
    patientBirthDate: null,
    patientSex: null,
    bodyPart: null,
    studyInstanceUid: null,
    seriesInstanceUid: null,
  });
});

Deno.test("dicom: a deflated dataset past the inflate limit is too large", () => {
  const bytes = buildDicom(TAGS, { deflate: true, pixels: { rows: 64, cols: 64 } });
  assert.throws(() => parseDicom(bytes, { maxInflatedBytes: 1024 }), (err: unknown) => {
    assert.ok(err instanceof UploadRejectedError);
    assert.equal(err.reason, "too_large");
    return true;
  });
  assert.equal(parseDicom(bytes, { maxInflatedBytes: 64 * 1024 }).modality, "CR");
});

Deno.test("dicom: rejections never echo the content", () => {
  const bytes = buildDicom(TAGS);
  try {
    parseDicom(bytes.subarray(0, bytes.length - 1));
    assert.fail("expected a rejection");
  } catch (err) {
    assert.ok(err instanceof UploadRejectedError);
    assert.equal(err.message, MESSAGE);
    assert.doesNotMatch(JSON.stringify({ ...err, message: err.message }), /TESTPATIENT|MRN/);
  }
});

Deno.test("dicom: parsing stops after the last kept tag; what follows is never parsed", () => {
  // after (0020,000E): an undefined-length sequence whose items are garbage.
  // A full parse fails on it; the summary needs none of it.
  const plain = buildDicom(TAGS);
  const tail = new Uint8Array(12 + 64).fill(0xab);
  tail.set([0x40, 0x00, 0x75, 0x02, 0x53, 0x51, 0, 0, 0xff, 0xff, 0xff, 0xff]); // (0040,0275) SQ
  const bytes = new Uint8Array([...plain, ...tail]);
  assert.deepEqual(parseDicom(bytes), EXPECTED);
  // the same garbage under a tag that could still be kept is parsed, and refused
  const early = new Uint8Array([...plain, ...tail]);
  early.set([0x08, 0x00, 0x15, 0x11], plain.length); // (0008,1115) Referenced Series Sequence
  assertRejected(early);
});
