import type { z } from "zod";
import { ValidationError } from "../errors.ts";

/** A cursor we did not issue, for this list, or cannot read (a 422 of its own type). */
export class InvalidCursorError extends ValidationError {
  override name = "InvalidCursorError";
  constructor() {
    super("the cursor is not one this list issued", [
      { path: "cursor", message: "not a cursor this list issued; start again without one" },
    ]);
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Longer than any cursor we issue: the query schemas cap the text, this caps the work. */
const MAX_TOKEN_CHARS = 1000;

const b64url = (bytes: Uint8Array): string =>
  btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/** Strict base64url: any other character, or a length no encoder makes, is refused. */
const unb64url = (text: string): Uint8Array<ArrayBuffer> | null => {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return null;
  try {
    return Uint8Array.from(
      atob(text.replace(/-/g, "+").replace(/_/g, "/")),
      (c) => c.charCodeAt(0),
    );
  } catch {
    return null;
  }
};

/**
 * Keyset cursors for every list: the position (last row's sort key and id)
 * sealed with AES-256-GCM under a key derived from the master key.
 *
 * Sealed rather than merely signed: a position can carry PHI (the patients
 * list sorts by last name or date of birth) and cursors travel in URLs,
 * which proxies and browsers log. GCM's tag authenticates it, so a client
 * cannot forge or edit a position. The list's scope (e.g.
 * `patients:-last_name`) is bound in as additional data, so a cursor of one
 * list or ordering is refused by another instead of comparing a name with a
 * date. After decryption the value is checked with the list's schema.
 *
 * @example
 * const next = await codec.encode("users", { email: "a@b.c" });
 * const pos = await codec.decode("users", z.object({ email: z.string() }), next);
 */
export class CursorCodec {
  readonly #key: Promise<CryptoKey>;

  constructor(masterKey: Uint8Array<ArrayBuffer>) {
    this.#key = (async () => {
      const base = await crypto.subtle.importKey("raw", masterKey, "HKDF", false, ["deriveKey"]);
      return await crypto.subtle.deriveKey(
        {
          name: "HKDF",
          hash: "SHA-256",
          salt: enc.encode("chartlog"),
          info: enc.encode("list-cursor/v1"),
        },
        base,
        { name: "AES-GCM", length: 256 },
        false,
        ["encrypt", "decrypt"],
      );
    })();
  }

  /** An opaque cursor for `value` (JSON) in the list named by `scope`. */
  async encode(scope: string, value: unknown): Promise<string> {
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: enc.encode(scope) },
        await this.#key,
        enc.encode(JSON.stringify(value)),
      ),
    );
    const out = new Uint8Array(iv.length + sealed.length);
    out.set(iv);
    out.set(sealed, iv.length);
    return b64url(out);
  }

  /**
   * The position in a cursor of this list, shaped by `schema`.
   * @throws InvalidCursorError for anything else: garbage, a cut or edited
   * cursor, another list's, another key's, or one whose content has the
   * wrong shape.
   */
  async decode<T>(scope: string, schema: z.ZodType<T>, token: string): Promise<T> {
    const bytes = token.length <= MAX_TOKEN_CHARS ? unb64url(token) : null;
    if (!bytes || bytes.length < IV_BYTES + TAG_BYTES) throw new InvalidCursorError();
    let value: unknown;
    try {
      const plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: bytes.subarray(0, IV_BYTES), additionalData: enc.encode(scope) },
        await this.#key,
        bytes.subarray(IV_BYTES),
      );
      value = JSON.parse(dec.decode(plain));
    } catch {
      throw new InvalidCursorError();
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw new InvalidCursorError();
    return parsed.data;
  }
}
