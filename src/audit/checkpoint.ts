// Checkpoints as C2SP tlog-checkpoint signed notes (c2sp.org/tlog-checkpoint,
// c2sp.org/signed-note), the format Go's sumdb, Sigstore and transparency-dev
// tooling read. Ed25519 through node:crypto.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { Buffer } from "node:buffer";
import { b64, unb64 } from "./merkle.ts";

/** The signed-note signature type of Ed25519. */
const ED25519 = 0x01;

/** Checkpoint origin: names the log. */
export const originOf = (installationId: string): string => `chartlog/${installationId}`;

/** The key name this installation signs under. */
export const keyNameOf = (installationId: string): string => `chartlog-${installationId}`;

/** Signed-note key id: the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key). */
export const keyIdOf = (name: string, publicKey: Uint8Array): Uint8Array => {
  const h = createHash("sha256");
  h.update(new TextEncoder().encode(name));
  h.update(new Uint8Array([0x0a, ED25519]));
  h.update(publicKey);
  return new Uint8Array(h.digest()).slice(0, 4);
};

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** The verifier key string: `<name>+<8 hex key id>+<base64(0x01 ‖ public key)>`. */
export const verifierKeyOf = (name: string, publicKey: Uint8Array): string =>
  `${name}+${hex(keyIdOf(name, publicKey))}+${b64(new Uint8Array([ED25519, ...publicKey]))}`;

/** Parses a verifier key string; throws naming what is wrong. */
export const parseVerifierKey = (
  text: string,
): { name: string; keyId: Uint8Array; publicKey: Uint8Array } => {
  // the base64 key may itself hold '+': the name and the id never do
  const m = /^([^+]*)\+([^+]*)\+(.*)$/s.exec(text.trim());
  if (!m) throw new Error("a verifier key is <name>+<key id>+<key>");
  const [, name, id, key] = m as unknown as [string, string, string, string];
  if (!name || /[\s+]/.test(name)) throw new Error("bad key name");
  if (!/^[0-9a-f]{8}$/.test(id)) throw new Error("bad key id");
  let raw: Uint8Array;
  try {
    raw = unb64(key);
  } catch {
    throw new Error("the key is not base64");
  }
  if (raw.length !== 33 || raw[0] !== ED25519) throw new Error("not an Ed25519 key");
  const publicKey = raw.slice(1);
  const keyId = keyIdOf(name, publicKey);
  if (hex(keyId) !== id) throw new Error("the key id does not match the key");
  return { name, keyId, publicKey };
};

/** A fresh Ed25519 key, PKCS#8 DER (what CHARTLOG_CHECKPOINT_KEY holds, base64). */
export const generateCheckpointKey = (): Uint8Array =>
  new Uint8Array(
    generateKeyPairSync("ed25519").privateKey.export({ format: "der", type: "pkcs8" }),
  );

/** Whether the bytes are a PKCS#8 Ed25519 private key. */
export const isEd25519Pkcs8 = (der: Uint8Array): boolean => {
  try {
    return createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" })
      .asymmetricKeyType === "ed25519";
  } catch {
    return false;
  }
};

const rawPublicKey = (k: KeyObject): Uint8Array => {
  const jwk = k.export({ format: "jwk" }) as { x: string };
  return Uint8Array.from(atob(jwk.x.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
};

/** What signs checkpoints: a key and the name it signs under. */
export class CheckpointSigner {
  readonly #key: KeyObject;
  readonly publicKey: Uint8Array;
  readonly keyId: Uint8Array;

  constructor(pkcs8: Uint8Array, readonly keyName: string) {
    this.#key = createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" });
    if (this.#key.asymmetricKeyType !== "ed25519") throw new Error("not an Ed25519 key");
    this.publicKey = rawPublicKey(createPublicKey(this.#key));
    this.keyId = keyIdOf(keyName, this.publicKey);
  }

  get keyIdHex(): string {
    return hex(this.keyId);
  }

  get verifierKey(): string {
    return verifierKeyOf(this.keyName, this.publicKey);
  }

  /** The signed note of a checkpoint. */
  sign(origin: string, size: number, root: Uint8Array): string {
    const body = checkpointBody(origin, size, root);
    const sig = new Uint8Array(sign(null, new TextEncoder().encode(body), this.#key));
    return `${body}\n\u2014 ${this.keyName} ${b64(new Uint8Array([...this.keyId, ...sig]))}\n`;
  }
}

/** The note text a checkpoint signs: origin, size, base64 root, each on its line. */
export const checkpointBody = (origin: string, size: number, root: Uint8Array): string =>
  `${origin}\n${size}\n${b64(root)}\n`;

/** A public key as a JWK (OKP, Ed25519) with the signed-note key id as `kid`. */
export const publicJwk = (keyIdHex: string, publicKey: Uint8Array) => ({
  kty: "OKP" as const,
  crv: "Ed25519" as const,
  x: b64(publicKey).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
  kid: keyIdHex,
  alg: "EdDSA" as const,
  use: "sig" as const,
});

export interface ParsedCheckpoint {
  origin: string;
  treeSize: number;
  rootHash: Uint8Array;
}

/**
 * Verifies a signed checkpoint note against a verifier key string: a
 * signature line of that key name and id must verify. Returns the
 * checkpoint, or throws naming what failed.
 */
export const verifyCheckpointNote = (note: string, verifierKey: string): ParsedCheckpoint => {
  const key = parseVerifierKey(verifierKey);
  const split = note.indexOf("\n\n");
  if (split === -1 || !note.endsWith("\n")) throw new Error("not a signed note");
  const body = note.slice(0, split + 1);
  const lines = body.split("\n");
  if (lines.length !== 4 || lines[3] !== "") throw new Error("not a checkpoint (3 body lines)");
  const [origin, sizeText, rootText] = lines as [string, string, string];
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeText)) throw new Error("bad tree size");
  let rootHash: Uint8Array;
  try {
    rootHash = unb64(rootText);
  } catch {
    throw new Error("bad root hash");
  }
  if (rootHash.length !== 32) throw new Error("bad root hash");
  const pub = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: publicJwk("", key.publicKey).x },
    format: "jwk",
  });
  for (const line of note.slice(split + 2, -1).split("\n")) {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(line);
    if (!m || m[1] !== key.name) continue;
    let sig: Uint8Array;
    try {
      sig = unb64(m[2]!);
    } catch {
      continue;
    }
    if (sig.length !== 68 || hex(sig.slice(0, 4)) !== hex(key.keyId)) continue;
    if (verify(null, new TextEncoder().encode(body), pub, sig.slice(4))) {
      return { origin, treeSize: Number(sizeText), rootHash };
    }
    throw new Error("the signature does not verify");
  }
  throw new Error("no signature by that key");
};
