/**
 * A small DICOM Part 10 writer for tests, written from PS3.10 §7 (file
 * format) and PS3.5 §7.1.2 (explicit VR little endian data elements). It
 * builds real files: a 128-byte zero preamble, "DICM", the file meta group,
 * then the dataset in ascending tag order, optionally raw-deflated
 * (PS3.5 §A.5). The tag table is deliberately separate from
 * src/media/dicom.ts, so a wrong tag there fails the tests.
 */
import { deflateRawSync } from "node:zlib";
import type { DicomSummary } from "../../src/media/dicom.ts";

/** Transfer syntax UIDs (PS3.6 Annex A). */
export const EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1";
export const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99";
/** Secondary Capture Image Storage. */
export const SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7";
/** Made-up implementation identity (a 2.25 UUID-derived UID). */
const IMPLEMENTATION_CLASS_UID = "2.25.329800735698586629295641978511506172918";
/** Used for (0002,0003) when the caller gives no SOP Instance UID. */
const DEFAULT_SOP_INSTANCE_UID = "2.25.1";

type TextVr = "AE" | "CS" | "DA" | "LO" | "PN" | "SH" | "UI";
type Vr = TextVr | "OB" | "OW" | "UL" | "US";

interface Element {
  group: number;
  element: number;
  vr: Vr;
  value: Uint8Array;
}

/** Fields of the summary that live in the dataset, with their tag and VR. */
const DATASET_TAGS: Record<
  Exclude<keyof DicomSummary, "transferSyntax">,
  [number, number, TextVr]
> = {
  sopInstanceUid: [0x0008, 0x0018, "UI"],
  studyDate: [0x0008, 0x0020, "DA"],
  accessionNumber: [0x0008, 0x0050, "SH"],
  modality: [0x0008, 0x0060, "CS"],
  studyDescription: [0x0008, 0x1030, "LO"],
  seriesDescription: [0x0008, 0x103e, "LO"],
  patientName: [0x0010, 0x0010, "PN"],
  patientId: [0x0010, 0x0020, "LO"],
  patientBirthDate: [0x0010, 0x0030, "DA"],
  patientSex: [0x0010, 0x0040, "CS"],
  bodyPart: [0x0018, 0x0015, "CS"],
  studyInstanceUid: [0x0020, 0x000d, "UI"],
  seriesInstanceUid: [0x0020, 0x000e, "UI"],
};

/** VRs whose explicit header has 2 reserved bytes and a 32-bit length (PS3.5 §7.1.2). */
const LONG_VRS = new Set<Vr>(["OB", "OW"]);

const utf8 = new TextEncoder();

const concat = (parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** A text value padded to even length: UI with NUL, the rest with a space (PS3.5 §6.2). */
const text = (vr: TextVr, value: string): Uint8Array => {
  const bytes = utf8.encode(value);
  if (bytes.length % 2 === 0) return bytes;
  return concat([bytes, Uint8Array.of(vr === "UI" ? 0x00 : 0x20)]);
};

const uint16 = (n: number): Uint8Array => {
  const out = new Uint8Array(2);
  new DataView(out.buffer).setUint16(0, n, true);
  return out;
};

const uint32 = (n: number): Uint8Array => {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, true);
  return out;
};

/** One data element in explicit VR little endian. */
const encode = ({ group, element, vr, value }: Element): Uint8Array => {
  const head = concat([uint16(group), uint16(element), utf8.encode(vr)]);
  if (LONG_VRS.has(vr)) return concat([head, new Uint8Array(2), uint32(value.length), value]);
  if (value.length > 0xffff) throw new RangeError(`value too long for VR ${vr}`);
  return concat([head, uint16(value.length), value]);
};

const textElement = (group: number, element: number, vr: TextVr, value: string): Element => ({
  group,
  element,
  vr,
  value: text(vr, value),
});

const usElement = (group: number, element: number, n: number): Element => ({
  group,
  element,
  vr: "US",
  value: uint16(n),
});

