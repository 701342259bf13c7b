/**
 * Images in: size read from the headers (no decode), a pixel limit enforced
 * before anything is decoded, then a decode and re-encode to the same format
 * that leaves every metadata block behind (EXIF with GPS, XMP, ICC, PNG text
 * chunks), plus a JPEG thumbnail.
 *
 * PNG and JPEG decode with imagescript; WebP with @jsquash/webp (libwebp in
 * WebAssembly, loaded from the package's own files, nothing fetched). Its
 * libwebp is 1.1.0, older than the CVE-2023-4863 fix; an overflow stays in
 * the WebAssembly sandbox, and each image gets a fresh instance.
 * imagescript loads a native Node-API addon for its encoders, so a process
 * importing this module needs `--allow-ffi` as well as `--allow-read` and
 * `--allow-env`.
 *
 * A JPEG's EXIF orientation is applied to the pixels before the EXIF block
 * is dropped, so a photo taken with the phone upright stays upright.
 * (Orientation in WebP or PNG metadata is rare and not applied.)
 */
import { Image, type JPEGQuality, type WEBPQuality } from "imagescript";
import webpFactory from "@jsquash/webp/codec/dec/webp_dec.js";
import jpeglib from "imagescript/wasm/node/jpeg.js";
import { UploadRejectedError } from "../errors.ts";
import { imageEnd, type ImageType, sniff, type SniffedType } from "./sniff.ts";
import {
  asImageType,
  checkImageHeader,
  corrupt,
  type Dimensions,
  fourcc,
  imageDimensions,
  u16be,
  u16le,
  u32be,
  u32le,
  type WebpHeader,
  webpHeader,
} from "./image_header.ts";

export {
  checkImageHeader,
  type Dimensions,
  imageDimensions,
  MAX_PIXELS_PER_BYTE,
} from "./image_header.ts";

/** Options of {@link processImage}. */
export interface ProcessImageOptions {
  /** Largest width × height accepted, checked from the headers before decoding. */
  maxPixels: number;
  /** Longest side of the thumbnail; default 256. Smaller images are not upscaled. */
  thumbnailSize?: number;
  /** Quality (1-100) of a re-encoded JPEG; default 90. */
  jpegQuality?: number;
  /** Quality (1-100) of a re-encoded lossy WebP; default 90. Lossless stays lossless. */
  webpQuality?: number;
  /**
   * Largest re-encoded image kept: past it a lossy format is re-encoded at
   * lower qualities ({@link FALLBACK_QUALITIES}), a PNG at the highest
   * compression, and what is still larger is refused ("too_large").
   */
  maxBytes?: number;
}

/** The outcome of {@link processImage}. */
export interface ProcessedImage {
  /** The re-encoded image, same format as the input, without metadata. */
  bytes: Uint8Array;
  contentType: ImageType;
  width: number;
  height: number;
  /** A JPEG whose longest side is at most `thumbnailSize`, aspect ratio kept. */
  thumbnail: Uint8Array;
  /** Milliseconds (performance.now()) spent in each step. */
  timings: { decode: number; encode: number; thumbnail: number };
}

/** Qualities tried, in order, when a lossy re-encode is larger than `maxBytes`. */
export const FALLBACK_QUALITIES = [75, 60, 45] as const;

const DEFAULT_THUMBNAIL_SIZE = 256;
const DEFAULT_QUALITY = 90;
const THUMBNAIL_QUALITY = 80;

// ---------------------------------------------------------------------------
// Decoding

/**
 * The Emscripten factory of @jsquash/webp's decoder, typed here: the
 * package's own declarations lean on a global namespace that does not resolve.
 */
type WebpDecoderFactory = (options: {
  noInitialRun: boolean;
  instantiateWasm: (
    imports: WebAssembly.Imports,
    done: (instance: WebAssembly.Instance) => void,
  ) => WebAssembly.Exports;
}) => Promise<{ decode(data: BufferSource): ImageData | null }>;
const createWebpDecoder = webpFactory as unknown as WebpDecoderFactory;

let webpWasm: Promise<WebAssembly.Module> | null = null;

/** Compiles libwebp's decoder once, from the package's own .wasm file (read, never fetched). */
const webpModule = (): Promise<WebAssembly.Module> =>
  webpWasm ??= Deno.readFile(
    new URL(import.meta.resolve("@jsquash/webp/codec/dec/webp_dec.wasm")),
  ).then((wasm) => WebAssembly.compile(wasm)).catch((e) => {
    webpWasm = null;
    throw e;
  });

/**
 * Decodes a WebP in a fresh instance of the decoder, so no heap state (or a
 * heap corrupted by a hostile file) outlives one image, and the memory a
 * large image grew is released with it. An instance costs about a millisecond.
 */
