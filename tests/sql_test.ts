import assert from "node:assert/strict";
import { int, sql } from "../src/store/sql.ts";

Deno.test("sql: an int literal goes into the text, parameters around it keep their numbers", () => {
  const q = sql`select * from t where a = ${"x"} ${sql`and b = ${2}`} limit ${int(51)}`;
  assert.equal(q.text, "select * from t where a = $1 and b = $2 limit 51");
  assert.deepEqual(q.values, ["x", 2]);
  // only a non-negative safe integer is ever written into the text
  for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53]) assert.throws(() => int(bad), /invalid/);
  assert.throws(() => int("1; drop table t" as unknown as number), /invalid/);
});
