import assert from "node:assert/strict";

/**
 * src/store has no import cycle (issue 11 item 9): the event store once
 * imported the projection engine and the shredder, which import it back.
 * Type-only imports count too: a cycle of types is still a tangle to read.
 */
Deno.test("store: no import cycle among src/store modules", async () => {
  const dir = new URL("../src/store/", import.meta.url);
  const graph = new Map<string, string[]>();
  for await (const f of Deno.readDir(dir)) {
    if (!f.isFile || !f.name.endsWith(".ts")) continue;
    const text = await Deno.readTextFile(new URL(f.name, dir));
    const deps = [...text.matchAll(/^\s*(?:import|export)\b[^;]*?from\s+"\.\/([\w.]+\.ts)"/gms)]
      .map((m) => m[1]!);
    graph.set(f.name, deps);
  }
  assert.ok(graph.has("event_store.ts"));
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const visit = (name: string, path: string[]) => {
    if (state.get(name) === "done") return;
    if (state.get(name) === "open") {
      cycles.push([...path.slice(path.indexOf(name)), name].join(" → "));
      return;
    }
    state.set(name, "open");
    for (const d of graph.get(name) ?? []) visit(d, [...path, name]);
    state.set(name, "done");
  };
  for (const name of [...graph.keys()].sort()) visit(name, []);
  assert.deepEqual(cycles, []);
});