const decodeWebp = async (bytes: Uint8Array, module: WebAssembly.Module): Promise<Image> => {
  const decoder = await createWebpDecoder({
    noInitialRun: true,
    instantiateWasm: (imports, done) => {
      const instance = new WebAssembly.Instance(module, imports);
      done(instance);
      return instance.exports;
    },
  });
  const data = decoder.decode(bytes as Uint8Array<ArrayBuffer>);
  if (!data) throw new Error("WebP decoding failed");
  const image = new Image(data.width, data.height);
  image.bitmap.set(data.data);
  return image;
};

/** Decodes; a failure of the decoder on these bytes is "corrupt", a missing decoder is not. */
/** What imagescript's JPEG decoder (WebAssembly) hands back. */
interface JpegFramebuffer {
  width: number;
  height: number;
  /** 0 grey, 1 RGB, 2 CMYK (Adobe, inverted) */
  format: number;
  buffer: Uint8Array;
}
const jpegDecoder = jpeglib as {
  init(): Promise<{ decode(b: Uint8Array, w: number, h: number): JpegFramebuffer }>;
};
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * A JPEG through imagescript's own decoder, with the copy to RGBA done a
 * pixel (32-bit word) at a time: `Image.decode` copies each pixel with a
 * subarray and a `set`, which was ~40% of a 12-megapixel decode.
 */
export const decodeJpeg = async (bytes: Uint8Array): Promise<Image> => {
  if (!LITTLE_ENDIAN) return await Image.decode(bytes);
  const fb = (await jpegDecoder.init()).decode(bytes, 0, 0);
  const out = new Image(fb.width, fb.height);
  const px = new Uint32Array(out.bitmap.buffer, out.bitmap.byteOffset, fb.width * fb.height);
  const b = fb.buffer;
  const n = px.length;
  if (fb.format === 1) {
    for (let i = 0, j = 0; i < n; i++, j += 3) {
      px[i] = (0xff000000 | (b[j + 2]! << 16) | (b[j + 1]! << 8) | b[j]!) >>> 0;
    }
  } else if (fb.format === 0) {
    for (let i = 0; i < n; i++) px[i] = (0xff000000 | (b[i]! * 0x010101)) >>> 0;
  } else if (fb.format === 2) {
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      const k = 1 - b[j + 3]! / 255;
      const c = (v: number) => Math.round(255 * (1 - v / 255) * k) & 0xff;
      px[i] = (0xff000000 | (c(b[j + 2]!) << 16) | (c(b[j + 1]!) << 8) | c(b[j]!)) >>> 0;
    }
  } else throw new Error("unknown JPEG pixel format");
  return out;
};

const decode = async (bytes: Uint8Array, type: ImageType): Promise<Image> => {
  try {
    if (type === "image/webp") return await decodeWebp(bytes, await webpModule());
    return type === "image/jpeg" ? await decodeJpeg(bytes) : await Image.decode(bytes);
  } catch {
    throw corrupt("the image could not be decoded");
  }
};

// ---------------------------------------------------------------------------
// Encoding

/** The only PNG chunks kept: image data, no text, time or EXIF. */
const PNG_KEEP = new Set(["IHDR", "PLTE", "tRNS", "IDAT", "IEND"]);

