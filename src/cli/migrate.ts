// `deno task migrate`: applies pending schema migrations (idempotent).
import { currentMigration } from "../store/migrations.ts";
import { openCli } from "./common.ts";

const { runtime } = await openCli(); // opening the runtime applies migrations
console.log(`schema at migration ${await currentMigration(runtime.db)}`);
await runtime.close();
