import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv } from "node:crypto";
import { ConflictError } from "../errors.ts";
import type { Db } from "./db.ts";
import { sql, unprepared } from "./sql.ts";
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
 *
 * Two stored shapes, both read:
 *
 * - field by field (every event type unless its definition says `envelope`,
 *   and every event sealed before that existed): each PHI field holds
 *   `{ $sealed: { s, c } }`, one AES-GCM operation each, AAD `subject:field`;
 * - envelope: the PHI fields leave the payload and travel together in one
 *   top-level `$sealed: { v: 2, s, f, c }`, `f` naming the fields sealed (in
 *   order) and `c` the JSON object of their values, one AES-GCM operation,
 *   AAD `env:subject:f1,f2,…`. Eleven fields of a patient record cost one
 *   call instead of eleven.
 */
export interface SealedValue {
  $sealed: { s: string; c: string };
}

/** The envelope of a payload sealed as a whole (see above). */
export interface SealedEnvelope {
  v: 2;
  s: string;
  f: string[];
  c: string;
}

/** The top-level key of an envelope; `$` keeps it apart from any payload field name. */
export const ENVELOPE_KEY = "$sealed";

const isEnvelope = (v: unknown): v is SealedEnvelope =>
  typeof v === "object" && v !== null && (v as SealedEnvelope).v === 2 &&
  typeof (v as SealedEnvelope).s === "string" && Array.isArray((v as SealedEnvelope).f) &&
  typeof (v as SealedEnvelope).c === "string";

const envelopeAad = (subject: string, fields: readonly string[]) =>
  enc.encode(`env:${subject}:${fields.join(",")}`);

const isSealed = (v: unknown): v is SealedValue =>
  typeof v === "object" && v !== null && "$sealed" in v &&
  typeof (v as SealedValue).$sealed?.s === "string";

const enc = new TextEncoder();

/**
 * AES-256-GCM laid out as WebCrypto lays it out (the ciphertext, then the
 * 16-byte tag), through node:crypto: synchronous, and for a payload of a
 * few hundred bytes several times cheaper than crypto.subtle (an async op
 * per call; two of them were a third of a registration's JavaScript CPU).
 * Files (encryptBytes) stay on crypto.subtle, which runs off the event loop.
 */
const gcmSeal = (key: DataKey, iv: Uint8Array, aad: Uint8Array, plain: Uint8Array): Uint8Array => {
  const c = createCipheriv("aes-256-gcm", key, iv);
  c.setAAD(aad);
  const head = c.update(plain), tail = c.final(), tag = c.getAuthTag();
  const out = new Uint8Array(head.length + tail.length + tag.length);
  out.set(head);
  out.set(tail, head.length);
  out.set(tag, head.length + tail.length);
  return out;
};

