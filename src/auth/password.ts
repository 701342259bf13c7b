import { Buffer } from "node:buffer";
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** Parameters of one scrypt hash, as written in the stored string. */
export interface ScryptParams {
  /** CPU/memory cost; a power of two. */
  N: number;
  /** Block size; each block is 128 * r bytes. */
  r: number;
  /** Parallelisation: independent lanes, run one after another by OpenSSL. */
  p: number;
}

/**
 * The parameters new hashes get. OWASP's password storage cheat sheet lists
 * N=2^17,r=8,p=1 as the scrypt minimum and N=2^15,r=8,p=3 as an equivalent
 * setting that trades memory for CPU; we take the latter. Memory is 128*N*r
 * bytes = 32 MiB per hash whatever p is, so a burst of concurrent logins
 * (each hash runs on its own blocking thread) stays affordable, while p=3
 * keeps the attacker's cost per guess at the minimum. Raise them here and
 * old hashes still verify (the string carries its own parameters);
 * `needsRehash` tells the login path to upgrade them.
 */
export const SCRYPT_PARAMS: Readonly<ScryptParams> = Object.freeze({ N: 2 ** 15, r: 8, p: 3 });

/**
 * What new hashes get under CHARTLOG_ENV=test, and only there: a test suite
 * creates and logs in hundreds of users, and at ~0.3 s a hash (more on a busy
 * machine) the production cost was most of its run time. Verification reads
 * the parameters from the stored string, so the login path is the same code;
 * tests/password_test.ts still hashes with SCRYPT_PARAMS.
 */
export const TEST_SCRYPT_PARAMS: Readonly<ScryptParams> = Object.freeze({ N: 1024, r: 8, p: 1 });

/**
 * The parameters for new hashes in an environment. Only "test" gets the
 * cheap ones: production and development (and anything added later) hash
 * at full cost.
 */
export const scryptParamsFor = (env: string): Readonly<ScryptParams> =>
  env === "test" ? TEST_SCRYPT_PARAMS : SCRYPT_PARAMS;

const SALT_BYTES = 16;
const KEY_BYTES = 32;

export const PASSWORD_MIN_LENGTH = 12;
/** Long enough for any passphrase; short enough that no one posts megabytes. */
export const PASSWORD_MAX_LENGTH = 1024;

/**
 * Limits on parameters read back from a stored string. A stored hash is
 * trusted data, but a corrupt or planted one must not make a login allocate
 * gigabytes or spin for minutes: outside these bounds it simply fails.
 */
const LIMITS = { maxMemory: 256 * 1024 * 1024, maxP: 16, minBytes: 16, maxBytes: 64 };

const B64 = /^[A-Za-z0-9+/]+$/;
const PARAMS = /^N=(\d{1,10}),r=(\d{1,3}),p=(\d{1,3})$/;

/** PHC style: unpadded standard base64. */
const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64").replace(/=+$/, "");

/** Strict decoding: only canonical unpadded base64, so one hash has one spelling. */
const unb64 = (text: string): Buffer | null => {
  if (!B64.test(text)) return null;
  const bytes = Buffer.from(text, "base64");
  return b64(bytes) === text ? bytes : null;
};

