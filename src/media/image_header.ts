/**
 * Images' headers: size and the pixel limits read without decoding anything.
 * Apart from src/media/image.ts (the decoders) so that the upload pipeline,
 * which runs on the server's own thread, checks headers without loading
 * imagescript and libwebp there (about 22 MB resident, measured): those load
 * in the image workers only.
 */
import { UploadRejectedError } from "../errors.ts";
import { hasBytesAt, type ImageType, type SniffedType } from "./sniff.ts";

/** Width and height in pixels. */
export interface Dimensions {
  width: number;
  height: number;
}

/**
 * Most pixels per byte of compressed pixel data each type is allowed, above
 * what any real photo or scan reaches (README, "Clinical photos and
 * documents", for the measurements). A complete baseline or progressive
 * JPEG codes every 8×8 block of every component with at least one bit: 512
 * px/byte at most; a blank white 12 MP JPEG is 36.5. A blank 12 MP PNG is
 * 228 (RGBA), 756 (8-bit grey) or 2,639 (1-bit grey) px/byte; deflate cannot
 * pass ~8,250 for any PNG. A blank lossless 12 MP WebP is 22,814 px/byte, and
 * a harder-working encoder can go further, hence the wide margin there.
 * Above these a small file claims a big frame that the decoder would invent
 * (and a re-encoder then store), so it is refused before anything decodes it.
 */
export const MAX_PIXELS_PER_BYTE: Record<ImageType, number> = {
  "image/jpeg": 1_000,
  "image/png": 10_000,
  "image/webp": 100_000,
};

/** The "corrupt" refusal of an unreadable header. */
export const corrupt = (message = "the image header is unreadable") =>
  new UploadRejectedError("corrupt", message);

// big- and little-endian readers and a chunk id, for image.ts too
export const u16be = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
export const u32be = (b: Uint8Array, o: number) =>
  ((b[o]! << 24) >>> 0) + (b[o + 1]! << 16) + u16be(b, o + 2);
export const u16le = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);
const u24le = (b: Uint8Array, o: number) => u16le(b, o) + (b[o + 2]! << 16);
export const u32le = (b: Uint8Array, o: number) => u24le(b, o) + ((b[o + 3]! << 24) >>> 0);
export const fourcc = (b: Uint8Array, o: number) => String.fromCharCode(...b.subarray(o, o + 4));

const checked = (width: number, height: number): Dimensions => {
  if (width < 1 || height < 1 || width > 0x7fffffff || height > 0x7fffffff) throw corrupt();
  return { width, height };
};

// ---------------------------------------------------------------------------
// Headers

/** Start-of-frame markers C0..CF, except DHT (C4), JPG (C8) and DAC (CC). */
const isSof = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

/** Walks JPEG segments up to the first SOFn and reads its size. */
const jpegDimensions = (b: Uint8Array): Dimensions => {
  if (!hasBytesAt(b, 0, [0xff, 0xd8])) throw corrupt();
  let pos = 2;
  while (pos < b.length) {
    if (b[pos] !== 0xff) throw corrupt();
    while (b[pos] === 0xff) pos++;
    const marker = b[pos++];
    if (marker === undefined || marker === 0xd9 || marker === 0xda) break;
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue;
    if (pos + 2 > b.length) break;
    const length = u16be(b, pos);
    if (length < 2) break;
    if (isSof(marker)) {
      if (length < 7 || pos + 7 > b.length) break;
      // precision (1 byte), then height and width; height 0 (DNL) is refused.
      return checked(u16be(b, pos + 5), u16be(b, pos + 3));
    }
    pos += length;
  }
  throw corrupt();
};

/** PNG: the IHDR chunk must come first and be 13 bytes long. */
const pngDimensions = (b: Uint8Array): Dimensions => {
  if (b.length < 24 || u32be(b, 8) !== 13 || fourcc(b, 12) !== "IHDR") throw corrupt();
  return checked(u32be(b, 16), u32be(b, 20));
};

export interface WebpHeader extends Dimensions {
  animated: boolean;
  lossless: boolean;
}

/** VP8 (lossy) key frame header at `o`: tag, start code 9D 01 2A, 14-bit sizes. */
const vp8Dimensions = (b: Uint8Array, o: number): Dimensions => {
  if (o + 10 > b.length || (b[o]! & 1) !== 0 || !hasBytesAt(b, o + 3, [0x9d, 0x01, 0x2a])) {
    throw corrupt();
  }
  return checked(u16le(b, o + 6) & 0x3fff, u16le(b, o + 8) & 0x3fff);
};