/** The plaintext of {@link gcmSeal}'s output; throws if it or the AAD was altered. */
const gcmOpen = (key: DataKey, iv: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array => {
  if (sealed.length < 16) throw new Error("sealed value too short");
  const d = createDecipheriv("aes-256-gcm", key, iv);
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  const head = d.update(sealed.subarray(0, sealed.length - 16)), tail = d.final();
  if (tail.length === 0) return head;
  const out = new Uint8Array(head.length + tail.length);
  out.set(head);
  out.set(tail, head.length);
  return out;
};

/** A raw 32-byte AES-256 key (a subject's data key, or the master key). */
type DataKey = Uint8Array<ArrayBuffer>;

/** A data key for crypto.subtle (files: see {@link gcmSeal}). */
const subtleKey = (raw: DataKey): Promise<CryptoKey> =>
  crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
const dec = new TextDecoder();
// Buffer's native base64: atob and a per-character copy were a visible share of a read's CPU
const b64 = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
const unb64 = (s: string): Uint8Array<ArrayBuffer> => {
  const b = Buffer.from(s, "base64");
  return new Uint8Array(b.buffer as ArrayBuffer, b.byteOffset, b.byteLength);
};

/** A new subject's wrapped key waiting to be inserted (see PhiCodec.#offer). */
interface KeyOffer {
  subject: string;
  wrapped: string;
  resolve: (rows: { wrapped_key: string | null; mine: boolean }[]) => void;
  reject: (err: unknown) => void;
}

/**
 * A new subject's data key, made in memory and stored by nobody yet: the
 * append of the subject's first events seals them with it and inserts its
 * row in the same transaction (EventStore.append's `newKey`), so the key
 * is stored exactly when they are, with no commit of its own.
 */
export interface FreshKey {
  readonly subject: string;
  /** Its `subject_keys.wrapped_key`. */
  readonly wrapped: string;
  readonly key: DataKey;
}

/** At most this many new keys in one insert. */
const MAX_KEY_OFFERS = 500;

/** How long an unwrapped key is trusted in memory before re-reading its row. */
const KEY_CACHE_MS = 60_000;

export class PhiCodec {
  readonly #db: Db;
  readonly #master: DataKey;
  readonly #cache = new Map<string, { key: DataKey | null; at: number }>();
  /** Key lookups in flight (not creations), by subject, with the connection they use. */
  readonly #loading = new Map<string, { db: Db; key: Promise<DataKey | null> }>();
  /** List cursors, sealed too: a keyset position can be a name or a date of birth. */
  readonly cursors: CursorCodec;
  /** New keys offered while an insert of offers is in flight: they go in the next one. */
  #offers: KeyOffer[] = [];
  #offering = false;

  constructor(db: Db, masterKey: Uint8Array<ArrayBuffer>) {
    if (masterKey.length !== 32) throw new Error("master key must be 32 bytes");
    this.#db = db;
    this.cursors = new CursorCodec(masterKey);
    this.#master = new Uint8Array(masterKey); // a copy of its own
  }

  /** The subject's data key; created on first use when `create` is set. */
  async #key(subject: string, create: boolean, db: Db = this.#db): Promise<DataKey | null> {
    const hit = this.#cache.get(subject);
    if (hit && Date.now() - hit.at < KEY_CACHE_MS && (hit.key || !create)) return hit.key;
    if (create) return await this.#load(subject, true, db);
    // concurrent reads of one subject's fields (a page unsealed at once) share one lookup
    const loading = this.#loading.get(subject);
    if (loading?.db === db) return await loading.key;
    const key = this.#load(subject, false, db);
    const entry = { db, key };
    this.#loading.set(subject, entry);
    try {
      return await key;
    } finally {
      if (this.#loading.get(subject) === entry) this.#loading.delete(subject);
    }
  }

  async #load(subject: string, create: boolean, db: Db): Promise<DataKey | null> {
    let rows: { wrapped_key: string | null; mine?: boolean }[];
    if (create) {
      // One round trip: offer a new key, and read back whichever is stored.
      // Two writers may race to create it: the first insert wins and both use
      // that one. A row committed by a racer after this statement's snapshot
      // shows in neither branch: then it is read again below.
      const { raw, wrapped: offer } = this.#wrapNew(subject);
      rows = db === this.#db
        ? await this.#offer(subject, offer)
        : await db.query<{ wrapped_key: string | null; mine: boolean }>(sql`with ins as (
          insert into subject_keys (subject_id, wrapped_key)
          values (${subject}, ${offer}) on conflict do nothing
          returning wrapped_key)
        select wrapped_key, true as mine from ins
        union all
        select wrapped_key, false as mine from subject_keys where subject_id = ${subject}`);
      if (rows[0]?.mine === true) {
        // ours was stored: no need to unwrap what we just wrapped
        this.#cache.set(subject, { key: raw, at: Date.now() });
        return raw;
      }
      if (rows.length === 0) {
        rows = await db.query(
          sql`select wrapped_key from subject_keys where subject_id = ${subject}`,
        );
      }
    } else {
      rows = await db.query<{ wrapped_key: string | null }>(
        sql`select wrapped_key from subject_keys where subject_id = ${subject}`,
      );
    }
    if (rows.length > 0 && !rows[0]!.wrapped_key && create) {
      throw new ConflictError(`the data key of subject ${subject} was destroyed`);
    }
    return this.#remember(subject, rows[0]?.wrapped_key ?? null);
  }

  /** A new random data key for `subject`, and its `subject_keys.wrapped_key` text. */
  #wrapNew(subject: string): { raw: DataKey; wrapped: string } {
    const raw = crypto.getRandomValues(new Uint8Array(32));
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const wrapped = gcmSeal(this.#master, iv, enc.encode(`dek:${subject}`), raw);
    return { raw, wrapped: b64(iv) + "." + b64(wrapped) };
  }

  /**
   * A data key for a subject that has none yet (e.g. a patient whose id
   * was just drawn), made in memory: nothing is stored or cached until the
   * append that carries it commits (see {@link FreshKey}).
   */
  freshKey(subject: string): Promise<FreshKey> {
    const { raw, wrapped } = this.#wrapNew(subject);
    return Promise.resolve({ subject, wrapped, key: raw });
  }

  /** Caches a fresh key once the append that stored its row has committed. */
  adopt(fresh: FreshKey): void {
    this.#cache.set(fresh.subject, { key: fresh.key, at: Date.now() });
  }

  /**
   * A subject's `subject_keys` row read by the caller (null: destroyed or
   * none), e.g. in the query that read the payloads it is about to open: the
   * key is unwrapped and cached unless a fresh copy is cached already, so the
   * opening needs no lookup of its own.
   */
  rememberRow(subject: string, wrapped: string | null): void {
    const hit = this.#cache.get(subject);
    if (hit && Date.now() - hit.at < KEY_CACHE_MS) return;
    this.#remember(subject, wrapped);
  }

  /** Unwraps a `subject_keys` row's key (null: destroyed or absent) and caches it. */
  #remember(subject: string, wrapped: string | null): DataKey | null {
    let key: DataKey | null = null;
    if (wrapped) {
      const [iv, ct] = wrapped.split(".") as [string, string];
      key = new Uint8Array(
        gcmOpen(this.#master, unb64(iv), enc.encode(`dek:${subject}`), unb64(ct)),
      );
    }
    this.#cache.set(subject, { key, at: Date.now() });
    return key;
  }

  /**
   * Loads the keys of the subjects of these sealed payloads that are not
   * cached, in one query, before a page of events is unsealed (a rebuild
   * meets thousands of subjects: one lookup each would be a round trip each).
   */
  async preload(payloads: readonly Record<string, unknown>[], db: Db = this.#db): Promise<void> {
    const now = Date.now();
    const wanted = new Set<string>();
    for (const data of payloads) {
      for (const [field, value] of Object.entries(data)) {
        const subject = field === ENVELOPE_KEY && isEnvelope(value)
          ? value.s
          : isSealed(value)
          ? value.$sealed.s
          : null;
        if (subject === null) continue;
        const hit = this.#cache.get(subject);
        if (!hit || now - hit.at >= KEY_CACHE_MS) wanted.add(subject);
      }
    }
    if (wanted.size < 2) return;
    // unprepared, as the key offers (see #insertOffers): a generic plan kept from a small table scans it
    const rows = await db.query<{ subject_id: string; wrapped_key: string | null }>(
      unprepared(sql`select subject_id, wrapped_key from subject_keys where subject_id = any(${[
        ...wanted,
      ]}::text[])`),
    );
    for (const r of rows) this.#remember(r.subject_id, r.wrapped_key);
  }

  /**
   * Offers a new wrapped key for `subject` (the pool's create path): offers
   * made while an insert of offers is in flight are inserted together by the
   * next one, so concurrent new subjects (a burst of registrations) cost a
   * statement and a commit per batch instead of one each. Answers as the
   * single-subject statement does: this offer's row if it was stored, else
   * the row already there, else nothing (a racer committed after the
   * statement's snapshot: the caller reads again).
   */
  #offer(
    subject: string,
    wrapped: string,
  ): Promise<{ wrapped_key: string | null; mine: boolean }[]> {
    return new Promise((resolve, reject) => {
      this.#offers.push({ subject, wrapped, resolve, reject });
      if (!this.#offering) void this.#insertOffers();
    });
  }

  /**
   * (Unprepared: the lookup of the rows already there, `= any(...)`, kept a
   * generic plan made while `subject_keys` was small, a sequential scan, and
   * every batch of offers then read the whole table: key creation, and the
   * registrations that waited on it, slowed as the table grew.)
   */
  async #insertOffers(): Promise<void> {
    this.#offering = true;
    try {
      while (this.#offers.length > 0) {
        const batch = this.#offers.splice(0, MAX_KEY_OFFERS);
        try {
          const subjects = batch.map((o) => o.subject);
          const rows = await this.#db.query<
            { subject_id: string; wrapped_key: string | null; mine: boolean }
          >(unprepared(sql`with offered as (
              select * from unnest(${subjects}::text[], ${batch.map((o) => o.wrapped)}::text[])
                as o(subject_id, wrapped_key)),
            ins as (
              insert into subject_keys (subject_id, wrapped_key)
              select subject_id, wrapped_key from offered on conflict do nothing
              returning subject_id, wrapped_key)
            select subject_id, wrapped_key, true as mine from ins
            union all
            select subject_id, wrapped_key, false as mine from subject_keys
            where subject_id = any(${subjects}::text[])`));
          const mine = new Set(rows.filter((r) => r.mine).map((r) => r.wrapped_key));
          const before = new Map(rows.filter((r) => !r.mine).map((r) => [r.subject_id, r]));
          for (const o of batch) {
            if (mine.has(o.wrapped)) o.resolve([{ wrapped_key: o.wrapped, mine: true }]);
            else {
              const r = before.get(o.subject);
              o.resolve(r ? [{ wrapped_key: r.wrapped_key, mine: false }] : []);
            }
          }
        } catch (err) {
          for (const o of batch) o.reject(err);
        }
      }
    } finally {
      this.#offering = false;
    }
  }

  async seal(
    subject: string,
    field: string,
    value: unknown,
    fresh?: FreshKey,
  ): Promise<SealedValue> {
    const key = await this.#sealingKey(subject, fresh);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = gcmSeal(
      key,
      iv,
      enc.encode(`${subject}:${field}`),
      enc.encode(JSON.stringify(value)),
    );
    const out = new Uint8Array(iv.length + ct.length);
    out.set(iv);
    out.set(ct, iv.length);
    return { $sealed: { s: subject, c: b64(out) } };
  }

  /** The plaintext, or {@link ERASED} when the subject's key was destroyed. */
  async unseal(field: string, sealed: SealedValue, db?: Db): Promise<unknown> {
    const key = await this.#key(sealed.$sealed.s, false, db);
    return key ? this.#openValue(key, field, sealed) : ERASED;
  }

  #openValue(key: DataKey, field: string, sealed: SealedValue): unknown {
    const { s, c } = sealed.$sealed;
    const bytes = unb64(c);
    const pt = gcmOpen(key, bytes.subarray(0, 12), enc.encode(`${s}:${field}`), bytes.subarray(12));
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
    const key = await subtleKey((await this.#key(subject, true))!);
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
    const raw = await this.#key(subject, false);
    if (!raw) return ERASED;
    const key = await subtleKey(raw);
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

  /** `fresh`'s key if it is the subject's, else the subject's stored key (created if none). */
  async #sealingKey(subject: string, fresh: FreshKey | undefined): Promise<DataKey> {
    return fresh?.subject === subject ? fresh.key : (await this.#key(subject, true))!;
  }

  /**
   * Seals the PHI fields `def` declares; other fields pass through. With
   * `fresh`, a subject's first payload is sealed with that key, which the
   * caller stores with it (see {@link FreshKey}).
   */
  async sealPayload(
    def: EventDefinition,
    data: Record<string, unknown>,
    fresh?: FreshKey,
  ): Promise<Record<string, unknown>> {
    if (!def.phi) return data;
    const subject = def.phi.subject(data);
    const out = { ...data };
    if (def.phi.envelope) {
      const fields = def.phi.fields.filter((f) => out[f] !== undefined);
      if (fields.length === 0) return out;
      const values: Record<string, unknown> = {};
      for (const f of fields) {
        values[f] = out[f];
        delete out[f];
      }
      const key = await this.#sealingKey(subject, fresh);
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const ct = gcmSeal(key, iv, envelopeAad(subject, fields), enc.encode(JSON.stringify(values)));
      const bytes = new Uint8Array(iv.length + ct.length);
      bytes.set(iv);
      bytes.set(ct, iv.length);
      const envelope: SealedEnvelope = { v: 2, s: subject, f: fields, c: b64(bytes) };
      out[ENVELOPE_KEY] = envelope;
      return out;
    }
    for (const field of def.phi.fields) {
      if (out[field] !== undefined) {
        out[field] = await this.seal(subject, field, out[field], fresh);
      }
    }
    return out;
  }

  /** Opens every sealed top-level field; erased ones become null and are listed. */
  async unsealPayload(
    data: Record<string, unknown>,
    /** Look keys up through this connection (e.g. the caller's open transaction). */
    db?: Db,
  ): Promise<{ data: Record<string, unknown>; erasedFields: string[] }> {
    const cached = this.unsealPayloadCached(data);
    if (cached) return cached;
    const sealed: [string, unknown][] = [];
    for (const [field, value] of Object.entries(data)) {
      if ((field === ENVELOPE_KEY && isEnvelope(value)) || isSealed(value)) {
        sealed.push([field, value]);
      }
    }
    // concurrently: the key lookups of several subjects overlap
    const opened = await Promise.all(
      sealed.map(([field, value]) =>
        field === ENVELOPE_KEY && isEnvelope(value)
          ? this.#openEnvelope(value, db)
          : this.unseal(field, value as SealedValue, db)
      ),
    );
    const erasedFields: string[] = [];
    const out = { ...data };
    sealed.forEach(([field, value], i) => this.#place(out, field, value, opened[i], erasedFields));
    return { data: out, erasedFields };
  }

  /**
   * {@link unsealPayload} without a promise, when every key the payload
   * needs is cached (as after {@link preload}); undefined when one is not.
   * A rebuild opens a million payloads: their promises were a visible share
   * of its garbage.
   */
  unsealPayloadCached(
    data: Record<string, unknown>,
  ): { data: Record<string, unknown>; erasedFields: string[] } | undefined {
    const now = Date.now();
    let out: Record<string, unknown> | undefined;
    const erasedFields: string[] = [];
    for (const field in data) {
      const value = data[field];
      const envelope = field === ENVELOPE_KEY && isEnvelope(value);
      if (!envelope && !isSealed(value)) continue;
      const subject = envelope ? value.s : (value as SealedValue).$sealed.s;
      const hit = this.#cache.get(subject);
      if (!hit || now - hit.at >= KEY_CACHE_MS) return undefined;
      const plain = !hit.key
        ? ERASED
        : envelope
        ? this.#openEnvelopeWith(hit.key, value)
        : this.#openValue(hit.key, field, value as SealedValue);
      out ??= { ...data };
      this.#place(out, field, value, plain, erasedFields);
    }
    return { data: out ?? data, erasedFields };
  }

  /** Puts an opened field (or an envelope's fields) in place of the sealed one. */
  #place(
    out: Record<string, unknown>,
    field: string,
    value: unknown,
    plain: unknown,
    erasedFields: string[],
  ): void {
    if (field === ENVELOPE_KEY && isEnvelope(value)) {
      delete out[ENVELOPE_KEY];
      const values = plain as Record<string, unknown> | typeof ERASED;
      for (const f of value.f) out[f] = values === ERASED ? null : values[f];
      if (values === ERASED) erasedFields.push(...value.f);
    } else if (plain === ERASED) {
      out[field] = null;
      erasedFields.push(field);
    } else out[field] = plain;
  }

  /** The values an envelope sealed, by field, or {@link ERASED} once its key is gone. */
  async #openEnvelope(
    envelope: SealedEnvelope,
    db?: Db,
  ): Promise<Record<string, unknown> | typeof ERASED> {
    const key = await this.#key(envelope.s, false, db);
    return key ? this.#openEnvelopeWith(key, envelope) : ERASED;
  }

  #openEnvelopeWith(key: DataKey, envelope: SealedEnvelope): Record<string, unknown> {
    const bytes = unb64(envelope.c);
    const pt = gcmOpen(
      key,
      bytes.subarray(0, 12),
      envelopeAad(envelope.s, envelope.f),
      bytes.subarray(12),
    );
    return JSON.parse(dec.decode(pt));
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
    this.#loading.delete(subject);
  }
}

/** Marker returned by {@link PhiCodec.unseal} for a shredded value. */
export const ERASED: unique symbol = Symbol("erased");
