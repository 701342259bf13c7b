import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import canonicalize from "canonicalize";
import { canonicalEventBytes, jcs, leafHash, type StoredEvent } from "../src/audit/stored_event.ts";

// A small deterministic PRNG, so a failure is reproducible from the seed.
const prng = (seed: number) => () => {
  seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
  return seed / 2 ** 31;
};

const STRINGS = [
  "",
  "a",
  "é",
  "\u0000",
  "\u001f",
  "\u2028\u2029",
  '"\\/',
  "😀",
  "\ud83d",
  "€uro",
  "Z",
  "aa",
  "a\u0301",
  "\t\n\r",
];
const NUMBERS = [
  0,
  -0,
  1,
  -1,
  1.5,
  1e21,
  1e-7,
  5e-324,
  2 ** 53,
  0.1 + 0.2,
  -123.456e10,
  333333333.3333333,
];

/** A random JSON value as JSON.parse would give (keys of every kind, nested). */
const value = (rnd: () => number, depth: number): unknown => {
  const r = rnd();
  if (depth > 3 || r < 0.3) {
    const k = Math.floor(rnd() * 4);
    if (k === 0) return NUMBERS[Math.floor(rnd() * NUMBERS.length)];
    if (k === 1) return STRINGS[Math.floor(rnd() * STRINGS.length)];
    if (k === 2) return rnd() < 0.5;
    return null;
  }
  if (r < 0.55) return Array.from({ length: Math.floor(rnd() * 4) }, () => value(rnd, depth + 1));
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(rnd() * 5); i > 0; i--) {
    o[STRINGS[Math.floor(rnd() * STRINGS.length)]! + (rnd() < 0.3 ? String(i) : "")] = value(
      rnd,
      depth + 1,
    );
  }
  return o;
};

Deno.test("stored event: jcs writes what the canonicalize package (RFC 8785) writes", () => {
  const rnd = prng(20261201);
  for (let i = 0; i < 5000; i++) {
    const v = JSON.parse(JSON.stringify(value(rnd, 0)));
    assert.equal(jcs(v), canonicalize(v), JSON.stringify(v));
  }
});

Deno.test("stored event: the leaf hash is SHA-256(0x00 ‖ RFC 8785 bytes of the row)", () => {
  const rnd = prng(7);
  for (let i = 0; i < 200; i++) {
    const e: StoredEvent = {
      globalPosition: i + 1,
      streamId: `access-${i}`,
      streamVersion: 1 + (i % 7),
      eventId: crypto.randomUUID(),
      type: "PatientViewed",
      schemaVersion: 1,
      data: JSON.parse(JSON.stringify(value(rnd, 1) ?? null)),
      metadata: { actorId: "a", requestId: String(i) },
      recordedAt: "2026-11-30T12:00:00.123000Z",
      prevHash: i % 2 ? null : "ab".repeat(32),
      hash: "cd".repeat(32),
    };
    const bytes = new TextEncoder().encode(canonicalize(e)!);
    assert.deepEqual(canonicalEventBytes(e), bytes);
    const expected = createHash("sha256").update(new Uint8Array([0])).update(bytes).digest();
    assert.deepEqual(leafHash(e), new Uint8Array(expected));
  }
});