/** imagescript writes "Creation Time" and "Software" text chunks; drop them. */
const stripPngChunks = (png: Uint8Array): Uint8Array => {
  const parts: Uint8Array[] = [png.subarray(0, 8)];
  for (let pos = 8; pos + 12 <= png.length;) {
    const end = pos + 12 + u32be(png, pos);
    if (PNG_KEEP.has(fourcc(png, pos + 4))) parts.push(png.subarray(pos, end));
    pos = end;
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};

const quality = (q: number | undefined) =>
  Math.min(100, Math.max(1, Math.round(q ?? DEFAULT_QUALITY)));

const encode = async (
  image: Image,
  type: ImageType,
  lossless: boolean,
  opts: ProcessImageOptions,
  smallest = false,
): Promise<Uint8Array> => {
  switch (type) {
    case "image/jpeg":
      return await image.encodeJPEG(quality(opts.jpegQuality) as JPEGQuality);
    case "image/png":
      return stripPngChunks(await image.encode(smallest ? 9 : 1));
    case "image/webp":
      return await image.encodeWEBP(lossless ? null : quality(opts.webpQuality) as WEBPQuality);
  }
};

/**
 * The re-encoded image within `opts.maxBytes`: lossy formats step down
 * through {@link FALLBACK_QUALITIES}, a PNG tries the highest compression;
 * still too large is refused.
 */
const encodeWithin = async (
  image: Image,
  type: ImageType,
  lossless: boolean,
  opts: ProcessImageOptions,
): Promise<Uint8Array> => {
  let out = await encode(image, type, lossless, opts);
  const max = opts.maxBytes ?? Infinity;
  if (out.length <= max) return out;
  if (type === "image/png") out = await encode(image, type, lossless, opts, true);
  else if (!lossless) {
    const start = quality(type === "image/jpeg" ? opts.jpegQuality : opts.webpQuality);
    for (const q of FALLBACK_QUALITIES.filter((q) => q < start)) {
      out = await encode(image, type, lossless, { ...opts, jpegQuality: q, webpQuality: q });
      if (out.length <= max) break;
    }
  }
  if (out.length > max) {
    throw new UploadRejectedError("too_large", `the re-encoded image exceeds ${max} bytes`);
  }
  return out;
};

/** Thumbnail size: longest side `size`, aspect kept, never larger than the source. */
export const thumbnailDimensions = (width: number, height: number, size: number): Dimensions => {
  const scale = Math.min(1, size / Math.max(width, height));
  return {
    width: Math.max(1, Math.round(width * scale)),
    height: Math.max(1, Math.round(height * scale)),
  };
};

/**
 * Box-filter downscale, flattened onto white (JPEG has no alpha). Every
 * source pixel lands in exactly one target pixel, so large reductions do not
 * alias the way imagescript's nearest-neighbour resize does.
 */
const shrinkOntoWhite = (src: Image, width: number, height: number): Image => {
  const { bitmap, width: sw, height: sh } = src;
  const out = new Image(width, height);
  const col = Uint32Array.from({ length: sw }, (_, x) => Math.floor((x * width) / sw));
  const sums = new Float64Array(width * 3);
  const counts = new Uint32Array(width);
  let y = 0;
  for (let ty = 0; ty < height; ty++) {
    sums.fill(0);
    counts.fill(0);
    for (; y < sh && Math.floor((y * height) / sh) === ty; y++) {
      for (let x = 0, i = y * sw * 4; x < sw; x++, i += 4) {
        const a = bitmap[i + 3]!, white = 255 * (255 - a), tx = col[x]!, t = tx * 3;
        sums[t] = sums[t]! + bitmap[i]! * a + white;
        sums[t + 1] = sums[t + 1]! + bitmap[i + 1]! * a + white;
        sums[t + 2] = sums[t + 2]! + bitmap[i + 2]! * a + white;
        counts[tx] = counts[tx]! + 1;
      }
    }
    for (let tx = 0, o = ty * width * 4; tx < width; tx++, o += 4) {
      const n = counts[tx]! * 255 || 1;
      out.bitmap[o] = sums[tx * 3]! / n;
      out.bitmap[o + 1] = sums[tx * 3 + 1]! / n;
      out.bitmap[o + 2] = sums[tx * 3 + 2]! / n;
      out.bitmap[o + 3] = 255;
    }
  }
  return out;
};

const thumbnail = (image: Image, size: number): Promise<Uint8Array> => {
  const { width, height } = thumbnailDimensions(image.width, image.height, size);
  return shrinkOntoWhite(image, width, height).encodeJPEG(THUMBNAIL_QUALITY);
};

// ---------------------------------------------------------------------------

/**
 * The EXIF orientation (1–8) of a JPEG, from IFD0 of its APP1 "Exif"
 * segment; 1 when there is none or it cannot be read.
 */
export const jpegOrientation = (b: Uint8Array): number => {
  let o = 2;
  while (o + 4 <= b.length && b[o] === 0xff) {
    const marker = b[o + 1]!;
    if (marker === 0xda || marker === 0xd9) break; // image data: no metadata after this
    const len = u16be(b, o + 2);
    const start = o + 4;
    if (marker === 0xe1 && len >= 16 && fourcc(b, start) === "Exif" && b[start + 4] === 0) {
      return tiffOrientation(b.subarray(start + 6, o + 2 + len));
    }
    o += 2 + len;
  }
  return 1;
};

const tiffOrientation = (t: Uint8Array): number => {
  if (t.length < 8) return 1;
  const le = t[0] === 0x49 && t[1] === 0x49; // "II"; "MM" is big-endian
  if (!le && !(t[0] === 0x4d && t[1] === 0x4d)) return 1;
  const u16 = (o: number) => (le ? u16le(t, o) : u16be(t, o));
  const u32 = (o: number) => (le ? u32le(t, o) : u32be(t, o));
  const ifd = u32(4);
  if (ifd + 2 > t.length) return 1;
  const n = u16(ifd);
  for (let i = 0; i < n; i++) {
    const e = ifd + 2 + i * 12;
    if (e + 12 > t.length) return 1;
    if (u16(e) === 0x0112) {
      const v = u16(e + 8);
      return v >= 1 && v <= 8 ? v : 1;
    }
  }
  return 1;
};

/**
 * Turns pixels stored in EXIF orientation `o` upright. Written out rather
 * than with imagescript's rotate, whose 90° turns scramble images that are
 * not square (1.3.1).
 */
const applyOrientation = (src: Image, o: number): Image => {
  if (o < 2 || o > 8) return src;
  const w = src.width;
  const h = src.height;
  const swap = o >= 5;
  const out = new Image(swap ? h : w, swap ? w : h);
  const from = new Uint32Array(src.bitmap.buffer, src.bitmap.byteOffset, w * h);
  const to = new Uint32Array(out.bitmap.buffer, out.bitmap.byteOffset, w * h);
  const ow = out.width;
  // for each output pixel (x, y), the stored pixel it shows
  const source: (x: number, y: number) => number = [
    (x: number, y: number) => y * w + x,
    (x: number, y: number) => y * w + (w - 1 - x), // 2: mirrored
    (x: number, y: number) => (h - 1 - y) * w + (w - 1 - x), // 3: upside down
    (x: number, y: number) => (h - 1 - y) * w + x, // 4: flipped
    (x: number, y: number) => x * w + y, // 5: transposed
    (x: number, y: number) => (h - 1 - x) * w + y, // 6: turn 90° clockwise
    (x: number, y: number) => (h - 1 - x) * w + (w - 1 - y), // 7: transverse
    (x: number, y: number) => x * w + (w - 1 - y), // 8: turn 90° counter-clockwise
  ][o - 1]!;
  for (let y = 0; y < out.height; y++) {
    for (let x = 0; x < ow; x++) to[y * ow + x] = from[source(x, y)]!;
  }
  return out;
};

const checkOptions = (opts: ProcessImageOptions) => {
  if (!(opts.maxPixels > 0)) throw new RangeError("maxPixels must be positive");
  if (opts.thumbnailSize !== undefined && !(opts.thumbnailSize >= 1)) {
    throw new RangeError("thumbnailSize must be at least 1");
  }
};

/** The header of an image: its size and, for WebP, animation and losslessness. */
const header = (bytes: Uint8Array, type: ImageType): WebpHeader =>
  type === "image/webp"
    ? webpHeader(bytes)
    : { ...imageDimensions(bytes, type), animated: false, lossless: false };

/**
 * Checks, decodes and re-encodes an image, and makes its thumbnail.
 *
 * In order: the bytes must be `type` (else "type_mismatch"); the headers give
 * the size, and more than `maxPixels` is refused ("too_many_pixels") before
 * any decoding, as is a size the compressed data cannot hold
 * ("suspicious_compression", {@link checkImageHeader}); animated WebP is refused ("type_not_allowed"); a structure
 * that does not reach its end marker (JPEG EOI, PNG IEND, WebP RIFF size) or
 * fails to decode to the header's size is "corrupt". The output is encoded
 * afresh, so EXIF (GPS), XMP, ICC profiles, comments and anything appended
 * after the image are gone. JPEG input gives JPEG, PNG gives PNG, WebP gives
 * WebP (lossless when the input was lossless), within `maxBytes` if given
 * (else "too_large").
 *
 * @example
 * ```ts
 * const img = await processImage(bytes, "image/jpeg", { maxPixels: 50_000_000 });
 * await store(img.bytes, img.thumbnail);
 * ```
 */
export const processImage = async (
  bytes: Uint8Array,
  type: SniffedType,
  opts: ProcessImageOptions,
): Promise<ProcessedImage> => {
  checkOptions(opts);
  const imageType = asImageType(type);
  if (sniff(bytes) !== imageType) {
    throw new UploadRejectedError("type_mismatch", `the bytes are not ${imageType}`);
  }
  const { width, height } = checkImageHeader(bytes, imageType, opts.maxPixels);
  const { animated, lossless } = header(bytes, imageType);
  if (animated) throw new UploadRejectedError("type_not_allowed", "animated WebP is not accepted");
  if (imageEnd(bytes, imageType) === null) throw corrupt("the image is truncated or damaged");

  const t0 = performance.now();
  const decoded = await decode(bytes, imageType);
  if (decoded.width !== width || decoded.height !== height) {
    throw corrupt("the image size is inconsistent");
  }
  const image = imageType === "image/jpeg"
    ? applyOrientation(decoded, jpegOrientation(bytes))
    : decoded;
  const t1 = performance.now();
  const out = await encodeWithin(image, imageType, lossless, opts);
  const t2 = performance.now();
  const thumb = await thumbnail(image, opts.thumbnailSize ?? DEFAULT_THUMBNAIL_SIZE);
  const t3 = performance.now();
  return {
    bytes: out,
    contentType: imageType,
    width: image.width, // turned upright: a sideways photo's sides swap
    height: image.height,
    thumbnail: thumb,
    timings: { decode: t1 - t0, encode: t2 - t1, thumbnail: t3 - t2 },
  };
};
