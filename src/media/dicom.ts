/**
 * Reads the header of a DICOM Part 10 upload into the few attributes the
 * record indexes. Every kept attribute sits in groups 0008–0020, and a
 * dataset is in ascending tag order (PS3.5 §7.1), so parsing stops at the
 * first element past the last kept tag; beyond it only element headers are
 * hopped over, a bounded number of them, to check that a defined-length Pixel
 * Data fits the file. A deflated dataset is inflated whole, up to a ceiling
 * (a deflate bomb is refused as too large), because the stored file is what
 * a viewer will inflate later. This runs in the decode workers
 * (`ImagePool`), never on the server's event loop.
 *
 * Values are trimmed; empty or absent ones are null. Dates (DA) become ISO
 * `YYYY-MM-DD` when they are valid calendar dates and null otherwise.
 * Person names stay in DICOM form (`FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX`).
 * Errors never carry the parser's own error, which may hold the dataset.
 */
import dicomParser from "dicom-parser";
import type { ByteStream, Element } from "dicom-parser";
import { inflateRawSync } from "node:zlib";
import { UploadRejectedError } from "../errors.ts";

/** The attributes of one DICOM instance that Chartlog keeps. */
export interface DicomSummary {
  patientName: string | null;
  patientId: string | null;
  /** ISO `YYYY-MM-DD`, or null when absent or not a valid date. */
  patientBirthDate: string | null;
  patientSex: string | null;
  /** ISO `YYYY-MM-DD`, or null when absent or not a valid date. */
  studyDate: string | null;
  studyDescription: string | null;
  accessionNumber: string | null;
  studyInstanceUid: string | null;
  seriesInstanceUid: string | null;
  sopInstanceUid: string | null;
  modality: string | null;
  bodyPart: string | null;
  seriesDescription: string | null;
  transferSyntax: string | null;
}

/** Options of {@link parseDicom}. */
export interface ParseDicomOptions {
  /** Ceiling on the inflated size of a deflated dataset; default {@link MAX_INFLATED_BYTES}. */
  maxInflatedBytes?: number;
}

/** Default ceiling on an inflated dataset (deflate bombs). */
export const MAX_INFLATED_BYTES = 40 * 1024 * 1024;

/**
 * How many times the upload limit a deflated dataset may inflate to. Real
 * deflated DICOM (mostly reports and small images) stays well under it; a
 * bomb (250 MiB of zeros in 255 KB) does not.
 */
export const INFLATE_FACTOR = 4;

/** Where each field lives (PS3.6 data dictionary), in dicom-parser's `xGGGGEEEE` form. */
const TAGS: Record<keyof DicomSummary, string> = {
  patientName: "x00100010",
  patientId: "x00100020",
  patientBirthDate: "x00100030",
  patientSex: "x00100040",
  studyDate: "x00080020",
  studyDescription: "x00081030",
  accessionNumber: "x00080050",
  studyInstanceUid: "x0020000d",
  seriesInstanceUid: "x0020000e",
  sopInstanceUid: "x00080018",
  modality: "x00080060",
  bodyPart: "x00180015",
  seriesDescription: "x0008103e",
  transferSyntax: "x00020010",
};

const DATE_FIELDS: ReadonlySet<keyof DicomSummary> = new Set(["patientBirthDate", "studyDate"]);
const SPECIFIC_CHARACTER_SET = "x00080005";
const PIXEL_DATA = "x7fe00010";

/** Specific Character Set defined terms (PS3.3 C.12.1.1.2) to WHATWG encodings. */
const ENCODINGS: Record<string, string> = {
  "ISO_IR 100": "iso-8859-1",
  "ISO_IR 101": "iso-8859-2",
  "ISO_IR 109": "iso-8859-3",
  "ISO_IR 110": "iso-8859-4",
  "ISO_IR 144": "iso-8859-5",
  "ISO_IR 127": "iso-8859-6",
  "ISO_IR 126": "iso-8859-7",
  "ISO_IR 138": "iso-8859-8",
  "ISO_IR 148": "iso-8859-9",
  "ISO_IR 166": "windows-874",
  "ISO_IR 13": "shift_jis",
  "ISO_IR 192": "utf-8",
  "GB18030": "gb18030",
  "GBK": "gbk",
};

