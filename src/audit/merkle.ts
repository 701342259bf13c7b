// RFC 9162 §2.1 Merkle tree arithmetic, independent of storage: which
// complete subtrees make up a range, the recipes of inclusion and
// consistency proofs, and a compact range (the right edge of a growing
// tree) for verifiers that stream the leaves.
import { hash } from "node:crypto";

/** SHA-256 of the empty string: the root of the empty tree. */
export const EMPTY_ROOT: Uint8Array = new Uint8Array(hash("sha256", new Uint8Array(0), "buffer"));

/**
 * The hot paths (the tree builder, `audit verify`) carry hashes as lowercase
 * hex strings: on Deno, a digest written as hex costs about a third of one
 * returned as a Buffer, and a string needs no typed-array allocation per
 * node (tests/bench/tlog_bench.ts prints the rates).
 */
const scratch = new Uint8Array(65);

const nibble = (c: number): number => (c <= 57 ? c - 48 : c - 87); // 0-9, a-f

/** Writes the 32 bytes of a 64-digit lowercase hex hash into `out` at `at`. */
export const hexInto = (hex: string, out: Uint8Array, at: number): void => {
  for (let i = 0; i < 32; i++) {
    out[at + i] = (nibble(hex.charCodeAt(2 * i)) << 4) | nibble(hex.charCodeAt(2 * i + 1));
  }
};

/** Bytes of a 64-digit lowercase hex hash. */
export const unhex32 = (hex: string): Uint8Array => {
  const out = new Uint8Array(32);
  hexInto(hex, out, 0);
  return out;
};

/** Lowercase hex of bytes. */
export const toHex = (b: Uint8Array): string => {
  let s = "";
  for (let i = 0; i < b.length; i++) s += (b[i]! < 16 ? "0" : "") + b[i]!.toString(16);
  return s;
};

/** Interior node, hashes as hex: SHA-256(0x01 ‖ left ‖ right). */
export const hashChildrenHex = (left: string, right: string): string => {
  scratch[0] = 1;
  hexInto(left, scratch, 1);
  hexInto(right, scratch, 33);
  return hash("sha256", scratch, "hex");
};

/** Interior node: SHA-256(0x01 ‖ left ‖ right). */
export const hashChildren = (left: Uint8Array, right: Uint8Array): Uint8Array => {
  scratch[0] = 1;
  scratch.set(left, 1);
  scratch.set(right, 33);
  return unhex32(hash("sha256", scratch, "hex"));
};

/** The largest power of two strictly below `n` (n ≥ 2). */
export const splitPoint = (n: number): number => {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
};

/** A complete subtree: `2^level` leaves starting at leaf `index · 2^level`. */
export interface NodeId {
  level: number;
  index: number;
}

/**
 * The complete subtrees whose hashes make MTH(D[a:b]) (RFC 9162 splits:
 * largest power of two first), left to right. `a` must be a start the
 * recursion produces (a multiple of the first subtree's size), which holds
 * for every range a proof asks for.
 */
export const rangeNodes = (a: number, b: number): NodeId[] => {
  const out: NodeId[] = [];
  while (b - a > 0) {
    const n = b - a;
    const k = n === 1 ? 1 : (n & (n - 1)) === 0 ? n : splitPoint(n);
    const level = Math.log2(k);
    out.push({ level, index: a / k });
    a += k;
  }
  return out;
};

/** MTH of a range from its {@link rangeNodes} hashes (folded right to left). */
export const foldRange = (hashes: readonly Uint8Array[]): Uint8Array => {
  if (hashes.length === 0) return EMPTY_ROOT;
  let h = hashes[hashes.length - 1]!;
  for (let i = hashes.length - 2; i >= 0; i--) h = hashChildren(hashes[i]!, h);
  return h;
};

/** A range of leaves [start, end) whose MTH is one element of a proof. */
export type Range = readonly [number, number];

/** RFC 9162 §2.1.3.1 PATH(m, D[0:n]): the ranges of the audit path, leaf to root. */
export const inclusionRanges = (m: number, n: number): Range[] => {
  const walk = (m: number, a: number, b: number): Range[] => {
    const n = b - a;
    if (n <= 1) return [];
    const k = splitPoint(n);
    return m < k ? [...walk(m, a, a + k), [a + k, b]] : [...walk(m - k, a + k, b), [a, a + k]];
  };
  return walk(m, 0, n);
};

/** RFC 9162 §2.1.4.1 PROOF(m, D[0:n]): the ranges of a consistency proof (0 < m < n). */
export const consistencyRanges = (m: number, n: number): Range[] => {
  const sub = (m: number, a: number, b: number, complete: boolean): Range[] => {
    const n = b - a;
    if (m === n) return complete ? [] : [[a, b]];
    const k = splitPoint(n);
    return m <= k
      ? [...sub(m, a, a + k, complete), [a + k, b]]
      : [...sub(m - k, a + k, b, false), [a, a + k]];
  };
  if (m <= 0 || m >= n) return [];
  return sub(m, 0, n, true);
};

/**
 * The right edge of a tree that grows one leaf at a time: the roots of its
 * complete subtrees, largest first (one per set bit of the size). Enough to
 * give the root at any size reached, in O(log n) memory.
 */
export class CompactRange {
  /** Hashes (hex) of the complete subtrees, left to right; sizes are the set bits of `size`. */
  readonly #stack: string[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  append(leaf: Uint8Array): void {
    this.appendHex(toHex(leaf));
  }

  /** Appends a leaf hash given as 64 lowercase hex digits. */
  appendHex(leaf: string): void {
    let h = leaf;
    let s = this.#size;
    while (s & 1) {
      h = hashChildrenHex(this.#stack.pop()!, h);
      s = Math.floor(s / 2);
    }
    this.#stack.push(h);
    this.#size++;
  }

  root(): Uint8Array {
    return foldRange(this.#stack.map(unhex32));
  }
}

/** Base64 of bytes (standard alphabet, padded). */
export const b64 = (bytes: Uint8Array): string => {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
};

/** Bytes of standard base64; throws on anything else. */
export const unb64 = (text: string): Uint8Array => {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new Error("not base64");
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
};

export const equalBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && a.every((v, i) => v === b[i]);
