import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { PatientRegistered } from "../events/patient.ts";
import { subjectEvents } from "../events/subject.ts";
import { Catalog } from "../src/store/catalog.ts";
import type { Db } from "../src/store/db.ts";
import { PhiCodec } from "../src/store/phi_codec.ts";
import { sql } from "../src/store/sql.ts";
import { eachDriver } from "./support/harness.ts";

/**
 * PhiCodec seals and opens payloads and data keys with node:crypto's
 * AES-256-GCM. Everything stored before was sealed with WebCrypto: same
 * algorithm and layout (12-byte IV, ciphertext, 16-byte tag), so each must
 * open what the other sealed. Checked here against WebCrypto itself, not
 * against the codec's own output.
 */

const REGISTERED = new Catalog([...subjectEvents, PatientRegistered]).get("PatientRegistered");
const enc = new TextEncoder();
const dec = new TextDecoder();
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
const unb64 = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
const aesKey = (raw: Uint8Array<ArrayBuffer>) =>
  crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);

/** WebCrypto's AES-GCM: IV, then ciphertext and tag. */
const webSeal = async (key: CryptoKey, aad: string, plain: Uint8Array<ArrayBuffer>) => {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: enc.encode(aad) },
      key,
      plain,
    ),
  );
  return { iv, ct, joined: new Uint8Array([...iv, ...ct]) };
};
const webOpen = async (key: CryptoKey, aad: string, sealed: Uint8Array<ArrayBuffer>) =>
  new Uint8Array(
    await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: sealed.subarray(0, 12), additionalData: enc.encode(aad) },
      key,
      sealed.subarray(12),
    ),
  );

/** A Db that refuses every statement: what is opened must come from the cache. */
const noLookups = (db: Db): Db =>
  new Proxy(db, {
    get: (t, p) =>
      p === "query"
        ? () => Promise.reject(new Error("a key lookup was not expected"))
        : Reflect.get(t, p),
  });

eachDriver(
  "phi codec: opens what WebCrypto sealed, and WebCrypto opens what it seals",
  async (h) => {
    const master = crypto.getRandomValues(new Uint8Array(32));
    const codec = new PhiCodec(h.db, master);
    const masterKey = await aesKey(master);

    // an old subject: its data key wrapped by WebCrypto, its values sealed by WebCrypto
    const old = `patient-${crypto.randomUUID()}`;
    const dek = crypto.getRandomValues(new Uint8Array(32));
    const wrapped = await webSeal(masterKey, `dek:${old}`, dek);
    await h.db.query(sql`insert into subject_keys (subject_id, wrapped_key)
    values (${old}, ${b64(wrapped.iv) + "." + b64(wrapped.ct)})`);
    const dataKey = await aesKey(dek);
    const field = await webSeal(dataKey, `${old}:note`, enc.encode(JSON.stringify("quokka")));
    const fields = ["firstName", "lastName"];
    const env = await webSeal(
      dataKey,
      `env:${old}:${fields.join(",")}`,
      enc.encode(JSON.stringify({ firstName: "Ada", lastName: "Narwhal" })),
    );
    const stored = {
      patientId: "p",
      note: { $sealed: { s: old, c: b64(field.joined) } },
      $sealed: { v: 2, s: old, f: fields, c: b64(env.joined) },
    };
    const opened = await codec.unsealPayload(stored);
    assert.deepEqual(opened, {
      data: { patientId: "p", note: "quokka", firstName: "Ada", lastName: "Narwhal" },
      erasedFields: [],
    });

    // a flipped byte anywhere fails the tag: an error, never other plaintext
    for (const at of [0, 12, env.joined.length - 1]) {
      const bad = env.joined.slice();
      bad[at]! ^= 1;
      await assert.rejects(
        new PhiCodec(h.db, master).unsealPayload({ $sealed: { ...stored.$sealed, c: b64(bad) } }),
      );
    }
    // bound to subject and fields: the same ciphertext under another field list fails
    await assert.rejects(
      codec.unsealPayload({ $sealed: { ...stored.$sealed, f: ["lastName", "firstName"] } }),
    );

    // a new subject: the codec creates and wraps the key, seals field and envelope
    const fresh = `patient-${crypto.randomUUID()}`;
    const sealedField = await codec.seal(fresh, "note", { text: "narwhal" });
    const sealedPayload = await codec.sealPayload(REGISTERED, {
      patientId: fresh.slice("patient-".length),
      firstName: "Byron",
      lastName: "Zebra",
    });
    const [row] = await h.db.query<{ wrapped_key: string }>(
      sql`select wrapped_key from subject_keys where subject_id = ${fresh}`,
    );
    const [iv, ct] = row!.wrapped_key.split(".") as [string, string];
    const freshKey = await aesKey(
      await webOpen(masterKey, `dek:${fresh}`, new Uint8Array([...unb64(iv), ...unb64(ct)])),
    );
    assert.deepEqual(
      JSON.parse(
        dec.decode(await webOpen(freshKey, `${fresh}:note`, unb64(sealedField.$sealed.c))),
      ),
      { text: "narwhal" },
    );
    const envelope = sealedPayload.$sealed as { s: string; f: string[]; c: string };
    assert.deepEqual(envelope.f, ["firstName", "lastName"]);
    assert.deepEqual(
      JSON.parse(
        dec.decode(await webOpen(freshKey, `env:${fresh}:firstName,lastName`, unb64(envelope.c))),
      ),
      { firstName: "Byron", lastName: "Zebra" },
    );
    // files stay on WebCrypto, with the same key
    const blob = await codec.encryptBytes(fresh, "blob:x", new Uint8Array([1, 2, 3]));
    assert.deepEqual([...await webOpen(freshKey, `${fresh}:blob:x`, blob)], [1, 2, 3]);
    assert.deepEqual([...(await codec.decryptBytes(fresh, "blob:x", blob)) as Uint8Array], [
      1,
      2,
      3,
    ]);
  },
);

eachDriver("phi codec: a key row read by the caller opens payloads without a lookup", async (h) => {
  const master = crypto.getRandomValues(new Uint8Array(32));
  const subject = `patient-${crypto.randomUUID()}`;
  const sealed = await new PhiCodec(h.db, master).sealPayload(REGISTERED, {
    patientId: subject.slice("patient-".length),
    firstName: "Ada",
  });
  const [row] = await h.db.query<{ wrapped_key: string }>(
    sql`select wrapped_key from subject_keys where subject_id = ${subject}`,
  );

  // nothing cached, every statement refused: the row handed over is what opens it
  const cold = new PhiCodec(noLookups(h.db), master);
  await assert.rejects(cold.unsealPayload(sealed), /lookup was not expected/);
  cold.rememberRow(subject, row!.wrapped_key);
  assert.deepEqual((await cold.unsealPayload(sealed)).data.firstName, "Ada");

  // a destroyed key's row (null) reads as erased, as a lookup would
  const shredded = new PhiCodec(noLookups(h.db), master);
  shredded.rememberRow(subject, null);
  assert.deepEqual(await shredded.unsealPayload(sealed), {
    data: { patientId: subject.slice("patient-".length), firstName: null },
    erasedFields: ["firstName"],
  });

  // a fresh cached key is kept: a row handed over later does not replace it
  cold.rememberRow(subject, null);
  assert.deepEqual((await cold.unsealPayload(sealed)).data.firstName, "Ada");
});
