import type { Projection } from "../src/store/types.ts";
import { streamSummary } from "./stream_summary.ts";

/** Every read model the app maintains. */
export const projections: readonly Projection[] = [streamSummary];
