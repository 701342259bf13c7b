/**
 * What a file is, decided from its bytes alone (never its name or declared
 * type), and whether it is also something else: a polyglot that one reader
 * takes for an image and another for a PDF, a ZIP or a web page.
 */

/** The content types Chartlog accepts, as recognised from magic bytes. */
export type SniffedType =
  | "image/jpeg"
  | "image/png"
  | "image/webp"
  | "application/pdf"
  | "application/dicom"
  | "text/plain";

/** The image types among them: the ones `src/media/image.ts` decodes. */
export type ImageType = "image/jpeg" | "image/png" | "image/webp";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const ascii = (s: string) => Array.from(s, (c) => c.charCodeAt(0));

/** True when `bytes` holds `sig` at `offset`. */
export const hasBytesAt = (bytes: Uint8Array, offset: number, sig: readonly number[]): boolean =>
  bytes.length >= offset + sig.length && sig.every((b, i) => bytes[offset + i] === b);

const hasAsciiAt = (bytes: Uint8Array, offset: number, s: string) =>
  hasBytesAt(bytes, offset, ascii(s));

/**
 * Plain text: valid UTF-8 throughout, no NUL and no C0 control other than
 * tab, line feed, carriage return and form feed. UTF-8 continuation bytes are
 * all >= 0x80, so a byte scan for controls is exact.
 */
const isText = (bytes: Uint8Array): boolean => {
  if (bytes.length === 0) return false;
  for (const b of bytes) {
    if (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0c && b !== 0x0d) return false;
  }
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
};

/**
 * The type of a file from its magic bytes, or null when it is none we accept.
 * An empty file is null.
 *
 * @example
 * ```ts
 * sniff(new Uint8Array([0xff, 0xd8, 0xff, 0xe0])); // "image/jpeg"
 * ```
 */
export const sniff = (bytes: Uint8Array): SniffedType | null => {
  if (hasBytesAt(bytes, 0, [0xff, 0xd8, 0xff])) return "image/jpeg";
  if (hasBytesAt(bytes, 0, PNG_SIGNATURE)) return "image/png";
  if (hasAsciiAt(bytes, 0, "RIFF") && hasAsciiAt(bytes, 8, "WEBP")) return "image/webp";
  if (hasAsciiAt(bytes, 0, "%PDF-")) return "application/pdf";
  if (hasAsciiAt(bytes, 128, "DICM")) return "application/dicom";
  if (isText(bytes)) return "text/plain";
  return null;
};

// ---------------------------------------------------------------------------
// Where an image's own bytes end. Readers of other formats look past it.

const u16be = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const u32be = (b: Uint8Array, o: number) =>
  ((b[o]! << 24) >>> 0) + (b[o + 1]! << 16) + u16be(b, o + 2);
const u32le = (b: Uint8Array, o: number) =>
  b[o]! + (b[o + 1]! << 8) + (b[o + 2]! << 16) + ((b[o + 3]! << 24) >>> 0);

/** Markers without a length: TEM and RST0..RST7. */
const isStandaloneMarker = (m: number) => m === 0x01 || (m >= 0xd0 && m <= 0xd7);

/**
 * The offset of the marker that ends entropy-coded data starting at `from`.
 * Inside a scan 0xFF is followed by 0x00 (stuffing), a restart marker or more
 * 0xFF fill; anything else is a real marker.
 */
const scanEnd = (b: Uint8Array, from: number): number | null => {
  let i = b.indexOf(0xff, from);
  while (i !== -1 && i + 1 < b.length) {
    const next = b[i + 1]!;
    if (next === 0xff) i += 1;
    else if (next === 0x00 || (next >= 0xd0 && next <= 0xd7)) i = b.indexOf(0xff, i + 2);
    else return i;
  }
  return null;
};

/**
 * One past the EOI of the JPEG stream that starts at `start`, or null when the
 * segments do not add up (truncated or damaged). Walks every segment and scan,
 * so progressive JPEGs (many scans) are followed to their real end.
 */
export const jpegEnd = (b: Uint8Array, start = 0): number | null => {
  if (!hasBytesAt(b, start, [0xff, 0xd8])) return null;
  let pos = start + 2;
  while (pos < b.length) {
    if (b[pos] !== 0xff) return null;
    while (b[pos] === 0xff) pos++;
    if (pos >= b.length) return null;
    const marker = b[pos++]!;
    if (marker === 0xd9) return pos;
    if (isStandaloneMarker(marker)) continue;
    if (marker === 0x00 || marker === 0xd8 || pos + 2 > b.length) return null;
    const length = u16be(b, pos);
    if (length < 2 || pos + length > b.length) return null;
    pos += length;
    if (marker === 0xda) {
      const end = scanEnd(b, pos);
      if (end === null) return null;
      pos = end;
    }
  }
  return null;
};

/** One past the IEND chunk (with its CRC), or null when a chunk runs past the end. */
export const pngEnd = (b: Uint8Array): number | null => {
  if (!hasBytesAt(b, 0, PNG_SIGNATURE)) return null;
  let pos = 8;
  while (pos + 12 <= b.length) {
    const length = u32be(b, pos);
    const end = pos + 12 + length;
    if (length > 0x7fffffff || end > b.length) return null;
    if (hasAsciiAt(b, pos + 4, "IEND")) return end;
    pos = end;
  }
  return null;
};

