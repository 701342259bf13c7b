/**
 * A tiny tagged-template SQL builder shared by both drivers.
 *
 * Every interpolated value becomes a `$n` parameter; nested `sql` fragments
 * are spliced in (their parameters renumbered) and identifiers go through
 * {@link ident}. Query text is never built by string concatenation of values.
 *
 * @example
 * const q = sql`select * from events where stream_id = ${id} ${limit ? sql`limit ${limit}` : sql``}`;
 */
export interface Query {
  readonly text: string;
  readonly values: readonly unknown[];
  /** false: planned afresh at each execution (see {@link unprepared}); default true. */
  readonly prepare?: boolean;
}

class Fragment implements Query {
  constructor(readonly strings: readonly string[], readonly params: readonly unknown[]) {}
  get text(): string {
    return this.build().text;
  }
  get values(): unknown[] {
    return this.build().values;
  }
  build(offset = 0): { text: string; values: unknown[] } {
    let text = this.strings[0] ?? "";
    const values: unknown[] = [];
    this.params.forEach((p, i) => {
      if (p instanceof Fragment) {
        const inner = p.build(offset + values.length);
        text += inner.text;
        values.push(...inner.values);
      } else if (p instanceof Identifier) {
        text += p.quoted;
      } else if (p instanceof IntLiteral) {
        text += p.digits;
      } else {
        values.push(p);
        text += `$${offset + values.length}`;
      }
      text += this.strings[i + 1] ?? "";
    });
    return { text, values };
  }
}

class Identifier {
  readonly quoted: string;
  constructor(name: string) {
    if (!/^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/i.test(name)) {
      throw new Error(`invalid SQL identifier: ${name}`);
    }
    this.quoted = name.split(".").map((p) => `"${p}"`).join(".");
  }
}

class IntLiteral {
  readonly digits: string;
  constructor(n: number) {
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`invalid SQL integer literal: ${n}`);
    this.digits = String(n);
  }
}

export const sql = (strings: TemplateStringsArray, ...params: unknown[]): Query =>
  new Fragment(strings, params);

/** A quoted identifier (table or column name) for use inside {@link sql}. */
export const ident = (name: string): Identifier => new Identifier(name);

/**
 * A non-negative integer written into the query text instead of a parameter:
 * for a page's `limit`, which a generic plan cannot know (the planner then
 * expects to stop early and walks the primary key, ignoring the filter's
 * index). Each value is a statement of its own in the plan cache.
 */
export const int = (n: number): IntLiteral => new IntLiteral(n);

/**
 * The query sent as an unnamed statement (postgres.js `prepare: false`):
 * planned with its parameters at every execution, never from a cached
 * generic plan. For a statement whose plan depends on a table's size: a
 * generic plan made while the table was small (a sequential scan) would be
 * kept as it grows. PGlite plans every query afresh anyway.
 */
export const unprepared = (q: Query): Query => ({ text: q.text, values: q.values, prepare: false });
