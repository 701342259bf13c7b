import { ConflictError } from "../errors.ts";
import type { Db } from "./db.ts";
import { sql } from "./sql.ts";
import type { EventDefinition } from "./catalog.ts";
import { CursorCodec } from "./cursor.ts";

/**
 * Crypto-shredding for PHI in event payloads.
 *
 * Each data subject (a patient) has its own AES-256-GCM data key, stored in
 * `subject_keys` wrapped (encrypted) by the master key. PHI fields are sealed
 * with that key before they reach SQL. Destroying the key leaves the log
 * untouched (its hash chain still verifies) while the fields read back as
 * erased. Ciphertexts are bound to subject and field (AAD) so they cannot be
 * moved between fields or subjects.
 */
export interface SealedValue {
  $sealed: { s: string; c: string };
}

const isSealed = (v: unknown): v is SealedValue =>
  typeof v === "object" && v !== null && "$sealed" in v &&
  typeof (v as SealedValue).$sealed?.s === "string";

const enc = new TextEncoder();
const dec = new TextDecoder();
const b64 = (bytes: Uint8Array): string => btoa(String.fromCharCode(...bytes));
const unb64 = (s: string): Uint8Array<ArrayBuffer> =>
  Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));

/** How long an unwrapped key is trusted in memory before re-reading its row. */
const KEY_CACHE_MS = 60_000;

export class PhiCodec {
  readonly #db: Db;
  readonly #master: Promise<CryptoKey>;
  readonly #cache = new Map<string, { key: CryptoKey | null; at: number }>();
  /** List cursors, sealed too: a keyset position can be a name or a date of birth. */
  readonly cursors: CursorCodec;