const corrupt = () => new UploadRejectedError("corrupt", "the DICOM file could not be parsed");

const DEFLATED = "1.2.840.10008.1.2.1.99";
const IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2";
const EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2";
/** The highest tag in {@link TAGS}' dataset part: nothing after it is kept. */
const LAST_KEPT = Object.values(TAGS).filter((t) => !t.startsWith("x0002")).sort().at(-1)!;
/** Element headers hopped over after the kept tags, looking for Pixel Data. */
const MAX_HOPS = 4096;
const UNDEFINED_LENGTH = 0xffffffff;
/** Explicit VRs with two reserved bytes and a 32-bit length (PS3.5 §7.1.2). */
const LONG_VRS = new Set([
  "OB",
  "OD",
  "OF",
  "OL",
  "OV",
  "OW",
  "SQ",
  "SV",
  "UC",
  "UN",
  "UR",
  "UT",
  "UV",
]);

const inflate = (deflated: Uint8Array, maxBytes: number): Uint8Array => {
  try {
    // zlib takes no ceiling above its buffer limit; no DICOM header needs a GiB
    return inflateRawSync(deflated, { maxOutputLength: Math.min(maxBytes, 2 ** 30) });
  } catch (err) {
    if (err instanceof RangeError) {
      throw new UploadRejectedError("too_large", "the DICOM dataset inflates beyond the limit");
    }
    throw err;
  }
};

/** One kept element and the bytes its offsets refer to. */
interface Kept {
  bytes: Uint8Array;
  element: Element;
}

/** The header of the next element, without its value, or null at the end. */
const peekHeader = (stream: ByteStream, explicit: boolean) => {
  const at = stream.position;
  const tag = dicomParser.readTag(stream);
  let length: number;
  if (explicit) {
    const vr = stream.readFixedString(2);
    if (LONG_VRS.has(vr)) {
      stream.seek(2);
      length = stream.readUint32();
    } else length = stream.readUint16();
  } else length = stream.readUint32();
  const dataOffset = stream.position;
  stream.position = at;
  return { tag, length, dataOffset };
};

/**
 * After the kept tags: hop over element headers (bounded) to Pixel Data and
 * check that a defined-length one fits. An undefined length ends the hop:
 * only a full parse could find its end, and nothing there is kept.
 */
const checkRest = (stream: ByteStream, explicit: boolean): void => {
  const size = stream.byteArray.length;
  for (let hop = 0; hop < MAX_HOPS && stream.position < size; hop++) {
    const h = peekHeader(stream, explicit);
    if (h.length === UNDEFINED_LENGTH) return;
    if (h.dataOffset + h.length > size) throw corrupt();
    if (h.tag === PIXEL_DATA) return;
    stream.position = h.dataOffset + h.length;
  }
};

/** The dataset's elements up to the last kept tag, then a bounded check of the rest. */
const readDataset = (stream: ByteStream, explicit: boolean): Record<string, Element> => {
  const elements: Record<string, Element> = {};
  const size = stream.byteArray.length;
  while (stream.position < size) {
    if (peekHeader(stream, explicit).tag > LAST_KEPT) {
      checkRest(stream, explicit);
      break;
    }
    const el = explicit
      ? dicomParser.readDicomElementExplicit(stream, [])
      : dicomParser.readDicomElementImplicit(stream);
    if (stream.position > size) throw corrupt(); // the value runs past the end
    elements[el.tag] = el;
  }
  return elements;
};

/** The kept elements of a Part 10 file: meta group from `bytes`, dataset perhaps inflated. */
const keptElements = (bytes: Uint8Array, maxInflatedBytes: number): Map<string, Kept> => {
  const meta = dicomParser.readPart10Header(bytes) as
    & ReturnType<
      typeof dicomParser.readPart10Header
    >
    & { position: number };
  const syntaxElement = meta.elements[TAGS.transferSyntax];
  if (!syntaxElement) throw corrupt();
  const syntax = readText(bytes, syntaxElement, new TextDecoder("latin1"));
  const data = syntax === DEFLATED
    ? inflate(bytes.subarray(meta.position), maxInflatedBytes)
    : bytes;
  const start = syntax === DEFLATED ? 0 : meta.position;
  const parser = syntax === EXPLICIT_BIG_ENDIAN
    ? dicomParser.bigEndianByteArrayParser
    : dicomParser.littleEndianByteArrayParser;
  const stream = new dicomParser.ByteStream(parser, data, start);
  const dataset = readDataset(stream, syntax !== IMPLICIT_LITTLE_ENDIAN);
  const kept = new Map<string, Kept>();
  for (const [tag, element] of Object.entries(meta.elements)) kept.set(tag, { bytes, element });
  for (const [tag, element] of Object.entries(dataset)) kept.set(tag, { bytes: data, element });
  return kept;
};

