import type { z } from "zod";
import { UnknownEventTypeError, ValidationError } from "../errors.ts";

/**
 * One event type: its current schema version and zod schema, which payload
 * fields are PHI (sealed with the subject's data key before they reach SQL),
 * and upcasters that lift a stored payload of version n to n + 1.
 */
export interface EventDefinition<T = unknown> {
  readonly type: string;
  readonly version: number;
  readonly schema: z.ZodType<T>;
  readonly phi?: {
    /** The data subject whose key seals the fields (e.g. the patient id). */
    readonly subject: (data: T) => string;
    /** Top-level payload fields holding PHI. */
    readonly fields: readonly string[];
  };
  readonly upcasters?: Readonly<Record<number, (data: Record<string, unknown>) => unknown>>;
}

/** Declares an event type; see {@link EventDefinition}. */
export const defineEvent = <T>(def: EventDefinition<T>): EventDefinition<T> => def;

/** The set of event types a store accepts. */
export class Catalog {
  readonly #defs = new Map<string, EventDefinition>();

  // deno-lint-ignore no-explicit-any
  constructor(defs: readonly EventDefinition<any>[]) {
    for (const def of defs) {
      if (this.#defs.has(def.type)) throw new Error(`duplicate event type ${def.type}`);
      for (let v = 1; v < def.version; v++) {
        if (!def.upcasters?.[v]) throw new Error(`${def.type}: no upcaster from version ${v}`);
      }
      this.#defs.set(def.type, def as unknown as EventDefinition);
    }
  }

  get(type: string): EventDefinition {
    const def = this.#defs.get(type);
    if (!def) throw new UnknownEventTypeError(type);
    return def;
  }

  has(type: string): boolean {
    return this.#defs.has(type);
  }

  /** Validates a payload against its schema; returns the parsed payload. */
  validate(type: string, data: unknown): Record<string, unknown> {
    const def = this.get(type);
    const parsed = def.schema.safeParse(data);
    if (!parsed.success) {
      throw new ValidationError(
        `invalid ${type} payload`,
        parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
      );
    }
    return parsed.data as Record<string, unknown>;
  }

  /** Lifts a stored payload to the current schema version. */
  upcast(
    type: string,
    storedVersion: number,
    data: Record<string, unknown>,
  ): { version: number; data: Record<string, unknown> } {
    const def = this.#defs.get(type);
    if (!def) return { version: storedVersion, data };
    let out = data;
    for (let v = storedVersion; v < def.version; v++) {
      out = def.upcasters![v]!(out) as Record<string, unknown>;
    }
    return { version: Math.max(storedVersion, def.version), data: out };
  }
}