  constructor(db: Db, masterKey: Uint8Array<ArrayBuffer>) {
    if (masterKey.length !== 32) throw new Error("master key must be 32 bytes");
    this.#db = db;
    this.cursors = new CursorCodec(masterKey);
    this.#master = crypto.subtle.importKey("raw", masterKey, "AES-GCM", false, [
      "encrypt",
      "decrypt",
    ]);
  }

  /** The subject's data key; created on first use when `create` is set. */
  async #key(subject: string, create: boolean, db: Db = this.#db): Promise<CryptoKey | null> {
    const hit = this.#cache.get(subject);
    if (hit && Date.now() - hit.at < KEY_CACHE_MS && (hit.key || !create)) return hit.key;
    let rows = await db.query<{ wrapped_key: string | null }>(
      sql`select wrapped_key from subject_keys where subject_id = ${subject}`,
    );
    if (rows.length === 0 && create) {
      const raw = crypto.getRandomValues(new Uint8Array(32));
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const wrapped = new Uint8Array(
        await crypto.subtle.encrypt(
          { name: "AES-GCM", iv, additionalData: enc.encode(`dek:${subject}`) },
          await this.#master,
          raw,
        ),
      );
      // Two writers may race to create the key: the first insert wins, both read it back.
      await db.query(sql`insert into subject_keys (subject_id, wrapped_key)
        values (${subject}, ${b64(iv) + "." + b64(wrapped)}) on conflict do nothing`);
      rows = await db.query(
        sql`select wrapped_key from subject_keys where subject_id = ${subject}`,
      );
    }
    const wrapped = rows[0]?.wrapped_key ?? null;
    let key: CryptoKey | null = null;
    if (wrapped) {
      const [iv, ct] = wrapped.split(".") as [string, string];
      const raw = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: unb64(iv), additionalData: enc.encode(`dek:${subject}`) },
        await this.#master,
        unb64(ct),
      );
      key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    } else if (rows.length > 0 && create) {
      throw new ConflictError(`the data key of subject ${subject} was destroyed`);
    }
    this.#cache.set(subject, { key, at: Date.now() });
    return key;
  }

  async seal(subject: string, field: string, value: unknown): Promise<SealedValue> {
    const key = (await this.#key(subject, true))!;
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: enc.encode(`${subject}:${field}`) },
        key,
        enc.encode(JSON.stringify(value)),
      ),
    );
    const out = new Uint8Array(iv.length + ct.length);
    out.set(iv);
    out.set(ct, iv.length);
    return { $sealed: { s: subject, c: b64(out) } };
  }

  /** The plaintext, or {@link ERASED} when the subject's key was destroyed. */
  async unseal(field: string, sealed: SealedValue, db?: Db): Promise<unknown> {
    const { s, c } = sealed.$sealed;
    const key = await this.#key(s, false, db);
    if (!key) return ERASED;
    const bytes = unb64(c);
    const pt = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: bytes.subarray(0, 12), additionalData: enc.encode(`${s}:${field}`) },
      key,
      bytes.subarray(12),
    );
    return JSON.parse(dec.decode(pt));
  }

  /**
   * Encrypts bytes (a file) with the subject's data key: 12-byte IV, then
   * ciphertext and tag. `context` is bound as AAD, so a blob cannot be
   * passed off as another.
   */
  async encryptBytes(
    subject: string,
    context: string,
    bytes: Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array<ArrayBuffer>> {
    const key = (await this.#key(subject, true))!;
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: enc.encode(`${subject}:${context}`) },
      key,
      bytes,
    );
    const out = new Uint8Array(12 + ct.byteLength);
    out.set(iv);
    out.set(new Uint8Array(ct), 12);
    return out;
  }

  /** The plaintext of {@link encryptBytes}, or {@link ERASED} once the subject was shredded. */
  async decryptBytes(
    subject: string,
    context: string,
    sealed: Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array<ArrayBuffer> | typeof ERASED> {
    const key = await this.#key(subject, false);
    if (!key) return ERASED;
    return new Uint8Array(
      await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: sealed.subarray(0, 12),
          additionalData: enc.encode(`${subject}:${context}`),
        },
        key,
        sealed.subarray(12),
      ),
    );
  }

  /** Seals the PHI fields `def` declares; other fields pass through. */
  async sealPayload(
    def: EventDefinition,
    data: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    if (!def.phi) return data;
    const subject = def.phi.subject(data);
    const out = { ...data };
    for (const field of def.phi.fields) {
      if (out[field] !== undefined) out[field] = await this.seal(subject, field, out[field]);
    }
    return out;
  }

  /** Opens every sealed top-level field; erased ones become null and are listed. */
  async unsealPayload(
    data: Record<string, unknown>,
    /** Look keys up through this connection (e.g. the caller's open transaction). */
    db?: Db,
  ): Promise<{ data: Record<string, unknown>; erasedFields: string[] }> {
    const erasedFields: string[] = [];
    let out = data;
    for (const [field, value] of Object.entries(data)) {
      if (!isSealed(value)) continue;
      if (out === data) out = { ...data };
      const plain = await this.unseal(field, value, db);
      if (plain === ERASED) {
        out[field] = null;
        erasedFields.push(field);
      } else out[field] = plain;
    }
    return { data: out, erasedFields };
  }

  /**
   * Destroys the subject's data key (crypto-shredding). Irreversible. Use
   * {@link shredSubject}, which records the act in the log in the same
   * transaction. Other app instances may keep an unwrapped copy of the key
   * in memory for up to a minute.
   */
  async destroy(subject: string, db: Db = this.#db): Promise<boolean> {
    const rows = await db.query(sql`update subject_keys
      set wrapped_key = null, destroyed_at = now()
      where subject_id = ${subject} and wrapped_key is not null returning subject_id`);
    this.forget(subject);
    return rows.length > 0;
  }

  /** Drops the cached key so the next use re-reads its row. */
  forget(subject: string): void {
    this.#cache.delete(subject);
  }
}

/** Marker returned by {@link PhiCodec.unseal} for a shredded value. */
export const ERASED: unique symbol = Symbol("erased");
