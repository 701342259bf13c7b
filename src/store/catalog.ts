import type { z } from "zod";
import { UnknownEventTypeError, ValidationError } from "../errors.ts";

/**
 * One event type: its current schema version and zod schema, which payload
 * fields are PHI (sealed with the subject's data key before they reach SQL),
 * and upcasters that lift a stored payload of version n to n + 1. `Type`
 * and `Phi` keep the literal type name and PHI field names, so that
 * {@link EventOf} can derive the event's TypeScript type.
 */
export interface EventDefinition<
  T = unknown,
  Type extends string = string,
  Phi extends string = string,
> {
  readonly type: Type;
  readonly version: number;
  readonly schema: z.ZodType<T>;
  readonly phi?: {
    /** The data subject whose key seals the fields (e.g. the patient id). */
    readonly subject: (data: T) => string;
    /** Top-level payload fields holding PHI. */
    readonly fields: readonly Phi[];
    /**
     * Seal the fields together, as one AEAD operation under one `$sealed`
     * envelope (see PhiCodec.sealPayload), instead of one per field. For
     * payloads with many PHI fields that are read often. Events sealed field
     * by field before this was set still read.
     */
    readonly envelope?: boolean;
  };
  readonly upcasters?: Readonly<Record<number, (data: Record<string, unknown>) => unknown>>;
}

/** Declares an event type; see {@link EventDefinition}. */
export const defineEvent = <
  T,
  const Type extends string,
  const Phi extends Extract<keyof T, string> = never,
>(def: EventDefinition<T, Type, Phi>): EventDefinition<T, Type, Phi> => def;

// deno-lint-ignore no-explicit-any
export type AnyEventDefinition = EventDefinition<any, string, string>;

type Flat<T> = { [K in keyof T]: T[K] } & unknown;

/**
 * A payload as read back: as written, or, once its subject's key was
 * destroyed, with every PHI field null (one key seals all of an event's PHI,
 * so erasure takes all of them at once).
 */
export type Erasable<T, Phi extends string> = [Phi] extends [never] ? T
  : T | Flat<Omit<T, Phi> & { [K in Phi]: null }>;

/** The event a definition describes, as a decider folds it (after upcasting and unsealing). */
export type EventOf<D> = D extends EventDefinition<infer T, infer Type, infer Phi>
  ? { type: Type; data: Erasable<T, Phi> }
  : never;

/** The event a definition describes, as a decider decides it (nothing erased yet). */
export type NewEventOf<D> = D extends EventDefinition<infer T, infer Type, string>
  ? { type: Type; data: T }
  : never;

/**
 * A type guard for the events of the given types: what a stream holds of
 * them was validated against the same catalogue when it was appended, and
 * upcast to the current schema when it was read, so the payload has the
 * schema's shape (or its erased shape).
 */
export const eventsOf = <const Ds extends readonly AnyEventDefinition[]>(...defs: Ds) => {
  const types = new Set<string>(defs.map((d) => d.type));
  return <R extends { readonly type: string }>(e: R): e is R & EventOf<Ds[number]> =>
    types.has(e.type);
};

/** The set of event types a store accepts. */
export class Catalog {
  readonly #defs = new Map<string, EventDefinition>();

  constructor(defs: readonly AnyEventDefinition[]) {
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
