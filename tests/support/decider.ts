import assert from "node:assert/strict";
import type { Decider } from "../../src/domain/decider.ts";

/**
 * Given/when/then for a decider, pure and without I/O:
 *
 *   spec(patientDecider).given([registered]).when(cmd).then([updated])
 *   spec(patientDecider).given([]).when(cmd).thenThrows(NotFoundError)
 *
 * `given` folds the events with the decider's own `evolve` (typed: only its
 * events), `then` compares what `decide` returns.
 */
export const spec = <S, C, E, N extends E>(decider: Decider<S, C, E, N>) => ({
  given: (events: readonly E[]) => ({
    when: (command: C) => {
      const run = () =>
        decider.decide(command, events.reduce(decider.evolve, decider.initialState()));
      return {
        then: (expected: readonly N[]) => assert.deepEqual(run(), expected),
        // deno-lint-ignore no-explicit-any
        thenThrows: (error: abstract new (...args: any[]) => Error, message?: RegExp) =>
          assert.throws(run, (err: unknown) => {
            assert.ok(err instanceof error, `expected ${error.name}, got ${String(err)}`);
            if (message) assert.match(err.message, message);
            return true;
          }),
        /** The decided events, for checks that are not a plain equality. */
        events: run,
        /** The state after the given events and the decided ones. */
        state: () =>
          run().reduce(decider.evolve, events.reduce(decider.evolve, decider.initialState())),
      };
    },
  }),
});
