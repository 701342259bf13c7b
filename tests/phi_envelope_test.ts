import assert from "node:assert/strict";
import { PatientRegistered } from "../events/patient.ts";
import { ConflictError } from "../src/errors.ts";
import { subjectEvents } from "../events/subject.ts";
import { loadPatient } from "../src/clinical/patients.ts";
import { sealedEventCounts } from "../src/clinical/erasure_report.ts";
import { Catalog } from "../src/store/catalog.ts";
import { EventStore } from "../src/store/event_store.ts";
import { PhiCodec } from "../src/store/phi_codec.ts";
import { shredSubject, subjectKeyShredder } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import { verifyChain } from "../src/store/verify_chain.ts";
import { eachDriver } from "./support/harness.ts";

/**
 * PatientRegistered seals its eleven PHI fields as one envelope (one AES-GCM
 * operation). Registrations sealed field by field, before the envelope
 * existed, stay in the log and must read the same, and erase the same.
 */

const PHI = PatientRegistered.phi!;
const current = new Catalog([...subjectEvents, PatientRegistered]);
// the definition as it was before the envelope: every field sealed on its own
const fieldByField = new Catalog([...subjectEvents, {
  ...PatientRegistered,
  phi: { subject: PHI.subject, fields: PHI.fields },
}]);

const ada = (patientId: string) => ({
  patientId,
  mrn: "MRN-1",
  firstName: "Ada",
  middleName: null,
  lastName: "Quokkason",
  dateOfBirth: "1815-12-10",
  gender: "F" as const,
  phone: "+15550001111",
  email: "ada@example.org",
  address: { line1: "1 Zebra Way", line2: null, city: "London", state: "LN", zip: "00001" },
  emergencyContact: { name: "Byron Narwhal", phone: "+15550002222", relation: "parent" },
  insurance: { payer: "Acme Health", memberId: "M-77", groupNumber: null },
});

const rawData = async (h: { db: EventStore["db"] }, stream: string) =>
  (await h.db.query<{ data: Record<string, unknown> }>(
    sql`select data from events where stream_id = ${stream}`,
  ))[0]!.data;

eachDriver(
  "phi envelope: old field-by-field and new envelope registrations read and erase alike",
  async (h) => {
    const old = new EventStore({
      db: h.db,
      catalog: fieldByField,
      codec: h.store.codec,
      shredder: subjectKeyShredder(h.store.codec),
    });
    const oldId = crypto.randomUUID(), newId = crypto.randomUUID();
    await old.append(`patient-${oldId}`, "no_stream", [{
      type: "PatientRegistered",
      data: ada(oldId),
    }]);
    await h.store.append(`patient-${newId}`, "no_stream", [{
      type: "PatientRegistered",
      data: ada(newId),
    }]);

    // at rest: the old one field by field, the new one as one envelope; no plaintext in either
    const oldRaw = await rawData(h, `patient-${oldId}`);
    const newRaw = await rawData(h, `patient-${newId}`);
    assert.ok((oldRaw.firstName as { $sealed?: unknown }).$sealed, "old: each field sealed");
    assert.equal("$sealed" in oldRaw, false);
    const envelope = newRaw.$sealed as { v: number; s: string; f: string[] };
    assert.equal(envelope.v, 2);
    assert.equal(envelope.s, `patient-${newId}`);
    assert.deepEqual(envelope.f, PHI.fields);
    assert.deepEqual(Object.keys(newRaw).sort(), ["$sealed", "patientId"]);
    for (const secret of ["Quokkason", "Zebra", "Narwhal", "M-77", "1815"]) {
      assert.ok(!JSON.stringify([oldRaw, newRaw]).includes(secret), secret);
    }

    // read: both through the current catalogue, and by a fresh codec (no cached keys)
    const now = new Date("2026-12-01T00:00:00Z");
    for (const store of [h.store, old]) {
      for (const id of [oldId, newId]) {
        const p = (await loadPatient(store, id, now))!;
        const { patientId: _, ...expected } = ada(id);
        for (const [k, v] of Object.entries(expected)) {
          assert.deepEqual(p[k as keyof typeof p], v, k);
        }
        assert.equal(p.fullName, "Ada Quokkason");
      }
    }
    const fresh = new PhiCodec(h.db, h.masterKey);
    const opened = await fresh.unsealPayload(newRaw);
    assert.equal(opened.data.lastName, "Quokkason");
    assert.equal("$sealed" in opened.data, false);
    assert.deepEqual(opened.erasedFields, []);

    // the envelope is bound to its subject and field list: neither can be altered
    await assert.rejects(fresh.unsealPayload({
      ...newRaw,
      $sealed: { ...envelope, f: [...envelope.f].reverse() },
    }));
    const oldEnvelope = { ...newRaw.$sealed as object, s: `patient-${oldId}` };
    await assert.rejects(fresh.unsealPayload({ ...newRaw, $sealed: oldEnvelope }));

    // the erasure report counts events sealed either way
    const counts = await sealedEventCounts(h.db, newId, []);
    assert.equal(counts.get(`patient-${newId}`), 1);
    assert.equal((await sealedEventCounts(h.db, oldId, [])).get(`patient-${oldId}`), 1);

    // crypto-shredding erases both shapes: every PHI field null, and listed
    for (const id of [oldId, newId]) {
      await shredSubject(h.store, `patient-${id}`, "erasure request", { actorId: "admin-1" });
      const [e] = await h.store.readStream(`patient-${id}`);
      assert.deepEqual([...e!.erasedFields].sort(), [...PHI.fields].sort());
      for (const f of PHI.fields) assert.equal(e!.data[f], null, f);
      assert.equal(e!.data.patientId, id);
      assert.equal("$sealed" in e!.data, false);
    }
    assert.equal((await verifyChain(h.db)).ok, true);
  },
  { catalog: current },
);

