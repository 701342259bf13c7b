import type { CONTENT_TYPES, MediaKind } from "../../events/media.ts";

type ContentType = (typeof CONTENT_TYPES)[number];

const IMAGES: ContentType[] = ["image/jpeg", "image/png", "image/webp"];
const PAPER: ContentType[] = ["application/pdf", "text/plain"];

/** Categories of clinical photos (attached to an encounter). */
export const PHOTO_CATEGORIES = ["before", "after", "progress", "other"] as const;

/** Categories of patient documents, each with the types its bytes may be. */
export const DOCUMENT_CATEGORIES = [
  "medical_images",
  "documents",
  "patient_records",
  "lab_results",
  "prescriptions",
  "insurance",
  "other",
] as const;

/**
 * What each category accepts, decided from the bytes. Photos are images
 * only; DICOM goes to medical images (or "other"); paperwork is PDF, text or
 * a scan.
 */
export const ALLOW_LISTS: Record<MediaKind, Record<string, readonly ContentType[]>> = {
  photo: Object.fromEntries(PHOTO_CATEGORIES.map((c) => [c, IMAGES])),
  document: {
    medical_images: [...IMAGES, "application/dicom"],
    documents: [...PAPER, ...IMAGES],
    patient_records: [...PAPER, ...IMAGES],
    lab_results: [...PAPER, ...IMAGES, "application/dicom"],
    prescriptions: [...PAPER, ...IMAGES],
    insurance: [...PAPER, ...IMAGES],
    other: [...PAPER, ...IMAGES, "application/dicom"],
  },
};

/** The types a file name's extension claims, to catch a PDF named `.jpg`. */
export const EXTENSIONS: Record<string, ContentType> = {
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  jfif: "image/jpeg",
  png: "image/png",
  webp: "image/webp",
  pdf: "application/pdf",
  dcm: "application/dicom",
  dicom: "application/dicom",
  txt: "text/plain",
  text: "text/plain",
};

/** The type a file name claims, if its extension is one we know. */
export const claimedType = (filename: string | null): ContentType | null => {
  const ext = filename?.toLowerCase().match(/\.([a-z0-9]+)$/)?.[1];
  return ext ? EXTENSIONS[ext] ?? null : null;
};
