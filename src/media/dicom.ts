/**
 * Reads the header of a DICOM Part 10 upload into the few attributes the
 * record indexes. Parsing stops at Pixel Data (7FE0,0010), so image size does
 * not matter, except for the deflated transfer syntax, which must be inflated
 * whole first and is therefore capped.
 *
 * Values are trimmed; empty or absent ones are null. Dates (DA) become ISO
 * `YYYY-MM-DD` when they are valid calendar dates and null otherwise.
 * Person names stay in DICOM form (`FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX`).
 * Errors never carry the parser's own error, which may hold the dataset.
 */
import dicomParser from "dicom-parser";
import type { DataSet } from "dicom-parser";
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
export const MAX_INFLATED_BYTES = 256 * 1024 * 1024;

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

/**
 * Stamp a (FFFC,FFFC) Data Set Trailing Padding OB header over the first 12
 * bytes of the preamble, its length running up to `position`. dicom-parser
 * 1.8.21 reads the inflated array from offset 0, not from `position`, so it
 * walks the preamble and meta group as if they were dataset elements: a
 * non-zero preamble (allowed by PS3.10 §7.1) sends it off the end. With the
 * stamp it skips straight to the dataset; a parser that starts at `position`
 * never sees it. The meta elements keep their offsets, as they are untouched.
 */
const stampSkip = (full: Uint8Array, position: number): void => {
  const view = new DataView(full.buffer, full.byteOffset, 12);
  view.setUint16(0, 0xfffc, true);
  view.setUint16(2, 0xfffc, true);
  full.set([0x4f, 0x42, 0x00, 0x00], 4); // "OB" and two reserved bytes
  view.setUint32(8, position - 12, true);
};

const inflate = (deflated: Uint8Array, maxBytes: number): Uint8Array => {
  try {
    return inflateRawSync(deflated, { maxOutputLength: maxBytes });
  } catch (err) {
    if (err instanceof RangeError) {
      throw new UploadRejectedError("too_large", "the DICOM dataset inflates beyond the limit");
    }
    throw err;
  }
};

/**
 * dicom-parser's `inflater` hook: given the whole file and the offset where
 * the deflated dataset starts (just past the meta group), return the meta
 * header followed by the inflated dataset, as one array.
 */
const inflaterFor = (maxBytes: number) => (bytes: Uint8Array, position: number): Uint8Array => {
  if (position < 132) throw corrupt();
  const body = inflate(bytes.subarray(position), maxBytes);
  const full = new Uint8Array(position + body.length);
  full.set(bytes.subarray(0, position), 0);
  full.set(body, position);
  stampSkip(full, position);
  return full;
};

const rawDataSet = (bytes: Uint8Array, maxInflatedBytes: number): DataSet => {
  try {
    return dicomParser.parseDicom(bytes, {
      untilTag: PIXEL_DATA,
      inflater: inflaterFor(maxInflatedBytes),
    });
  } catch (err) {
    // dicom-parser throws strings and { exception, dataSet } objects; drop them (PHI).
    if (err instanceof UploadRejectedError) throw err;
    throw corrupt();
  }
};

/** The decoder for the dataset's first Specific Character Set value; Latin-1 by default. */
const decoderFor = (ds: DataSet): TextDecoder => {
  const first = ds.string(SPECIFIC_CHARACTER_SET)?.split("\\")[0]?.trim();
  const declared = first?.replace(/^ISO 2022 IR /, "ISO_IR ");
  return new TextDecoder(ENCODINGS[declared ?? ""] ?? "iso-8859-1");
};

/** A text element's value, cut at the first NUL and trimmed; null when absent or empty. */
const readText = (ds: DataSet, tag: string, decoder: TextDecoder): string | null => {
  const el = ds.elements[tag];
  if (!el || el.items || el.hadUndefinedLength || el.length === 0) return null;
  const raw = decoder.decode(ds.byteArray.subarray(el.dataOffset, el.dataOffset + el.length));
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

/** Defined-length Pixel Data must fit the file; parsing stopped at its header. */
const pixelDataFits = (ds: DataSet): boolean => {
  const el = ds.elements[PIXEL_DATA];
  return !el || el.hadUndefinedLength === true ||
    el.dataOffset + el.length <= ds.byteArray.length;
};

const summarise = (ds: DataSet): DicomSummary => {
  const decoder = decoderFor(ds);
  const entries = Object.entries(TAGS).map(([field, tag]) => {
    const value = readText(ds, tag, decoder);
    return [field, DATE_FIELDS.has(field as keyof DicomSummary) ? isoDate(value) : value];
  });
  return Object.fromEntries(entries) as DicomSummary;
};

/** A file that parsed but names no instance, patient, study or series is not DICOM we can use. */
const identifiesSomething = (s: DicomSummary): boolean =>
  Object.entries(s).some(([field, value]) => field !== "transferSyntax" && value !== null);

/**
 * Parse a DICOM Part 10 file and summarise its header.
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
  const ds = rawDataSet(bytes, opts.maxInflatedBytes ?? MAX_INFLATED_BYTES);
  if (!pixelDataFits(ds)) throw corrupt();
  const summary = summarise(ds);
  if (!identifiesSomething(summary)) throw corrupt();
  return summary;
};
