import assert from "node:assert/strict";
import { Hono } from "hono";
import { clientIp, rateLimit, RateLimiter } from "../src/http/rate_limit.ts";
import { requestId } from "../src/http/request_id.ts";

const clock = (start = 1_700_000_000_000) => {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
};

/** A tiny app limited per `X-Key` header, counting how often the handler ran. */
const limitedApp = (now: () => number) => {
  const app = new Hono();
  let handled = 0;
  app.use("*", requestId());
  app.use(
    "*",
    rateLimit({ windowMs: 60_000, max: 3, now, key: (c) => c.req.header("x-key") ?? "anon" }),
  );
  app.get("/", (c) => {
    handled++;
    return c.text("ok");
  });
  const get = (key = "a") => app.request("/", { headers: { "X-Key": key } });
  return { get, handled: () => handled };
};

Deno.test("rate limit: allows max, then a 429 problem with Retry-After", async () => {
  const t = clock();
  const app = limitedApp(t.now);
  for (let i = 0; i < 3; i++) assert.equal((await app.get()).status, 200);

  t.advance(500);
  const res = await app.get();
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal(res.headers.get("retry-after"), "60");
  const body = await res.json();
  assert.equal(body.type, "/problems/rate-limited");
  assert.equal(body.status, 429);
  assert.equal(body.detail, "too many requests; retry later");
  assert.equal(body.requestId, res.headers.get("x-request-id"));
  assert.equal(app.handled(), 3, "the handler did not run");

  t.advance(58_800);
  assert.equal((await app.get()).headers.get("retry-after"), "1");
});

Deno.test("rate limit: keys are independent and windows expire", async () => {
  const t = clock();
  const app = limitedApp(t.now);
  for (let i = 0; i < 3; i++) await app.get("a");
  assert.equal((await app.get("a")).status, 429);
  assert.equal((await app.get("b")).status, 200);

  t.advance(59_999);
  assert.equal((await app.get("a")).status, 429);
  t.advance(1);
  assert.equal((await app.get("a")).status, 200);
  assert.equal(app.handled(), 5);
});

Deno.test("rate limiter: verdicts, reset and bad options", () => {
  const t = clock();
  const limiter = new RateLimiter({ windowMs: 10_000, max: 2, now: t.now });
  assert.deepEqual(limiter.hit("k"), { allowed: true, retryAfterSec: 0 });
  assert.deepEqual(limiter.hit("k"), { allowed: true, retryAfterSec: 0 });
  t.advance(2_500);
  assert.deepEqual(limiter.hit("k"), { allowed: false, retryAfterSec: 8 });
  limiter.reset("k");
  assert.equal(limiter.hit("k").allowed, true);

  assert.throws(() => new RateLimiter({ windowMs: 0, max: 1 }), RangeError);
  assert.throws(() => new RateLimiter({ windowMs: 1000, max: 0 }), RangeError);
  assert.throws(() => new RateLimiter({ windowMs: 1000, max: 1.5 }), RangeError);
  assert.throws(() => rateLimit({ windowMs: NaN, max: 1, key: () => "k" }), RangeError);
});

Deno.test("rate limiter: expired keys are pruned and the map stays bounded", () => {
  const t = clock();
  const limiter = new RateLimiter({ windowMs: 1_000, max: 1, maxKeys: 100, now: t.now });
  for (let i = 0; i < 50; i++) limiter.hit(`old-${i}`);
  assert.equal(limiter.size, 50);
  t.advance(1_000);
  limiter.hit("new");
  assert.equal(limiter.size, 1, "expired windows are gone");

  for (let i = 0; i < 10_000; i++) limiter.hit(`flood-${i}`);
  assert.equal(limiter.size, 100);
  // the oldest live key made room; the newest is still counted
  assert.equal(limiter.hit("flood-9999").allowed, false);
  assert.equal(limiter.hit("new").allowed, true);
});

Deno.test("clientIp: the socket peer; X-Forwarded-For only behind a trusted proxy", async () => {
  const app = new Hono();
  app.get("/ip", (c) => c.json({ ip: clientIp(c), proxied: clientIp(c, { trustProxy: true }) }));
  const ip = async (headers: Record<string, string>, env?: unknown) =>
    await (await app.request("/ip", { headers }, env)).json();

  const spoofed = { "X-Forwarded-For": "198.51.100.9, 10.0.0.1" };
  assert.deepEqual(await ip({}), { ip: "unknown", proxied: "unknown" });
  assert.deepEqual(await ip(spoofed), { ip: "unknown", proxied: "198.51.100.9" });

  const env = { remoteAddr: { transport: "tcp", hostname: "203.0.113.7", port: 40000 } };
  assert.deepEqual(await ip({}, env), { ip: "203.0.113.7", proxied: "203.0.113.7" });
  assert.deepEqual(await ip(spoofed, env), { ip: "203.0.113.7", proxied: "198.51.100.9" });
  // not an address: fall back to the peer rather than key on arbitrary text
  const junk = { "X-Forwarded-For": "<script>, 10.0.0.1" };
  assert.deepEqual(await ip(junk, env), { ip: "203.0.113.7", proxied: "203.0.113.7" });
  assert.deepEqual(await ip({ "X-Forwarded-For": "2001:db8::1" }, env), {
    ip: "203.0.113.7",
    proxied: "2001:db8::1",
  });
});