eachDriver(
  "phi codec: a payload whose keys are cached opens without a promise, as the awaited path opens it",
  async (h) => {
    // A rebuild preloads a page's keys, then opens each payload synchronously
    // (unsealPayloadCached); a payload with a key not cached is left to the
    // awaited path. Both must give the same data and erased fields, for
    // envelopes, field-by-field values and destroyed keys.
    const old = new EventStore({
      db: h.db,
      catalog: fieldByField,
      codec: h.store.codec,
      shredder: subjectKeyShredder(h.store.codec),
    });
    const oldId = crypto.randomUUID(), newId = crypto.randomUUID();
    await old.append(`patient-${oldId}`, "no_stream", [{
      type: "PatientRegistered",
      data: ada(oldId),
    }]);
    await h.store.append(`patient-${newId}`, "no_stream", [{
      type: "PatientRegistered",
      data: ada(newId),
    }]);
    const oldRaw = await rawData(h, `patient-${oldId}`);
    const newRaw = await rawData(h, `patient-${newId}`);

    const cold = new PhiCodec(h.db, h.masterKey);
    assert.equal(cold.unsealPayloadCached(newRaw), undefined, "no key cached: not opened");
    assert.equal(cold.unsealPayloadCached(oldRaw), undefined);
    const plain = { patientId: newId };
    assert.deepEqual(cold.unsealPayloadCached(plain), { data: plain, erasedFields: [] });

    await cold.preload([newRaw, oldRaw]);
    for (const [id, raw] of [[newId, newRaw], [oldId, oldRaw]] as const) {
      const sync = cold.unsealPayloadCached(raw);
      assert.ok(sync, "keys preloaded: opened");
      assert.deepEqual(sync, await new PhiCodec(h.db, h.masterKey).unsealPayload(raw));
      assert.deepEqual(sync.data, ada(id));
      assert.deepEqual(raw, await rawData(h, `patient-${id}`), "the stored payload is left as is");
    }
    // a cached key still checks the envelope's binding
    const envelope = newRaw.$sealed as { f: string[] };
    assert.throws(() =>
      cold.unsealPayloadCached({
        ...newRaw,
        $sealed: { ...envelope, f: [...envelope.f].reverse() },
      })
    );

    // destroyed keys: every PHI field null and listed, on both paths
    for (const id of [oldId, newId]) {
      await shredSubject(h.store, `patient-${id}`, "erasure request", { actorId: "admin-1" });
    }
    const after = new PhiCodec(h.db, h.masterKey);
    await after.preload([newRaw, oldRaw]);
    for (const [id, raw] of [[newId, newRaw], [oldId, oldRaw]] as const) {
      const sync = after.unsealPayloadCached(raw)!;
      assert.deepEqual(sync, await new PhiCodec(h.db, h.masterKey).unsealPayload(raw));
      assert.deepEqual([...sync.erasedFields].sort(), [...PHI.fields].sort());
      for (const f of PHI.fields) assert.equal(sync.data[f], null, f);
      assert.equal(sync.data.patientId, id);
    }
  },
  { catalog: current },
);