const parseElements = (bytes: Uint8Array, maxInflatedBytes: number): Map<string, Kept> => {
  try {
    return keptElements(bytes, maxInflatedBytes);
  } catch (err) {
    // dicom-parser throws strings and { exception, dataSet } objects; drop them (PHI).
    if (err instanceof UploadRejectedError) throw err;
    throw corrupt();
  }
};

/** The decoder for the dataset's first Specific Character Set value; Latin-1 by default. */
const decoderFor = (kept: Map<string, Kept>): TextDecoder => {
  const k = kept.get(SPECIFIC_CHARACTER_SET);
  const value = k ? readText(k.bytes, k.element, new TextDecoder("latin1")) : null;
  const first = value?.split("\\")[0]?.trim();
  const declared = first?.replace(/^ISO 2022 IR /, "ISO_IR ");
  return new TextDecoder(ENCODINGS[declared ?? ""] ?? "iso-8859-1");
};

/** A text element's value, cut at the first NUL and trimmed; null when absent or empty. */
const readText = (bytes: Uint8Array, el: Element, decoder: TextDecoder): string | null => {
  if (el.items || el.hadUndefinedLength || el.length === 0) return null;
  if (el.dataOffset + el.length > bytes.length) throw corrupt();
  const raw = decoder.decode(bytes.subarray(el.dataOffset, el.dataOffset + el.length));
  const value = (raw.split("\0")[0] ?? "").trim();
  return value === "" ? null : value;
};

/** DA `YYYYMMDD` (or the retired `YYYY.MM.DD`) to ISO `YYYY-MM-DD`; null unless a real date. */
export const isoDate = (value: string | null): string | null => {
  const m = value ? /^(\d{4})\.?(\d{2})\.?(\d{2})$/.exec(value) : null;
  if (!m) return null;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(year, month - 1, day));
  const valid = year > 0 && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
  return valid ? `${m[1]}-${m[2]}-${m[3]}` : null;
};

const summarise = (kept: Map<string, Kept>): DicomSummary => {
  const decoder = decoderFor(kept);
  const entries = Object.entries(TAGS).map(([field, tag]) => {
    const k = kept.get(tag);
    const value = k ? readText(k.bytes, k.element, decoder) : null;
    return [field, DATE_FIELDS.has(field as keyof DicomSummary) ? isoDate(value) : value];
  });
  return Object.fromEntries(entries) as DicomSummary;
};

/** A file that parsed but names no instance, patient, study or series is not DICOM we can use. */
const identifiesSomething = (s: DicomSummary): boolean =>
  Object.entries(s).some(([field, value]) => field !== "transferSyntax" && value !== null);

/**
 * Parse a DICOM Part 10 file and summarise its header. Synchronous and
 * CPU-bound: the server calls it through `ImagePool.dicom`.
 *
 * @throws {UploadRejectedError} `corrupt` when the bytes are not a readable
 *   Part 10 file: no `DICM` prefix, a broken meta group, an element running
 *   past the end (truncation), truncated Pixel Data, a broken deflate stream,
 *   or a dataset with none of the summary's attributes. `too_large` when a
 *   deflated dataset inflates beyond `maxInflatedBytes`.
 *
 * @example
 * const summary = parseDicom(bytes);
 * summary.studyDate; // "2024-01-31"
 */
export const parseDicom = (bytes: Uint8Array, opts: ParseDicomOptions = {}): DicomSummary => {
  const summary = summarise(parseElements(bytes, opts.maxInflatedBytes ?? MAX_INFLATED_BYTES));
  if (!identifiesSomething(summary)) throw corrupt();
  return summary;
};