/** One past the RIFF container (8 + its declared size), or null when the file is shorter. */
export const webpEnd = (b: Uint8Array): number | null => {
  if (!hasAsciiAt(b, 0, "RIFF") || !hasAsciiAt(b, 8, "WEBP")) return null;
  const end = 8 + u32le(b, 4);
  return end <= b.length ? end : null;
};

/**
 * Where the image's own bytes end, or null when its structure does not add
 * up. Bytes after it are a trailer: no image reader needs them.
 */
export const imageEnd = (bytes: Uint8Array, type: ImageType): number | null => {
  switch (type) {
    case "image/jpeg":
      return jpegEnd(bytes);
    case "image/png":
      return pngEnd(bytes);
    case "image/webp":
      return webpEnd(bytes);
  }
};

// ---------------------------------------------------------------------------
// Polyglots

/** PDF readers look for the header this far in (Acrobat: first 1024 bytes). */
const PDF_HEADER_WINDOW = 1024;
/** How far into an image we look for markup a browser might sniff as HTML. */
const MARKUP_WINDOW = 1024;
/** Tags that turn bytes into an active web page when a browser sniffs them. */
const MARKUP_TAGS = ["<script", "<html", "<svg", "<iframe", "<!doctype html"];
/** Signatures that, in a trailer, make another reader see a second file. */
const TRAILER_SIGNATURES = ["PK\x03\x04", "PK\x05\x06", "%PDF"];
/** Executable or archive magic that has no business in a DICOM preamble. */
const PREAMBLE_SIGNATURES = ["MZ", "\x7fELF", "PK\x03\x04", "#!"];

/** Bytes as a string of the same length, one char per byte, for ASCII searches. */
const latin1 = (bytes: Uint8Array) => new TextDecoder("latin1").decode(bytes);

const hasMarkup = (bytes: Uint8Array) => {
  const s = latin1(bytes).toLowerCase();
  return MARKUP_TAGS.some((tag) => s.includes(tag));
};

/**
 * Where an HTML or XML parser would see markup: `<` opening a tag (a name
 * starts right after it: a letter in HTML; in XML also `_`, `:` or any
 * non-ASCII letter), a closing tag `</`, a declaration or comment `<!`, or a
 * processing instruction `<?`. Whatever follows the name does not matter:
 * `<img onerror=…>`, `<body onload>` and `<x` alike. A `<` followed by a
 * space, a digit or another symbol opens nothing, so `K+ <5 mmol/L`,
 * `a < b > c` and `<= 3` are text.
 */
const MARKUP_START = /<[\p{L}_:!?/]/u;

/** Text that a browser or XML reader would parse as elements, whatever the tag. */
export const hasMarkupStructure = (text: string): boolean => MARKUP_START.test(text);

/**
 * Data appended after the image. JPEG trailers may legitimately hold more
 * JPEG streams right after the first (MPF: gain maps, depth maps, previews);
 * those are walked over, so their compressed bytes cannot match a signature
 * by chance. Each walk covers new bytes, so this stays linear. An image whose
 * structure does not add up has no trailer here: the decoder rejects it.
 */
const trailerHasSignature = (bytes: Uint8Array, type: ImageType): boolean => {
  let pos = imageEnd(bytes, type);
  if (pos === null) return false;
  while (type === "image/jpeg" && pos < bytes.length) {
    while (bytes[pos] === 0x00) pos++;
    const next = jpegEnd(bytes, pos);
    if (next === null) break;
    pos = next;
  }
  const rest = latin1(bytes.subarray(pos));
  return TRAILER_SIGNATURES.some((sig) => rest.includes(sig));
};

/**
 * True when a file of `type` also carries another format's signature where
 * that format's reader would find it:
 *
 * - any type but PDF: `%PDF-` in the first 1024 bytes (PDF readers search there);
 * - images: a ZIP header (`PK\x03\x04`, or the end record `PK\x05\x06`) or
 *   `%PDF` after the image's end (JPEG EOI, PNG IEND, WebP RIFF size), and
 *   HTML/SVG/script tags in the first 1 KB (browser content sniffing);
 * - text: any markup at all ({@link hasMarkupStructure}), not a list of tags;
 * - DICOM: such a tag in the first 1 KB, or executable or archive magic at
 *   the start of the 128-byte preamble (the "PE-DICOM" trick).
 *
 * PDF itself is not checked here: what a PDF may carry is a question for PDF
 * sanitisation. Normal camera JPEGs (EXIF, XMP, MPF trailers) do not match.
 */
export const isPolyglot = (bytes: Uint8Array, type: SniffedType): boolean => {
  if (type === "application/pdf") return false;
  const head = bytes.subarray(0, Math.max(PDF_HEADER_WINDOW, MARKUP_WINDOW));
  if (latin1(head.subarray(0, PDF_HEADER_WINDOW)).includes("%PDF-")) return true;
  switch (type) {
    case "text/plain":
      return hasMarkupStructure(new TextDecoder().decode(bytes));
    case "application/dicom":
      return hasMarkup(head.subarray(0, MARKUP_WINDOW)) ||
        PREAMBLE_SIGNATURES.some((sig) => hasAsciiAt(bytes, 0, sig));
    default:
      return hasMarkup(head.subarray(0, MARKUP_WINDOW)) || trailerHasSignature(bytes, type);
  }
};