/** The file meta group, (0002,0000) group length first (PS3.10 §7.1). */
const metaGroup = (transferSyntax: string, sopInstanceUid: string): Uint8Array => {
  const rest = [
    { group: 0x0002, element: 0x0001, vr: "OB", value: Uint8Array.of(0x00, 0x01) } as Element,
    textElement(0x0002, 0x0002, "UI", SECONDARY_CAPTURE),
    textElement(0x0002, 0x0003, "UI", sopInstanceUid),
    textElement(0x0002, 0x0010, "UI", transferSyntax),
    textElement(0x0002, 0x0012, "UI", IMPLEMENTATION_CLASS_UID),
  ].map(encode);
  const length = rest.reduce((n, p) => n + p.length, 0);
  return concat([
    encode({ group: 0x0002, element: 0x0000, vr: "UL", value: uint32(length) }),
    ...rest,
  ]);
};

/** A 16-bit MONOCHROME2 image: the image pixel module plus (7FE0,0010) OW. */
const pixelElements = (rows: number, cols: number): Element[] => {
  const pixels = new Uint8Array(rows * cols * 2);
  const view = new DataView(pixels.buffer);
  for (let i = 0; i < rows * cols; i++) view.setUint16(i * 2, (i * 37) & 0x0fff, true);
  return [
    usElement(0x0028, 0x0002, 1),
    textElement(0x0028, 0x0004, "CS", "MONOCHROME2"),
    usElement(0x0028, 0x0010, rows),
    usElement(0x0028, 0x0011, cols),
    usElement(0x0028, 0x0100, 16),
    usElement(0x0028, 0x0101, 12),
    usElement(0x0028, 0x0102, 11),
    usElement(0x0028, 0x0103, 0),
    { group: 0x7fe0, element: 0x0010, vr: "OW", value: pixels },
  ];
};

// deno-lint-ignore no-control-regex
const isAscii = (s: string): boolean => /^[\x00-\x7f]*$/.test(s);

/** The dataset elements, sorted by tag as PS3.5 §7.1 requires. */
const datasetElements = (
  tags: Partial<Record<keyof DicomSummary, string>>,
  pixels: { rows: number; cols: number } | undefined,
): Element[] => {
  const elements: Element[] = [textElement(0x0008, 0x0016, "UI", SECONDARY_CAPTURE)];
  for (const [key, [group, element, vr]] of Object.entries(DATASET_TAGS)) {
    const value = tags[key as keyof typeof DATASET_TAGS];
    if (value !== undefined) elements.push(textElement(group, element, vr, value));
  }
  if (!Object.values(tags).every((v) => v === undefined || isAscii(v))) {
    elements.push(textElement(0x0008, 0x0005, "CS", "ISO_IR 192"));
  }
  if (pixels) elements.push(...pixelElements(pixels.rows, pixels.cols));
  const key = (e: Element) => e.group * 0x10000 + e.element;
  return elements.sort((a, b) => key(a) - key(b));
};

/**
 * Build a DICOM Part 10 file holding `tags`. Values are written verbatim
 * (dates as `YYYYMMDD`, names as `FAMILY^GIVEN`), UTF-8 encoded; any
 * non-ASCII value adds Specific Character Set `ISO_IR 192`. The transfer
 * syntax follows `deflate` unless `tags.transferSyntax` overrides the UID
 * written in the meta group (the encoding stays explicit VR little endian).
 *
 * @example
 * const bytes = buildDicom({ patientId: "MRN-1", modality: "CT" }, { pixels: { rows: 4, cols: 4 } });
 */
export const buildDicom = (
  tags: Partial<Record<keyof DicomSummary, string>>,
  opts: { deflate?: boolean; pixels?: { rows: number; cols: number } } = {},
): Uint8Array => {
  const syntax = tags.transferSyntax ??
    (opts.deflate ? DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN : EXPLICIT_VR_LITTLE_ENDIAN);
  const meta = metaGroup(syntax, tags.sopInstanceUid ?? DEFAULT_SOP_INSTANCE_UID);
  const dataset = concat(datasetElements(tags, opts.pixels).map(encode));
  const body = opts.deflate ? new Uint8Array(deflateRawSync(dataset)) : dataset;
  return concat([new Uint8Array(128), utf8.encode("DICM"), meta, body]);
};