/** VP8L (lossless) header at `o`: signature 0x2F, then width-1 and height-1 in 14 bits each. */
const vp8lDimensions = (b: Uint8Array, o: number): Dimensions => {
  if (o + 5 > b.length || b[o] !== 0x2f) throw corrupt();
  const bits = u32le(b, o + 1);
  return checked((bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1);
};

/** The RIFF chunks of a WebP file: four-character code and payload offset. */
function* webpChunks(b: Uint8Array): Generator<{ id: string; at: number }> {
  let pos = 12;
  while (pos + 8 <= b.length) {
    const size = u32le(b, pos + 4);
    yield { id: fourcc(b, pos), at: pos + 8 };
    pos += 8 + size + (size & 1);
  }
}

/**
 * WebP: the first chunk is VP8, VP8L or VP8X (extended: canvas size, flags).
 * For a still VP8X image the embedded bitstream must have the canvas size,
 * so a small canvas cannot hide a huge frame from the pixel limit.
 */
export const webpHeader = (b: Uint8Array): WebpHeader => {
  if (b.length < 30 || fourcc(b, 0) !== "RIFF" || fourcc(b, 8) !== "WEBP") throw corrupt();
  const first = fourcc(b, 12);
  if (first === "VP8 ") return { ...vp8Dimensions(b, 20), animated: false, lossless: false };
  if (first === "VP8L") return { ...vp8lDimensions(b, 20), animated: false, lossless: true };
  if (first !== "VP8X") throw corrupt();
  const canvas = checked(u24le(b, 24) + 1, u24le(b, 27) + 1);
  if ((b[20]! & 0x02) !== 0) return { ...canvas, animated: true, lossless: false };
  for (const chunk of webpChunks(b)) {
    if (chunk.id !== "VP8 " && chunk.id !== "VP8L") continue;
    const lossless = chunk.id === "VP8L";
    const frame = lossless ? vp8lDimensions(b, chunk.at) : vp8Dimensions(b, chunk.at);
    if (frame.width !== canvas.width || frame.height !== canvas.height) throw corrupt();
    return { ...canvas, animated: false, lossless };
  }
  throw corrupt();
};

export const asImageType = (type: SniffedType): ImageType => {
  if (type === "image/jpeg" || type === "image/png" || type === "image/webp") return type;
  throw new UploadRejectedError("type_not_allowed", `${type} is not an image type`);
};

/**
 * Width and height from the headers alone; nothing is decoded.
 *
 * @throws UploadRejectedError "corrupt" when the headers are unreadable,
 *   "type_not_allowed" when `type` is not an image type.
 * @example
 * ```ts
 * const { width, height } = imageDimensions(bytes, "image/png");
 * ```
 */
export const imageDimensions = (bytes: Uint8Array, type: SniffedType): Dimensions => {
  switch (asImageType(type)) {
    case "image/jpeg":
      return jpegDimensions(bytes);
    case "image/png":
      return pngDimensions(bytes);
    case "image/webp": {
      const { width, height } = webpHeader(bytes);
      return { width, height };
    }
  }
};

/** Offset of a JPEG's first SOS segment (its first scan), or null if it has none. */
const jpegFirstScan = (b: Uint8Array): number | null => {
  let pos = 2;
  while (pos + 4 <= b.length && b[pos] === 0xff) {
    while (b[pos] === 0xff) pos++;
    const marker = b[pos++];
    if (marker === 0xda) return pos - 2;
    if (marker === 0x01 || (marker! >= 0xd0 && marker! <= 0xd7)) continue;
    if (marker === 0xd9 || pos + 2 > b.length) return null;
    pos += u16be(b, pos);
  }
  return null;
};

/**
 * Bytes of compressed pixel data: a JPEG from its first scan on (metadata
 * segments do not count), a PNG's IDAT chunks, a whole WebP. Null when there
 * is none to measure (the image is then corrupt, which the decode finds).
 */
const pixelDataBytes = (b: Uint8Array, type: ImageType): number | null => {
  switch (type) {
    case "image/jpeg": {
      const scan = jpegFirstScan(b);
      return scan === null ? null : b.length - scan;
    }
    case "image/png": {
      let n = 0;
      for (let pos = 8; pos + 12 <= b.length;) {
        const length = u32be(b, pos);
        if (fourcc(b, pos + 4) === "IDAT") n += Math.min(length, b.length - pos - 12);
        pos += 12 + length;
      }
      return n || null;
    }
    case "image/webp":
      return b.length;
  }
};

/**
 * What the header alone decides, before a scanner or a decoder sees the
 * bytes: the size, more than `maxPixels` ("too_many_pixels"), and a ratio of
 * pixels to compressed bytes no real image reaches ("suspicious_compression",
 * {@link MAX_PIXELS_PER_BYTE}).
 *
 * @example
 * ```ts
 * const { width, height } = checkImageHeader(bytes, "image/jpeg", 50_000_000);
 * ```
 */
export const checkImageHeader = (
  bytes: Uint8Array,
  type: SniffedType,
  maxPixels: number,
): Dimensions => {
  const imageType = asImageType(type);
  const { width, height } = imageDimensions(bytes, imageType);
  const pixels = width * height;
  if (pixels > maxPixels) {
    throw new UploadRejectedError("too_many_pixels", `the image has more than ${maxPixels} pixels`);
  }
  const data = pixelDataBytes(bytes, imageType);
  if (data !== null && pixels > data * MAX_PIXELS_PER_BYTE[imageType]) {
    throw new UploadRejectedError(
      "suspicious_compression",
      "the image claims far more pixels than its data can hold",
    );
  }
  return { width, height };
};
