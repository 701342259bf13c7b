import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { scryptSync } from "node:crypto";
import {
  hashPassword,
  needsRehash,
  PASSWORD_MIN_LENGTH,
  passwordProblem,
  SCRYPT_PARAMS,
  scryptParamsFor,
  TEST_SCRYPT_PARAMS,
  verifyAgainstDummy,
  verifyPassword,
} from "../src/auth/password.ts";

const PW = "correct horse battery staple";
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64").replace(/=+$/, "");

/** A hash made outside the module, to show verify reads parameters from the string. */
const foreignHash = (password: string, N: number, r = 8, p = 1) => {
  const salt = Buffer.alloc(16, 7);
  const key = scryptSync(password, salt, 32, { N, r, p, maxmem: 256 * N * r });
  return `scrypt$N=${N},r=${r},p=${p}$${b64(salt)}$${b64(key)}`;
};

Deno.test("password: round trip, wrong password, fresh salt per hash", async () => {
  const started = performance.now();
  const stored = await hashPassword(PW);
  const ms = performance.now() - started;
  const { N, r, p } = SCRYPT_PARAMS;
  console.log(`scrypt N=${N},r=${r},p=${p}: ${ms.toFixed(0)} ms per hash`);

  assert.match(stored, /^scrypt\$N=\d+,r=\d+,p=\d+\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  assert.ok(!stored.includes(PW));
  assert.equal(await verifyPassword(PW, stored), true);
  assert.equal(await verifyPassword(PW + " ", stored), false);
  assert.equal(await verifyPassword("", stored), false);

  const again = await hashPassword(PW);
  assert.notEqual(again, stored);
  assert.notEqual(again.split("$")[2], stored.split("$")[2], "salts differ");
  assert.equal(await verifyPassword(PW, again), true);
  assert.equal(needsRehash(stored), false);
});

Deno.test("password: the same password in another Unicode form verifies", async () => {
  const composed = "caf\u00e9-passphrase";
  const decomposed = "cafe\u0301-passphrase";
  assert.equal(await verifyPassword(decomposed, await hashPassword(composed)), true);
});

Deno.test("password: tampered and malformed hashes are false, never a throw", async () => {
  const stored = foreignHash(PW, 1024);
  assert.equal(await verifyPassword(PW, stored), true, "parameters come from the string");

  const [, params, salt, key] = stored.split("$") as [string, string, string, string];
  const flip = (s: string) => (s[0] === "A" ? "B" : "A") + s.slice(1);
  const bad = [
    `scrypt$${params}$${salt}$${flip(key)}`,
    `scrypt$${params}$${flip(salt)}$${key}`,
    `scrypt$N=2048,r=8,p=1$${salt}$${key}`,
    `scrypt$${params}$${salt}$${key.slice(0, 20)}`,
    `scrypt$${params}$${salt}$${key}=`,
    `scrypt$${params}$${salt}$${key}$`,
    `bcrypt$${params}$${salt}$${key}`,
    `scrypt$N=1000,r=8,p=1$${salt}$${key}`,
    `scrypt$N=1073741824,r=8,p=1$${salt}$${key}`,
    `scrypt$N=1024,r=0,p=1$${salt}$${key}`,
    `scrypt$N=1024,r=8,p=99$${salt}$${key}`,
    `scrypt$N=1024,r=8$${salt}$${key}`,
    `scrypt$${params}$${salt}$${key.replace(/./, "!")}`,
    `scrypt$${params}$$`,
    "scrypt",
    "",
    "$$$",
  ];
  for (const s of bad) {
    assert.equal(await verifyPassword(PW, s), false, s);
    assert.equal(needsRehash(s), true, s);
  }
  for (const s of [null, undefined, 42]) {
    assert.equal(await verifyPassword(PW, s as unknown as string), false);
  }
});

Deno.test("password: dummy verification is always false", async () => {
  assert.equal(await verifyAgainstDummy(PW), false);
  assert.equal(await verifyAgainstDummy(""), false);
});

Deno.test("password: length rule without echoing the password", () => {
  const short = "x".repeat(PASSWORD_MIN_LENGTH - 1);
  const problem = passwordProblem(short);
  assert.equal(typeof problem, "string");
  assert.ok(!problem!.includes(short));
  assert.equal(passwordProblem("x".repeat(PASSWORD_MIN_LENGTH)), null);
  // code points, not UTF-16 units: 11 emoji are 22 units but still too short
  assert.notEqual(passwordProblem("\u{1F511}".repeat(PASSWORD_MIN_LENGTH - 1)), null);
  assert.equal(passwordProblem("x".repeat(1024)), null);
  assert.notEqual(passwordProblem("x".repeat(1025)), null);
  assert.notEqual(passwordProblem("x".repeat(1_000_000)), null);
});

Deno.test("password: hashes below the current parameters need a rehash", async () => {
  const weak = foreignHash(PW, SCRYPT_PARAMS.N / 2, SCRYPT_PARAMS.r, SCRYPT_PARAMS.p);
  assert.equal(await verifyPassword(PW, weak), true);
  assert.equal(needsRehash(weak), true);
  const fewerLanes = `scrypt$N=${SCRYPT_PARAMS.N},r=${SCRYPT_PARAMS.r},p=1$` +
    weak.split("$").slice(2).join("$");
  assert.equal(needsRehash(fewerLanes), SCRYPT_PARAMS.p > 1);
  assert.equal(needsRehash(await hashPassword(PW)), false);
});

Deno.test("password: only CHARTLOG_ENV=test hashes with the cheap test parameters", async () => {
  assert.equal(scryptParamsFor("production"), SCRYPT_PARAMS);
  assert.equal(scryptParamsFor("development"), SCRYPT_PARAMS);
  assert.equal(scryptParamsFor("anything else"), SCRYPT_PARAMS);
  assert.equal(scryptParamsFor("test"), TEST_SCRYPT_PARAMS);
  assert.ok(TEST_SCRYPT_PARAMS.N < SCRYPT_PARAMS.N);
  // a cheap hash says so in its string, verifies by it, and would be upgraded
  const cheap = await hashPassword(PW, TEST_SCRYPT_PARAMS);
  const { N, r, p } = TEST_SCRYPT_PARAMS;
  assert.ok(cheap.startsWith(`scrypt$N=${N},r=${r},p=${p}$`));
  assert.equal(await verifyPassword(PW, cheap), true);
  assert.equal(await verifyPassword(PW + "!", cheap), false);
  assert.equal(needsRehash(cheap), true);
  assert.equal(await verifyAgainstDummy(PW, TEST_SCRYPT_PARAMS), false);
});
