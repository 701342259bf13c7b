/**
 * A small clinic for upload tests: an admin, a practitioner, a patient with
 * an encounter, on PGlite in memory, and helpers to upload and to look at
 * what the pipeline left behind (events, blob files).
 */
import { sql } from "../../src/store/sql.ts";
import { openTestApp } from "./app.ts";
import { bearer, createUser, login } from "./users.ts";

/** A multipart form with `file` (when given) and the text fields. */
export const form = (file: Uint8Array | null, name: string, fields: Record<string, string>) => {
  const f = new FormData();
  for (const [k, v] of Object.entries(fields)) f.set(k, v);
  if (file) f.set("file", new Blob([file as Uint8Array<ArrayBuffer>]), name);
  return f;
};

export const uploadClinic = async (env: Record<string, string> = {}) => {
  const t = await openTestApp({ CHARTLOG_LOGIN_RATE_PER_MIN: "10000", ...env });
  try {
    const tokens: Record<string, string> = {};
    const ids: Record<string, string> = {};
    for (const role of ["admin", "practitioner"] as const) {
      const u = await createUser(t.runtime, role);
      ids[role] = u.id;
      tokens[role] = (await login(t.app, u.email)).body.accessToken;
    }
    const request = (who: string, method: string, path: string, body?: FormData | object) =>
      t.app.request(path, {
        method,
        headers: {
          ...bearer(tokens[who]!),
          ...(body && !(body instanceof FormData) ? { "content-type": "application/json" } : {}),
        },
        ...(body ? { body: body instanceof FormData ? body : JSON.stringify(body) } : {}),
      });
    const patient = await (await request("admin", "POST", "/v1/patients", {
      mrn: "LIM-1",
      firstName: "Lim",
      lastName: "Its",
      dateOfBirth: "1970-01-01",
      gender: "F",
    })).json();
    const encounter = async () =>
      await (await request("admin", "POST", `/v1/patients/${patient.id}/encounters`, {
        practitionerId: ids.practitioner,
        startsAt: "2026-12-01T09:00:00Z",
        reason: "check",
      })).json();
    const rejections = async () =>
      (await t.runtime.db.query<{ reason: string }>(
        sql`select data->>'reason' as reason from events where type = 'UploadRejected'
          order by global_position`,
      )).map((r) => r.reason);
    const uploads = async () =>
      Number(
        (await t.runtime.db.query<{ n: string }>(
          sql`select count(*)::text as n from events where type = 'MediaUploaded'`,
        ))[0]!.n,
      );
    const blobCount = async () => {
      let n = 0;
      for await (const _ of t.runtime.blobs.list()) n++;
      return n;
    };
    const photoUrl = (encounterId: string) => `/v1/encounters/${encounterId}/media`;
    const docUrl = `/v1/patients/${patient.id}/documents`;
    return {
      t,
      request,
      patient,
      encounter,
      rejections,
      uploads,
      blobCount,
      photoUrl,
      docUrl,
    };
  } catch (err) {
    await t.close();
    throw err;
  }
};

/** Reads a problem response, checking its status, media type and `type`. */
export const problemOf = async (res: Response, status: number, type: string) => {
  const body = await res.json();
  if (res.status !== status || body.type !== type) {
    throw new Error(`expected ${status} ${type}, got ${res.status} ${JSON.stringify(body)}`);
  }
  if (res.headers.get("content-type") !== "application/problem+json") {
    throw new Error(`not problem+json: ${res.headers.get("content-type")}`);
  }
  return body;
};