const derive = (password: string, salt: Uint8Array, keyBytes: number, { N, r, p }: ScryptParams) =>
  new Promise<Buffer>((resolve, reject) => {
    // NIST SP 800-63B asks for Unicode normalisation: the same password typed
    // on another keyboard or OS can arrive as different code points.
    const normalized = password.normalize("NFKC");
    // OpenSSL needs 128*r*(N+p+2) bytes and refuses anything over maxmem,
    // whose default (32 MiB) is just too small for N=2^15,r=8. Twice 128*N*r
    // covers the extra blocks for any p below N.
    const maxmem = 2 * 128 * N * r;
    scrypt(normalized, salt, keyBytes, { N, r, p, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });

interface Parsed {
  params: ScryptParams;
  salt: Buffer;
  key: Buffer;
}

/** Reads `scrypt$N=..,r=..,p=..$salt$key`; null for anything else or out of bounds. */
const parse = (stored: string): Parsed | null => {
  if (typeof stored !== "string") return null;
  const parts = stored.split("$");
  if (parts.length !== 4 || parts[0] !== "scrypt") return null;
  const m = PARAMS.exec(parts[1]!);
  if (!m) return null;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const powerOfTwo = N >= 2 && (N & (N - 1)) === 0 && N <= 2 ** 30;
  if (!powerOfTwo || r < 1 || p < 1 || p > LIMITS.maxP) return null;
  if (128 * N * r > LIMITS.maxMemory) return null;
  const salt = unb64(parts[2]!);
  const key = unb64(parts[3]!);
  const sized = (b: Buffer | null): b is Buffer =>
    b !== null && b.length >= LIMITS.minBytes && b.length <= LIMITS.maxBytes;
  if (!sized(salt) || !sized(key)) return null;
  return { params: { N, r, p }, salt, key };
};

/**
 * Hashes a password with scrypt and a fresh random salt. The result names
 * its parameters, so they can be raised later without breaking old hashes.
 * The async scrypt runs off the event loop.
 *
 * @example
 * ```ts
 * const stored = await hashPassword("correct horse battery staple");
 * // scrypt$N=32768,r=8,p=3$<salt>$<key>
 * ```
 */
export const hashPassword = async (
  password: string,
  params: Readonly<ScryptParams> = SCRYPT_PARAMS,
): Promise<string> => {
  const salt = randomBytes(SALT_BYTES);
  const { N, r, p } = params;
  const key = await derive(password, salt, KEY_BYTES, params);
  return `scrypt$N=${N},r=${r},p=${p}$${b64(salt)}$${b64(key)}`;
};

/**
 * Checks a password against a stored hash, with that hash's own parameters,
 * in constant time. A malformed or unsupported stored string is a mismatch,
 * never an exception: a corrupt row must not become a 500 that tells the
 * caller the account exists.
 */
export const verifyPassword = async (password: string, stored: string): Promise<boolean> => {
  const parsed = parse(stored);
  if (!parsed || typeof password !== "string") return false;
  try {
    const key = await derive(password, parsed.salt, parsed.key.length, parsed.params);
    return key.length === parsed.key.length && timingSafeEqual(key, parsed.key);
  } catch {
    return false;
  }
};

/** One dummy hash per parameter set (in practice one per process). */
const dummies = new Map<string, Promise<string>>();

/**
 * Spends what a real verification spends, then fails. Call it when the email
 * is unknown, so the response time does not tell which accounts exist. The
 * dummy hash is made on first use with the current parameters; that first
 * call costs one extra hash.
 */
export const verifyAgainstDummy = async (
  password: string,
  params: Readonly<ScryptParams> = SCRYPT_PARAMS,
): Promise<false> => {
  const key = `${params.N},${params.r},${params.p}`;
  let dummy = dummies.get(key);
  if (!dummy) {
    dummy = hashPassword(b64(randomBytes(24)), params).catch((err) => {
      dummies.delete(key);
      throw err;
    });
    dummies.set(key, dummy);
  }
  await verifyPassword(password, await dummy);
  return false;
};

/**
 * Why a new password is refused, or null if it is acceptable. Length counts
 * Unicode code points (NIST SP 800-63B). The message never quotes the password.
 */
export const passwordProblem = (pw: string): string | null => {
  // each code point is one or two UTF-16 units: past twice the limit, it is
  // too long without walking a string someone made huge on purpose
  const length = pw.length > 2 * PASSWORD_MAX_LENGTH ? Infinity : [...pw].length;
  if (length < PASSWORD_MIN_LENGTH) {
    return `password must be at least ${PASSWORD_MIN_LENGTH} characters`;
  }
  if (length > PASSWORD_MAX_LENGTH) {
    return `password must be at most ${PASSWORD_MAX_LENGTH} characters`;
  }
  return null;
};

/**
 * True when a stored hash is weaker than what `hashPassword` makes now (or
 * unreadable): after a successful login, hash the password again and store it.
 */
export const needsRehash = (stored: string): boolean => {
  const parsed = parse(stored);
  if (!parsed) return true;
  const { N, r, p } = parsed.params;
  return N < SCRYPT_PARAMS.N || r < SCRYPT_PARAMS.r || p < SCRYPT_PARAMS.p ||
    parsed.key.length < KEY_BYTES;
};
