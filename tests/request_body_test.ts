import assert from "node:assert/strict";
import { sql } from "../src/store/sql.ts";
import { openTestApp } from "./support/app.ts";
import { bearer, createUser, login } from "./support/users.ts";

/**
 * Sends the head of a POST and then its JSON body one byte at a time, far
 * slower than the deadline allows; returns the status line and body of
 * whatever the server answers. The trickle stops once an answer arrives.
 */
const trickle = async (
  port: number,
  path: string,
  json: unknown,
  headers: Record<string, string> = {},
) => {
  const body = new TextEncoder().encode(JSON.stringify(json));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const w = conn.writable.getWriter();
  await w.write(new TextEncoder().encode(
    `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n` +
      Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") +
      `content-length: ${body.length}\r\n\r\n`,
  ));
  let answered = false;
  const sending = (async () => {
    for (let i = 0; i < body.length && !answered; i++) {
      await w.write(body.subarray(i, i + 1)).catch(() => (answered = true));
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const reader = conn.readable.getReader();
  let text = "";
  const decoder = new TextDecoder();
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    const len = end >= 0 ? /content-length: (\d+)/i.exec(text.slice(0, end)) : null;
    if (len && text.length >= end + 4 + Number(len[1])) break;
    const { done, value } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  answered = true;
  await sending;
  try {
    conn.close();
  } catch {
    // closed by the server
  }
  const end = text.indexOf("\r\n\r\n");
  return {
    status: Number(text.slice(9, 12)),
    head: text.slice(0, end).toLowerCase(),
    body: JSON.parse(text.slice(end + 4)),
  };
};

Deno.test("request body: a JSON body trickled past CHARTLOG_BODY_TIMEOUT_S is 408, also on the unauthenticated login", async () => {
  const t = await openTestApp({
    CHARTLOG_BODY_TIMEOUT_S: "1",
    CHARTLOG_LOGIN_RATE_PER_MIN: "1000",
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, t.app.fetch);
  try {
    const u = await createUser(t.runtime, "clinical_ops");
    const { body: tokens } = await login(t.app, u.email);
    const count = async () =>
      (await t.runtime.db.query<{ n: number }>(sql`select count(*)::int as n from events`))[0]!.n;
    const before = await count();

    // the body is about 60 bytes: at one byte per 200 ms it would take 12 s
    const cases = [
      ["/v1/auth/login", { email: u.email, password: "correct horse battery" }, {}],
      [
        "/v1/patients",
        { mrn: "MRN-1", firstName: "Ada", lastName: "L" },
        bearer(
          tokens.accessToken,
        ),
      ],
    ] as const;
    for (const [path, json, headers] of cases) {
      const res = await trickle(server.addr.port, path, json, headers);
      assert.equal(res.status, 408, path);
      assert.match(res.head, /content-type: application\/problem\+json/);
      assert.equal(res.body.type, "/problems/request-timeout");
      assert.equal(res.body.status, 408);
    }
    // the handlers never ran: no login attempt, no patient, no event
    assert.equal(await count(), before);
    assert.ok(
      t.logs.lines.filter((l) => l.msg === "request" && l.status === 408).length === 2,
      "the access log records the 408",
    );
  } finally {
    await server.shutdown();
    await t.close();
  }
});

Deno.test("request body: a chunked JSON body is read with the size limit", async () => {
  const t = await openTestApp({ CHARTLOG_MAX_BODY_BYTES: "64" });
  try {
    const chunked = (text: string) =>
      new ReadableStream<Uint8Array>({
        start(c) {
          for (const part of [text.slice(0, 5), text.slice(5)]) {
            c.enqueue(new TextEncoder().encode(part));
          }
          c.close();
        },
      });
    const small = await t.app.request("/v1/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chunked(JSON.stringify({ email: "a@b.test", password: "x" })),
    });
    assert.equal(small.status, 401); // read, parsed, checked
    const big = await t.app.request("/v1/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chunked(JSON.stringify({ email: "a@b.test", password: "x".repeat(100) })),
    });
    assert.equal(big.status, 413);
    assert.equal((await big.json()).type, "/problems/payload-too-large");
  } finally {
    await t.close();
  }
});
