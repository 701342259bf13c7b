// An independent RFC 9162 / C2SP signed-note verifier for tests, written
// from the specifications (not from src/audit/merkle*.ts or checkpoint.ts):
// Merkle tree hash, inclusion and consistency proof verification (§2.1),
// and checkpoint note parsing with Ed25519 through WebCrypto.
import { createHash } from "node:crypto";

const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
const node = (l: Uint8Array, r: Uint8Array) => sha256(new Uint8Array([1]), l, r);

/** MTH(D[n]) by the definition in RFC 9162 §2.1.1. */
export const mth = (leaves: readonly Uint8Array[]): Uint8Array => {
  const n = leaves.length;
  if (n === 0) return sha256();
  if (n === 1) return leaves[0]!;
  let k = 1;
  while (k * 2 < n) k *= 2;
  return node(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
};

const same = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((v, i) => v === b[i]);

/** RFC 9162 §2.1.3.2: verifies an inclusion proof of `leaf` (a leaf hash). */
export const verifyInclusion = (
  leafIndex: number,
  treeSize: number,
  leaf: Uint8Array,
  path: readonly Uint8Array[],
  root: Uint8Array,
): boolean => {
  if (leafIndex >= treeSize) return false;
  let fn = leafIndex, sn = treeSize - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = node(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = node(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(r, root);
};

/** RFC 9162 §2.1.4.2: verifies a consistency proof between two roots. */
export const verifyConsistency = (
  first: number,
  second: number,
  firstHash: Uint8Array,
  secondHash: Uint8Array,
  proof: readonly Uint8Array[],
): boolean => {
  if (first > second) return false;
  if (first === second) return proof.length === 0 && same(firstHash, secondHash);
  if (first === 0) return proof.length === 0;
  let path = [...proof];
  if ((first & (first - 1)) === 0) path = [firstHash, ...path];
  if (path.length === 0) return false;
  let fn = first - 1, sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0]!, sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = node(c, fr);
      sr = node(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = node(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(fr, firstHash) && same(sr, secondHash);
};

export const fromB64 = (s: string): Uint8Array => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
export const toB64 = (b: Uint8Array): string => btoa(String.fromCharCode(...b));

/**
 * Parses a C2SP tlog-checkpoint signed note and checks its Ed25519
 * signature with a verifier key string (`name+hex id+base64(0x01 ‖ key)`),
 * per c2sp.org/signed-note. Returns the checkpoint, or null when the
 * signature (or anything else) does not hold.
 */
export const openCheckpoint = async (
  note: string,
  verifierKey: string,
): Promise<{ origin: string; size: number; root: Uint8Array } | null> => {
  // name and key id hold no '+'; the base64 key may
  const [name, idHex, ...rest] = verifierKey.split("+");
  const keyB64 = rest.join("+");
  const raw = fromB64(keyB64);
  if (raw[0] !== 1 || raw.length !== 33) return null;
  const pub = raw.slice(1);
  const id = sha256(new TextEncoder().encode(name! + "\n"), new Uint8Array([1]), pub).slice(0, 4);
  if (Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("") !== idHex) return null;
  const cut = note.indexOf("\n\n");
  const body = note.slice(0, cut + 1);
  const [origin, size, root, extra] = body.split("\n");
  if (extra !== "") return null;
  const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
  for (const line of note.slice(cut + 2).split("\n")) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const sig = fromB64(m[2]!);
    if (!same(sig.slice(0, 4), id)) continue;
    const ok = await crypto.subtle.verify(
      { name: "Ed25519" },
      key,
      sig.slice(4),
      new TextEncoder().encode(body),
    );
    if (ok) return { origin: origin!, size: Number(size), root: fromB64(root!) };
  }
  return null;
};

/**
 * Waits until no transaction older than the log's last one is in flight
 * anywhere on the server (transaction ids are server-wide, so another test's
 * open transaction in another database counts): until then the tree rightly
 * holds those events back.
 */
export const settled = async (
  db: { query: <T>(q: { text: string; values: readonly unknown[] }) => Promise<T[]> },
): Promise<void> => {
  for (let i = 0; i < 2400; i++) {
    const [r] = await db.query<{ ok: boolean }>({
      text: `select coalesce((select max(transaction_id) from events)
        < pg_snapshot_xmin(pg_current_snapshot()), true) as ok`,
      values: [],
    });
    if (r?.ok) return;
    await new Promise((res) => setTimeout(res, 25));
  }
  throw new Error("a transaction stayed in flight for a minute");
};