eachDriver(
  "phi codec: new keys offered together are inserted together, one key per subject",
  async (h) => {
    // Two codecs over one database (on PostgreSQL a second pool: another
    // instance): 60 concurrent first seals for 12 new subjects, each subject
    // asked for five times. Offers made while an insert is in flight share
    // the next insert; every caller must end up with the one stored key.
    const codecs = [h.store.codec, (await h.openStore()).codec];
    const subjects = Array.from({ length: 12 }, (_, i) => `patient-${crypto.randomUUID()}-${i}`);
    const sealed = await Promise.all(
      Array.from({ length: 60 }, (_, i) => {
        const subject = subjects[i % subjects.length]!;
        return codecs[i % 2]!.seal(subject, "note", `secret ${i}`).then((v) => ({ subject, v, i }));
      }),
    );
    const rows = await h.db.query<{ subject_id: string; n: number }>(
      sql`select subject_id, count(*)::int as n from subject_keys
        where subject_id = any(${subjects}::text[]) group by subject_id`,
    );
    assert.equal(rows.length, subjects.length);
    assert.ok(rows.every((r) => r.n === 1));
    // a codec with nothing cached opens every value with the stored keys
    const fresh = new PhiCodec(h.db, h.masterKey);
    for (const { v, i } of sealed) {
      const out = await fresh.unsealPayload({ note: v });
      assert.equal(out.data.note, `secret ${i}`);
    }
    // a destroyed key is refused on the batched path too
    await shredSubject(h.store, subjects[0]!, "erasure request", { actorId: "test" });
    await assert.rejects(
      new PhiCodec(h.db, h.masterKey).seal(subjects[0]!, "note", "again"),
      ConflictError,
    );
  },
  { catalog: current },
);

eachDriver(
  "phi codec: its AES-GCM is WebCrypto's, byte for byte (keys, fields, envelopes both ways)",
  async (h) => {
    // What was sealed before the codec moved to node:crypto (crypto.subtle)
    // opens, and what it seals now opens with crypto.subtle.
    const te = new TextEncoder();
    const b64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));
    const unb64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
    const gcm = async (
      op: "encrypt" | "decrypt",
      raw: Uint8Array<ArrayBuffer>,
      iv: Uint8Array<ArrayBuffer>,
      aad: string,
      data: Uint8Array<ArrayBuffer>,
    ) => {
      const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, [op]);
      return new Uint8Array(
        await crypto.subtle[op]({ name: "AES-GCM", iv, additionalData: te.encode(aad) }, key, data),
      );
    };
    const subject = `patient-${crypto.randomUUID()}`;
    const raw = crypto.getRandomValues(new Uint8Array(32));
    const wiv = crypto.getRandomValues(new Uint8Array(12));
    const wrapped = `${b64(wiv)}.${
      b64(await gcm("encrypt", h.masterKey, wiv, `dek:${subject}`, raw))
    }`;
    await h.db.query(
      sql`insert into subject_keys (subject_id, wrapped_key) values (${subject}, ${wrapped})`,
    );
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const field = await gcm(
      "encrypt",
      raw,
      iv,
      `${subject}:note`,
      te.encode(JSON.stringify("by subtle")),
    );
    const fields = ["firstName", "lastName"];
    const env = await gcm(
      "encrypt",
      raw,
      iv,
      `env:${subject}:${fields.join(",")}`,
      te.encode(JSON.stringify({ firstName: "Ada", lastName: "L" })),
    );
    const codec = new PhiCodec(h.db, h.masterKey);
    const opened = await codec.unsealPayload({
      note: { $sealed: { s: subject, c: b64(new Uint8Array([...iv, ...field])) } },
      $sealed: { v: 2, s: subject, f: fields, c: b64(new Uint8Array([...iv, ...env])) },
    });
    assert.deepEqual(opened.data, { note: "by subtle", firstName: "Ada", lastName: "L" });
    // and the other way: the codec's own seal, opened by crypto.subtle with the stored key
    const mine = await codec.seal(subject, "note", { n: 1 });
    const bytes = unb64(mine.$sealed.c);
    const pt = await gcm("decrypt", raw, bytes.slice(0, 12), `${subject}:note`, bytes.slice(12));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(pt)), { n: 1 });
    // a fresh key's wrapping opens with crypto.subtle under the master key
    const fresh = await codec.freshKey(`patient-${crypto.randomUUID()}`);
    const [fiv, fct] = fresh.wrapped.split(".") as [string, string];
    assert.deepEqual(
      await gcm("decrypt", h.masterKey, unb64(fiv), `dek:${fresh.subject}`, unb64(fct)),
      new Uint8Array(fresh.key),
    );
    // a tampered value is refused, as before
    bytes[20]! ^= 1;
    await assert.rejects(codec.unseal("note", { $sealed: { s: subject, c: b64(bytes) } }));
  },
);
