import { createHmac } from "node:crypto";
import { ERASED, type PhiCodec } from "../store/phi_codec.ts";

/** Blob files start with this, then the sealed bytes (IV, ciphertext, tag). */
const MAGIC = new TextEncoder().encode("CLB1");

/**
 * Encrypted, content-addressed files on disk.
 *
 * A blob's address is a keyed digest of (patient, SHA-256 of the plaintext):
 * the same file stored twice for one patient is one blob, and an address
 * reveals neither the content's hash nor the patient. Each blob is sealed
 * with the patient's data key (AES-256-GCM, the address bound as AAD), so
 * crypto-shredding the patient shreds the files as well.
 *
 * Writes go to `tmp/` and are renamed into place after an fsync: a crash
 * leaves at most an orphan, which `deno task gc` collects; a file at its
 * final path is always whole.
 */
export class BlobStore {
  constructor(
    readonly root: string,
    readonly codec: PhiCodec,
    readonly indexKey: Uint8Array,
  ) {}

  /** The address of a patient's plaintext with this SHA-256. */
  address(patientId: string, sha256: string): string {
    return createHmac("sha256", this.indexKey).update(`blob:${patientId}:${sha256}`).digest("hex");
  }

  path(address: string): string {
    if (!/^[0-9a-f]{64}$/.test(address)) throw new Error("not a blob address");
    return `${this.root}/${address.slice(0, 2)}/${address}`;
  }

  /** Encrypts and stores; returns the address and time spent encrypting and writing. */
  async put(
    patientId: string,
    sha256: string,
    bytes: Uint8Array<ArrayBuffer>,
  ): Promise<{ address: string; encryptMs: number; writeMs: number }> {
    const address = this.address(patientId, sha256);
    const final = this.path(address);
    const t0 = performance.now();
    if (await exists(final)) {
      // stored before: renew its age so gc cannot take it before this upload's event names it
      const now = new Date();
      await Deno.utime(final, now, now);
      return { address, encryptMs: 0, writeMs: 0 };
    }
    const sealed = await this.codec.encryptBytes(`patient-${patientId}`, `blob:${address}`, bytes);
    const t1 = performance.now();
    await Deno.mkdir(`${this.root}/tmp`, { recursive: true });
    await Deno.mkdir(final.slice(0, final.lastIndexOf("/")), { recursive: true });
    const tmp = `${this.root}/tmp/${crypto.randomUUID()}`;
    const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      await writeAll(file, MAGIC);
      await writeAll(file, sealed);
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, final);
    return { address, encryptMs: t1 - t0, writeMs: performance.now() - t1 };
  }

  /** The plaintext, or null when the patient's key was destroyed (the file is shredded). */
  async get(patientId: string, address: string): Promise<Uint8Array<ArrayBuffer> | null> {
    const raw = await Deno.readFile(this.path(address));
    if (!MAGIC.every((b, i) => raw[i] === b)) throw new Error("not a Chartlog blob");
    const plain = await this.codec.decryptBytes(
      `patient-${patientId}`,
      `blob:${address}`,
      raw.subarray(MAGIC.length),
    );
    return plain === ERASED ? null : plain;
  }

  /**
   * Deletes a blob; true when it was there, false when it was already gone
   * (so a repeated removal is harmless).
   */
  async remove(address: string): Promise<boolean> {
    try {
      await Deno.remove(this.path(address));
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw err;
    }
  }

  /**
   * Every blob (and unfinished temporary file) on disk with its age, for
   * garbage collection.
   */
  async *list(): AsyncGenerator<{ path: string; address: string | null; mtime: Date }> {
    let dirs: Deno.DirEntry[];
    try {
      dirs = await Array.fromAsync(Deno.readDir(this.root));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    for (const dir of dirs) {
      if (!dir.isDirectory) continue;
      for await (const f of Deno.readDir(`${this.root}/${dir.name}`)) {
        if (!f.isFile) continue;
        const path = `${this.root}/${dir.name}/${f.name}`;
        const { mtime } = await Deno.stat(path);
        const address = dir.name === "tmp" ? null : f.name;
        yield { path, address, mtime: mtime ?? new Date(0) };
      }
    }
  }
}

const exists = async (path: string) => {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
};

const writeAll = async (file: Deno.FsFile, bytes: Uint8Array) => {
  let off = 0;
  while (off < bytes.length) off += await file.write(bytes.subarray(off));
};
