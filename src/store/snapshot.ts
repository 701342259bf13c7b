import type { Db } from "./db.ts";
import { type Query, sql } from "./sql.ts";

/**
 * Two reads over one snapshot, e.g. a list's page and its total: two
 * statements on the pool each see the database as it is when they run, so
 * a row committed between them is counted and not listed (or the other way
 * round). On PostgreSQL both run in one REPEATABLE READ, READ ONLY
 * transaction on one connection, sent in one round trip (BEGIN, both,
 * COMMIT); on PGlite, one session, in a transaction.
 */
export const readTogether = async <A, B>(db: Db, a: Query, b: Query): Promise<[A[], B[]]> => {
  if (db.kind !== "postgres") {
    return await db.transaction(async (tx) => [await tx.query<A>(a), await tx.query<B>(b)]);
  }
  const session = await db.reserve();
  try {
    const [, first, second] = await session.batch([
      sql`begin isolation level repeatable read read only`,
      a,
      b,
      sql`commit`,
    ]);
    return [first as A[], second as B[]];
  } catch (err) {
    // a failed statement leaves the transaction aborted (the batch's COMMIT ends it too)
    await session.query(sql`rollback`).catch(() => {});
    throw err;
  } finally {
    await session.release();
  }
};
